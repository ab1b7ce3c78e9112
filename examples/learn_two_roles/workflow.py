"""Two roles on one checkpoint, one of them trained: a speaker names a digit as a word, and a
listener turns the word it hears back into a digit.

    python -m collect --workflow examples/learn_two_roles/workflow.py:SpeakerListener \
        --tasks examples/learn_two_roles/tasks.jsonl --model CKPT --samples-per-task 8 --max-tokens 8 --seed 0 --out RUN/iter-0
    python -m collect ... --trainable-targets listener        # train the other role, no code change

Both roles are registered without a default model, so both are served by the checkpoint being
collected; only the roles in `trainable_targets` (the speaker, unless --trainable-targets says
otherwise) are recorded trainable, and finetune learns from nothing else.

Per role, a score (in the trajectory's metadata, and per call through judger.py:role_reward):
- speaker: 1.0 iff it wrote the task's digit as its word ("Write as a word: 7" -> "seven");
- listener: 1.0 iff it wrote the digit of the word it heard ("Write as a digit: seven" -> "7"); it
  hears the speaker's reply if that is a number word, else the task's word (heard_word).
The workflow reward is the mean score of the trained roles, so it depends on the trained role only.

CKPT: the warm-up checkpoint (warmup.py: both reply formats, random answers) or a later one.
"""

from __future__ import annotations

from agentscope.formatter import DashScopeChatFormatter
from agentscope.message import Msg

from astuner import ModelTuner, Workflow, WorkflowOutput, WorkflowTask

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
ROLES = ("speaker", "listener")


async def format_messages(text: str) -> list[dict]:
    """One user message, no system prompt (as in learn_to_answer: a short prompt, the key token last)."""
    return await DashScopeChatFormatter().format([Msg("user", text, role="user")])


def reply_text(response) -> str:
    return "".join(block.get("text", "") for block in response.content if block.get("type") == "text").strip()


def heard_word(digit: int, said: str) -> str:
    """What the listener hears: the speaker's reply if it is a number word, else the task's word.
    Both roles run on one set of parameters, so training the listener (replies: digits) pulls the
    untrained speaker to digits too; without this fallback the listener would then hear no word
    and score 0 whatever it learned (the first listener run did: train reward 0.000 at iteration 1)."""
    return said.lower() if said.lower() in WORDS else WORDS[digit]


def role_scores(digit: int, said: str, heard: str, heard_back: str) -> dict[str, float]:
    return {
        "speaker": 1.0 if said.lower() == WORDS[digit] else 0.0,
        "listener": 1.0 if heard_back == str(WORDS.index(heard)) else 0.0,
    }


class SpeakerListener(Workflow):
    name: str = "learn_two_roles"
    trainable_targets: list = ["speaker"]  # --trainable-targets listener switches

    async def execute(self, task: WorkflowTask, model_tuner: ModelTuner) -> WorkflowOutput:
        row = task.task.metadata
        for role in ROLES:  # no default model: the checkpoint serves both, recorded as not trainable unless targeted
            model_tuner.register_model(role, default_model=None)
        speaker = model_tuner.as_agentscope_model(agent_name="speaker", target_tag="speaker")
        listener = model_tuner.as_agentscope_model(agent_name="listener", target_tag="listener")

        digit = int(row["digit"])
        said = reply_text(await speaker(await format_messages(task.task.main_query)))
        heard = heard_word(digit, said)
        heard_back = reply_text(await listener(await format_messages(row["listener_prompt"].format(word=heard))))

        scores = role_scores(digit, said, heard, heard_back)
        targets = [r for r in (model_tuner.trainable_targets or ROLES) if r in scores]
        reward = sum(scores[r] for r in targets) / len(targets) if targets else 0.0
        return WorkflowOutput(
            reward=reward,
            metadata={
                "said": said,
                "heard": heard,
                "heard_back": heard_back,
                "role_scores": scores,
                "trained_roles": targets,
            },
        )
