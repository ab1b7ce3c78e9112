"""`python -m collect` as a user runs it: help, the default example, and kill -9 + resume."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import load, workflow_ref, write_tasks

ROOT = Path(__file__).resolve().parent.parent


def run_collect(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "collect", *args], cwd=ROOT, capture_output=True, text=True, **kwargs)


def test_help_shows_a_ready_example():
    proc = run_collect("--help")
    assert proc.returncode == 0
    assert "python -m collect --workflow examples/math_agent/workflow.py:MathAgentWorkflow" in proc.stdout
    assert "--trainable-targets" in proc.stdout and "--config" in proc.stdout


@pytest.mark.slow
def test_default_run_is_the_bundled_example(tmp_path):
    proc = run_collect("--out", str(tmp_path / "demo"), "--max-tokens", "16")
    assert proc.returncode == 0, proc.stderr
    trajs = load(tmp_path / "demo")
    assert len(trajs) == 8 and {t.workflow for t in trajs} == {"math_agent_workflow"}
    assert all(t.status == "ok" for t in trajs)
    assert "ok 8, error 0, timeout 0" in proc.stderr


@pytest.mark.slow
def test_kill_9_then_rerun_yields_each_pair_exactly_once(tmp_path):
    import duckdb

    tasks = write_tasks(tmp_path / "tasks.jsonl", 40)
    out = tmp_path / "out"
    args = [
        "--workflow",
        workflow_ref("SlowOneCall"),
        "--tasks",
        str(tasks),
        "--out",
        str(out),
        "--samples-per-task",
        "2",
        "--concurrency",
        "4",
        "--max-tokens",
        "8",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "collect", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not list((out / "traces").glob("part-*.jsonl")):
        time.sleep(0.05)
    time.sleep(0.7)  # land somewhere between two flushes
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

    survived = load(out)
    assert 0 < len(survived) < 80, "the kill should land mid-run"
    # every reader can parse what a kill left: ours above, DuckDB here
    [(count,)] = duckdb.sql(f"SELECT count(*) FROM read_json_auto('{out}/traces/*.jsonl')").fetchall()
    assert count == len(survived)

    resumed = run_collect(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(survived)} already in" in resumed.stderr
    keys = [(t.task.task_id, t.sample_index) for t in load(out)]
    assert sorted(keys) == sorted((f"t{i}", s) for i in range(40) for s in range(2))
    assert not list((out / "traces").glob(".part-*"))
