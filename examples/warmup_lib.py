"""Shared by the examples' format-only warm-ups (learn_to_answer, learn_tool_use, learn_two_roles):
the options, the training on token sequences with a loss mask, and the checkpoint folder that
collect serves, written atomically. Each example's warmup.py supplies only its sequences; they
carry the format (random arguments, random answers), never the answers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path

Sample = Callable[[random.Random], tuple[list[int], list[int]]]


def parse_args(argv, *, doc: str, tasks: Path, steps: int, batch_size: int, batch_help: str, seed_help: str):
    """The options every warm-up takes; the defaults and helps that differ come from the example."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="checkpoint folder to write")
    p.add_argument("--model", default=None, help="starting checkpoint (default: the embedded tiny model)")
    p.add_argument("--tasks", default=str(tasks), help="tasks whose prompts to train on")
    p.add_argument("--steps", type=int, default=steps, help="AdamW steps (linear decay to 0)")
    p.add_argument("--batch_size", type=int, default=batch_size, help=batch_help)
    p.add_argument("--learning_rate", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0, help=seed_help)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads; 1 is fastest for this tiny model, and far faster on a busy machine",
    )
    return p.parse_args(argv)


def read_tasks(path: str) -> list[dict]:
    return [json.loads(line) for line in open(path) if line.strip()]


def render_prompts(tokenizer, format_messages, texts: list[str]) -> list[list[int]]:
    """The prompt ids of each text as the workflow sends it (its async format_messages), token
    for token as collect renders them."""
    from astuner.chat import render_prompt_ids

    async def render():
        return [render_prompt_ids(tokenizer, await format_messages(text), None) for text in texts]

    return asyncio.run(render())


def replies(tokenizer, texts: list[str]) -> list[list[int]]:
    """Each text's ids followed by <|im_end|>, as the engine samples a reply that stops."""
    end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    return [tokenizer(text, add_special_tokens=False)["input_ids"] + [end_id] for text in texts]


def prompt_then_reply(prompt: list[int], reply: list[int]) -> tuple[list[int], list[int]]:
    """One sequence and its loss mask: the reply trained, the prompt not."""
    return prompt + reply, [0] * len(prompt) + [1] * len(reply)


def warm_up(
    args, make_sample: Callable[[object], Sample], note: Callable[[object], str] = lambda tokenizer: ""
) -> None:
    """A warm-up's main: train on `make_sample(tokenizer)`'s sequences from --model (default: the
    embedded tiny model) and write --out, unless --out is already a checkpoint. `note(tokenizer)`
    ends the last line printed."""
    from transformers import AutoTokenizer

    from astuner.tiny import ensure_tiny_model

    out = Path(args.out)
    if (out / "config.json").is_file():
        print(f"warmup: {out} exists; nothing to do")
        return
    base = Path(args.model) if args.model else ensure_tiny_model()
    started = time.time()
    tokenizer = AutoTokenizer.from_pretrained(base)
    model, loss = train_masked(
        base,
        tokenizer,
        make_sample(tokenizer),
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
        threads=args.threads,
    )
    save_checkpoint(
        model, tokenizer, base, out, {**vars(args), "final_loss": loss, "seconds": round(time.time() - started, 1)}
    )
    print(f"warmup: wrote {out} in {time.time() - started:.1f} s (final loss {loss:.4f}{note(tokenizer)})")


def train_masked(
    base: Path,
    tokenizer,
    sample: Sample,
    *,
    steps: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    threads: int,
    log_every: int = 50,
):
    """AdamW with a linear decay to 0 on sequences drawn by `sample(rng) -> (ids, loss_mask)`.
    Returns (model, final loss). Right padding: positions start at 0, as at collect."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(threads)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model.train()
    pad_id = tokenizer.pad_token_id
    opt = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / steps)
    loss = None
    for step in range(steps):
        rows = [sample(rng) for _ in range(batch_size)]
        width = max(len(ids) for ids, _ in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (seq, mask) in enumerate(rows):
            ids[i, : len(seq)] = torch.tensor(seq)
            labels[i, : len(seq)] = torch.tensor([t if m else -100 for t, m in zip(seq, mask)])
            attention[i, : len(seq)] = 1
        loss = model(input_ids=ids, attention_mask=attention, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % log_every == 0 or step == steps - 1:
            print(f"warmup: step {step:4d}  loss {loss.item():.4f}", flush=True)
    model.eval()
    return model, loss.item()


def save_checkpoint(model, tokenizer, base: Path, out: Path, record: dict) -> None:
    """OUT.partial, then renamed: OUT is absent or complete. With the tokenizer (and its chat
    template), the parent's generation config, and warmup.json (the settings and final loss)."""
    work = Path(f"{str(out).rstrip('/')}.partial")
    if work.exists():
        shutil.rmtree(work)
    work.parent.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(work)
    tokenizer.save_pretrained(work)
    if (base / "generation_config.json").is_file():
        shutil.copy2(base / "generation_config.json", work / "generation_config.json")
    (work / "warmup.json").write_text(json.dumps({"parent_checkpoint": str(base.resolve()), **record}, indent=2) + "\n")
    os.replace(work, out)
