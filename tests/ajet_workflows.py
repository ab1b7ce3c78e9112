"""Workflows and judges written the way AgentJet's (ASTuner's) public tutorials write them:
`from ajet import ...` or the older `astuner.*` paths, pydantic `Field` attributes, the OpenAI SDK
through `tuner.as_raw_openai_sdk_client()` / `as_oai_baseurl_apikey()`, `tuner.config`, and
BaseJudge.compute_reward. Each runs under collect / judge as it is."""

import json
import re

from agentscope.message import Msg, TextBlock
from agentscope.model import ChatModelBase, ChatResponse
from pydantic import Field

from ajet import AjetTuner, Workflow, WorkflowOutput, WorkflowTask
from ajet.workflow import WorkflowOutput as AjetWorkflowOutput
from astuner import ModelTuner
from astuner.task_judge.base_judge import BaseJudge


class ScriptedModel(ChatModelBase):
    """A default model for roles that are not trained (AgentJet's debug_model)."""

    def __init__(self, model_name: str, reply: str):
        super().__init__(model_name=model_name, stream=False)
        self.reply = reply

    async def __call__(self, messages, tools=None, tool_choice=None, **kwargs):
        return ChatResponse(content=[TextBlock(type="text", text=self.reply)])


class PydanticWerewolves(Workflow):
    """ASTuner-era advanced mode with a pydantic Field and register_model's return value."""

    name: str = Field(default="pydantic_werewolves", description="Name of the workflow.")
    trainable_targets: list[str] | None = Field(default=["werewolf"], description="List of agents to be fine-tuned.")

    async def execute(self, workflow_task: WorkflowTask, model_tuner: ModelTuner) -> WorkflowOutput:
        from agentscope.agent import ReActAgent
        from agentscope.formatter import OpenAIMultiAgentFormatter

        assert self.trainable_targets is not None, "this workflow needs explicit trainable_targets"
        players = []
        for i, role in enumerate(["werewolf", "villager"]):
            model = model_tuner.register_model(
                role, default_model=ScriptedModel(f"{role}-default", "I vote for Player1.")
            )
            players.append(
                ReActAgent(
                    name=f"Player{i + 1}",
                    sys_prompt=f"You are Player{i + 1}.",
                    model=model,
                    formatter=OpenAIMultiAgentFormatter(),
                    max_iters=1,
                )
            )
        for player in players:
            await player(Msg("moderator", "Who do you vote for?", "user"))
        is_success = "werewolf" in self.trainable_targets
        return WorkflowOutput(
            reward=1.0 if is_success else 0.0,
            is_success=is_success,
            log_metrics={"players": len(players)},
            metadata={"seen_targets": self.trainable_targets},
        )


class EveryRoleByEmptyList(Workflow):
    """trainable_targets = []: AgentJet trains every target."""

    name: str = "every_role"
    trainable_targets: list = []

    async def execute(self, workflow_task: WorkflowTask, tuner: AjetTuner) -> WorkflowOutput:
        msgs = [{"role": "user", "content": workflow_task.task.main_query}]
        for role in ("solver", "critic"):
            model = tuner.as_agentscope_model(
                f"{role}-agent", role, debug_model=ScriptedModel(f"{role}-default", "fine")
            )
            await model(msgs)
        return WorkflowOutput(reward=0.0)


PYTHON_TOOL = {
    "type": "function",
    "function": {
        "name": "execute_python_code",
        "description": "Run Python code and return what it prints.",
        "parameters": {"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]},
    },
}


class MathOpenAISDK(Workflow):
    """AgentJet's OpenAI-SDK math agent: no AgentScope, the model only through the SDK client."""

    name: str = "math_agent_oai_sdk"
    system_prompt: str = "You solve math problems. Put the final answer within \\boxed{}."
    available_functions: list = [PYTHON_TOOL]

    async def execute(self, workflow_task: WorkflowTask, tuner: AjetTuner) -> WorkflowOutput:
        client = tuner.as_raw_openai_sdk_client()
        messages = [
            {"role": "system", "content": self.system_prompt},
            {"role": "user", "content": workflow_task.task.main_query},
        ]
        first = await client.chat.completions.create(messages=messages, tools=self.available_functions)
        reply = first.choices[0].message
        # A tool turn as the SDK sends it back (arguments as JSON text, a `tool` result): the
        # tiny model seldom calls tools, so the history is written out whatever it said.
        call_id = reply.tool_calls[0].id if reply.tool_calls else "call_0"
        messages.append(
            {
                "role": "assistant",
                "content": reply.content or "",
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": "execute_python_code", "arguments": json.dumps({"code": "print(2)"})},
                    }
                ],
            }
        )
        messages.append(
            {
                "role": "tool",
                "tool_call_id": call_id,
                "name": "execute_python_code",
                "content": json.dumps({"stdout": "2"}),
            }
        )
        final = await client.chat.completions.create(messages=messages)
        return WorkflowOutput(
            reward=None,
            metadata={
                "final_answer": final.choices[0].message.content,
                "finish_reasons": [first.choices[0].finish_reason, final.choices[0].finish_reason],
                "usage": [first.usage.prompt_tokens, final.usage.prompt_tokens],
                "base_url": str(client.base_url),
            },
        )


