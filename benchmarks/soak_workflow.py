"""The soak workflow: one cheap model call per run, with failures and timeouts injected.

    python -m collect --workflow benchmarks/soak_workflow.py:SoakWorkflow --tasks TASKS --timeout-s 5 --max-tokens 4

Every run first calls the model once through model_tuner, then meets the fate that a hash of
(task_id, sample_index) decides, so the checker knows each run's status without running it:
ERROR_RATE of the runs raise RuntimeError (status error), TIMEOUT_RATE sleep far past any
--timeout-s (status timeout: asyncio.sleep, which collect's asyncio.timeout cancels), the rest
return WorkflowOutput(reward=expected_reward(...)). An ok run's metadata holds the process's
memory when it finished (VmRSS and VmHWM from /proc/self/status, in KiB) and a per-process
completion counter, so a benchmark reads memory over time from the traces alone.

SoakWorkflow calls `await model_tuner(messages)` directly; SoakAgentWorkflow goes through an
AgentScope ReActAgent (max_iters=1), which also exercises agent, memory and formatter objects.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import resource

from astuner import ModelTuner, Workflow, WorkflowOutput, WorkflowTask

ERROR_RATE = 0.10
TIMEOUT_RATE = 0.05
ERROR_PREFIX = "soak: injected failure"
SLEEP_S = 3600.0  # far past any sensible --timeout-s

_completed = itertools.count(1)  # ok runs finished in this process


def _unit(task_id: str, sample_index: int) -> float:
    """A uniform number in [0, 1) fixed by (task_id, sample_index)."""
    digest = hashlib.sha256(f"soak\0{task_id}\0{sample_index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def expected_status(task_id: str, sample_index: int) -> str:
    """'error', 'timeout' or 'ok': what collect must record for this run."""
    u = _unit(task_id, sample_index)
    if u < ERROR_RATE:
        return "error"
    if u < ERROR_RATE + TIMEOUT_RATE:
        return "timeout"
    return "ok"


def expected_reward(task_id: str, sample_index: int) -> float:
    """The reward an ok run returns (a fixed function of the key, so a mixed-up record shows)."""
    return round(_unit(task_id, sample_index), 6)


def error_message(task_id: str, sample_index: int) -> str:
    return f"{ERROR_PREFIX} for ({task_id}, {sample_index})"


def memory_kib() -> dict[str, int | None]:
    """Current and peak resident set size of this process, in KiB (Linux: /proc; else peak only)."""
    found: dict[str, int | None] = {"rss_kib": None, "hwm_kib": None}
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    found["rss_kib"] = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    found["hwm_kib"] = int(line.split()[1])
    except OSError:
        found["hwm_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return found


def _messages(task: WorkflowTask) -> list[dict]:
    return [{"role": "user", "content": f"{task.task.main_query} (sample {task.sample_index})"}]


async def _meet_fate(task: WorkflowTask) -> WorkflowOutput:
    fate = expected_status(task.task_id, task.sample_index)
    if fate == "error":
        raise RuntimeError(error_message(task.task_id, task.sample_index))
    if fate == "timeout":
        await asyncio.sleep(SLEEP_S)  # await, never time.sleep: collect's timeout cancels this
        raise AssertionError("soak: a timeout run was not cancelled")  # reached only if --timeout-s > SLEEP_S
    return WorkflowOutput(
        reward=expected_reward(task.task_id, task.sample_index),
        metadata={"soak_completed": next(_completed), "pid": os.getpid(), **memory_kib()},
    )


class SoakWorkflow(Workflow):
    """One direct model call, then the run's injected fate."""

    name: str = "soak"

    async def execute(self, task: WorkflowTask, model_tuner: ModelTuner) -> WorkflowOutput:
        await model_tuner(_messages(task))
        return await _meet_fate(task)


class SoakAgentWorkflow(Workflow):
    """The same through a ReActAgent (one reasoning step; the tiny model may add a summary call)."""

    name: str = "soak_agent"

    async def execute(self, task: WorkflowTask, model_tuner: ModelTuner) -> WorkflowOutput:
        from agentscope.agent import ReActAgent
        from agentscope.formatter import DashScopeChatFormatter
        from agentscope.message import Msg

        agent = ReActAgent(
            name="Soak",
            sys_prompt="Answer briefly.",
            model=model_tuner,
            formatter=DashScopeChatFormatter(),
            max_iters=1,
        )
        await agent(Msg("user", _messages(task)[0]["content"], "user"))
        return await _meet_fate(task)
