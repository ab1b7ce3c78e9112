"""Workflows the tests run under collect, written as a user would write them."""

import asyncio

from agentscope.message import Msg, TextBlock
from agentscope.model import ChatModelBase, ChatResponse
from pydantic import BaseModel, Field

from astuner import ModelTuner, Workflow, WorkflowOutput, WorkflowTask

system_prompt = "You are a math agent. Use python when useful and give the final answer."


class FinalResult(BaseModel):
    result: str = Field(description="The final answer.")


def extract_final_answer(result):
    return (result.metadata or {}).get("result")


class ExampleMathLearn(Workflow):
    """The reference's simple mode, verbatim."""

    name: str = "math_agent_workflow"

    async def execute(self, task: WorkflowTask, model_tuner: ModelTuner) -> WorkflowOutput:
        from agentscope.agent import ReActAgent
        from agentscope.formatter import DashScopeChatFormatter
        from agentscope.memory import InMemoryMemory
        from agentscope.tool import Toolkit, execute_python_code

        self.toolkit = Toolkit()
        self.toolkit.register_tool_function(execute_python_code)
        self.agent = ReActAgent(
            name="math_react_agent",
            sys_prompt=system_prompt,
            model=model_tuner,  # ← Key change!
            formatter=DashScopeChatFormatter(),
            toolkit=self.toolkit,
            memory=InMemoryMemory(),
        )

        query = task.task.main_query
        msg = Msg("user", query, role="user")
        result = await self.agent.reply(msg, structured_model=FinalResult)
        final_answer = extract_final_answer(result)
        return WorkflowOutput(reward=None, metadata={"final_answer": final_answer})


class CannedModel(ChatModelBase):
    """A default model for roles not being trained (stands in for an API model offline)."""

    def __init__(self, model_name: str, reply: str):
        super().__init__(model_name=model_name, stream=False)
        self.reply = reply

    async def __call__(self, messages, tools=None, tool_choice=None, **kwargs):
        return ChatResponse(content=[TextBlock(type="text", text=self.reply)])


class WerewolfLite(Workflow):
    """The reference's advanced mode: roles registered with default models, agents bound
    with get_model(role), two of three roles trainable."""

    name: str = "werewolf_lite"
    trainable_targets: list = ["werewolf", "seer"]

    async def execute(self, task: WorkflowTask, model_tuner: ModelTuner) -> WorkflowOutput:
        from agentscope.agent import ReActAgent
        from agentscope.formatter import OpenAIMultiAgentFormatter

        roles = ["werewolf", "villager", "seer"]
        players = []
        for i, role in enumerate(roles):
            default_model_for_good_guys = CannedModel("good-guys-default", "I vote for Player1.")
            default_model_for_bad_guys = CannedModel("bad-guys-default", "I vote for Player3.")
            chosen_model = default_model_for_good_guys if role != "werewolf" else default_model_for_bad_guys
            model_tuner.register_model(role, default_model=chosen_model)
            players += [
                ReActAgent(
                    name=f"Player{i + 1}",
                    sys_prompt=f"You are Player{i + 1} in a werewolf game.",
                    model=model_tuner.get_model(role),
                    formatter=OpenAIMultiAgentFormatter(),
                    max_iters=1,
                )
            ]
        for player in players:
            await player(Msg("moderator", "Day 1: who do you vote for?", "user"))
        return WorkflowOutput(reward=1.0, metadata={"players": len(players)})


class AliasWorkflow(Workflow):
    """The successor API's spelling: as_agentscope_model(agent_name, target_tag, debug_model)."""

    name: str = "alias"
    trainable_targets: list = ["solver"]

    async def execute(self, task, model_tuner):
        from agentscope.agent import ReActAgent
        from agentscope.formatter import DashScopeChatFormatter

        solver = ReActAgent(
            name="Solver",
            sys_prompt="Solve it.",
            model=model_tuner.as_agentscope_model("Solver", "solver", None),
            formatter=DashScopeChatFormatter(),
            max_iters=1,
        )
        critic = ReActAgent(
            name="Critic",
            sys_prompt="Criticise it.",
            model=model_tuner.as_agentscope_model("Critic", "critic", CannedModel("critic-default", "Looks fine.")),
            formatter=DashScopeChatFormatter(),
            max_iters=1,
        )
        await solver(Msg("user", task.task.main_query, "user"))
        await critic(Msg("user", task.task.main_query, "user"))
        return WorkflowOutput(reward=0.5)


class OneCall(Workflow):
    """One direct model call; raises on task t1, sleeps past any timeout on task t2."""

    name: str = "one_call"

    async def execute(self, task, model_tuner):
        if task.task_id == "t1":
            raise RuntimeError("boom on purpose")
        if task.task_id == "t2":
            await asyncio.sleep(3600)
        await model_tuner([{"role": "user", "content": task.task.main_query}])
        return WorkflowOutput(reward=float(task.task.metadata["answer"]))


class SlowOneCall(Workflow):
    """For kill/resume: each run takes a while."""

    name: str = "slow_one_call"

    async def execute(self, task, model_tuner):
        await model_tuner([{"role": "user", "content": task.task.main_query}])
        await asyncio.sleep(0.3)
        return WorkflowOutput(reward=1.0)


class WrongReturn(Workflow):
    name: str = "wrong_return"

    async def execute(self, task, model_tuner):
        return {"reward": 1.0}


class Quits(Workflow):
    """Calls sys.exit, as a careless tool or library might."""

    name: str = "quits"

    async def execute(self, task, model_tuner):
        import sys

        sys.exit(3)


class TunerWorkflowOutput(BaseModel):
    """agentscope.tuner.WorkflowOutput's fields (importing agentscope.tuner itself needs dspy)."""

    reward: float | None = None
    response: object | None = None
    metrics: dict[str, float] | None = None


async def tuner_style_workflow(task, model, auxiliary_models):
    """An agentscope.tuner workflow function, unchanged."""
    from agentscope.agent import ReActAgent
    from agentscope.formatter import OpenAIChatFormatter

    agent = ReActAgent(name="Friday", sys_prompt="Answer.", model=model, formatter=OpenAIChatFormatter(), max_iters=1)
    reply = await agent(Msg("user", task["question"], "user"))
    return TunerWorkflowOutput(reward=0.25, response=reply.get_text_content(), metrics={"turns": 1.0})


class Debate(Workflow):
    """Two roles on the checkpoint, only one trained: the critic is registered with no default
    model, so its calls carry token ids but trainable=false. Reward: even samples win."""

    name: str = "debate"
    trainable_targets: list = ["solver"]

    async def execute(self, task, model_tuner):
        from agentscope.agent import ReActAgent
        from agentscope.formatter import DashScopeChatFormatter

        model_tuner.register_model("solver")
        model_tuner.register_model("critic")
        solver = ReActAgent(
            name="Solver",
            sys_prompt="Solve it.",
            model=model_tuner.get_model("solver"),
            formatter=DashScopeChatFormatter(),
            max_iters=1,
        )
        critic = ReActAgent(
            name="Critic",
            sys_prompt="Criticise it.",
            model=model_tuner.get_model("critic"),
            formatter=DashScopeChatFormatter(),
            max_iters=1,
        )
        answer = await solver(Msg("user", task.task.main_query, "user"))
        review = await critic(answer)
        await solver(Msg("user", review.get_text_content() or "", "user"))
        return WorkflowOutput(reward=1.0 if task.sample_index % 2 == 0 else 0.0)
