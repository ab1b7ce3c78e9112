"""Peer compatibility: files written for agentscope.tuner and AgentJet run unchanged
under collect and judge: imports without dspy, judges that get the Msg the workflow returned,
auxiliary models (a local checkpoint, an OpenAI-compatible endpoint), AgentJet task rows,
failed model calls on record, the embedded model's context, and csv line endings."""

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from helpers import assert_token_exact, load, rows

from collect.main import main as collect_main
from judge.main import main as judge_main

TESTS = Path(__file__).resolve().parent
PEER = TESTS / "peer_agentscope_tuner.py"


def peer(name: str) -> str:
    return f"{PEER}:{name}"


def tasks_file(tmp_path, rows_, name="tasks.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows_))
    return path


def math_tasks(tmp_path, n=2) -> Path:
    return tasks_file(
        tmp_path, [{"task_id": f"t{i}", "question": f"What is {i} + {i}?", "answer": 2 * i} for i in range(n)]
    )


def collect(tmp_path, workflow, tasks, *extra, out="out"):
    rc = collect_main(
        [
            "--workflow",
            workflow,
            "--tasks",
            str(tasks),
            "--out",
            str(tmp_path / out),
            "--max-tokens",
            "16",
            "--seed",
            "0",
            *extra,
        ]
    )
    assert rc == 0
    return tmp_path / out


def score(tmp_path, out, *judgers, extra=(), db="store.duckdb"):
    db = tmp_path / db
    assert judge_main(["ingest", str(out / "traces"), "--db", str(db)]) == 0
    assert judge_main(["score", "--db", str(db), *[a for j in judgers for a in ("--judger", j)], *extra]) == 0
    return db


def scores(db, judger):
    return rows(
        db,
        "SELECT t.task_id, s.value, s.error FROM scores s JOIN trajectories t USING (trajectory_id) "
        "WHERE s.judger = ? ORDER BY t.task_id",
        [judger],
    )


# ---------------------------------------------------------------- 1. agentscope.tuner, no dspy
def test_agentscope_tuner_workflow_and_judges_run_unchanged(tmp_path, tokenizer):
    """The file imports agentscope.tuner (which needs dspy, not installed); its judge reads a Msg."""
    out = collect(tmp_path, peer("solve_with_react"), math_tasks(tmp_path))
    trajs = load(out)
    assert [t.status for t in trajs] == ["ok", "ok"], trajs[0].error
    for t in trajs:
        assert t.metadata["response_type"] == "agentscope.message.Msg"
        assert t.metadata["response"]["name"] == "solver" and t.calls[0].trainable
    assert assert_token_exact(trajs, tokenizer) == 2

    builtin = "agentscope.tuner.model_selection._built_in_judges:avg_token_consumption_judge"
    db = score(tmp_path, out, peer("answer_judge"), peer("speaker_judge"), builtin)
    for judger in (peer("answer_judge"), peer("speaker_judge"), builtin):
        assert all(error is None for _, _, error in scores(db, judger)), scores(db, judger)
    assert [v for _, v, _ in scores(db, peer("speaker_judge"))] == [1.0, 1.0]  # it read response.name and .role
    tokens = {
        r[0]: r[1]
        for r in rows(
            db,
            "SELECT task_id, sum(prompt_tokens + completion_tokens) FROM calls "
            "JOIN trajectories USING (trajectory_id) GROUP BY task_id",
        )
    }
    assert {t: -v for t, v, _ in scores(db, builtin)} == tokens  # built-in judges get select_model's composite response


def test_prompt_tuning_says_it_needs_dspy():
    from agentscope.tuner import PromptTuneConfig, tune_prompt  # noqa: F401
    from agentscope.tuner.prompt_tune._wrapper import _WorkflowWrapperModule

    import astuner  # noqa: F401  (installs the stand-in)

    with pytest.raises(ImportError, match="needs dspy"):
        _WorkflowWrapperModule()


# ---------------------------------------------------------------- 2. auxiliary models
def test_auxiliary_checkpoint_is_recorded_not_trainable(tmp_path, tiny_model, tokenizer):
    # the opponent is another checkpoint folder: a copy of the tiny model
    import shutil

    opponent = tmp_path / "opponent-ckpt"
    shutil.copytree(tiny_model, opponent)
    aux = json.dumps({"participant": str(opponent)})
    out = collect(tmp_path, peer("play_against_participant"), math_tasks(tmp_path), "--auxiliary-models", aux)
    for t in load(out):
        assert t.status == "ok", t.error
        assert [(c.agent_name, c.role, c.trainable) for c in t.calls] == [
            ("player", "default", True),
            ("opponent", "participant", False),
        ]
        assert t.calls[1].model == str(opponent) and t.calls[1].completion_token_ids
    assert assert_token_exact(load(out), tokenizer) == 4
    assert json.loads((out / "collect.json").read_text())["auxiliary_models"] == {
        "participant": {"path": str(opponent), "engine": "transformers"}
    }

    # the same from a recipe (a YAML mapping), as the loop writes collect.yaml from its recipe's collect section
    import yaml

    from astuner.loop import read_recipe

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "run_dir": str(tmp_path / "run"),
                "collect": {
                    "workflow": peer("play_against_participant"),
                    "tasks": str(math_tasks(tmp_path, 1)),
                    "max_tokens": 8,
                    "auxiliary_models": {"participant": {"path": str(tiny_model), "temperature": 0}},
                },
                "judge": {"judger": [peer("judge_model_judge")], "auxiliary_models": {"judge": str(tiny_model)}},
            }
        )
    )
    stage = tmp_path / "collect.yaml"
    stage.write_text(yaml.safe_dump(read_recipe(recipe).stage_config("collect")))
    assert collect_main(["--config", str(stage), "--out", str(tmp_path / "from-recipe")]) == 0
    [t] = load(tmp_path / "from-recipe")
    assert t.status == "ok" and [c.role for c in t.calls] == ["default", "participant"]
    assert not t.calls[1].trainable and t.calls[1].model == str(tiny_model.resolve())


