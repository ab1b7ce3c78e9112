"""Workflows of the bad-input corpus (tests/bad_inputs): one good, cheap one for the fixture
store and traces, and the ones whose runs must be recorded as errors."""

from agentscope.model import ChatModelBase, ChatResponse
from agentscope.message import TextBlock

from astuner import Workflow, WorkflowOutput


class Echo(Workflow):
    """One model call; sample 0 earns 1.0, the others 0.0 (so SFT and DPO both find data)."""

    name: str = "echo"

    async def execute(self, task, model_tuner):
        await model_tuner([{"role": "user", "content": task.task.main_query}])
        return WorkflowOutput(reward=1.0 if task.sample_index == 0 else 0.0, metadata={"final_answer": "4"})


class Canned(ChatModelBase):
    def __init__(self, reply: str):
        super().__init__(model_name="canned", stream=False)
        self.reply = reply

    async def __call__(self, messages, tools=None, tool_choice=None, **kwargs):
        return ChatResponse(content=[TextBlock(type="text", text=self.reply)])


class Village(Workflow):
    """Advanced mode: registers hunter, seer and villager; only the seer speaks through the engine."""

    name: str = "village"
    trainable_targets: list = ["seer"]

    async def execute(self, task, model_tuner):
        for role in ("hunter", "seer", "villager"):
            model_tuner.register_model(role, default_model=Canned(f"I am the {role}."))
        await model_tuner.get_model("seer")([{"role": "user", "content": task.task.main_query}])
        await model_tuner.get_model("hunter")([{"role": "user", "content": task.task.main_query}])
        return WorkflowOutput(reward=1.0)


class ReturnsDict(Workflow):
    name: str = "returns_dict"

    async def execute(self, task, model_tuner):
        return {"reward": 1.0}


class NanReward(Workflow):
    name: str = "nan_reward"

    async def execute(self, task, model_tuner):
        return WorkflowOutput(reward=float("nan"))


class Raises(Workflow):
    name: str = "raises"

    async def execute(self, task, model_tuner):
        raise RuntimeError("the workflow failed on purpose")


class NotAWorkflow:
    """A class, but not a Workflow subclass."""


def sync_function(task, model, auxiliary_models):
    """Not async: not an agentscope.tuner workflow function either."""
