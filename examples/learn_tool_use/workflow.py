"""Learn to use a tool: a ReAct agent must look a code up with a tool and answer with it.

    python -m collect --workflow examples/learn_tool_use/workflow.py:LookupAgent \
        --tasks examples/learn_tool_use/tasks.jsonl --model CKPT --samples-per-task 16 --max-tokens 32 --seed 0 --out RUN/iter-0

The question names a key digit ("Code of box 7"); the answer is the code (a letter, CODES) that
a secret table holds under that key. The table is never shown to the model and is drawn afresh
for every run (a permutation of CODES seeded by task id and sample index, run_table), so the
only way to the answer is the `code` tool: call 1 must be `code(key=7)` (the argument comes from
the question), the agent runs it, and call 2 must answer with the letter the tool returned (the
result is used in a later turn). Two model calls through AgentScope's ReActAgent and
DashScopeChatFormatter; no system prompt and no tools block in the prompt (ToolsInSystemPrompt):
the format-only warm-up taught the call syntax.

Reward, from the final answer, in two halves: 0.5 for calling the tool with the question's key,
0.5 for answering with what the tool returned. Both = 1.0 = the right code, obtained from the
tool. A right code guessed after a wrong lookup earns nothing for the guess: with a fresh table
per run the code cannot come from anywhere else, and counting guesses as right made 9 in 10 of
the "right" episodes of the first version guesses (README).

CKPT: the warm-up checkpoint (warmup.py: the tool-call format on random arguments) or a later one.
"""

from __future__ import annotations

import random

from agentscope.agent import ReActAgent
from agentscope.formatter import DashScopeChatFormatter
from agentscope.memory import InMemoryMemory
from agentscope.message import Msg, TextBlock
from agentscope.model import ChatModelBase
from agentscope.tool import Toolkit, ToolResponse

from astuner import ModelTuner, Workflow, WorkflowOutput, WorkflowTask

# Empty: every prompt token is one more place for the 2-layer model's attention to look instead
# of the key (in learn_to_answer a system prompt cut SFT's result from 0.87 to 0.38). The key is
# the question's last token, at a fixed distance from where the call writes it.
SYS_PROMPT = ""
# Codes are letters, keys digits: at the answer the model must copy the one letter in its
# context, not pick the tool's digit out of three (the question's key and the call's key are
# digits too). Each is one token of the tiny BPE, and none appears in any prompt.
CODES = "ABDEHJKMNP"
MAX_ITERS = 2  # call 1: the tool; call 2: the answer (a third call would be AgentScope's summary)


def permuted_table(seed: str) -> dict[str, str]:
    """Key digit -> code letter: a permutation of CODES seeded by a str (the same in every process)."""
    codes = list(CODES)
    random.Random(seed).shuffle(codes)
    return {str(key): code for key, code in enumerate(codes)}


def run_table(task_id: str, sample_index: int) -> dict[str, str]:
    """This run's secret table, seeded by the task and the sample, the same for every checkpoint.
    Fresh per run so that no code can be memorised from the question; only the tool knows it."""
    return permuted_table(f"{task_id}/{sample_index}")


def shared_table(task_id: str, iteration: int, group: int) -> dict[str, str]:
    """The table of a group of samples: seeded by the task, the iteration and the group, so that
    the samples of one group that called the same key saw the same result (their answer prompts
    coincide, and DPO gets answer pairs), while every iteration draws new tables (nothing to
    memorise across rounds)."""
    return permuted_table(f"{task_id}/iter{iteration}/group{group}")


def make_toolkit(table: dict, log: list) -> Toolkit:
    """A toolkit with one tool, `code`, reading this run's table; each call is appended to `log`."""

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
    """Calls `model` with tools=None: no tools block in the prompt. That block is ~330 tokens of
    JSON schema and instructions; behind it, the 2-layer tiny model's attention could not find
    the key (no learning in 120 steps, README). The agent's toolkit is unchanged: tool calls in
    the completion are parsed and run as usual."""

    def __init__(self, model):
        super().__init__(model_name=getattr(model, "model_name", "model"), stream=False)
        self.model = model

    async def __call__(self, messages, tools=None, tool_choice=None, **kwargs):
        return await self.model(messages, tools=None, tool_choice=tool_choice, **kwargs)


def make_agent(model, toolkit: Toolkit) -> ReActAgent:
    agent = ReActAgent(
        name="assistant",
        sys_prompt=SYS_PROMPT,
        model=ToolsInSystemPrompt(model),
        formatter=DashScopeChatFormatter(),
        toolkit=toolkit,
        memory=InMemoryMemory(),
        max_iters=MAX_ITERS,
    )
    agent.set_console_output_enabled(False)
    return agent


def score(answer: str, key: int, lookups: list[dict]) -> float:
    """0.5 for a lookup of the question's key + 0.5 for an answer equal to a code the tool returned."""
    right_lookup = any(str(call["key"]) == str(key) for call in lookups)
    used_result = any(call["code"] is not None and answer == str(call["code"]) for call in lookups)
    return 0.5 * right_lookup + 0.5 * used_result


class LookupAgent(Workflow):
    name: str = "learn_tool_use"

    def table(self, task: WorkflowTask) -> dict[str, str]:
        return run_table(task.task_id, task.sample_index)

    async def execute(self, task: WorkflowTask, model_tuner: ModelTuner) -> WorkflowOutput:
        row = task.task.metadata
        table = self.table(task)
        lookups: list[dict] = []
        agent = make_agent(model_tuner, make_toolkit(table, lookups))
        reply = await agent.reply(Msg("user", task.task.main_query, role="user"))
        answer = (reply.get_text_content() or "").strip()
        reward = score(answer, row["key"], lookups)
        return WorkflowOutput(
            reward=reward,
            metadata={
                "final_answer": answer,
                "answer": table[str(row["key"])],
                "table": table,
                "lookups": lookups,
                "tool_called": bool(lookups),
            },
        )


class LookupAgentSharedTables(LookupAgent):
    """LookupAgent with one table per `table_group` consecutive samples of a task and iteration
    (shared_table) instead of one per run: for the DPO recipe, whose pairs need identical prompts.
    With a table per run two samples' answer prompts (same key, same result) coincide about 1 time
    in 10, and DPO had 5, 0, 0 answer pairs (README)."""

    table_group: int = 16

    def table(self, task: WorkflowTask) -> dict[str, str]:
        return shared_table(task.task_id, task.iteration, task.sample_index // self.table_group)
