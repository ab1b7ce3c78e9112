"""Warm-up for the learn-to-answer demo: teach the tiny model the answer FORMAT, not the answers.

    HF_HUB_OFFLINE=1 python examples/learn_to_answer/warmup.py --out runs/learn/warmup

The embedded tiny model is random-init: it replies with byte soup and would never earn a
reward. This script trains it on the train tasks' exact prompt ids (rendered with
astuner.chat.render_prompt_ids over the messages the workflow sends, so they match collect
token for token), each followed by a number word drawn uniformly at random, afresh at every
step, and <|im_end|>. The model learns to reply with one number word and stop, but its reply
does not depend on the digit asked for: iteration 0 of the loop starts near chance (held-out
reward 0.08; chance is 0.1, and about 10% of replies still blend "five"/"six" into "fix"/"sive"),
and whatever it learns beyond that comes from rewards alone.

The checkpoint (weights, tokenizer + chat template, generation config) is written to
OUT.partial and renamed to OUT, so OUT is either absent or complete; `python -m collect
--model OUT` serves it. About 20 s on 2 CPU cores. Same seed, same checkpoint (bit for bit).

Then the loop (README.md has the results):

    python -m astuner iterate --recipe examples/learn_to_answer/sft.yaml --iterations 3
    python -m astuner iterate --recipe examples/learn_to_answer/dpo.yaml --iterations 3
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from warmup_lib import parse_args, prompt_then_reply, read_tasks, render_prompts, replies, warm_up  # noqa: E402
from workflow import format_messages  # noqa: E402  (the workflow's own prompt)

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def main(argv=None) -> None:
    args = parse_args(
        argv,
        doc=__doc__,
        tasks=HERE / "tasks.jsonl",
        steps=300,
        batch_size=64,
        batch_help="(prompt, random word) pairs per step",
        seed_help="seeds torch and the random answers",
    )

    def sequences(tokenizer):
        """A train prompt, then a number word, both drawn at random."""
        prompts = render_prompts(tokenizer, format_messages, [task["question"] for task in read_tasks(args.tasks)])
        answers = replies(tokenizer, WORDS)
        return lambda rng: prompt_then_reply(rng.choice(prompts), rng.choice(answers))

    def chance(tokenizer) -> str:
        answers = replies(tokenizer, WORDS)
        return f"; chance is ln 10 / {sum(map(len, answers)) / len(answers):.1f} tokens per answer"

    warm_up(args, sequences, chance)


if __name__ == "__main__":
    main()
