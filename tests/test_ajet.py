"""AgentJet's API: workflows and judges in its tutorials' style run unchanged."""

import asyncio
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import assert_token_exact, load, rows, write_tasks

from astuner.chat import render_prompt_ids
from collect.main import main as collect_main
from judge.main import main as judge_main

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def ref(name: str) -> str:
    return f"{TESTS / 'ajet_workflows.py'}:{name}"


def collect(tmp_path, workflow, *extra, tasks=1, name="out", rc=0):
    task_file = write_tasks(tmp_path / f"{name}-tasks.jsonl", tasks)
    out = tmp_path / name
    assert (
        collect_main(
            [
                "--workflow",
                ref(workflow),
                "--tasks",
                str(task_file),
                "--out",
                str(out),
                "--max-tokens",
                "12",
                "--seed",
                "0",
                *extra,
            ]
        )
        == rc
    )
    return out


def test_ajet_and_astuner_import_paths():
    code = (
        "from ajet import AjetTuner, Workflow, WorkflowOutput, WorkflowTask\n"
        "from ajet.workflow import WorkflowOutput, WorkflowTask\n"
        "from ajet.schema.task import Task, WorkflowOutput, WorkflowTask\n"
        "from ajet.task_judge.base_judge import BaseJudge\n"
        "from ajet.tuner import AjetTuner as T\n"
        "from astuner import ModelTuner, Workflow, WorkflowOutput, WorkflowTask\n"
        "from astuner.workflow import WorkflowOutput, WorkflowTask\n"
        "from astuner.schema.task import Task\n"
        "from astuner.task_judge.base_judge import BaseJudge as B\n"
        "import astuner, agentscope_tuner\n"
        "assert AjetTuner is T is ModelTuner is agentscope_tuner.ModelTuner and BaseJudge is B\n"
        "assert Workflow is astuner.Workflow\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_pydantic_field_workflow_register_model_and_is_success(tmp_path, tokenizer):
    """Field(default=[...]) used to stop collect with "'FieldInfo' object is not iterable"."""
    [t] = load(collect(tmp_path, "PydanticWerewolves"))
    assert t.status == "ok", t.traceback
    assert t.workflow == "pydantic_werewolves" and t.trainable_targets == ["werewolf"]
    assert [(c.role, c.trainable) for c in t.calls] == [("werewolf", True), ("villager", False)]
    assert t.calls[1].model == "villager-default"  # register_model's return value is the role's model
    assert t.metadata["is_success"] is True and t.metadata["log_metrics"] == {"players": 2}
    assert assert_token_exact([t], tokenizer) == 1

    # '*' trains every role, but the workflow keeps its own list (it asserts on it)
    [t] = load(collect(tmp_path, "PydanticWerewolves", "--trainable-targets", "*", name="all"))
    assert t.status == "ok", t.traceback
    assert t.trainable_targets is None and all(c.trainable for c in t.calls)
    assert t.metadata["seen_targets"] == ["werewolf"]


def test_pydantic_field_defaults_are_per_instance():
    from ajet_workflows import PydanticWerewolves

    a, b = PydanticWerewolves(), PydanticWerewolves(name="ajet-workflow")
    a.trainable_targets.append("seer")
    assert b.trainable_targets == ["werewolf"] == PydanticWerewolves.trainable_targets and b.name == "ajet-workflow"

    class Seer(PydanticWerewolves):  # a plain value overrides the base class's Field
        trainable_targets = ["seer"]

    assert Seer().trainable_targets == ["seer"] == Seer.trainable_targets and Seer().name == "pydantic_werewolves"


def test_empty_trainable_targets_train_every_role(tmp_path):
    [t] = load(collect(tmp_path, "EveryRoleByEmptyList"))
    assert t.status == "ok", t.traceback
    assert t.trainable_targets is None
    assert [(c.role, c.trainable, c.completion_token_ids is not None) for c in t.calls] == [
        ("solver", True, True),
        ("critic", True, True),
    ]


def test_openai_sdk_workflow_is_recorded_token_exactly(tmp_path, tokenizer):
    [t] = load(collect(tmp_path, "MathOpenAISDK"))
    assert t.status == "ok", t.traceback
    assert [(c.role, c.trainable) for c in t.calls] == [("default", True), ("default", True)]
    first, final = t.calls
    assert first.tools and first.tools[0]["function"]["name"] == "execute_python_code"
    assert [m["role"] for m in final.messages] == ["system", "user", "assistant", "tool"]
    for call in t.calls:  # the ids are our template's rendering of the request as it came
        assert call.prompt_token_ids == render_prompt_ids(tokenizer, call.messages, call.tools)
    assert assert_token_exact([t], tokenizer) == 2
    assert t.metadata["usage"] == [len(first.prompt_token_ids), len(final.prompt_token_ids)]
    assert set(t.metadata["finish_reasons"]) <= {"stop", "length", "tool_calls"}
    assert t.metadata["final_answer"] == final.completion.text.strip() or final.completion.tool_calls
    # collect closed the endpoint and freed its port
    port = int(t.metadata["base_url"].rsplit(":", 1)[1].split("/")[0])
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_agentscope_openai_model_on_the_endpoint(tmp_path, tokenizer):
    [t] = load(collect(tmp_path, "MathAgentScopeUrlKey"))
    assert t.status == "ok", t.traceback
    assert t.calls and all(c.trainable for c in t.calls)
    assert assert_token_exact([t], tokenizer) == len(t.calls)


def test_endpoint_run_still_times_out(tmp_path):
    [t] = load(
        collect(tmp_path, "EndlessOpenAISDK", "--timeout-s", "5")
    )  # 5 s: a first call on a loaded machine takes a while
    assert t.status == "timeout" and len(t.calls) >= 1


def test_sync_client_gets_an_error_not_a_deadlock(tmp_path, monkeypatch):
    import astuner.openai_endpoint

    monkeypatch.setattr(astuner.openai_endpoint, "BLOCKED_S", 1.0)  # in this process: --workers 0
    [t] = load(collect(tmp_path, "MathSyncClient", "--workers", "0"))
    assert t.status == "error" and "503" in t.error and "synchronous client" in t.error
    assert t.calls == []  # the call never reached the tuner


def test_endpoint_keys_streaming_and_close(engine):
    import httpx

    from astuner.engines import SamplingParams
    from astuner.openai_endpoint import OpenAIEndpoint
    from astuner.tuner import ModelTuner

    async def scenario():
        endpoint = OpenAIEndpoint()
        tuner = ModelTuner(engine, SamplingParams(max_tokens=4, seed=0), endpoint=endpoint)
        access = tuner.as_oai_baseurl_apikey("solver-agent", "solver")
        async with httpx.AsyncClient(base_url=access.base_url, trust_env=False) as http:
            body = {"model": "x", "messages": [{"role": "user", "content": "hi"}]}
            ok = await http.post("/chat/completions", json=body, headers={"Authorization": f"Bearer {access.api_key}"})
            bad_key = await http.post("/chat/completions", json=body, headers={"Authorization": "Bearer sk-nope"})
            stream = await http.post(
                "/chat/completions",
                json={**body, "stream": True},
                headers={"Authorization": f"Bearer {access.api_key}"},
            )
            await tuner.aclose()  # the run is over: its key is revoked
            late = await http.post(
                "/chat/completions", json=body, headers={"Authorization": f"Bearer {access.api_key}"}
            )
        port = int(access.base_url.rsplit(":", 1)[1].split("/")[0])
        await endpoint.close()
        return ok, bad_key, stream, late, port, tuner

    ok, bad_key, stream, late, port, tuner = asyncio.run(scenario())
    assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["role"] == "assistant"
    assert ok.json()["usage"]["prompt_tokens"] == len(tuner.calls[0].prompt_token_ids)
    assert [(c.role, c.agent_name, c.trainable) for c in tuner.calls] == [("solver", "solver-agent", True)]
    assert (bad_key.status_code, late.status_code, stream.status_code) == (401, 401, 400)
    assert "stream" in stream.json()["error"]["message"]
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_tuner_config_from_file_recipe_and_flag(tmp_path, capsys):
    yaml_file = tmp_path / "frozenlake.yaml"  # AgentJet's own recipe shape, Hydra keys and all
    yaml_file.write_text(
        "ajet:\n  rollout:\n    multi_turn:\n      max_steps: 3\nfrozen_lake:\n  is_slippery: true\n"
        "defaults:\n  - ajet_default\n"
    )
    [t] = load(collect(tmp_path, "FrozenLakeSteps", "--tuner-config", str(yaml_file), name="file"))
    assert t.status == "ok", t.traceback
    assert (t.metadata["step_count"], t.metadata["old_name_steps"], t.metadata["is_slippery"]) == (3, 3, True)
    assert len(t.calls) == 3

    [t] = load(collect(tmp_path, "FrozenLakeSteps", "--tuner-config", str(yaml_file), "--max-steps", "2", name="flag"))
    assert t.metadata["step_count"] == 2

    recipe = tmp_path / "collect.yaml"  # a recipe's collect section: a mapping
    recipe.write_text("tuner_config:\n  astuner:\n    rollout:\n      multi_turn:\n        max_steps: 1\n")
    [t] = load(collect(tmp_path, "FrozenLakeSteps", "--config", str(recipe), name="recipe"))
    assert t.metadata["step_count"] == 1 and t.metadata["is_slippery"] is None

    [t] = load(collect(tmp_path, "FrozenLakeSteps", "--max-steps", "1", name="default"))
    assert t.metadata["step_count"] == 1

    capsys.readouterr()
    collect(tmp_path, "FrozenLakeSteps", "--tuner-config", "[1, 2]", name="bad", rc=2)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("collect: --tuner-config '[1, 2]': no such file, and not a YAML mapping")


def test_bad_trainable_targets_are_one_line(tmp_path, capsys):
    collect(tmp_path, "PydanticWerewolves", "--trainable-targets", ",", rc=2)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["collect: --trainable-targets ',': names no role; give role names (a,b) or '*' for every role"]


def test_base_judge_and_is_success_scored(tmp_path):
    task_file = tmp_path / "tasks.jsonl"
    task_file.write_text(
        "".join(
            json.dumps({"task_id": f"m{i}", "question": f"{i}+{i}?", "answer": f"#### {2 * i}"}) + "\n"
            for i in range(2)
        )
    )
    out = tmp_path / "math"
    assert (
        collect_main(
            [
                "--workflow",
                ref("MathOpenAISDK"),
                "--tasks",
                str(task_file),
                "--out",
                str(out),
                "--max-tokens",
                "8",
                "--seed",
                "0",
            ]
        )
        == 0
    )
    werewolves = collect(tmp_path, "PydanticWerewolves", name="ww")
    db = str(tmp_path / "store.duckdb")
    assert judge_main(["ingest", str(out / "traces"), str(werewolves / "traces"), "--db", db]) == 0
    assert judge_main(["score", "--db", db, "--judger", ref("MathAnswerAsJudge"), "--judger", "workflow"]) == 0
    labels = rows(
        db,
        "SELECT t.workflow, s.judger, s.value, s.label, s.error FROM scores s JOIN trajectories t "
        "USING (trajectory_id) ORDER BY 1, 2",
    )
    by = {(w, j.rsplit(":", 1)[-1]): (v, label, e) for w, j, v, label, e in labels}
    # the tiny model does not box the answer: the tutorial judge scores 0, labelled failure
    assert by[("math_agent_oai_sdk", "MathAnswerAsJudge")] == (0.0, "failure", None)
    assert by[("math_agent_oai_sdk", "workflow")][:2] == (None, None)
    assert by[("pydantic_werewolves", "workflow")] == (1.0, "success", None)  # WorkflowOutput.is_success


def test_resume_with_another_tuner_config_is_refused(tmp_path, capsys):
    collect(tmp_path, "FrozenLakeSteps", "--max-steps", "1")
    capsys.readouterr()
    collect(tmp_path, "FrozenLakeSteps", "--max-steps", "2", rc=2)
    assert "holds a run with tuner_config=" in capsys.readouterr().err
    collect(tmp_path, "FrozenLakeSteps", "--max-steps", "1")  # the same settings resume


def test_robust_dashscope_imports_without_a_key_and_retries_with_other_keys(tmp_path, monkeypatch):
    """AgentJet's tutorials (learn2ask) make `RobustDashScopeChatModel("qwen-plus", stream=False)` at import time."""
    from agentscope.model import ChatResponse, DashScopeChatModel

    monkeypatch.delenv("DASHSCOPE_API_KEY", raising=False)
    monkeypatch.delenv("DASHSCOPE_API_KEY_BACKUP", raising=False)
    tutorial = tmp_path / "learn2ask_like.py"
    tutorial.write_text(
        "from ajet import AjetTuner, Workflow, WorkflowOutput, WorkflowTask\n"
        "from ajet.utils.robust_dashscope import RobustDashScopeChatModel\n"
        'llm = RobustDashScopeChatModel("qwen-plus", stream=False)\n'
    )
    import runpy

    llm = runpy.run_path(str(tutorial))["llm"]
    assert isinstance(llm, DashScopeChatModel) and llm.model_name == "qwen-plus"
    with pytest.raises(RuntimeError, match="set DASHSCOPE_API_KEY"):
        asyncio.run(llm([{"role": "user", "content": "hi"}]))

    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-a|sk-b")
    monkeypatch.setenv("DASHSCOPE_API_KEY_BACKUP", "sk-backup")
    used = []

    async def flaky(self, messages, tools=None, tool_choice=None, structured_model=None, **kwargs):
        used.append(self.api_key)
        if len(used) < 3:
            raise ConnectionError("DashScope unreachable")
        return ChatResponse(content=[{"type": "text", "text": "ok"}])

    monkeypatch.setattr(DashScopeChatModel, "__call__", flaky)
    from ajet.utils.robust_dashscope import RobustDashScopeChatModel

    RobustDashScopeChatModel.retry_delay_s = 0
    model = RobustDashScopeChatModel("qwen-plus", stream=False)
    reply = asyncio.run(model([{"role": "user", "content": "hi"}]))
    assert reply.content[0]["text"] == "ok" and used[0] in ("sk-a", "sk-b") and used[2] == "sk-backup"

    async def down(self, messages, **kwargs):
        raise ConnectionError("DashScope unreachable")

    monkeypatch.setattr(DashScopeChatModel, "__call__", down)
    with pytest.raises(RuntimeError, match="after 4 attempts"):
        asyncio.run(model([{"role": "user", "content": "hi"}]))
