"""Learn to answer: "Write as a word: 7" -> "seven". Reward 1.0 iff the reply is exactly the
task's number word (surrounding whitespace and case ignored), else 0.0.

One model call per run: the question as a single user message, formatted by AgentScope's
DashScopeChatFormatter and sent to `model_tuner` directly, so the tiny model sees a short
prompt (16-25 tokens, no system prompt) and its whole reply is the answer.

    python -m collect --workflow examples/learn_to_answer/workflow.py:LearnToAnswer \
        --tasks examples/learn_to_answer/tasks.jsonl --model CKPT --samples-per-task 16 --max-tokens 8 --seed 0 --out RUN/iter-0

CKPT: the warm-up checkpoint (warmup.py) or a later one; README.md runs the whole loop.
"""

from agentscope.formatter import DashScopeChatFormatter
from agentscope.message import Msg

from astuner import ModelTuner, Workflow, WorkflowOutput, WorkflowTask


def build_messages(question: str) -> list[Msg]:
    # No system prompt: every prompt token is one more place for the 2-layer model's attention
    # to look instead of the digit.
    return [Msg("user", question, role="user")]


async def format_messages(question: str) -> list[dict]:
    """The formatter messages the model is called with (warmup.py renders the same ones)."""
    return await DashScopeChatFormatter().format(build_messages(question))


def reply_text(response) -> str:
    return "".join(block.get("text", "") for block in response.content if block.get("type") == "text")


class LearnToAnswer(Workflow):
    name: str = "learn_to_answer"

    async def execute(self, task: WorkflowTask, model_tuner: ModelTuner) -> WorkflowOutput:
        messages = await format_messages(task.task.main_query)
        response = await model_tuner(messages)
        answer = reply_text(response).strip()
        expected = str(task.task.metadata["answer"])
        reward = 1.0 if answer.lower() == expected.lower() else 0.0
        return WorkflowOutput(reward=reward, metadata={"final_answer": answer})
