"""collect end to end on the real transformers engine with real ReActAgents."""

import json

import pytest
from helpers import assert_token_exact, load, workflow_ref, write_tasks

from collect.main import main


def collect(tmp_path, workflow, *extra, tasks=3, name="out"):
    task_file = write_tasks(tmp_path / f"{name}-tasks.jsonl", tasks)
    out = tmp_path / name
    rc = main(
        [
            "--workflow",
            workflow_ref(workflow),
            "--tasks",
            str(task_file),
            "--out",
            str(out),
            "--max-tokens",
            "24",
            "--seed",
            "0",
            *extra,
        ]
    )
    assert rc == 0
    return out


def test_simple_mode_reference_code_runs(tmp_path, tokenizer):
    out = collect(tmp_path, "ExampleMathLearn", "--samples-per-task", "2")
    trajs = load(out)
    assert [(t.task.task_id, t.sample_index) for t in trajs] == [(f"t{i}", s) for i in range(3) for s in range(2)]
    for t in trajs:
        assert t.status == "ok", t.traceback
        assert t.workflow == "math_agent_workflow"
        assert "final_answer" in t.metadata
        assert t.calls and all(c.trainable and c.role == "default" for c in t.calls)
        assert {c.agent_name for c in t.calls} == {"math_react_agent"}
        # structured output: ReActAgent offered the generate_response tool and required a call
        assert t.calls[0].tool_choice == "required"
        assert {s["function"]["name"] for s in t.calls[0].tools} == {"execute_python_code", "generate_response"}
        assert t.checkpoint.sha256 and t.sampling.max_tokens == 24
    assert assert_token_exact(trajs, tokenizer) >= 6


def test_advanced_mode_records_trainable_per_role(tmp_path, tokenizer):
    trajs = load(collect(tmp_path, "WerewolfLite", tasks=2))
    for t in trajs:
        assert t.status == "ok", t.traceback
        assert t.trainable_targets == ["werewolf", "seer"]
        by_agent = {c.agent_name: c for c in t.calls}
        assert [c.agent_name for c in t.calls] == ["Player1", "Player2", "Player3"]
        assert [c.role for c in t.calls] == ["werewolf", "villager", "seer"]
        assert [c.trainable for c in t.calls] == [True, False, True]
        # the untrained villager is served by its registered default model: text, no ids
        villager = by_agent["Player2"]
        assert villager.model == "good-guys-default" and villager.completion.text == "I vote for Player1."
        assert villager.prompt_token_ids is None and villager.completion_logprobs is None
        # trainable roles share the one engine and record ids
        assert by_agent["Player1"].model == by_agent["Player3"].model == t.checkpoint.path
        assert by_agent["Player1"].completion_token_ids
    assert assert_token_exact(trajs, tokenizer) == 4


def test_trainable_targets_switch_from_command_line(tmp_path):
    trajs = load(collect(tmp_path, "WerewolfLite", "--trainable-targets", "villager", tasks=1))
    [t] = trajs
    assert t.trainable_targets == ["villager"]
    assert [c.trainable for c in t.calls] == [False, True, False]
    # werewolf and seer now use their defaults; the villager is served by the engine
    assert [c.model for c in t.calls] == ["bad-guys-default", t.checkpoint.path, "good-guys-default"]

    [t] = load(collect(tmp_path, "WerewolfLite", "--trainable-targets", "*", tasks=1, name="all"))
    assert t.trainable_targets is None and all(c.trainable for c in t.calls)


