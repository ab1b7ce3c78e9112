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

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from warmup_lib import save_checkpoint, seconds_since, train_masked  # noqa: E402
from workflow import WORDS, format_messages  # noqa: E402  (the workflow's own prompts)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="checkpoint folder to write")
    p.add_argument("--model", default=None, help="starting checkpoint (default: the embedded tiny model)")
    p.add_argument("--tasks", default=str(HERE / "tasks.jsonl"), help="tasks whose prompts to train on")
    p.add_argument("--steps", type=int, default=300, help="AdamW steps (linear decay to 0)")
    p.add_argument("--batch_size", type=int, default=64, help="(prompt, random reply) pairs per step")
    p.add_argument("--learning_rate", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0, help="seeds torch and the random replies")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads; 1 is fastest for this tiny model on a busy machine")
    return p.parse_args(argv)


def prompt_sets(tokenizer, tasks_path: str) -> tuple[list[list[int]], list[list[int]]]:
    """(speaker prompts, listener prompts): every training question, and every listener phrasing
    over every number word."""
    from astuner.chat import render_prompt_ids

    rows = [json.loads(line) for line in open(tasks_path) if line.strip()]
    speaker = [r["question"] for r in rows]
    listener = sorted({r["listener_prompt"].format(word=w) for r in rows for w in WORDS})

    async def render(texts):
        return [render_prompt_ids(tokenizer, await format_messages(t), None) for t in texts]

    return asyncio.run(render(speaker)), asyncio.run(render(listener))


def main(argv=None) -> None:
    args = parse_args(argv)
    from transformers import AutoTokenizer

    from astuner.tiny import ensure_tiny_model

    out = Path(args.out)
    if (out / "config.json").is_file():
        print(f"warmup: {out} exists; nothing to do")
        return
    base = Path(args.model) if args.model else ensure_tiny_model()
    started = time.time()
    tokenizer = AutoTokenizer.from_pretrained(base)
    speaker, listener = prompt_sets(tokenizer, args.tasks)
    end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    replies = {"speaker": [tokenizer(w, add_special_tokens=False)["input_ids"] + [end_id] for w in WORDS],
               "listener": [tokenizer(str(d), add_special_tokens=False)["input_ids"] + [end_id] for d in range(10)]}

    def sample(rng):
        role = rng.choice(("speaker", "listener"))
        prompt = rng.choice(speaker if role == "speaker" else listener)
        reply = rng.choice(replies[role])
        return prompt + reply, [0] * len(prompt) + [1] * len(reply)

    model, tokenizer, loss = train_masked(base, sample, steps=args.steps, batch_size=args.batch_size,
                                          learning_rate=args.learning_rate, seed=args.seed, threads=args.threads)
    save_checkpoint(model, tokenizer, base, out, {**vars(args), "final_loss": loss, "seconds": seconds_since(started)})
    print(f"warmup: wrote {out} in {time.time() - started:.1f} s (final loss {loss:.4f})")


if __name__ == "__main__":
    main()
