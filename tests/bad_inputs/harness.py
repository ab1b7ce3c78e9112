"""The bad-input harness: runs one case of the corpus (corpus.py) and checks what it must answer.

`run_case` runs the stage in-process through its `main([...])` (a locked store gets a second
process holding DuckDB's write lock) and checks, for every case: the exit code, no Python
traceback, exactly one output line matching the case's regex (for a failure, the last line of
stderr), and no corruption: every file given to the command is byte-identical afterwards, and a
store opens and holds the same row counts (for per-item cases, the store opens).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
ROOT = HERE.parent.parent
WORKFLOWS = DATA / "corpus_workflows.py"
JUDGERS = DATA / "corpus_judgers.py"


# ------------------------------------------------------------------ running a stage in-process


@dataclass
class Result:
    rc: int | str
    stdout: str
    stderr: str
    seconds: float = 0.0


@contextlib.contextmanager
def captured():
    """Everything the process writes to stdout and stderr, at the file descriptors too (logging
    handlers, C code), as a terminal would show it. Yields a dict filled on exit."""
    got: dict[str, str] = {}
    sys.stdout.flush()
    sys.stderr.flush()
    files = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    saved_fds = os.dup(1), os.dup(2)
    saved_streams = sys.stdout, sys.stderr
    try:
        os.dup2(files[0].fileno(), 1)
        os.dup2(files[1].fileno(), 2)
        sys.stdout = io.TextIOWrapper(
            io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="replace", write_through=True
        )
        sys.stderr = io.TextIOWrapper(
            io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="replace", write_through=True
        )
        yield got
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = saved_streams
        os.dup2(saved_fds[0], 1)
        os.dup2(saved_fds[1], 2)
        for fd in saved_fds:
            os.close(fd)
        for name, fh in zip(("stdout", "stderr"), files):
            fh.seek(0)
            got[name] = fh.read().decode("utf-8", errors="replace")
            fh.close()


def _main_of(command: str) -> tuple[Callable, list[str]]:
    if command == "collect":
        from collect.main import main

        return main, []
    if command.startswith("judge "):
        from judge.main import main

        return main, [command.split()[1]]
    if command == "finetune":
        from finetune.main import main

        return main, []
    if command == "iterate":
        from astuner.loop import main

        return main, ["iterate"]
    raise ValueError(command)


def run_stage(command: str, args: list[str]) -> Result:
    """`python -m STAGE ARGS` in this process: the exit code as the interpreter would give it."""
    import traceback

    main, head = _main_of(command)
    started = time.perf_counter()
    with captured() as got:
        try:
            rc = main([*head, *args])
        except SystemExit as exc:  # as the interpreter: a message goes to stderr with exit 1
            if exc.code is None or isinstance(exc.code, int):
                rc = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
                rc = 1
        except BaseException:  # an uncaught exception: what a user would see
            traceback.print_exc()
            rc = 1
    return Result(rc, got["stdout"], got["stderr"], time.perf_counter() - started)


# ------------------------------------------------------------------ the good inputs, built once


@dataclass
class World:
    """A small good traces folder and store: 2 tasks x 2 samples of Echo on the tiny model, ingested and scored."""

    root: Path
    model: Path
    tasks: Path
    out: Path  # collect's --out: collect.json + traces/
    db: Path


def build_world(root: Path) -> World:
    from astuner.tiny import ensure_tiny_model

    root.mkdir(parents=True, exist_ok=True)
    model = ensure_tiny_model()
    tasks = root / "tasks.jsonl"
    tasks.write_text(
        "".join(
            json.dumps({"task_id": f"t{i}", "question": f"What is {i} + {i}?", "answer": 2 * i}) + "\n"
            for i in range(2)
        )
    )
    out, db = root / "out", root / "store.duckdb"
    steps = [
        (
            "collect",
            [
                "--workflow",
                f"{WORKFLOWS}:Echo",
                "--tasks",
                str(tasks),
                "--samples-per-task",
                "2",
                "--max-tokens",
                "8",
                "--seed",
                "0",
                "--out",
                str(out),
            ],
        ),
        ("judge ingest", [str(out / "traces"), "--db", str(db)]),
        ("judge score", ["--db", str(db), "--judger", "workflow"]),
    ]
    for command, args in steps:
        result = run_stage(command, args)
        if result.rc != 0:
            raise RuntimeError(f"building the corpus's good inputs: {command} failed:\n{result.stderr[-3000:]}")
    return World(root, model, tasks, out, db)


# ------------------------------------------------------------------ a case


@dataclass
class Ctx:
    """What a case builds its input from: copies of the world's traces and store in its own folder."""

    dir: Path
    world: World
    out: Path  # a copy of the world's collect output (collect.json + traces/)
    db: Path  # a copy of the world's store
    new_out: Path  # where collect cases write (absent at the start)

    @property
    def traces(self) -> Path:
        return self.out / "traces"

    @property
    def tasks(self) -> Path:
        return self.world.tasks

    def write(self, name: str, content: str | bytes) -> Path:
        path = self.dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return path

    def checkpoint(self, name: str, drop: tuple[str, ...] = (), edit: Callable[[Path], None] | None = None) -> Path:
        """A copy of the tiny model without the files in `drop`."""
        path = self.dir / name
        shutil.copytree(self.world.model, path)
        for file in drop:
            (path / file).unlink()
        if edit:
            edit(path)
        return path

    def store(self, name: str, sql: str) -> Path:
        """A DuckDB file holding what `sql` creates."""
        import duckdb

        path = self.dir / name
        con = duckdb.connect(str(path))
        con.execute(sql)
        con.close()
        return path


