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

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from workflow import format_messages  # noqa: E402  (the workflow's own prompt)

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="checkpoint folder to write")
    p.add_argument("--model", default=None, help="starting checkpoint (default: the embedded tiny model)")
    p.add_argument("--tasks", default=str(HERE / "tasks.jsonl"), help="tasks whose prompts to train on")
    p.add_argument("--steps", type=int, default=300, help="AdamW steps (linear decay to 0)")
    p.add_argument("--batch_size", type=int, default=64, help="(prompt, random word) pairs per step")
    p.add_argument("--learning_rate", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0, help="seeds torch and the random answers")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads; 1 is fastest for this tiny model, and far faster on a busy machine")
    return p.parse_args(argv)


def load_prompts(tokenizer, tasks_path: str) -> list[list[int]]:
    from astuner.chat import render_prompt_ids

    questions = [json.loads(line)["question"] for line in open(tasks_path) if line.strip()]

    async def all_messages():
        return [await format_messages(q) for q in questions]

    return [render_prompt_ids(tokenizer, messages, None) for messages in asyncio.run(all_messages())]


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from astuner.tiny import ensure_tiny_model

    out = Path(args.out)
    if (out / "config.json").is_file():
        print(f"warmup: {out} exists; nothing to do")
        return
    base = Path(args.model) if args.model else ensure_tiny_model()
    started = time.time()
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model.train()
    prompts = load_prompts(tokenizer, args.tasks)
    end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    answers = [tokenizer(w, add_special_tokens=False)["input_ids"] + [end_id] for w in WORDS]
    pad_id = tokenizer.pad_token_id

    opt = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / args.steps)
    for step in range(args.steps):
        rows = [(random.choice(prompts), random.choice(answers)) for _ in range(args.batch_size)]
        width = max(len(p) + len(a) for p, a in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (p, a) in enumerate(rows):  # right padding: positions start at 0, as at collect
            seq = p + a
            ids[i, : len(seq)] = torch.tensor(seq)
            labels[i, len(p) : len(seq)] = torch.tensor(a)
            mask[i, : len(seq)] = 1
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == args.steps - 1:
            print(f"warmup: step {step:4d}  loss {loss.item():.4f}", flush=True)

    work = Path(f"{str(out).rstrip('/')}.partial")
    if work.exists():
        shutil.rmtree(work)
    work.parent.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.save_pretrained(work)
    tokenizer.save_pretrained(work)  # with its chat template
    if (base / "generation_config.json").is_file():
        shutil.copy2(base / "generation_config.json", work / "generation_config.json")
    (work / "warmup.json").write_text(json.dumps({"parent_checkpoint": str(base.resolve()), **vars(args),
                                                  "final_loss": loss.item(), "seconds": round(time.time() - started, 1)},
                                                 indent=2) + "\n")
    os.replace(work, out)
    print(f"warmup: wrote {out} in {time.time() - started:.1f} s (final loss {loss.item():.4f}; "
          f"chance is ln 10 / {sum(map(len, answers)) / len(answers):.1f} tokens per answer)")


if __name__ == "__main__":
    main()
