"""A small soak of collect: hundreds of runs at concurrency 64 with injected failures (10%) and
timeouts (5%), through `python -m collect` as a user runs it. Every (task, sample) must be on
disk exactly once with the status its fate implies. The 2,000-run version, with memory figures,
is benchmarks/collect_soak.py; speed and memory are measured there, never asserted here."""

import json
import shutil

import pytest

from benchmarks.collect_soak import check_traces, collect_command, expected_keys, run_collect, write_tasks

# ok runs take ~1-2 s at concurrency 64 on 2 idle cores; 15 s leaves room for a loaded CI machine
TASKS, SAMPLES, CONCURRENCY, TIMEOUT_S = 80, 4, 64, 15.0
KEYS = expected_keys(TASKS, SAMPLES)


@pytest.fixture(scope="module")
def soak_out(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("soak")
    out = root / "out"
    out.mkdir()
    tasks = write_tasks(root / "tasks.jsonl", TASKS)
    cmd = collect_command(
        out,
        tasks,
        concurrency=CONCURRENCY,
        timeout_s=TIMEOUT_S,
        samples_per_task=SAMPLES,
        max_tokens=4,
        model=str(tiny_model),
    )
    run = run_collect(cmd, out, timeout_s=600)
    assert run.ok, f"collect exited {run.returncodes}:\n{run.log[-3000:]}"
    return out


@pytest.mark.slow
def test_soak_every_record_once_with_its_status(soak_out):
    check = check_traces(soak_out, KEYS, TIMEOUT_S, calls_per_run=1)
    assert check.problems == []
    assert check.records == len(KEYS) == TASKS * SAMPLES
    assert check.statuses == check.expected_statuses
    # the hash mix really injects all three fates at this size
    assert all(check.statuses[s] > 0 for s in ("ok", "error", "timeout")), check.statuses


@pytest.mark.slow
def test_soak_checker_catches_loss_duplicates_and_wrong_statuses(soak_out, tmp_path):
    """The checker is not vacuous: a lost record, a duplicate and a flipped status each show."""
    out = tmp_path / "broken"
    shutil.copytree(soak_out / "traces", out / "traces")
    parts = sorted((out / "traces").glob("part-*.jsonl"))
    lines = b"".join(p.read_bytes() for p in parts).splitlines(keepends=True)
    for p in parts:
        p.unlink()
    lost = json.loads(lines[0])
    flipped = json.loads(lines[2])
    flipped["status"] = "ok" if flipped["status"] != "ok" else "error"
    broken = [lines[1], lines[1], json.dumps(flipped).encode() + b"\n", *lines[3:]]
    (out / "traces" / "part-000001.jsonl").write_bytes(b"".join(broken))

    problems = "\n".join(check_traces(out, KEYS, TIMEOUT_S).problems)
    assert f"missing, e.g. [('{lost['task']['task_id']}', {lost['sample_index']})]" in problems
    assert "duplicated" in problems
    assert f"('{flipped['task']['task_id']}', {flipped['sample_index']}): status '{flipped['status']}'" in problems
