"""Shared by the examples' format-only warm-ups (learn_tool_use, learn_two_roles): train a
checkpoint on token sequences with a loss mask, then write it atomically as a checkpoint folder
that collect serves. The sequences come from each example's own warmup.py; they carry the
format (random arguments, random answers), never the answers.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from pathlib import Path
from typing import Callable


def train_masked(base: Path, sample: Callable[[random.Random], tuple[list[int], list[int]]], *, steps: int, batch_size: int,
                 learning_rate: float, seed: int, threads: int, log_every: int = 50):
    """AdamW with a linear decay to 0 on sequences drawn by `sample(rng) -> (ids, loss_mask)`.
    Returns (model, tokenizer, final loss). Right padding: positions start at 0, as at collect."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(base)
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
    return model, tokenizer, loss.item()


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


def seconds_since(started: float) -> float:
    return round(time.time() - started, 1)
