"""Crash-safe trace output: finished trajectories go into part files written under a temp
name, fsynced, then renamed. A reader (ours, DuckDB, pandas) never sees half a line, and a
kill -9 loses only what had not been flushed yet, which the next run re-collects."""

from __future__ import annotations

import os
import re
from pathlib import Path

from astuner.faults import crash_point
from astuner.trajectory import Trajectory, dump_line, read_trajectories


class TraceWriteError(OSError):
    """A part file could not be written (the message names it and the cause)."""


def _cause(exc: OSError) -> str:
    return f"[Errno {exc.errno}] {exc.strerror}" if exc.errno else str(exc)


class TraceWriter:
    """`name` keeps writers apart: the shards of one run write part-0of4-000001.jsonl, ... into one folder."""

    def __init__(self, traces_dir: str | os.PathLike, name: str = "part"):
        self.dir = Path(traces_dir)
        self.name = name
        self.failed: TraceWriteError | None = None  # a write failed: nothing more is written
        if self.dir.exists() and not self.dir.is_dir():
            raise ValueError(f"{self.dir}: a file, not a folder; collect writes its part files there (move it away)")
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            for leftover in self.dir.glob(f".{name}-*.tmp"):  # a write of this writer's that a kill interrupted
                leftover.unlink()
        except OSError as exc:
            raise TraceWriteError(f"cannot write in {exc.filename or self.dir}: {_cause(exc)}") from None
        # every reader takes each *.jsonl below as a part file
        for entry in self.dir.rglob("*.jsonl"):
            if not entry.is_file():
                raise ValueError(f"{entry}: a folder, not a part file; move it out of {self.dir}")
        own = re.compile(re.escape(name) + r"-(\d+)\.jsonl")
        parts = [int(m.group(1)) for p in self.dir.glob(f"{name}-*.jsonl") if (m := own.fullmatch(p.name))]
        self._next_part = max(parts, default=0) + 1
        self._buffer: list[bytes] = []

    def finished_keys(self) -> dict[tuple[str, int], str]:
        """(task_id, sample_index) -> status of every trajectory already on disk."""
        done = {}
        if any(self.dir.glob("part-*.jsonl")):
            for traj in read_trajectories(self.dir):
                done[(traj.task.task_id, traj.sample_index)] = traj.status
        return done

    def add(self, traj: Trajectory) -> None:
        self._buffer.append(dump_line(traj))

    def discard(self) -> None:
        """Drop the trajectories not flushed yet."""
        self._buffer.clear()

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def flush(self) -> Path | None:
        """Write the buffered trajectories as the next part file. A failed write (a full disk, a read-only
        folder) leaves no temp file and raises TraceWriteError naming the part; so does every flush after it."""
        if self.failed is not None:
            raise self.failed
        if not self._buffer:
            return None
        final = self.dir / f"{self.name}-{self._next_part:06d}.jsonl"
        tmp = self.dir / f".{self.name}-{self._next_part:06d}.tmp"
        try:
            with open(tmp, "wb") as fh:
                fh.write(b"".join(self._buffer))
                fh.flush()
                os.fsync(fh.fileno())
            crash_point("collect.part_written")  # the temp file is complete, not yet renamed
            os.replace(tmp, final)
        except OSError as exc:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass  # the folder itself refuses: no temp file was made there
            self.failed = TraceWriteError(
                f"cannot write {final}: {_cause(exc)}; the {len(self._buffer)} runs not written are "
                "collected again by the same command"
            )
            raise self.failed from None
        crash_point("collect.part_renamed")
        self._buffer.clear()
        self._next_part += 1
        return final
