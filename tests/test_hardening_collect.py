"""collect under hostile runs and a hostile filesystem: strings UTF-8 cannot encode, BaseExceptions,
full or read-only output, a second collect on the same --out, processes a run leaves behind, a run that
edits its task. Each costs one run or ends collect with one line; none loses or doubles a record."""

import errno
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from helpers import load, workflow_ref

from collect.main import main

TESTS = Path(__file__).resolve().parent
WORKFLOW = f"{TESTS / 'hardening_workflows.py'}:Misbehaves"
ESCAPED = "\\ud800"  # what a lone surrogate becomes in the record: its escape, as text


def tasks_file(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def rows_of(*queries: str, **extra) -> list[dict]:
    return [{"task_id": f"t{i}", "main_query": q, **extra} for i, q in enumerate(queries)]


def collect(tmp_path, rows, *extra, out: Path | None = None, workflow: str = WORKFLOW) -> tuple[int, Path]:
    out = out or tmp_path / "out"
    tasks = tasks_file(tmp_path / "tasks.jsonl", rows)
    args = ["--workflow", workflow, "--tasks", str(tasks), "--out", str(out), "--max-tokens", "6", "--seed", "0"]
    return main([*args, *extra]), out


def one_line(err: str) -> str:
    """The one line collect ended with (its progress bar and the count of runs to go aside)."""
    lines = [
        line for line in err.splitlines() if line.startswith("collect: ") and not ("tasks x" in line or "%|" in line)
    ]
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    return lines[0]


# ----- strings UTF-8 cannot encode ---------------------------------------------------------------
@pytest.mark.parametrize("workers", ["0", "1"])
def test_lone_surrogates_in_a_run_are_escaped_in_its_record(tmp_path, capsys, workers):
    rows = rows_of("surrogate-metadata", "surrogate-error", "surrogate-message", "Say hi.")
    rc, out = collect(tmp_path, rows, "--workers", workers)
    assert rc == 0, capsys.readouterr().err
    trajs = {t.task.task_id: t for t in load(out)}
    assert len(trajs) == 4 and trajs["t3"].status == "ok"
    assert "escaped_strings" not in trajs["t3"].metadata  # clean records are written as before

    meta = trajs["t0"]
    assert meta.status == "ok" and meta.metadata["note"] == f"bad {ESCAPED} text" and meta.metadata[ESCAPED] == 1
    assert meta.metadata["escaped_strings"] == ["metadata.note", f"metadata.{ESCAPED}"]
    error = trajs["t1"]
    assert error.status == "error" and error.error == f"ValueError: cannot parse {ESCAPED}"
    assert ESCAPED in error.traceback and "error" in error.metadata["escaped_strings"]
    message = trajs["t2"]
    assert message.calls and message.calls[0].messages[0]["content"] == f"hello {ESCAPED}"
    assert "calls.0.messages.0.content" in message.metadata["escaped_strings"]
    capsys.readouterr()
    assert collect(tmp_path, rows, "--workers", workers)[0] == 0  # and a rerun has nothing left to do
    assert "4 already in" in capsys.readouterr().err and len(load(out)) == 4


def test_a_task_row_with_a_lone_surrogate_is_a_file_line_error(tmp_path, capsys):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text('{"task_id": "a", "question": "fine"}\n{"task_id": "b", "question": "x \\ud800"}\n')
    rc = main(["--workflow", WORKFLOW, "--tasks", str(tasks), "--out", str(tmp_path / "out")])
    line = one_line(capsys.readouterr().err)
    assert rc == 2 and f"{tasks}:2" in line and "question" in line and "surrogate" in line
    assert not (tmp_path / "out").exists()


# ----- BaseExceptions -----------------------------------------------------------------------------
@pytest.mark.parametrize("workers", ["0", "1"])
def test_base_exceptions_of_a_run_are_errors_at_once(tmp_path, capsys, workers):
    started = time.monotonic()
    rc, out = collect(
        tmp_path, rows_of("custom-base", "cancelled", "Say hi."), "--workers", workers, "--timeout-s", "60"
    )
    assert rc == 0, capsys.readouterr().err
    assert time.monotonic() - started < 40  # not after --timeout-s
    trajs = {t.task.task_id: t for t in load(out)}
    assert trajs["t0"].status == "error" and trajs["t0"].error == "CustomBase: a signal of its own"
    assert trajs["t1"].status == "error" and trajs["t1"].error.startswith("CancelledError")
    for t in (trajs["t0"], trajs["t1"]):
        assert "hardening_workflows.py" in t.traceback and t.duration_s < 30
    assert trajs["t2"].status == "ok"


# ----- the filesystem ---------------------------------------------------------------------------
def deny_writes(monkeypatch, folder: Path, code: int) -> None:
    """Every write under `folder` fails with `code` (EROFS: a read-only mount; chmod does not stop root)."""
    folder = str(folder)

    def under(path) -> bool:
        try:
            return os.path.abspath(os.fsdecode(path)).startswith(folder)
        except TypeError:  # a file descriptor
            return False

    def refuse(path):
        raise OSError(code, os.strerror(code), os.fsdecode(path))

    real_open, real_os_open = io.open, os.open

    def fake_open(file, mode="r", *args, **kwargs):
        if under(file) and any(c in mode for c in "wax+"):
            refuse(file)
        return real_open(file, mode, *args, **kwargs)

    def fake_os_open(path, flags, *args, **kwargs):
        if under(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            refuse(path)
        return real_os_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(io, "open", fake_open)
    monkeypatch.setattr("builtins.open", fake_open)
    monkeypatch.setattr(os, "open", fake_os_open)
    for name in ("mkdir", "link", "replace", "rename"):
        real = getattr(os, name)

        def fake(src, *args, _real=real, **kwargs):
            if under(src) or (args and isinstance(args[0], (str, os.PathLike)) and under(args[0])):
                refuse(src)
            return _real(src, *args, **kwargs)

        monkeypatch.setattr(os, name, fake)


def test_a_read_only_out_is_one_line(tmp_path, capsys, monkeypatch, tiny_model):
    out = tmp_path / "out"
    out.mkdir()
    if os.geteuid() != 0:
        out.chmod(0o500)
    else:
        deny_writes(monkeypatch, out, errno.EROFS)
    try:
        rc, _ = collect(tmp_path, rows_of("Say hi."), "--workers", "0", out=out)
    finally:
        out.chmod(0o700)
    line = one_line(capsys.readouterr().err)
    assert rc != 0 and str(out) in line
    assert ("Read-only file system" if os.geteuid() == 0 else "Permission denied") in line


@pytest.mark.parametrize("workers", ["0", "1"])
def test_a_full_disk_is_one_line_and_leaves_no_temp_file(tmp_path, capsys, monkeypatch, tiny_model, workers):
    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    rc, out = collect(tmp_path, rows_of("Say hi.", "Say ho."), "--workers", workers)
    line = one_line(capsys.readouterr().err)
    assert rc != 0 and f"cannot write {out / 'traces' / 'part-000001.jsonl'}" in line
    assert "[Errno 28] No space left on device" in line
    assert not [p for p in out.rglob("*") if p.is_file() and p.name != ".collect.lock"]  # no .tmp, no part, no run
    monkeypatch.undo()
    assert (
        collect(tmp_path, rows_of("Say hi.", "Say ho."), "--workers", workers)[0] == 0
    )  # the same command, space again
    assert len(load(out)) == 2


def test_traces_that_is_a_file_is_one_line(tmp_path, capsys, tiny_model):
    out = tmp_path / "out"
    out.mkdir()
    (out / "traces").write_text("not a folder")
    rc, _ = collect(tmp_path, rows_of("Say hi."), "--workers", "0", out=out)
    line = one_line(capsys.readouterr().err)
    assert rc == 2 and str(out / "traces") in line and "not a folder" in line


def test_a_folder_named_like_a_part_file_is_one_line(tmp_path, capsys, tiny_model):
    out = tmp_path / "out"
    (out / "traces" / "part-000001.jsonl").mkdir(parents=True)
    rc, _ = collect(tmp_path, rows_of("Say hi."), "--workers", "0", out=out)
    line = one_line(capsys.readouterr().err)
    assert rc == 2 and str(out / "traces" / "part-000001.jsonl") in line and "a folder, not a part file" in line


def test_a_truncated_checkpoint_is_one_line_and_the_fixed_command_runs(tmp_path, capsys, tiny_model):
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    weights = model / "model.safetensors"
    whole = weights.read_bytes()
    weights.write_bytes(whole[: len(whole) // 2])
    rc, out = collect(tmp_path, rows_of("Say hi."), "--workers", "0", "--model", str(model))
    line = one_line(capsys.readouterr().err)
    assert rc == 2 and str(weights) in line and "truncated" in line
    assert not (out / "collect.json").exists()  # a failed start leaves no run behind
    weights.write_bytes(whole)
    rc, out = collect(tmp_path, rows_of("Say hi."), "--workers", "0", "--model", str(model))
    assert rc == 0, capsys.readouterr().err  # the corrected command is not refused
    assert len(load(out)) == 1


# ----- one collect per --out -----------------------------------------------------------------------
def test_a_second_collect_on_the_same_out_is_refused(tmp_path, capsys, tiny_model):
    out = tmp_path / "out"
    tasks = tasks_file(tmp_path / "tasks.jsonl", [{"task_id": f"s{i}", "question": f"Say {i}."} for i in range(12)])
    args = ["--workflow", workflow_ref("SlowOneCall"), "--tasks", str(tasks), "--out", str(out), "--max-tokens", "4"]
    args += ["--seed", "0", "--workers", "0", "--concurrency", "1", "--model", str(tiny_model)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    first = subprocess.Popen([sys.executable, "-m", "collect", *args], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "collect.json").exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, first.stderr.read()
        rc = main(args)
        line = one_line(capsys.readouterr().err)
        assert rc == 2 and f"pid {first.pid}" in line and str(out) in line
    finally:
        first.wait(120)
    assert first.returncode == 0
    assert sorted(t.task.task_id for t in load(out)) == sorted(f"s{i}" for i in range(12))
    assert main(args) == 0  # the lock went with the first collect


def test_the_shards_of_one_run_share_out_and_nothing_else_does(tmp_path):
    from collect.lock import OutInUse, lock_out

    me = f"pid {os.getpid()}"  # flock locks of two opens conflict within one process too
    shards = [lock_out(tmp_path, (0, 2)), lock_out(tmp_path, (1, 2))]  # side by side
    with pytest.raises(OutInUse, match=f"shard 0/2 is being collected there already \\({me}\\)"):
        lock_out(tmp_path, (0, 2))
    with pytest.raises(OutInUse, match=f"another collect \\({me}, {os.getpid()}\\)"):
        lock_out(tmp_path, None)
    for held in shards:
        held.release()
    whole = lock_out(tmp_path, None)
    with pytest.raises(OutInUse, match=f"another collect \\({me}\\)"):
        lock_out(tmp_path, (1, 2))
    whole.release()
    lock_out(tmp_path, (1, 2)).release()


def test_a_shard_that_fails_leaves_the_run_to_the_shards_still_collecting(tmp_path):
    from collect.main import MANIFEST, _forget_run

    (tmp_path / MANIFEST).write_text("{}")
    holder = subprocess.Popen(  # shard 1/2 of the run, still collecting
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from collect.lock import lock_out; "
            "lock_out(Path(sys.argv[1]), (1, 2)); print('ready', flush=True); time.sleep(60)",
            str(tmp_path),
        ],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        _forget_run(tmp_path, created=True, out_existed=True, sharded=True)
        assert (tmp_path / MANIFEST).exists()
    finally:
        holder.kill()
        holder.wait()
    _forget_run(tmp_path, created=True, out_existed=True, sharded=True)  # no shard left: the start is undone
    assert not (tmp_path / MANIFEST).exists()


# ----- what a run leaves behind ------------------------------------------------------------------
@pytest.mark.parametrize("workers", ["0", "1"])
def test_a_runs_processes_do_not_outlive_collect(tmp_path, capsys, workers):
    pid_file = tmp_path / "orphan.pid"
    rc, out = collect(tmp_path, rows_of("orphan", pid_file=str(pid_file)), "--workers", workers)
    assert rc == 0, capsys.readouterr().err
    pid = int(pid_file.read_text())
    try:
        alive = psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        alive = False
    if alive:
        os.kill(pid, 9)
    assert not alive, f"the run's process {pid} outlived collect"
    assert load(out)[0].status == "ok"


# ----- a run's task is its own ---------------------------------------------------------------------
@pytest.mark.parametrize("workers", ["0", "1"])
def test_a_run_cannot_change_its_task(tmp_path, capsys, workers):
    rows = [{"task_id": "e", "main_query": "edit-task", "answer": 7}]
    rc, out = collect(tmp_path, rows, "--workers", workers, "--concurrency", "1", "--samples-per-task", "3")
    assert rc == 0, capsys.readouterr().err
    trajs = load(out)
    assert [t.metadata["seen"] for t in trajs] == [7, 7, 7]  # each sample saw the task as read
    assert all(t.task.metadata == rows[0] for t in trajs)  # and that is what is recorded


def test_a_task_that_cannot_be_deep_copied_is_copied_one_level_down():
    import threading

    from astuner.workflow import Task
    from collect.runner import _own_copy

    task = Task("t", "q", {"env": threading.Lock(), "answer": 7}, [{"role": "user", "content": "hi"}])
    copied = _own_copy(task)
    copied.metadata["answer"] = "edited"
    copied.init_messages.append({"role": "assistant", "content": "x"})
    assert task.metadata["answer"] == 7 and len(task.init_messages) == 1
    assert copied.metadata["env"] is task.metadata["env"]  # shared: it could not be copied
