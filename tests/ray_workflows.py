"""A workflow for the Ray tests (tests/test_ray.py): two model calls with a pause between, so
that a run is in flight for a while and an engine killed during the pause is met by its second call."""

import asyncio

from astuner import Workflow, WorkflowOutput

PAUSE_S = 0.4


class CallPauseCall(Workflow):
    name: str = "call_pause_call"

    async def execute(self, task, model_tuner):
        await model_tuner([{"role": "user", "content": task.task.main_query}])
        await asyncio.sleep(PAUSE_S)
        await model_tuner([{"role": "user", "content": f"{task.task.main_query} Once more."}])
        return WorkflowOutput(reward=1.0)
