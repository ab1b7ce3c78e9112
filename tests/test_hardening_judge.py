"""judge, finetune and the store under hostile judgers, full or read-only disks and broken files:
each failure is a score row (scoring goes on) or one line naming the path and the cause."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import make_traj, rows, write

from judge.main import main


@pytest.fixture
def store(tmp_path):
    trajs = [make_traj(f"t{i}", 0, reward=1.0, final="4") for i in range(3)]
    db = tmp_path / "store.duckdb"
    assert (
        main(["ingest", str(write(tmp_path / "traces" / "a.jsonl", trajs)), "--db", str(db), "--no_check_template"])
        == 0
    )
    return db


def _judger_file(tmp_path, body: str) -> str:
    path = tmp_path / "judgers_hostile.py"
    path.write_text(body)
    return str(path)


def _scores(db):
    return rows(
        db,
        "SELECT t.task_id, s.judger, s.value, s.label, s.error FROM scores s JOIN trajectories t USING (trajectory_id) ORDER BY 1, 2",
    )


def test_judger_label_with_lone_surrogate_is_kept_and_scoring_goes_on(tmp_path, store, capsys):
    judgers = _judger_file(
        tmp_path,
        "from judge.judgers import Score\n"
        "def odd_label(trajectories, **_):\n"
        "    return [Score(1.0, label='bad \\ud800' if t['task_id'] == 't1' else 'fine') for t in trajectories]\n",
    )
    assert main(["score", "--db", str(store), "--judger", f"{judgers}:odd_label", "--judger", "workflow"]) == 0
    got = _scores(store)
    assert [(r[0], r[1]) for r in got] == [
        ("t0", f"{judgers}:odd_label"),
        ("t0", "workflow"),
        ("t1", f"{judgers}:odd_label"),
        ("t1", "workflow"),
        ("t2", f"{judgers}:odd_label"),
        ("t2", "workflow"),
    ]
    t1 = got[2]
    assert t1[2] == 1.0 and t1[3] == "bad \\ud800" and t1[4] is None  # stored safely, escaped
    assert [r[3] for r in got if r[1] != "workflow"] == ["fine", "bad \\ud800", "fine"]


def test_judger_calling_sys_exit_is_an_error_row_per_trajectory(tmp_path, store, capsys):
    judgers = _judger_file(
        tmp_path,
        "import sys\n"
        "def quits(trajectories, **_):\n"
        "    if any(t['task_id'] == 't1' for t in trajectories):\n"
        "        sys.exit(0)\n"
        "    return [0.5 for _ in trajectories]\n",
    )
    assert main(["score", "--db", str(store), "--judger", f"{judgers}:quits", "--judger", "workflow"]) == 0
    got = {(r[0], r[1]): r for r in _scores(store)}
    assert len(got) == 6
    assert got[("t0", f"{judgers}:quits")][2] == 0.5 and got[("t2", f"{judgers}:quits")][2] == 0.5
    t1 = got[("t1", f"{judgers}:quits")]
    assert t1[2] is None and t1[4].startswith("SystemExit")
    out = capsys.readouterr().out
    assert "1 error(s), first: trajectory" in out and "SystemExit" in out


# ----- full and read-only disks, damaged files: one line naming the path, exit 2, nothing half-written ---------
ROOT = Path(__file__).resolve().parent.parent


def _mount_ns_prefix() -> list[str]:
    """A private mount namespace (root, or a user namespace mapped to root): tmpfs mounts vanish with it."""
    prefix = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-r", "-m"]
    probe = subprocess.run(
        [*prefix, "sh", "-c", "mount -t tmpfs tmpfs /mnt 2>/dev/null || mount -t tmpfs tmpfs /tmp"], capture_output=True
    )
    if shutil.which("unshare") is None or probe.returncode != 0:
        pytest.skip("no private mount namespace here (unshare -m)")
    return prefix


def _in_small_fs(script: str, mount_point: Path, options: str) -> subprocess.CompletedProcess:
    """Run `script` (sh) with a fresh tmpfs mounted on `mount_point` with `options` (ro, size=...)."""
    mount_point.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "HF_HUB_OFFLINE": "1",
    }
    return subprocess.run(
        [*_mount_ns_prefix(), "sh", "-c", f"mount -t tmpfs -o {options} tmpfs {mount_point} && {script}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def _one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "Traceback" not in proc.stderr and all(n in last for n in needles), proc.stderr[-2000:]
    return last


def test_score_on_a_full_disk_is_one_line_and_keeps_the_store(tmp_path, store):
    disk = tmp_path / "disk"
    py = sys.executable
    proc = _in_small_fs(
        f"cp {store} {disk}/store.duckdb && (dd if=/dev/zero of={disk}/fill bs=4k 2>/dev/null; true) && "
        f"{py} -m judge score --db {disk}/store.duckdb --judger workflow; rc=$?; "
        f"rm {disk}/fill; {py} -m judge sql 'SELECT count(*) FROM scores' --db {disk}/store.duckdb --format csv >&2; exit $rc",
        disk,
        "size=4m",
    )
    last_but_sql = [line for line in proc.stderr.splitlines() if line.startswith("judge score: error")]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(last_but_sql) == 1 and str(disk / "store.duckdb") in last_but_sql[0]
    assert "No space left on device" in last_but_sql[0] and "the disk is full" in last_but_sql[0]
    assert proc.stderr.strip().splitlines()[-1] == "0"  # the failed batch left no score behind


def _damaged_copies(store: Path, tmp_path: Path):
    """The store with one block (past the file header) overwritten, and cut at several lengths."""
    data = store.read_bytes()
    header, block = 12288, 262144
    for i, offset in enumerate(range(header, len(data), block)):
        damaged = bytearray(data)
        damaged[offset + 64 : offset + 2064] = b"\xab" * 2000
        path = tmp_path / f"overwritten-{i}.duckdb"
        path.write_bytes(bytes(damaged))
        yield path
    for cut in (header + 1000, header + block + 5000, len(data) // 2, len(data) - 4096):
        path = tmp_path / f"cut-{cut}.duckdb"
        path.write_bytes(data[:cut])
        yield path


def test_damaged_store_is_one_line_for_every_block(tmp_path, store, capsys):
    failed = 0
    for path in _damaged_copies(store, tmp_path):
        for args in (
            ["score", "--judger", "workflow"],
            ["sql", "SELECT count(*) FROM calls WHERE messages LIKE '%q%'"],
        ):
            rc = main([args[0], "--db", str(path), *args[1:]])  # never a traceback: 0 where the damage is unused
            err = [
                line for line in capsys.readouterr().err.splitlines() if line.strip() and not line.startswith("score: ")
            ]  # tqdm
            assert rc in (0, 2)
            if rc == 2:
                failed += 1
                assert len(err) == 1 and str(path) in err[0] and "truncated or corrupt" in err[0], err
    assert failed  # some damage was met mid-command, past opening the file


def test_report_into_read_only_or_full_folder_is_one_line_and_writes_nothing(tmp_path, store):
    out = tmp_path / "reportdisk"
    py = sys.executable
    # an existing folder on a file system made read-only
    proc = _in_small_fs(
        f"mkdir {out}/r && mount -o remount,ro {out} && {py} -m judge report --db {store} --out {out}/r", out, "rw"
    )
    _one_line_error(proc, f"{out}/r", "Read-only file system")
    sql = f"{py} -m judge sql 'SELECT * FROM scores' --db {store} --format csv --out {out}/s.csv"
    _one_line_error(_in_small_fs(sql, out, "ro"), f"--out {out}/s.csv", "Read-only file system")
    proc = _in_small_fs(
        f"mkdir {out}/r && {py} -m judge report --db {store} --out {out}/r; rc=$?; ls -A {out}/r >&2; exit $rc",
        out,
        "size=8k",
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    error = [line for line in proc.stderr.splitlines() if line.startswith("judge report: error")]
    assert len(error) == 1 and "No space left on device" in error[0]
    assert not [name for name in proc.stderr.splitlines()[-3:] if name.endswith(".tmp")]


@pytest.fixture
def finetune_store(tmp_path, tiny_model):
    from helpers import make_call

    trajs = [
        make_traj(
            f"t{i}",
            s,
            reward=float(s == 0),
            checkpoint=str(tiny_model),
            calls=[make_call(0, prompt=(10, 11, 12), completion=(20 + s, 21))],
        )
        for i in range(2)
        for s in range(2)
    ]
    db = tmp_path / "ft.duckdb"
    assert main(["ingest", str(write(tmp_path / "ft.jsonl", trajs)), "--db", str(db), "--no_check_template"]) == 0
    assert main(["score", "--db", str(db)]) == 0
    return db


FAST = [
    "--max_steps",
    "1",
    "--per_device_train_batch_size",
    "2",
    "--gradient_checkpointing",
    "false",
    "--disable_tqdm",
    "true",
]


def test_finetune_from_a_truncated_safetensors_is_one_line(tmp_path, finetune_store, tiny_model, capsys):
    from finetune.main import main as finetune_main

    parent = tmp_path / "cut-ckpt"
    shutil.copytree(tiny_model, parent)
    weights = parent / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-5000])
    out = tmp_path / "out"
    rc = finetune_main(
        ["--db", str(finetune_store), "--output_dir", str(out), "--model_name_or_path", str(parent), *FAST]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and "model.safetensors: truncated" in err[-1] and str(parent) in err[-1]
    assert not out.exists() and not Path(f"{out}.partial").exists()


def test_finetune_into_a_read_only_folder_is_one_line(tmp_path, finetune_store):
    disk = tmp_path / "rodisk"
    proc = _in_small_fs(
        f"{sys.executable} -m finetune --db {finetune_store} --output_dir {disk}/ckpt {' '.join(FAST)}", disk, "ro"
    )
    _one_line_error(proc, f"--output_dir {disk}/ckpt", "Read-only file system")


def test_agentscope_and_agentjet_judges_calling_sys_exit_are_error_rows(tmp_path, store, capsys):
    judgers = _judger_file(
        tmp_path,
        "import sys\n"
        "from agentscope.tuner import JudgeOutput\n"
        "from astuner.task_judge.base_judge import BaseJudge\n"
        "async def quits_async(task, response):\n"
        "    if task['task_id'] == 't1':\n"
        "        sys.exit(3)\n"
        "    return JudgeOutput(reward=0.25, metrics={})\n"
        "class QuitsJudge(BaseJudge):\n"
        "    def compute_reward(self, workflow_task, workflow_output):\n"
        "        if workflow_task.task.task_id == 't2':\n"
        "            raise SystemExit('bye')\n"
        "        return 0.75, True\n",
    )
    specs = [f"{judgers}:quits_async", f"{judgers}:QuitsJudge"]
    assert main(["score", "--db", str(store), *[a for s in specs for a in ("--judger", s)]]) == 0
    got = {(r[0], r[1].rsplit(":", 1)[1]): (r[2], r[4]) for r in _scores(store)}
    assert got[("t0", "quits_async")] == (0.25, None) and got[("t2", "quits_async")] == (0.25, None)
    assert got[("t1", "quits_async")] == (None, "SystemExit: 3")
    assert got[("t0", "QuitsJudge")] == (0.75, None) and got[("t2", "QuitsJudge")] == (None, "SystemExit: bye")


def test_new_store_on_a_full_disk_is_one_line_and_leaves_no_file(tmp_path):
    traces = write(tmp_path / "traces" / "a.jsonl", [make_traj("t0", 0, reward=1.0)])
    disk = tmp_path / "disk"
    proc = _in_small_fs(
        f"(dd if=/dev/zero of={disk}/fill bs=4k 2>/dev/null; true) && "
        f"{sys.executable} -m judge ingest {traces} --db {disk}/new.duckdb --no_check_template; rc=$?; "
        f"ls -A {disk} >&2; exit $rc",
        disk,
        "size=1m",
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert lines[-1] == "fill"  # no new.duckdb, no .wal
    assert f"{disk}/new.duckdb" in lines[-2] and "the disk is full" in lines[-2]
