"""The processes a run starts (a tool's server, a shell's background job) must not outlive it.

A process group or session does not hold them: a child may call setsid (or double-fork), and once
its parent has exited it is re-parented to init, out of any tree collect can walk. So the process
that runs workflows (a worker, or collect itself with --workers 0) becomes a *child subreaper*
(Linux prctl PR_SET_CHILD_SUBREAPER): every orphan below it is re-parented to it instead of init,
and stays among its descendants. A Reaper remembers the descendants there were when it was made (a
vLLM engine's processes, the fork server) and kills, then waits for, every other one:

- in a worker, when its last run in hand ends (with several runs in one process, which run started a
  process is not known, so they are reaped once none is running), and before the worker exits;
- in collect, when the collect ends, whatever way it ends (the workers' descendants, and the orphans
  of a worker that died, which the subreaper brought to collect).

A cgroup would hold them without the subreaper, but needs a delegated cgroup tree, which an
unprivileged collect (or a container) rarely has. Not Linux: no subreaper, and only descendants
whose parent still lives are found.
"""

from __future__ import annotations

import ctypes
import os
import sys
import time
from pathlib import Path

import psutil

PR_SET_CHILD_SUBREAPER = 36
WAIT_S = 2.0  # a SIGKILLed process is gone within this long unless it is stuck in the kernel


def set_subreaper(on: bool = True) -> bool:
    """Make orphaned descendants of this process its children (Linux); whether it took effect."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


class Reaper:
    """Kills the descendants of this process that were not there when it was made."""

    def __init__(self):
        self.me = psutil.Process()
        self.kept = {_key(p) for p in self._descendants()}

    def _descendants(self) -> list[psutil.Process]:
        try:
            return self.me.children(recursive=True)
        except psutil.Error:
            return []

    def reap(self) -> int:
        """Kill every new descendant and reap those that are (or became) this process's children; how many.
        Killing a process re-parents its own orphans here, so it looks again until it finds none."""
        if not self.kept and not _has_children():
            return 0  # the common case in a worker, answered without a scan of every process
        killed: set = set()
        for _ in range(5):
            found = {_key(p): p for p in self._descendants()}
            new = {key: p for key, p in found.items() if key not in self.kept and key not in killed}
            if not new:
                break
            self._kill(list(new.values()))
            killed.update(new)
        return len(killed)

    def _kill(self, new: list[psutil.Process]) -> None:
        for process in new:
            try:
                process.kill()
            except psutil.Error:
                pass
        deadline = time.monotonic() + WAIT_S
        left = new
        while left and time.monotonic() < deadline:
            left = [p for p in left if not _gone(p, self.me.pid)]
            if left:
                time.sleep(0.01)


def _has_children() -> bool:
    """Whether this process has a child (every descendant is below one); True where the kernel does not say."""
    try:
        return any(task.joinpath("children").read_text().strip() for task in Path("/proc/self/task").iterdir())
    except OSError:
        return True


def _key(process: psutil.Process) -> tuple[int, float | None]:
    """pid and start time: a pid the kernel gives again later is another process."""
    try:
        return process.pid, process.create_time()
    except psutil.Error:
        return process.pid, None


def _gone(process: psutil.Process, me: int) -> bool:
    """Ended: reaped here if it is a child of this process (a zombie left would count against nothing but
    the process table); another's zombie is its parent's to reap."""
    try:
        if process.ppid() == me:
            return os.waitpid(process.pid, os.WNOHANG)[0] != 0
        return process.status() == psutil.STATUS_ZOMBIE
    except (psutil.Error, ChildProcessError):
        return True
