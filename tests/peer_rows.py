"""Workflows in the reference (AgentJet/ASTuner) API for tests/test_peers.py: one that reads task
rows the way AgentJet workflows do, one that catches its failed model calls."""

from agentscope.model import ChatModelBase

from agentscope_tuner import ModelTuner, Workflow, WorkflowOutput, WorkflowTask


class CityWorkflow(Workflow):
    """Reads task.task.metadata[...] and task.task.init_messages; builds its query from metadata
    when the row has none (AgentJet gives main_query "[not defined]")."""

    name: str = "city"

    async def execute(self, task: WorkflowTask, model_tuner: ModelTuner) -> WorkflowOutput:
        metadata = task.task.metadata
        query = task.task.main_query
        if query == "[not defined]":
            query = f"Tell me about {metadata['city']}"
        await model_tuner([*task.task.init_messages, {"role": "user", "content": query}])
        system = [m["content"] for m in task.task.init_messages if m["role"] == "system"]
        return WorkflowOutput(
            metadata={"final_answer": metadata["city"], "query": query, **({"system": system[0]} if system else {})}
        )


class FlakyApi(ChatModelBase):
    """A default model whose HTTP call fails."""

    def __init__(self):
        super().__init__(model_name="flaky-api", stream=False)

    async def __call__(self, messages, tools=None, tool_choice=None, **kwargs):
        raise ConnectionError("HTTP 500 from the API")


class CatchesFailedCalls(Workflow):
    """One call that works, one past the context, one whose default model fails; it catches both
    and ends ok, as real workflows do (a ReAct loop that gives up, a game that skips a turn)."""

    name: str = "catches_failed_calls"
    trainable_targets: list = ["default"]

    async def execute(self, task, model_tuner):
        model_tuner.register_model("critic", default_model=FlakyApi())
        await model_tuner([{"role": "user", "content": task.task.main_query}])
        caught = 0
        for call in (
            lambda: model_tuner([{"role": "user", "content": "word " * 40000}]),
            lambda: model_tuner.get_model("critic")([{"role": "user", "content": "review it"}]),
        ):
            try:
                await call()
            except (ValueError, ConnectionError):
                caught += 1
        return WorkflowOutput(reward=1.0, metadata={"caught": caught})
