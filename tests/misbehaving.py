"""Workflows whose code misbehaves after one model call, as real agent code does: a blocking
sleep, a busy loop, a native abort, a leak. The task's query says which; any other query answers."""

import asyncio
import os
import signal
import time

from astuner import Workflow, WorkflowOutput

COMPUTE_S = 0.003  # "compute": Python work before the model call, longer than the engine's 2 ms batching window
HOLD_S = 60  # far past any --timeout-s the tests give: a run that is not stopped holds collect this long


class Misbehaves(Workflow):
    name = "misbehaves"

    async def execute(self, task, model_tuner):
        from agentscope.agent import ReActAgent
        from agentscope.formatter import DashScopeChatFormatter
        from agentscope.message import Msg

        if task.task.main_query == "compute":  # well-behaved: an environment step's synchronous work, then the call
            end = time.perf_counter() + COMPUTE_S
            while time.perf_counter() < end:
                pass
        agent = ReActAgent(
            name="Worker", sys_prompt="Answer.", model=model_tuner, formatter=DashScopeChatFormatter(), max_iters=1
        )
        await agent(Msg("user", task.task.main_query, "user"))
        what = task.task.main_query
        if what == "sleep":
            time.sleep(HOLD_S)  # a synchronous tool or client: the event loop cannot run
        elif what == "spin":
            end = time.monotonic() + HOLD_S
            while time.monotonic() < end:  # CPU-bound Python
                pass
        elif what == "abort":
            os.abort()  # a native crash (SIGABRT), as a segfaulting extension would
        elif what == "segfault":  # a crashing extension
            import ctypes

            ctypes.string_at(0)
        elif what == "killed":  # the OOM killer's SIGKILL
            os.kill(os.getpid(), signal.SIGKILL)
        elif what == "swallow":  # code that takes the timeout's cancellation for an interrupt and carries on
            try:
                await asyncio.sleep(HOLD_S)
            except asyncio.CancelledError:
                pass
        elif what == "leak":
            hoard = b"x" * (300 * 2**20)  # written, so resident
            await asyncio.sleep(HOLD_S)
            return WorkflowOutput(reward=float(len(hoard) > 0))
        await asyncio.sleep(0.2)  # the good runs overlap in their worker
        return WorkflowOutput(reward=1.0)