class _ChatServer:
    """An OpenAI-compatible /v1/chat/completions on 127.0.0.1 that answers every request with REPLY.
    Bounded: it serves at most `limit` requests and stops by itself after `lifetime_s`."""

    REPLY = "yes, that is correct"

    def __init__(self, limit=50, lifetime_s=120.0):
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, **body})
                if len(server.requests) > limit:
                    self.send_error(503)
                    return
                reply = json.dumps(
                    {
                        "id": f"chatcmpl-{len(server.requests)}",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": "stop",
                                "message": {"role": "assistant", "content": server.REPLY},
                            }
                        ],
                        "usage": {"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.timer = threading.Timer(lifetime_s, self.httpd.shutdown)

    def __enter__(self):
        self.thread.start()
        self.timer.start()
        return self

    def __exit__(self, *exc):
        self.timer.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def test_auxiliary_endpoint_in_collect_and_judge(tmp_path, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("JUDGE_KEY", "sk-local")
    with _ChatServer() as server:
        aux = json.dumps(
            {"judge": {"base_url": server.url, "model": "judge-7b", "api_key_env": "JUDGE_KEY", "temperature": 0}}
        )
        out = collect(tmp_path, peer("ask_the_judge_model"), math_tasks(tmp_path), "--auxiliary-models", aux)
        for t in load(out):
            assert t.status == "ok", t.error
            judge_call = t.calls[-1]
            assert (judge_call.role, judge_call.trainable, judge_call.model) == ("judge", False, "judge-7b")
            assert judge_call.completion.text == server.REPLY and judge_call.prompt_token_ids is None
            assert t.reward == 1.0
        assert len(server.requests) == 2 and server.requests[0]["path"] == "/v1/chat/completions"
        assert server.requests[0]["model"] == "judge-7b" and server.requests[0]["temperature"] == 0
        assert "sk-local" not in (out / "collect.json").read_text()  # the key is not recorded

        # judge score: the same option gives the judge its auxiliary_models
        aux_yaml = tmp_path / "aux.yaml"
        aux_yaml.write_text(f"judge:\n  base_url: {server.url}\n  model: judge-7b\n")
        db = score(tmp_path, out, peer("judge_model_judge"), extra=["--auxiliary-models", str(aux_yaml)])
        assert [(v, e) for _, v, e in scores(db, peer("judge_model_judge"))] == [(1.0, None), (1.0, None)]
        assert len(server.requests) == 4


def test_auxiliary_checkpoint_for_a_judge(tmp_path, tiny_model):
    out = collect(tmp_path, peer("solve_with_react"), math_tasks(tmp_path, 1))
    db = score(
        tmp_path, out, peer("judge_model_judge"), extra=["--auxiliary-models", json.dumps({"judge": str(tiny_model)})]
    )
    [(_, value, error)] = scores(db, peer("judge_model_judge"))
    assert error is None and value in (1.0, 0.25)


@pytest.mark.parametrize(
    "value, message",
    [
        ("{judge: [unclosed", "--auxiliary-models '{judge: [unclosed': neither JSON nor YAML"),
        ('["a"]', "expected a mapping of name -> model spec"),
        (
            '{"judge": 3}',
            "--auxiliary-models: 'judge': expected a checkpoint folder or a mapping with path or base_url",
        ),
        (
            '{"judge": "/nonexistent/ckpt"}',
            "--auxiliary-models: 'judge': path /nonexistent/ckpt: not a checkpoint folder",
        ),
        ('{"judge": {"base_url": "http://h/v1"}}', "'judge': an endpoint needs model"),
        ('{"judge": {"base_url": "http://h/v1", "model": "m", "key": "x"}}', "'judge': unknown key(s) key"),
        ('{"judge": {"base_url": "ftp://h", "model": "m"}}', "base_url 'ftp://h' is not an http(s) URL"),
        ('{"judge": {"path": "x", "base_url": "http://h/v1"}}', "give exactly one of path"),
    ],
)
def test_bad_auxiliary_specs_are_one_line(tmp_path, capsys, value, message):
    tasks = math_tasks(tmp_path, 1)
    rc = collect_main(
        [
            "--workflow",
            peer("play_against_participant"),
            "--tasks",
            str(tasks),
            "--out",
            str(tmp_path / "o"),
            "--auxiliary-models",
            value,
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("collect: ") and message in err[0], err
    assert not (tmp_path / "o").exists()


def test_bad_auxiliary_spec_for_judge_is_one_line(tmp_path, capsys):
    from astuner.store import open_store

    open_store(str(tmp_path / "s.duckdb")).close()
    rc = judge_main(
        [
            "score",
            "--db",
            str(tmp_path / "s.duckdb"),
            "--judger",
            peer("judge_model_judge"),
            "--auxiliary-models",
            '{"judge": 3}',
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == [
        "judge score: error: --auxiliary-models: 'judge': expected a checkpoint folder or a mapping with path "
        "or base_url, got 3"
    ]


# ---------------------------------------------------------------- 4. task rows as AgentJet writes them
class_workflow = f"{TESTS / 'peer_rows.py'}:CityWorkflow"


def test_agentjet_task_rows(tmp_path, capsys):
    from astuner.tasks import load_tasks

    agentjet = {
        "main_query": "Where?",
        "task_id": "a1",
        "init_messages": [{"role": "system", "content": "Be brief."}],
        "metadata": {"city": "Paris", "answer": "Paris"},
    }
    no_query = {"task_id": "a2", "metadata": {"city": "Rome", "answer": "Rome"}}
    flat = {
        "task_id": "a3",
        "question": "Where?",
        "city": "Oslo",
        "answer": "Oslo",
    }  # today's shape: the row is the metadata
    path = tasks_file(tmp_path, [agentjet, no_query, flat])
    tasks = {t.task_id: t for t in load_tasks(str(path))}
    assert tasks["a1"].metadata == agentjet["metadata"] and tasks["a1"].init_messages == agentjet["init_messages"]
    assert tasks["a2"].main_query == "[not defined]" and tasks["a2"].metadata == no_query["metadata"]
    assert tasks["a3"].metadata == flat and tasks["a3"].init_messages == []
    with pytest.raises(ValueError, match=r"tasks\.jsonl:2: no query field 'main_query'"):
        load_tasks(str(path), query_field="main_query")  # a field that was named must be there

    out = collect(tmp_path, class_workflow, path)
    assert "1 of 3 task rows have no query field" in capsys.readouterr().err
    trajs = {t.task.task_id: t for t in load(out)}
    assert all(t.status == "ok" for t in trajs.values()), [t.error for t in trajs.values()]
    assert trajs["a1"].metadata == {"final_answer": "Paris", "query": "Where?", "system": "Be brief."}
    assert trajs["a2"].metadata["query"] == "Tell me about Rome"  # built from metadata, as AgentJet workflows do
    # the exact judger finds the reference answer in both shapes
    db = score(tmp_path, out, "exact")
    assert [(t, v) for t, v, _ in scores(db, "exact")] == [("a1", 1.0), ("a2", 1.0), ("a3", 1.0)]


# ---------------------------------------------------------------- 5. failed model calls
def test_failed_calls_are_recorded_and_never_trained(tmp_path, capsys):
    from astuner.store import open_store
    from finetune.data import build
    from finetune.options import FinetuneConfig

    out = collect(tmp_path, f"{TESTS / 'peer_rows.py'}:CatchesFailedCalls", math_tasks(tmp_path, 1))
    assert (
        "collect: 2 model calls raised (recorded with their error, trainable: false); first: task t0 sample 0 call 1 (default): "
        "ValueError: prompt of" in capsys.readouterr().err
    )
    [t] = load(out)
    assert t.status == "ok" and t.metadata == {"caught": 2}
    ok, overflow, http = t.calls
    assert ok.error is None and ok.trainable
    assert (overflow.trainable, overflow.finish_reason, overflow.completion_token_ids) == (False, "error", None)
    assert "exceeds the model's context of 32768" in overflow.error and overflow.role == "default"
    assert (http.role, http.trainable, http.model, http.error) == (
        "critic",
        False,
        "flaky-api",
        "ConnectionError: HTTP 500 from the API",
    )
    db = score(tmp_path, out, "workflow")
    assert rows(db, "SELECT call_index, trainable, finish_reason = 'error' FROM calls ORDER BY call_index") == [
        (0, True, False),
        (1, False, True),
        (2, False, True),
    ]
    con = open_store(str(db), read_only=True)
    try:
        data = build(con, FinetuneConfig(min_reward=0.0))
    finally:
        con.close()
    assert [r["call_indices"] for r in data.rows] == [[0]]  # finetune trains on the call that worked only


# ---------------------------------------------------------------- 6. the embedded model's context
def test_embedded_model_fits_long_multi_turn_prompts(tmp_path, engine, tiny_model, tokenizer):
    import astuner.tiny as tiny
    from astuner.engines import SamplingParams
    from astuner.tiny import build_tiny_model

    assert engine.max_context == 32768 and tokenizer.model_max_length == 32768
    # a 9-player werewolves day: ~3,000 tokens of history, then more turns on top
    history = [
        {
            "role": "user",
            "content": f"Player{i % 9 + 1}: I think Player{(i * 4) % 9 + 1} is a werewolf because of the vote.",
        }
        for i in range(150)
    ]
    from astuner.chat import render_prompt_ids

    ids = render_prompt_ids(tokenizer, history, None)
    assert len(ids) > 4096
    gen = asyncio.run(engine.generate(ids, SamplingParams(max_tokens=8, seed=0)))
    assert gen.completion_token_ids

    # the same weights (and so the same outputs) as the 4,096-token v1
    old = tmp_path / "v1"
    saved = tiny.CONTEXT_LENGTH
    tiny.CONTEXT_LENGTH = 4096
    try:
        build_tiny_model(old)
    finally:
        tiny.CONTEXT_LENGTH = saved
    assert (old / "model.safetensors").read_bytes() == (tiny_model / "model.safetensors").read_bytes()
    assert json.loads((old / "config.json").read_text())["max_position_embeddings"] == 4096


def test_an_overflowing_prompt_fails_alone(engine):
    """One prompt past the context fails its own call, not the requests batched with it."""
    from astuner.engines import SamplingParams

    async def both():
        return await asyncio.gather(
            engine.generate([5] * 40000, SamplingParams(max_tokens=4, seed=0)),
            engine.generate([5, 6, 7], SamplingParams(max_tokens=4, seed=1)),
            return_exceptions=True,
        )

    too_long, fine = asyncio.run(both())
    assert isinstance(too_long, ValueError) and "exceeds the model's context" in str(too_long)
    assert not isinstance(fine, BaseException) and fine.completion_token_ids


# ---------------------------------------------------------------- Also: csv line endings
def test_sql_csv_ends_lines_with_newline_only(tmp_path, capfd):
    out = collect(tmp_path, peer("solve_with_react"), math_tasks(tmp_path))
    db = tmp_path / "s.duckdb"
    assert judge_main(["ingest", str(out / "traces"), "--db", str(db)]) == 0
    capfd.readouterr()
    assert judge_main(["sql", "SELECT count(*) AS n FROM trajectories", "--db", str(db), "--format", "csv"]) == 0
    printed = capfd.readouterr().out
    assert printed == "n\n2\n" and "\r" not in printed


# ---------------------------------------------------------------- select_model judges, ASTuner's math judge
# A judge written for agentscope.tuner's select_model (after AgentScope 1.0.21's
# examples/tuner/model_selection/example_bleu.py, in short: it reads the Msg from response["response"] and
# refuses anything else; a word-overlap score stands in for sacrebleu).
SELECT_MODEL_JUDGE = """
from typing import Any, Dict
from agentscope.tuner import DatasetConfig, JudgeOutput, WorkflowOutput
from agentscope.tuner.model_selection import select_model


async def overlap_judge(task: Dict[str, Any], response: Any) -> JudgeOutput:
    if not (isinstance(response, dict) and "response" in response):
        raise ValueError("Response must be a dict with 'response' key")
    text = response["response"].get_text_content() or ""
    ref = set(str(task.get("answer", "")).split())
    reward = len(ref & set(text.split())) / max(len(ref), 1)
    return JudgeOutput(reward=reward, metrics={"seconds": response["metrics"]["execution_time"]})
{main}"""
SELECT_MODEL_MAIN = """

async def main():
    best, metrics = await select_model(
        workflow_func=None, judge_func=overlap_judge, train_dataset=DatasetConfig(path="data"), candidate_models=[]
    )
"""


def _msg_trajectories(tmp_path):
    from agentscope.message import Msg
    from helpers import make_traj, write

    trajs = []
    for i, text in enumerate(["the cat sat", "a dog ran"]):
        traj = make_traj(f"t{i}", 0, reward=None, answer="the cat sat")
        traj.metadata = {
            "response": Msg("solver", text, "assistant").to_dict(),
            "response_type": "agentscope.message.Msg",
        }
        trajs.append(traj)
    db = tmp_path / "store.duckdb"
    assert (
        judge_main(["ingest", str(write(tmp_path / "msgs.jsonl", trajs)), "--db", str(db), "--no_check_template"]) == 0
    )
    return db


def test_select_model_judge_gets_the_composite_response(tmp_path):
    db = _msg_trajectories(tmp_path)
    with_main = tmp_path / "bleu_like.py"
    with_main.write_text(SELECT_MODEL_JUDGE.replace("{main}", SELECT_MODEL_MAIN))
    judger = f"{with_main}:overlap_judge"
    assert (
        judge_main(["score", "--db", str(db), "--judger", judger]) == 0
    )  # detected: the file hands it to select_model
    assert [(v, e) for _, v, e in scores(db, judger)] == [(1.0, None), (0.0, None)]
    # without the select_model call in sight, the flag says it
    bare = tmp_path / "bare_judge.py"
    bare.write_text(SELECT_MODEL_JUDGE.replace("{main}", ""))
    judger = f"{bare}:overlap_judge"
    assert judge_main(["score", "--db", str(db), "--judger", judger, "--judge-input", "select_model"]) == 0
    assert [(v, e) for _, v, e in scores(db, judger)] == [(1.0, None), (0.0, None)]
    # and --judge-input response hands it the bare Msg, as collect's workflow returned it
    assert judge_main(["score", "--db", str(db), "--judger", judger, "--judge-input", "response"]) == 0
    assert {e for _, _, e in scores(db, judger)} == {"ValueError: Response must be a dict with 'response' key"}


def test_judge_input_value_is_checked(tmp_path, capsys):
    db = _msg_trajectories(tmp_path)
    assert judge_main(["score", "--db", str(db), "--judge_input", "composite"]) == 2
    assert "--judge_input 'composite': use one of auto, response, select_model" in capsys.readouterr().err


# ASTuner's tutorial/example_math_agent/math_answer_as_judge.py at its last commit before the rename to
# agentscope_tuner (modelscope/AgentJet aec2cca, 2025-12-24): the imports as they are, the classes in short.
ASTUNER_MATH_JUDGE = """
import re

from astuner.task_judge.base_judge import BaseJudge
from astuner.task_rollout.dashscope_llm_bridge import create_external_llm_fn
from astuner.workflow import WorkflowOutput, WorkflowTask


class MathAnswerAsJudge(BaseJudge):
    def __init__(self, config):
        self.config = config

    def compute_reward(self, workflow_task: WorkflowTask, workflow_output: WorkflowOutput) -> tuple:
        final_answer = workflow_output.metadata["final_answer"]
        reference = workflow_task.task.metadata["answer"].split("####")[-1].strip()
        match = re.search(r"\\\\boxed\\{([^}]*)\\}", final_answer)
        is_success = bool(match) and match.group(1) == reference
        return (1.0 if is_success else 0.0), is_success


class MathAnswerAndLlmAsJudge(BaseJudge):
    def __init__(self, config):
        self.config = config

    def compute_reward(self, workflow_task: WorkflowTask, workflow_output: WorkflowOutput) -> tuple:
        final_answer = workflow_output.metadata["final_answer"]
        reference = workflow_task.task.metadata["answer"].split("####")[-1].strip()
        external_llm_fn = create_external_llm_fn(
            alien_llm_model=self.config.astuner.task_judge.alien_llm_model,
            alien_llm_response_length=self.config.astuner.task_judge.alien_llm_response_length,
        )
        messages = [
            {"role": "system", "content": "Is my result correct? If correct, say <Correct>, otherwise say <NotCorrect>."},
            {"role": "user", "content": f"My result: {final_answer}\\nReal result: {reference}"},
        ]
        res = external_llm_fn(messages=messages)
        is_success = "<Correct>" in res["content"]
        return (1.0 if is_success else 0.0), is_success
"""


class _CorrectServer(_ChatServer):
    REPLY = "<Correct>"


def test_astuner_era_math_judge_imports_and_asks_the_alien_llm(tmp_path, monkeypatch):
    from helpers import make_traj, write

    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.delenv("DASHSCOPE_API_KEY", raising=False)
    trajs = [
        make_traj("t0", 0, final="so \\boxed{4}", answer="2+2 #### 4"),
        make_traj("t1", 0, final="maybe 5", answer="2+3 #### 6"),
    ]
    db = tmp_path / "store.duckdb"
    assert judge_main(["ingest", str(write(tmp_path / "m.jsonl", trajs)), "--db", str(db), "--no_check_template"]) == 0
    judges = tmp_path / "math_answer_as_judge.py"
    judges.write_text(ASTUNER_MATH_JUDGE)
    plain, with_llm = f"{judges}:MathAnswerAsJudge", f"{judges}:MathAnswerAndLlmAsJudge"
    with _CorrectServer() as server:
        # AgentJet's default alien_llm_model, served here by --auxiliary_models under that name
        aux = json.dumps({"qwen3-235b-a22b-instruct-2507": {"base_url": server.url, "model": "judge-7b"}})
        assert (
            judge_main(["score", "--db", str(db), "--judger", plain, "--judger", with_llm, "--auxiliary_models", aux])
            == 0
        )
        assert len(server.requests) == 2 and server.requests[0]["messages"][0]["role"] == "system"
    labels = rows(db, "SELECT judger, value, label, error FROM scores ORDER BY judger, trajectory_id")
    assert [r[1:] for r in labels if r[0] == plain] == [(1.0, "success", None), (0.0, "failure", None)]
    assert [r[1:] for r in labels if r[0] == with_llm] == [(1.0, "success", None), (1.0, "success", None)]
    # no model of that name and no DashScope key: an error row per trajectory naming both ways
    assert judge_main(["score", "--db", str(db), "--judger", with_llm]) == 0
    errors = {r[3] for r in rows(db, "SELECT judger, value, label, error FROM scores WHERE judger = ?", [with_llm])}
    assert len(errors) == 1 and "qwen3-235b-a22b-instruct-2507" in errors.pop()
