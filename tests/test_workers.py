"""Collect's worker processes (collect/pool.py, collect/worker.py): among well-behaved runs, a run
that blocks its event loop, spins, aborts its process or leaks memory costs only itself, is
recorded once with what it had done, and collect exits 0 without waiting for it."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from helpers import assert_token_exact, load, workflow_ref

from collect.main import main

TESTS = Path(__file__).resolve().parent
MISBEHAVES = f"{TESTS / 'misbehaving.py'}:Misbehaves"
TIMEOUT_S = 8  # the good runs need well under a second; a loaded 2-core machine may take a few


def tasks_file(path: Path, good: int, bad: dict[int, str]) -> Path:
    """`good` answering tasks t0.., with the queries of `bad` (index -> sleep/spin/abort/leak) in between."""
    rows = [{"task_id": f"t{i:02d}", "main_query": bad.get(i, f"Say {i}.")} for i in range(good + len(bad))]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def collect(tmp_path, tasks: Path, *extra: str) -> Path:
    out = tmp_path / "out"
    started = time.monotonic()
    assert (
        main(
            [
                "--workflow",
                MISBEHAVES,
                "--tasks",
                str(tasks),
                "--out",
                str(out),
                "--max-tokens",
                "6",
                "--seed",
                "1",
                "--concurrency",
                "8",
                "--timeout-s",
                str(TIMEOUT_S),
                *extra,
            ]
        )
        == 0
    )
    collect.seconds = time.monotonic() - started
    return out


def test_blocking_spinning_and_aborting_runs_cost_only_themselves(tmp_path, tokenizer, capsys):
    bad = {3: "sleep", 9: "spin", 14: "abort"}
    out = collect(tmp_path, tasks_file(tmp_path / "tasks.jsonl", 21, bad), "--workers", "2")
    trajs = {t.task.task_id: t for t in load(out)}
    assert len(trajs) == 24 and len(load(out)) == 24  # every run recorded, once

    for index, what in [(3, "sleep"), (9, "spin")]:
        t = trajs[f"t{index:02d}"]
        assert t.status == "timeout", (what, t.status, t.error)
        assert f"--timeout-s {TIMEOUT_S}" in t.error and "held the worker's event loop" in t.error
        assert len(t.calls) == 1 and t.calls[0].completion_token_ids  # the call it made before blocking
        # recorded within a second or two of its deadline, not after the 60 s its code would take
        assert TIMEOUT_S <= t.duration_s < TIMEOUT_S + 2.5, (what, t.duration_s)

    crashed = trajs["t14"]
    assert crashed.status == "error" and "killed by signal SIGABRT" in crashed.error
    assert "last model call: #0 (role default" in crashed.error
    assert "misbehaving.py" in crashed.traceback  # faulthandler's stack of the dying worker
    assert len(crashed.calls) == 1

    good = [t for tid, t in trajs.items() if int(tid[1:]) not in bad]
    assert len(good) == 21 and all(t.status == "ok" and t.reward == 1.0 and len(t.calls) == 1 for t in good)
    assert assert_token_exact(trajs.values(), tokenizer) == 24  # ids through the pipes are the engine's

    err = capsys.readouterr().err
    assert "ok 21, error 1, timeout 2" in err and "2 worker processes" in err
    assert "stopped by collect" in err and "started again" in err
    assert collect.seconds < 50  # it did not wait for the 60 s sleep or busy loop


def test_runs_that_crash_their_worker_every_time_are_recorded_once_and_resume_skips_them(tmp_path, capsys):
    tasks = tasks_file(tmp_path / "tasks.jsonl", 6, {1: "abort", 4: "segfault", 6: "killed"})
    out = collect(tmp_path, tasks, "--workers", "2")
    crashed = {t.task.task_id: t.error for t in load(out) if t.status != "ok"}
    assert sorted(crashed) == ["t01", "t04", "t06"] and len(load(out)) == 9, crashed
    assert "SIGABRT" in crashed["t01"] and "SIGSEGV" in crashed["t04"] and "SIGKILL" in crashed["t06"]
    assert "died by themselves" in capsys.readouterr().err
    collect(tmp_path, tasks, "--workers", "2")  # the rerun: a crash is a recorded run, not a missing one
    assert "0 to go" in capsys.readouterr().err and len(load(out)) == 9


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_run_that_swallows_its_cancellation_is_still_a_timeout(tmp_path, workers):
    """AgentScope's agents catch CancelledError as an interrupt and return: the run used to be recorded ok."""
    out = collect(
        tmp_path, tasks_file(tmp_path / "tasks.jsonl", 2, {1: "swallow"}), "--workers", workers, "--timeout-s", "2"
    )
    trajs = {t.task.task_id: t for t in load(out)}
    assert trajs["t01"].status == "timeout" and "--timeout-s 2" in trajs["t01"].error
    assert trajs["t01"].duration_s < 4 and len(trajs["t01"].calls) == 1
    assert trajs["t00"].status == trajs["t02"].status == "ok"


