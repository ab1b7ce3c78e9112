"""Workflows that misbehave in the ways tests/test_hardening_collect.py checks: strings UTF-8 cannot
encode, BaseExceptions, processes left running, a task edited in place. The task's query says which."""

import asyncio
import os
import subprocess
import sys
import time

from astuner import Workflow, WorkflowOutput

LONE = "\ud800"  # a lone surrogate: a Python str, but no UTF-8 for it


class CustomBase(BaseException):
    """Not an Exception: what a library's own control-flow signal may be."""


class Misbehaves(Workflow):
    name = "hardening"

    async def execute(self, task, model_tuner):
        what = task.task.main_query
        if what == "surrogate-metadata":
            return WorkflowOutput(reward=1.0, metadata={"note": f"bad {LONE} text", LONE: 1})
        if what == "surrogate-error":
            raise ValueError(f"cannot parse {LONE}")
        if what == "surrogate-message":
            await model_tuner([{"role": "user", "content": f"hello {LONE}"}])
            return WorkflowOutput(reward=1.0)
        if what == "custom-base":
            raise CustomBase("a signal of its own")
        if what == "cancelled":
            raise asyncio.CancelledError("cancelled by the workflow itself")
        if what == "orphan":  # a child that leaves its session and outlives its parent (a daemonised server)
            pid_file = task.task.metadata["pid_file"]
            code = (
                "import os, sys, time\n"
                "if os.fork(): os._exit(0)\n"
                "os.setsid()\n"
                f"open({pid_file!r}, 'w').write(str(os.getpid()))\n"
                "time.sleep(120)\n"
            )
            subprocess.Popen([sys.executable, "-c", code]).wait()
            deadline = time.monotonic() + 10
            while not os.path.exists(pid_file) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            return WorkflowOutput(reward=1.0)
        if what == "edit-task":
            seen = task.task.metadata.get("answer")
            task.task.metadata["answer"] = "edited by the run"
            task.task.metadata.setdefault("added", []).append(task.sample_index)
            return WorkflowOutput(reward=1.0, metadata={"seen": seen})
        await model_tuner([{"role": "user", "content": what}])
        return WorkflowOutput(reward=1.0)