class MathAgentScopeUrlKey(Workflow):
    """AgentJet's math agent on AgentScope's own OpenAIChatModel, pointed at as_oai_baseurl_apikey()."""

    name: str = "math_agentscope_urlkey"

    async def execute(self, workflow_task: WorkflowTask, tuner: AjetTuner) -> WorkflowOutput:
        from agentscope.agent import ReActAgent
        from agentscope.formatter import OpenAIChatFormatter
        from agentscope.memory import InMemoryMemory
        from agentscope.model import OpenAIChatModel

        url_and_apikey = tuner.as_oai_baseurl_apikey()
        model = OpenAIChatModel(
            model_name="whatever",
            client_args={"base_url": url_and_apikey.base_url},
            api_key=url_and_apikey.api_key,
            stream=False,
        )
        agent = ReActAgent(
            name="math_react_agent",
            sys_prompt="Solve it.",
            model=model,
            formatter=OpenAIChatFormatter(),
            memory=InMemoryMemory(),
            max_iters=1,
        )
        result = await agent.reply(Msg("user", workflow_task.task.main_query, role="user"))
        return AjetWorkflowOutput(reward=None, metadata={"final_answer": result.get_text_content()})


class EndlessOpenAISDK(Workflow):
    """Calls the endpoint forever: only --timeout-s ends it."""

    name: str = "endless"

    async def execute(self, workflow_task: WorkflowTask, tuner: AjetTuner) -> WorkflowOutput:
        client = tuner.as_raw_openai_sdk_client()
        while True:
            await client.chat.completions.create(messages=[{"role": "user", "content": "again"}])


class FrozenLakeSteps(Workflow):
    """AgentJet's FrozenLake reads its step limit and its own section from tuner.config."""

    name: str = "frozenlake_steps"

    async def execute(self, workflow_task: WorkflowTask, tuner: AjetTuner) -> WorkflowOutput:
        config = tuner.config
        self.agent_max_steps = config.ajet.rollout.multi_turn.max_steps
        model = tuner.as_agentscope_model()
        steps = 0
        for _ in range(self.agent_max_steps):
            steps += 1
            await model([{"role": "user", "content": f"step {steps}: Up, Down, Left or Right?"}])
        return WorkflowOutput(
            reward=0.0,
            metadata={
                "step_count": steps,
                "is_slippery": getattr(config, "frozen_lake", {}).get("is_slippery"),
                "old_name_steps": config.astuner.rollout.multi_turn.max_steps,
            },
        )


class MathAnswerAsJudge(BaseJudge):
    """AgentJet's math judge: (raw_reward, is_success) from the boxed answer."""

    def __init__(self, config):
        self.config = config

    def compute_reward(self, workflow_task: WorkflowTask, workflow_output: WorkflowOutput) -> tuple:
        final_answer = workflow_output.metadata["final_answer"] or ""
        reference_answer = str(workflow_task.task.metadata["answer"]).split("####")[-1].strip()
        match = re.search(r"\\boxed\{([^}]*)\}", final_answer)
        is_success = bool(match) and match.group(1) == reference_answer
        # the judge gets the same config tree as workflows
        assert self.config.ajet.rollout.multi_turn.max_steps >= 1
        return (1.0 if is_success else 0.0), is_success


class MathSyncClient(Workflow):
    """A synchronous OpenAI client on as_oai_baseurl_apikey(): it holds collect's event loop."""

    name: str = "math_sync_client"

    async def execute(self, workflow_task: WorkflowTask, tuner: AjetTuner) -> WorkflowOutput:
        from openai import OpenAI

        access = tuner.as_oai_baseurl_apikey()
        client = OpenAI(base_url=access.base_url, api_key=access.api_key, max_retries=0)
        reply = client.chat.completions.create(model="whatever", messages=[{"role": "user", "content": "hi"}])
        return WorkflowOutput(reward=None, metadata={"final_answer": reply.choices[0].message.content})