def test_a_run_past_the_memory_limit_is_an_error_record(tmp_path):
    out = collect(
        tmp_path,
        tasks_file(tmp_path / "tasks.jsonl", 7, {4: "leak"}),
        "--workers",
        "2",
        "--max-run-memory-mb",
        "150",
        "--timeout-s",
        "30",
    )
    trajs = {t.task.task_id: t for t in load(out)}
    leak = trajs["t04"]
    assert leak.status == "error" and "--max-run-memory-mb 150" in leak.error, leak.error
    assert leak.duration_s < 20
    assert all(t.status == "ok" for tid, t in trajs.items() if tid != "t04") and len(trajs) == 8


def test_workers_record_what_one_process_records(tmp_path):
    """Same seed, --workers 0 (one process) and --workers 2: the same token ids for every call."""
    from collect.main import main as collect_main

    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(
        "".join(json.dumps({"task_id": f"q{i}", "question": f"What is {i} + 1?"}) + "\n" for i in range(4))
    )
    runs = {}
    for workers in ("0", "2"):
        out = tmp_path / f"w{workers}"
        assert (
            collect_main(
                [
                    "--workflow",
                    workflow_ref("ExampleMathLearn"),
                    "--tasks",
                    str(tasks),
                    "--out",
                    str(out),
                    "--max-tokens",
                    "12",
                    "--seed",
                    "5",
                    "--samples-per-task",
                    "2",
                    "--workers",
                    workers,
                ]
            )
            == 0
        )
        runs[workers] = load(out)
    assert [(t.task.task_id, t.sample_index) for t in runs["0"]] == [
        (t.task.task_id, t.sample_index) for t in runs["2"]
    ]
    for one, two in zip(runs["0"], runs["2"]):
        assert [c.prompt_token_ids for c in one.calls] == [c.prompt_token_ids for c in two.calls]
        assert [c.completion_token_ids for c in one.calls] == [c.completion_token_ids for c in two.calls]
        for a, b in zip(one.calls, two.calls):
            assert a.completion_logprobs == pytest.approx(b.completion_logprobs, abs=1e-4)


def test_workers_do_not_outlive_a_killed_collect(tmp_path, tiny_model):
    """kill -9 of collect alone (not its group): its workers see the pipe close and exit."""
    tasks = tasks_file(tmp_path / "tasks.jsonl", 0, {0: "sleep", 1: "sleep"})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "collect",
            "--workflow",
            MISBEHAVES,
            "--tasks",
            str(tasks),
            "--out",
            str(tmp_path / "out"),
            "--model",
            str(tiny_model),
            "--max-tokens",
            "4",
            "--workers",
            "2",
            "--timeout-s",
            "120",
        ],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    collect_process = psutil.Process(proc.pid)
    deadline = time.monotonic() + 120
    workers = []
    while time.monotonic() < deadline and len(workers) < 2:
        # the worker processes: the fork server's children (forked once the engine is loaded)
        servers = [p for p in collect_process.children() if "forkserver" in " ".join(p.cmdline())]
        workers = [w for server in servers for w in server.children()]
        time.sleep(0.5)
    assert len(workers) == 2, collect_process.children(recursive=True)
    time.sleep(2)  # both are in their 60 s sleep
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    gone, alive = psutil.wait_procs(workers, timeout=15)
    assert not alive, f"workers outlived collect: {alive}"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--workers", "-1"], "--workers -1: must be 0"),
        (["--workers", "0", "--max-run-memory-mb", "100"], "--max-run-memory-mb needs worker processes"),
        (["--max-run-memory-mb", "0"], "--max-run-memory-mb 0: must be positive"),
    ],
)
def test_bad_worker_options_get_one_line_errors(tmp_path, capsys, args, message):
    assert main(["--workflow", MISBEHAVES, "--out", str(tmp_path / "o"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_calls_from_worker_processes_are_batched_as_in_one_process(tmp_path, engine):
    """16 runs that each compute 3 ms before their call, in 2 workers: their requests reach the engine
    3 ms apart, longer than its 2 ms batching window, yet they go into one batch, as they do in one
    process (the engine waits while workers still run what they were sent, or are starting:
    Engine.expected_requests). Before, the first batch took the first request alone."""
    import asyncio

    from astuner.trajectory import Checkpoint, Sampling
    from astuner.workflow import Task, load_workflow
    from collect.pool import run_collect_pool
    from collect.runner import RunSpec
    from collect.writer import TraceWriter

    batches = []
    generate_batch = engine.generate_batch
    engine.generate_batch = lambda prompts, sampling: (batches.append(len(prompts)), generate_batch(prompts, sampling))[
        1
    ]
    spec = RunSpec(
        run_id="batching",
        workflow_cls=load_workflow(MISBEHAVES),
        workflow_ref=MISBEHAVES,
        checkpoint=Checkpoint(path=engine.checkpoint, sha256="-"),
        sampling=Sampling(max_tokens=4, seed=0),
        trainable_targets=None,
    )
    todo = [(Task(task_id=f"c{i}", main_query="compute"), 0) for i in range(16)]
    try:
        stats = asyncio.run(
            run_collect_pool(
                spec, engine, todo, TraceWriter(tmp_path / "traces"), concurrency=16, workers=2, progress=False
            )
        )
    finally:
        del engine.generate_batch
    assert stats.ok == 16
    # one batch; two (a worker's 8 each) where one worker started more than the engine's worker_wait_s (1 s)
    # after the other, on a loaded machine
    assert batches[0] == 16 or batches[:2] == [8, 8], batches