@dataclass
class Case:
    id: str
    command: str  # collect | judge ingest | judge score | judge sql | finetune | iterate
    input: str  # the bad input, in words
    args: Callable[[Ctx], list[str]]  # builds the input, returns the command's arguments
    exit: int  # expected exit code: != 0, or 0 for a per-item error record
    error: str  # regex the one error line must match
    record: Callable[[Ctx], None] | None = (
        None  # per-item cases: asserts the record exists (also: what must not be written)
    )
    locked: bool = False  # another process holds DuckDB's write lock on the case's store


@dataclass
class Outcome:
    case: Case
    result: Result
    error_line: str | None
    problems: list[str] = field(default_factory=list)


def _snapshot(folder: Path) -> dict[str, object]:
    """Every file under `folder`: a store as its tables' row counts, anything else as its sha256."""
    snap: dict[str, object] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            rel = path.relative_to(folder).as_posix()
            counts = _store_counts(path) if path.suffix == ".duckdb" else None
            snap[rel] = counts if counts is not None else hashlib.sha256(path.read_bytes()).hexdigest()
    return snap


def _store_counts(path: Path) -> dict[str, int] | None:
    import duckdb

    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error:
        return None
    try:
        tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() ORDER BY 1").fetchall()]
        return {t: con.execute(f'SELECT count(*) FROM "{t}"').fetchall()[0][0] for t in tables}
    finally:
        con.close()


@contextlib.contextmanager
def _write_lock_held(db: Path):
    """A second process holding a DuckDB write connection on `db` for the duration."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); print('ready', flush=True); time.sleep(300)",
            str(db),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        if holder.stdout.readline().strip() != "ready":
            raise RuntimeError("the lock holder did not start")
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()


def run_case(case: Case, world: World, folder: Path) -> Outcome:
    folder.mkdir(parents=True, exist_ok=True)
    ctx = Ctx(folder, world, folder / "out", folder / "store.duckdb", folder / "new-out")
    shutil.copytree(world.out, ctx.out)
    shutil.copy2(world.db, ctx.db)
    args = case.args(ctx)
    before = _snapshot(folder)
    with _write_lock_held(ctx.db) if case.locked else contextlib.nullcontext():
        result = run_stage(case.command, args)
    after = _snapshot(folder)

    problems: list[str] = []
    if result.rc != case.exit:
        problems.append(f"exit {result.rc}, expected {case.exit}")
    if "Traceback" in result.stderr + result.stdout:
        problems.append("a Python traceback was printed")
    if re.search(r"^usage:", result.stderr, re.MULTILINE):
        problems.append("argparse printed its usage (the error should be one line)")
    lines = [line.strip() for line in (result.stderr + "\n" + result.stdout).splitlines()]
    matching = [line for line in lines if re.search(case.error, line)]
    error_line = matching[0] if matching else None
    if len(matching) != 1:
        problems.append(f"{len(matching)} output lines match {case.error!r}, expected 1")
    if case.exit != 0:
        last = next((line.strip() for line in reversed(result.stderr.splitlines()) if line.strip()), None)
        if error_line is not None and last != error_line:
            problems.append(f"the error is not the last line of stderr (last: {last!r})")
        error_line = last if error_line is None else error_line
        if ctx.new_out.exists() and any(ctx.new_out.rglob("part-*.jsonl")):
            problems.append(f"a failed collect wrote traces into {ctx.new_out}")
    for rel, value in before.items():
        now = after.get(rel)
        if now == value:
            continue
        if case.exit == 0 and isinstance(value, dict) and isinstance(now, dict):
            continue  # a per-item case writes its records into the store; it must still open
        how = "gone" if now is None else "store row counts differ" if isinstance(value, dict) else "bytes differ"
        problems.append(f"{rel} changed ({how})")
    if case.record is not None:
        try:
            case.record(ctx)
        except AssertionError as exc:
            problems.append(f"record: {exc}")
    return Outcome(case, result, error_line, problems)
