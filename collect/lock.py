"""One collect per --out: a lock file there, held with flock for the life of the collect.

Two collects writing one folder would both run every missing (task, sample) and write it twice.
An unsharded collect holds OUT/.collect.lock exclusively. The shards of one run (--shard K/N) share
it (a shared lock) and each holds OUT/.collect-KofN.lock exclusively: shards run side by side, while
a second copy of a shard, or an unsharded collect beside shards, is refused. A lock file holds the
pid of the collect that took it, so the refusal names it. The kernel drops a flock when its process
ends, kill -9 included, so no lock outlives its collect; the files stay (deleting a lock file while
another process opens it would let two holders in).
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

LOCK = ".collect.lock"


class OutInUse(ValueError):
    """Another collect is writing --out."""


class OutLock:
    def __init__(self, fds: list[int]):
        self._fds = fds

    def release(self) -> None:
        while self._fds:
            os.close(self._fds.pop())  # closing the descriptor drops its flock


def shard_lock_name(shard: tuple[int, int]) -> str:
    return f".collect-{shard[0]}of{shard[1]}.lock"


def lock_out(out: Path, shard: tuple[int, int] | None) -> OutLock:
    """Lock the folder `out` for this collect, or raise OutInUse naming the holder's pid."""
    held = OutLock([])
    fd = _open(out / LOCK)
    if fd is None:  # a read-only --out: nothing can be written there, so nothing can be written twice
        return held
    held._fds.append(fd)
    try:
        if not _try_lock(fd, fcntl.LOCK_SH if shard else fcntl.LOCK_EX):
            # held shared by shards (their pids are in their own files), or exclusively by one collect
            pids = ([] if shard else busy_shards(out)) or [pid for pid in [_pid_in(out / LOCK)] if pid]
            named = f" (pid {', '.join(map(str, pids))})" if pids else ""
            raise OutInUse(
                f"--out {out}: another collect{named} is writing there; "
                f"wait for it to end or use another --out{'' if shard else ' (the shards of one run, --shard K/N, share one)'}"
            )
        if shard is None:
            _write_pid(fd)
            return held
        path = out / shard_lock_name(shard)
        shard_fd = _open(path)
        if shard_fd is None:
            return held
        held._fds.append(shard_fd)
        if not _try_lock(shard_fd, fcntl.LOCK_EX):
            holder = _pid_in(path)
            raise OutInUse(
                f"--out {out}: shard {shard[0]}/{shard[1]} is being collected there already"
                f"{f' (pid {holder})' if holder else ''}; wait for it to end or run another shard"
            )
        _write_pid(shard_fd)
        return held
    except BaseException:
        held.release()
        raise


def busy_shards(out: Path) -> list[int]:
    """The pids of the shards collecting into `out` now (their lock files locked)."""
    pids = []
    for path in sorted(out.glob(".collect-*of*.lock")):
        fd = _open(path)
        if fd is None:
            continue
        try:
            if _try_lock(fd, fcntl.LOCK_SH):
                continue  # free: that shard is not running
        finally:
            os.close(fd)
        if (pid := _pid_in(path)) is not None:
            pids.append(pid)
    return pids


def _open(path: Path) -> int | None:
    """The lock file open for reading and writing; None where the folder is read-only."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return None
        raise


def _try_lock(fd: int, kind: int) -> bool:
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _write_pid(fd: int) -> None:
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass  # a full disk: the lock holds all the same, only a refusal cannot name this pid


def _pid_in(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
