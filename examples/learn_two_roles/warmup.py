"""Warm-up for the speaker-listener example: both roles' reply FORMAT, not the answers.

    HF_HUB_OFFLINE=1 python examples/learn_two_roles/warmup.py --out runs/two/warmup

Trains the embedded tiny model (random init) on the training tasks' exact prompt ids of both
roles (rendered with astuner.chat.render_prompt_ids over the messages the workflow sends): a
speaker prompt followed by a number word drawn at random, a listener prompt (built on a random
number word) followed by a random digit, afresh at every step, each ended by <|im_end|>. The
model learns to reply with one number word or one digit and stop, but not which: both roles
start near chance, and what either learns beyond that comes from rewards alone.
Written to OUT.partial, then renamed. Same seed, same checkpoint.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from warmup_lib import parse_args, prompt_then_reply, read_tasks, render_prompts, replies, warm_up  # noqa: E402
from workflow import WORDS, format_messages  # noqa: E402  (the workflow's own prompts)


def main(argv=None) -> None:
    args = parse_args(
        argv,
        doc=__doc__,
        tasks=HERE / "tasks.jsonl",
        steps=300,
        batch_size=64,
        batch_help="(prompt, random reply) pairs per step",
        seed_help="seeds torch and the random replies",
    )

    def sequences(tokenizer):
        """A role drawn at random, then one of its prompts and one of its replies: every training
        question for the speaker, every listener phrasing over every number word for the listener."""
        tasks = read_tasks(args.tasks)
        prompts = {
            "speaker": render_prompts(tokenizer, format_messages, [t["question"] for t in tasks]),
            "listener": render_prompts(
                tokenizer, format_messages, sorted({t["listener_prompt"].format(word=w) for t in tasks for w in WORDS})
            ),
        }
        answers = {"speaker": replies(tokenizer, WORDS), "listener": replies(tokenizer, [str(d) for d in range(10)])}

        def sample(rng):
            role = rng.choice(("speaker", "listener"))
            return prompt_then_reply(rng.choice(prompts[role]), rng.choice(answers[role]))

        return sample

    warm_up(args, sequences)


if __name__ == "__main__":
    main()