def test_unregistered_target_stops_collect_and_writes_nothing(tmp_path, capsys):
    tasks, out = write_tasks(tmp_path / "tasks.jsonl", 3), tmp_path / "out"
    args = [
        "--workflow",
        workflow_ref("WerewolfLite"),
        "--tasks",
        str(tasks),
        "--out",
        str(out),
        "--max-tokens",
        "8",
        "--seed",
        "0",
    ]
    assert main([*args, "--trainable-targets", "seer,wizard", "--flush-interval-s", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (
        "collect: --trainable-targets seer,wizard: no run registered role 'wizard' (registered: seer, villager, werewolf); "
        "fix the name (nothing was written)"
    )
    assert not out.exists()  # nor collect.json: the corrected command runs in the same --out
    assert main([*args, "--trainable-targets", "seer"]) == 0
    assert len(load(out)) == 3


def test_unregistered_target_warns_when_no_run_finished_ok(tmp_path, capsys):
    collect(tmp_path, "WrongReturn", "--trainable-targets", "wizard", tasks=1)
    assert "names wizard, which no run registered (registered: none); no run finished ok" in capsys.readouterr().err


def test_as_agentscope_model_alias(tmp_path):
    [t] = load(collect(tmp_path, "AliasWorkflow", tasks=1))
    assert t.status == "ok", t.traceback
    assert [(c.agent_name, c.role, c.trainable) for c in t.calls] == [
        ("Solver", "solver", True),
        ("Critic", "critic", False),
    ]
    assert t.calls[1].completion.text == "Looks fine."


def test_agentscope_tuner_function_workflow(tmp_path):
    [t] = load(collect(tmp_path, "tuner_style_workflow", tasks=1))
    assert t.status == "ok", t.traceback
    assert t.workflow == "tuner_style_workflow" and t.reward == 0.25
    assert t.metadata["metrics"] == {"turns": 1.0} and "response" in t.metadata
    assert t.calls[0].agent_name == "Friday" and t.calls[0].trainable


def test_errors_and_timeouts_are_recorded_and_others_complete(tmp_path):
    trajs = {t.task.task_id: t for t in load(collect(tmp_path, "OneCall", "--timeout-s", "2", tasks=5))}
    assert trajs["t1"].status == "error" and "boom on purpose" in trajs["t1"].error
    assert "RuntimeError" in trajs["t1"].traceback
    assert trajs["t2"].status == "timeout" and "--timeout-s 2" in trajs["t2"].error
    for tid in ("t0", "t3", "t4"):
        assert trajs[tid].status == "ok" and trajs[tid].reward == float(2 * int(tid[1:]))
        assert len(trajs[tid].calls) == 1


def test_wrong_return_type_is_an_error_record(tmp_path):
    [t] = load(collect(tmp_path, "WrongReturn", tasks=1))
    assert t.status == "error" and "expected astuner.WorkflowOutput" in t.error


def test_sys_exit_in_a_workflow_is_an_error_record_not_the_end_of_collect(tmp_path):
    trajs = load(collect(tmp_path, "Quits", tasks=2))
    assert [t.status for t in trajs] == ["error", "error"] and trajs[0].error == "SystemExit: 3"


def test_rerun_resumes_and_adds_samples(tmp_path, capsys):
    out = collect(tmp_path, "OneCall", "--timeout-s", "1", tasks=4)  # failed runs are finished runs too
    first = load(out)
    capsys.readouterr()
    collect(tmp_path, "OneCall", "--timeout-s", "1", tasks=4)
    assert "4 already in" in capsys.readouterr().err and load(out) == first
    collect(tmp_path, "OneCall", "--timeout-s", "1", "--samples-per-task", "2", tasks=4)
    keys = [(t.task.task_id, t.sample_index) for t in load(out)]
    assert sorted(keys) == [(f"t{i}", s) for i in range(4) for s in range(2)]
    assert len({t.trajectory_id for t in load(out)}) == 8


def test_resume_with_other_settings_is_refused(tmp_path, capsys):
    out = collect(tmp_path, "OneCall", tasks=1)
    rc = main(
        [
            "--workflow",
            workflow_ref("OneCall"),
            "--tasks",
            str(tmp_path / "out-tasks.jsonl"),
            "--out",
            str(out),
            "--max-tokens",
            "24",
            "--seed",
            "0",
            "--temperature",
            "0.5",
        ]
    )
    assert rc == 2 and "holds a run with sampling=" in capsys.readouterr().err
    assert len(load(out)) == 1


def test_config_file_and_flags(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    write_tasks(tmp_path / "tasks.jsonl", 2)
    recipe.write_text(
        f"workflow: {workflow_ref('OneCall')}\ntasks: {tmp_path / 'tasks.jsonl'}\n"
        f"out: {tmp_path / 'cfg-out'}\nmax_tokens: 8\nsamples-per-task: 3\ntemperature: 0.0\n"
    )
    assert main(["--config", str(recipe), "--samples-per-task", "1"]) == 0
    trajs = load(tmp_path / "cfg-out")
    assert len(trajs) == 2 and trajs[0].sampling.max_tokens == 8 and trajs[0].sampling.temperature == 0.0
    bad = tmp_path / "bad.yaml"
    bad.write_text("max_tokenz: 3\n")
    assert main(["--config", str(bad)]) == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["--engine", "tpu"], "--engine 'tpu': unknown engine"),
        (["--workflow", "no_such_module:X"], "cannot import no_such_module"),
        (["--workflow", "json:dumps"], "not a Workflow subclass"),
        (["--model", "/nonexistent"], "not a checkpoint folder"),
        (["--samples-per-task", "0"], "--samples-per-task 0: must be at least 1"),
    ],
)
def test_bad_options_get_one_line_errors(tmp_path, capsys, args, message):
    tasks = write_tasks(tmp_path / "tasks.jsonl", 1)
    rc = main(["--workflow", workflow_ref("OneCall"), "--tasks", str(tasks), "--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err


def test_manifest_written(tmp_path):
    out = collect(tmp_path, "OneCall", tasks=1)
    manifest = json.loads((out / "collect.json").read_text())
    assert manifest["workflow_ref"].endswith(":OneCall") and manifest["run_id"]


def test_shards_share_one_folder_and_run_id(tmp_path, tiny_model):
    """Two shards started together into one --out: one run id, every (task, sample) once, and the
    same samples as an unsharded run with the same --seed in another folder."""
    import os
    import subprocess
    import sys

    tasks = write_tasks(tmp_path / "tasks.jsonl", 5, prefix="s")
    common = [
        "--workflow",
        workflow_ref("OneCall"),
        "--tasks",
        str(tasks),
        "--max-tokens",
        "8",
        "--seed",
        "3",
        "--model",
        str(tiny_model),
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "collect", *common, "--out", str(tmp_path / "shared"), "--shard", f"{k}/2"],
            env=env,
            stderr=subprocess.PIPE,
        )
        for k in range(2)
    ]
    assert all(p.wait() == 0 for p in procs), [p.stderr.read().decode()[-500:] for p in procs]
    sharded = load(tmp_path / "shared")
    assert sorted(t.task.task_id for t in sharded) == [f"s{i}" for i in range(5)]
    assert len({t.run_id for t in sharded}) == 1
    assert sorted(p.name for p in (tmp_path / "shared" / "traces").glob("*.jsonl")) == [
        "part-0of2-000001.jsonl",
        "part-1of2-000001.jsonl",
    ]
    assert main([*common, "--out", str(tmp_path / "whole")]) == 0
    whole = load(tmp_path / "whole")
    assert [t.calls[0].completion_token_ids for t in whole] == [t.calls[0].completion_token_ids for t in sharded]
    assert main([*common, "--out", str(tmp_path / "o"), "--shard", "2/2"]) == 2
