"""Crash safety: kill -9 each stage at seeded crash points, run the same command again, and
check that nothing was lost, duplicated or left half-written.

A crash point (astuner/faults.py) is a place where a kill does the most damage: between a
temp file and its rename, inside a store transaction, after a stage's work but before the loop
records it. `ASTUNER_CRASH_AT=NAME@N` SIGKILLs the stage's process group the N-th time it passes
NAME; N is drawn from a seeded RNG. Each test is a chain on one output: kill, kill again later,
..., then a clean run, with the invariants checked after every kill.
"""

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import rows, workflow_ref, write_tasks

from astuner.faults import ENV
from astuner.store import open_store
from astuner.trajectory import read_trajectories

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
SEED = 20261123
KILLED = -9  # subprocess's returncode for SIGKILL
TASKS, SAMPLES = 6, 4  # OneCall: t1 raises, t2 sleeps past --timeout-s, the rest answer


def run(args: list[str], crash: str | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python ARGS` as its own process group (what a crash point kills), with ASTUNER_CRASH_AT=crash."""
    env = {k: v for k, v in os.environ.items() if k != ENV}
    env["HF_HUB_OFFLINE"] = "1"
    if crash:
        env[ENV] = crash
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        start_new_session=True,
        timeout=timeout,
    )


def killed(args: list[str], crash: str) -> str:
    proc = run(args, crash)
    assert proc.returncode == KILLED, f"{crash} was not reached (exit {proc.returncode}): {proc.stderr[-2000:]}"
    return proc.stdout + proc.stderr


def ok(args: list[str]) -> str:
    proc = run(args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def collect_args(tmp: Path, out: Path) -> list[str]:
    tasks = tmp / "tasks.jsonl"
    if not tasks.exists():
        write_tasks(tasks, TASKS)
    return [
        "-m",
        "collect",
        "--workflow",
        workflow_ref("OneCall"),
        "--tasks",
        str(tasks),
        "--out",
        str(out),
        "--samples-per-task",
        str(SAMPLES),
        "--concurrency",
        "4",
        "--max-tokens",
        "8",
        "--seed",
        "0",
        "--timeout-s",
        "4",
        "--flush-interval-s",
        "0",
    ]  # 4 s: a loaded 2-core machine can take a second for a first call


def trace_keys(out: Path) -> list[tuple[str, int]]:
    """(task, sample) of every record on disk; reading parses every line, so a torn line fails here."""
    return (
        [(t.task.task_id, t.sample_index) for t in read_trajectories(out / "traces")]
        if (out / "traces").exists()
        else []
    )


def expected_status(task_id: str) -> str:
    return {"t1": "error", "t2": "timeout"}.get(task_id, "ok")


def check_store(db: Path) -> tuple[int, int]:
    """The store opens for writing (DuckDB replays its WAL), ids are unique, every trajectory
    has all its calls and every score is there once. Returns (trajectories, scores)."""
    open_store(db).close()
    ((n, distinct, n_calls),) = rows(
        db, "SELECT count(*), count(DISTINCT trajectory_id), coalesce(sum(n_calls), 0) FROM trajectories"
    )
    assert n == distinct
    assert rows(db, "SELECT count(*) FROM calls") == [(n_calls,)]
    assert rows(db, "SELECT count(*) FROM trajectories GROUP BY task_id, sample_index HAVING count(*) > 1") == []
    assert rows(db, "SELECT count(*) FROM scores GROUP BY trajectory_id, call_index, judger HAVING count(*) > 1") == []
    return n, rows(db, "SELECT count(*) FROM scores")[0][0]


@pytest.fixture(scope="module")
def traces(tmp_path_factory, tiny_model):
    tmp = tmp_path_factory.mktemp("traces")
    ok(collect_args(tmp, tmp / "run"))
    return tmp / "run"


def test_collect_killed_at_seeded_points_resumes_without_loss_or_duplicates(tmp_path, tiny_model):
    rng = random.Random(SEED)
    out = tmp_path / "run"
    args = collect_args(tmp_path, out)
    points = [
        "collect.recorded",
        "collect.part_written",
        "collect.part_renamed",
        "collect.recorded",
        "collect.part_written",
        "collect.part_renamed",
        "collect.recorded",
    ]
    on_disk = 0
    for point in points:
        killed(args, f"{point}@{rng.randint(1, 3)}")
        keys = trace_keys(out)
        assert len(keys) == len(set(keys)), f"a duplicate after the kill at {point}"
        assert len(keys) >= on_disk, f"records on disk were lost by the kill at {point}"
        on_disk = len(keys)
    assert on_disk < TASKS * SAMPLES  # the chain left work for the clean run
    log = ok(args)
    assert f"{on_disk} already in" in log
    trajectories = list(read_trajectories(out / "traces"))
    assert sorted((t.task.task_id, t.sample_index) for t in trajectories) == [
        (f"t{i}", s) for i in range(TASKS) for s in range(SAMPLES)
    ]
    assert all(t.status == expected_status(t.task.task_id) for t in trajectories)
    assert len({t.run_id for t in trajectories}) == 1
    assert not list((out / "traces").glob(".*.tmp"))  # leftovers of the kills were cleared
    assert "0 to go" in ok(args)


def test_ingest_killed_at_each_point_leaves_a_store_that_opens_and_completes(tmp_path, traces):
    """Each kill hits an ingest of new traces (a store that already holds others), then the rerun."""
    rng = random.Random(SEED + 1)
    points = ["ingest.staged", "ingest.inserted", "ingest.committed", "ingest.drift_written"]
    rng.shuffle(points)
    parts = sorted((traces / "traces").glob("*.jsonl"))
    db = tmp_path / "store.duckdb"
    before = 0
    for i, point in enumerate(points):
        batch = tmp_path / f"batch-{i}"
        batch.mkdir()
        for part in parts[i :: len(points)]:
            shutil.copy(part, batch / part.name)
        added = sum(1 for part in batch.iterdir() for line in part.read_bytes().splitlines() if line.strip())
        args = ["-m", "judge", "ingest", str(batch), "--db", str(db)]
        killed(args, f"{point}@1")
        n, _ = check_store(db)
        assert n in (before, before + added), f"a partial ingest after the kill at {point}"  # one transaction
        ok(args)
        before += added
        assert check_store(db)[0] == before
        # calls a kill left unchecked were checked by the rerun
        assert rows(
            db, "SELECT count(*) FROM calls WHERE trainable AND prompt_token_ids IS NOT NULL AND template_drift IS NULL"
        ) == [(0,)], f"drift left unchecked after the kill at {point}"
    assert before == TASKS * SAMPLES
    assert "ingested 0 new trajectories" in ok(["-m", "judge", "ingest", str(traces / "traces"), "--db", str(db)])


def test_score_killed_mid_batch_never_duplicates_scores(tmp_path, traces):
    rng = random.Random(SEED + 2)
    db = tmp_path / "store.duckdb"
    ok(["-m", "judge", "ingest", str(traces / "traces"), "--db", str(db)])
    judgers = ["--judger", "workflow", "--judger", f"{TESTS / 'judgers_custom.py'}:picky"]
    args = ["-m", "judge", "score", "--db", str(db), "--batch_size", "5", *judgers]  # 5 batches x 2 judgers
    for point in ["score.inserted", "score.committed", "score.inserted", "score.committed"]:
        killed(args, f"{point}@{rng.randint(1, 10)}")
        check_store(db)
    ok(args)
    n, scores = check_store(db)
    assert scores == 2 * n == 2 * TASKS * SAMPLES
    # t1's runs raised: no workflow reward, and picky refuses to judge t1 (an error score); every other run has a reward
    assert rows(db, "SELECT count(*) FROM rewards WHERE reward IS NOT NULL") == [(TASKS * SAMPLES - SAMPLES,)]


def assert_complete_checkpoint(folder: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    manifest = json.loads((folder / "finetune.json").read_text())
    assert manifest["counts"]["train_examples"] > 0
    assert AutoTokenizer.from_pretrained(folder).chat_template
    AutoModelForCausalLM.from_pretrained(folder)


def test_finetune_killed_leaves_no_half_written_checkpoint(tmp_path, traces, tiny_model):
    db = tmp_path / "store.duckdb"
    ok(["-m", "judge", "ingest", str(traces / "traces"), "--db", str(db)])
    ok(["-m", "judge", "score", "--db", str(db)])
    out = tmp_path / "checkpoint"
    args = [
        "-m",
        "finetune",
        "--db",
        str(db),
        "--min_reward",
        "0",
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "4",
        "--gradient_checkpointing",
        "false",
        "--disable_tqdm",
        "true",
        "--output_dir",
        str(out),
    ]
    for point in ["finetune.saved", "finetune.complete"]:
        killed(args, f"{point}@1")
        assert not out.exists(), f"{out} exists after the kill at {point}: it must appear only when complete"
    killed(args, "finetune.renamed@1")
    assert_complete_checkpoint(out)  # renamed into place whole; only the temp folder's removal was cut short
    refused = run(args)
    assert refused.returncode == 2 and "already exists" in refused.stderr
    assert_complete_checkpoint(out)


def test_loop_killed_with_its_stages_resumes_to_the_same_end(tmp_path, tiny_model):
    from test_loop import write_recipe

    rng = random.Random(SEED + 3)
    recipe = write_recipe(tmp_path)
    run_dir = tmp_path / "run"
    args = ["-m", "astuner", "iterate", "--recipe", str(recipe), "--iterations", "1"]
    progress = run_dir / "progress.json"
    points = [
        f"loop.stage_done@{rng.randint(1, 2)}",  # a stage's work done, not recorded
        f"collect.recorded@{rng.randint(1, 2)}",  # inside the next collect the loop starts
        "finetune.renamed@1",  # the checkpoint whole, the loop not told
        f"loop.stage_done@{rng.randint(1, 2)}",
    ]
    logs = ""
    for point in points:
        logs += killed(args, point)
        for k in (0, 1):
            ckpt = run_dir / f"iter-{k}" / "checkpoint"
            assert not ckpt.exists() or (ckpt / "finetune.json").is_file()
    logs += ok(args)
    # the run after the finetune.renamed kill took the whole checkpoint as done instead of retraining
    assert "is complete (a run killed before recording it); not run again" in logs
    done = json.loads(progress.read_text())["done"]
    assert len(done) == 7  # collect, judge, eval, judge-eval, finetune; then eval, judge-eval of the new checkpoint
    assert not (run_dir / "iter-0" / "checkpoint.partial").exists()
    assert_complete_checkpoint(run_dir / "iter-0" / "checkpoint")
    assert check_store(run_dir / "store.duckdb")[0] == 4
    assert rows(run_dir / "store.duckdb", "SELECT count(DISTINCT (task_id, sample_index)) FROM trajectories") == [(4,)]
    assert rows(run_dir / "eval.duckdb", "SELECT iteration, count(*) FROM trajectories GROUP BY 1 ORDER BY 1") == [
        (0, 2),
        (1, 2),
    ]
    keys = trace_keys(run_dir / "iter-0")
    assert len(keys) == len(set(keys)) == 4
    assert "7 of 7 stages already done" in ok(args)
