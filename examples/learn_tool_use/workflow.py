"""Learn to use a tool: a ReAct agent must look a code up with a tool and answer with it.

    python -m collect --workflow examples/learn_tool_use/workflow.py:LookupAgent \
        --tasks examples/learn_tool_use/tasks.jsonl --model CKPT --samples-per-task 16 --max-tokens 32 --seed 0 --out RUN/iter-0

Each task has its own secret table (key digit -> code digit, a random permutation stored in the
task row, never shown to the model). The question names a key ("Code of box 7?"); the only way
to the answer is the `code` tool: call 1 must be `code(key=7)` (the argument comes from the
question), the agent runs it, and call 2 must answer with the code the tool returned (the result
is used in a later turn). Two model calls through AgentScope's ReActAgent and
DashScopeChatFormatter; the tool is named in the system prompt, not in the template's tools block
(ToolsInSystemPrompt: the tiny model cannot look past ~330 tokens of schema).

Reward, from the final answer: 1.0 if it is the key's code; otherwise partial credit 0.5 for
either half done right (the tool called with the question's key, or the answer copied from what
the tool returned), 0.0 else. Partial credit gives iteration 0 a signal: a model that writes the
format with random digits gets both halves right only 1 time in 100.

CKPT: the warm-up checkpoint (warmup.py: the tool-call format on random arguments) or a later one.
"""

from __future__ import annotations

import json

from agentscope.agent import ReActAgent
from agentscope.formatter import DashScopeChatFormatter
from agentscope.memory import InMemoryMemory
from agentscope.message import Msg, TextBlock
from agentscope.model import ChatModelBase
from agentscope.tool import Toolkit, ToolResponse

from astuner import ModelTuner, Workflow, WorkflowOutput, WorkflowTask

# Short and constant: every prompt token is one more place for the 2-layer model's attention to
# look instead of the key; the key is the question's last token, at a fixed distance from the reply.
SYS_PROMPT = "Call the tool code(key), then reply with its result."
MAX_ITERS = 2  # call 1: the tool; call 2: the answer (a third call would be AgentScope's summary)


def make_toolkit(table: dict, log: list) -> Toolkit:
    """A toolkit with one tool, `code`, reading this task's table; each call is appended to `log`."""

    async def code(key: int) -> ToolResponse:  # "code" is one token of the tiny BPE; "lookup" is five
        """The code under a key.

        Args:
            key (int): a digit
        """
        value = table.get(str(key))
        log.append({"key": key, "code": value})
        text = str(value) if value is not None else "no such key"
        return ToolResponse(content=[TextBlock(type="text", text=text)])

    toolkit = Toolkit()
    toolkit.register_tool_function(code)
    return toolkit


class ToolsInSystemPrompt(ChatModelBase):
    """Calls `model` with tools=None: the system prompt names the tool instead of the template's
    tools block. That block is ~330 tokens of JSON schema and instructions; behind it, the
    2-layer tiny model's attention could not find the key (no learning in 120 steps, README).
    The agent's toolkit is unchanged: tool calls in the completion are parsed and run as usual."""

    def __init__(self, model):
        super().__init__(model_name=getattr(model, "model_name", "model"), stream=False)
        self.model = model

    async def __call__(self, messages, tools=None, tool_choice=None, **kwargs):
        return await self.model(messages, tools=None, tool_choice=tool_choice, **kwargs)


def make_agent(model, toolkit: Toolkit) -> ReActAgent:
    agent = ReActAgent(name="assistant", sys_prompt=SYS_PROMPT, model=ToolsInSystemPrompt(model), formatter=DashScopeChatFormatter(),
                       toolkit=toolkit, memory=InMemoryMemory(), max_iters=MAX_ITERS)
    agent.set_console_output_enabled(False)
    return agent


def score(answer: str, key: int, table: dict, lookups: list[dict]) -> float:
    """1.0 for the key's code; 0.5 for the right lookup or for answering with what the tool returned; else 0."""
    expected = str(table[str(key)])
    if answer == expected:
        return 1.0
    right_lookup = any(str(call["key"]) == str(key) for call in lookups)
    used_result = any(call["code"] is not None and answer == str(call["code"]) for call in lookups)
    return 0.5 if right_lookup or used_result else 0.0


class LookupAgent(Workflow):
    name: str = "learn_tool_use"

    async def execute(self, task: WorkflowTask, model_tuner: ModelTuner) -> WorkflowOutput:
        row = task.task.metadata
        table = row["table"] if isinstance(row["table"], dict) else json.loads(row["table"])
        lookups: list[dict] = []
        agent = make_agent(model_tuner, make_toolkit(table, lookups))
        reply = await agent.reply(Msg("user", task.task.main_query, role="user"))
        answer = (reply.get_text_content() or "").strip()
        reward = score(answer, row["key"], table, lookups)
        return WorkflowOutput(reward=reward, metadata={"final_answer": answer, "answer": str(table[str(row["key"])]),
                                                       "lookups": lookups, "tool_called": bool(lookups)})
