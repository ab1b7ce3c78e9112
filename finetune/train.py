"""TRL training on pre-built token ids, then an atomic checkpoint folder with a manifest.

The trainer works in OUTPUT_DIR.partial (TRL's output_dir: logs, checkpoint-N); the merged
model, tokenizer and finetune.json are written into OUTPUT_DIR.partial/final, which is renamed
to OUTPUT_DIR last, so OUTPUT_DIR is either absent or complete. A run killed midway and started
again with the same data resumes from the last checkpoint-N (if save_strategy wrote one).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

from transformers import TrainerCallback
from trl import DPOTrainer, SFTTrainer, get_peft_config

from astuner.faults import crash_point
from finetune.data import DPO_COLUMNS, BuiltDataset, to_dataset
from finetune.launch import all_ranks, check_wrapped, clear_work, is_main_process, output_lock, say
from finetune.options import MANIFEST, FinetuneConfig
from finetune.prefix_tree import TokenCount, install

MANIFEST_VERSION = 1


class PretokenizedDPOTrainer(DPOTrainer):
    """DPOTrainer on prompt_ids/chosen_ids/rejected_ids as given. TRL 1.16's DPO preparation
    always re-renders and re-tokenizes text columns; the ids here are what the engine sampled."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if args.max_length is not None and args.truncation_mode == "keep_start":
            # as TRL does: a prompt that alone fills max_length leaves no completion token to learn from
            dataset = dataset.filter(lambda ex: len(ex["prompt_ids"]) < args.max_length)
        return dataset


def training_dataset(built: BuiltDataset):
    """Only the columns TRL consumes. SFT gets `labels` (-100 off the loss mask), used as is."""
    dataset = to_dataset(built)
    if built.method == "sft":
        dataset = dataset.map(
            lambda ex: {"labels": [t if m else -100 for t, m in zip(ex["input_ids"], ex["completion_mask"])]},
            desc="Masking non-trained tokens",
        )
        return dataset.select_columns(["input_ids", "labels"])
    return dataset.select_columns(["prompt_ids", "chosen_ids", "rejected_ids"])


def check_vocabulary(built: BuiltDataset, tokenizer, model_path: str) -> None:
    """Token ids from another tokenizer would train silently wrong; refuse them."""
    columns = ("input_ids",) if built.method == "sft" else DPO_COLUMNS
    largest = max((max(row[c]) for row in built.rows for c in columns if row[c]), default=-1)
    if largest >= len(tokenizer):
        raise ValueError(
            f"--model_name_or_path {model_path}: the store holds token id {largest}, outside this tokenizer's "
            f"{len(tokenizer)} tokens; train from the checkpoint the trajectories were collected with"
        )


def length_report(built: BuiltDataset, max_length: int | None) -> str | None:
    """What TRL's --max_length will cut, said before training rather than discovered after."""
    if max_length is None:
        return None
    if built.method == "sft":
        lengths = [len(r["input_ids"]) for r in built.rows]
        dropped = sum(1 for r in built.rows if r["completion_mask"].index(1) >= max_length)
    else:
        lengths = [len(r["prompt_ids"]) + max(len(r["chosen_ids"]), len(r["rejected_ids"])) for r in built.rows]
        dropped = sum(1 for r in built.rows if len(r["prompt_ids"]) >= max_length)
    truncated = sum(1 for n in lengths if n > max_length) - dropped
    if not (dropped or truncated):
        return None
    return (
        f"--max_length {max_length}: of {len(lengths)} examples, {dropped} have no trained token within it and are dropped, "
        f"{truncated} are cut short (longest: {max(lengths)} tokens); raise --max_length to keep them"
    )


def _resume_point(work: Path, dataset_sha: str, requested):
    """The last complete checkpoint-N of an unfinished run on the same data, else None (stale work is cleared).
    Complete = has trainer_state.json, which the Trainer writes last; a kill mid-save leaves a folder without it.
    Rank 0 decides (and clears) for every rank; the run's lock files in `work` stay."""
    if requested:
        return requested
    resume = None
    if is_main_process():
        marker = work / "dataset.sha256"
        same = marker.is_file() and marker.read_text().strip() == dataset_sha
        done = sorted(
            (int(p.name.rpartition("-")[2]), p)
            for p in work.glob("checkpoint-*")
            if p.name.rpartition("-")[2].isdigit() and (p / "trainer_state.json").is_file()
        )
        if same and done:
            say(f"resuming the unfinished run in {work} from {done[-1][1].name}")
            resume = str(done[-1][1])
        else:
            clear_work(work)
            marker.write_text(dataset_sha + "\n")
    return all_ranks(resume)[0]  # also a barrier: no rank starts while rank 0 clears


class LaunchChecks(TrainerCallback):
    """Before the first step, the model the Trainer steps is wrapped for data parallelism (the
    wrapping happens inside train(), after on_train_begin). After each checkpoint-N, complete on
    every rank, the crash point of the kill-and-resume tests."""

    def __init__(self, trainer, world_size: int):
        self.trainer, self.world_size, self.checked = trainer, world_size, False

    def on_step_begin(self, args, state, control, **kwargs):
        if not self.checked:
            check_wrapped(self.trainer.model_wrapped, self.world_size)
            self.checked = True

    def on_save(self, args, state, control, **kwargs):
        if (
            self.world_size > 1
        ):  # every rank's part of checkpoint-N (its rng state; rank 0's weights and state) is on disk
            self.trainer.accelerator.wait_for_everyone()
        crash_point("finetune.checkpoint")


def whole_run_metrics(metrics: dict, log_history: list[dict], resumed_from: int, global_step: int) -> dict:
    """The Trainer's metrics of this train() call, with train_loss over the whole run: after a
    resume, the losses logged before the checkpoint (from its log history) weighted by their steps,
    plus this call's. Without a resume it is the Trainer's own train_loss."""
    weighted, counted, previous = 0.0, 0, 0
    for entry in log_history:
        if "loss" in entry and entry.get("step", 0) <= resumed_from:
            weighted += entry["loss"] * (entry["step"] - previous)
            counted += entry["step"] - previous
            previous = entry["step"]
    out = dict(metrics)
    if "train_loss" in metrics:
        this_call = global_step - resumed_from
        out["train_loss"] = (weighted + metrics["train_loss"] * this_call) / max(counted + this_call, 1)
    return {**out, "train_steps": global_step, "resumed_from_step": resumed_from}


def build_trainer(method: str, training_args, model_args, dataset, tokenizer):
    """The TRL trainer for `method`, the model loaded by TRL from model_args (as TRL's scripts do)."""
    model_init_kwargs = {
        "dtype": model_args.dtype,
        "attn_implementation": model_args.attn_implementation,
        "revision": model_args.model_revision,
    }
    training_args.model_init_kwargs = {
        k: v for k, v in {**model_init_kwargs, **(training_args.model_init_kwargs or {})}.items() if v is not None
    }
    trainer_cls = SFTTrainer if method == "sft" else PretokenizedDPOTrainer
    return trainer_cls(
        model=model_args.model_name_or_path,
        args=training_args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )


def train(args: FinetuneConfig, training_args, model_args, built: BuiltDataset, output_dir: Path) -> Path:
    from transformers import AutoTokenizer

    parent = model_args.model_name_or_path
    tokenizer = AutoTokenizer.from_pretrained(parent)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    check_vocabulary(built, tokenizer, parent)
    work = Path(f"{str(output_dir).rstrip('/')}.partial")
    world_size = training_args.world_size  # main checked it: one data-parallel group of the launched size
    with output_lock(work, output_dir, world_size):
        dataset_sha = built.sha256()
        resume = _resume_point(work, dataset_sha, training_args.resume_from_checkpoint)
        _train(args, training_args, model_args, built, tokenizer, dataset_sha, output_dir, work, resume, world_size)
    return output_dir


def _train(
    args: FinetuneConfig,
    training_args,
    model_args,
    built: BuiltDataset,
    tokenizer,
    dataset_sha: str,
    output_dir: Path,
    work: Path,
    resume: str | None,
    world_size: int,
) -> None:
    from transformers.utils import logging as hf_logging

    parent = model_args.model_name_or_path
    training_args.output_dir = str(work)
    if not is_main_process():
        hf_logging.set_verbosity_error()

    note = length_report(built, training_args.max_length)
    if note:
        say(f"warning: {note}")
    started = time.time()
    trainer = build_trainer(built.method, training_args, model_args, training_dataset(built), tokenizer)
    trainer.add_callback(LaunchChecks(trainer, world_size))
    count = install(trainer, args.prefix_sharing)
    n_train = len(trainer.train_dataset)
    if n_train == 0:
        raise ValueError(
            f"--max_length {training_args.max_length}: every example's prompt fills it, so no token is left to "
            "train on; raise --max_length"
        )
    # read before training: save_total_limit may rotate the checkpoint away
    state_file = Path(str(resume)) / "trainer_state.json"
    resumed_from = json.loads(state_file.read_text())["global_step"] if resume and state_file.is_file() else 0
    result = trainer.train(resume_from_checkpoint=resume)
    metrics = whole_run_metrics(result.metrics, trainer.state.log_history, resumed_from, trainer.state.global_step)
    forwarded, unshared = all_ranks_tokens(trainer, count)
    trained = work / "trained"
    trainer.save_model(str(trained))  # every rank: ZeRO-3 gathers the weights here
    crash_point("finetune.saved")
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():
        final = work / "final"
        if final.exists():
            shutil.rmtree(final)
        _write_full_checkpoint(trained, final, parent, bool(model_args.use_peft), model_args.dtype, tokenizer)
        manifest = {
            "manifest_version": MANIFEST_VERSION,
            "created_at": time.time(),
            "parent_checkpoint": str(Path(parent).resolve()),
            "method": built.method,
            "peft": bool(model_args.use_peft),
            "store": str(Path(args.db).resolve()),
            "iterations": built.iterations,
            "query": built.query,
            "query_params": built.params,
            "selection": {
                k: getattr(args, k)
                for k in ("top_k", "min_reward", "min_margin", "pairing", "pair_by", "min_call_reward", "roles")
            },
            "dataset_sha256": dataset_sha,
            "counts": {**built.counts, "train_examples": n_train},
            "world_size": trainer.accelerator.num_processes,
            "per_device_train_batch_size": training_args.per_device_train_batch_size,
            "gradient_accumulation_steps": training_args.gradient_accumulation_steps,
            "global_batch_size": (
                training_args.per_device_train_batch_size
                * training_args.gradient_accumulation_steps
                * trainer.accelerator.num_processes
            ),
            "metrics": metrics,
            "prefix_sharing": args.prefix_sharing,
            # the training forwards of this train() call, every rank: the tokens run through the model, and what
            # one row per sequence would have run (equal without prefix sharing)
            "tokens_forwarded": forwarded,
            "tokens_unshared": unshared,
            "log_history": trainer.state.log_history,
            "train_seconds": round(time.time() - started, 3),
            "command": " ".join(sys.argv),
            "training_args": json.loads(training_args.to_json_string()),
            "model_args": {k: v for k, v in vars(model_args).items() if not k.startswith("_")},
        }
        (final / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
        crash_point("finetune.complete")  # the checkpoint is whole, under its temp name
        os.replace(final, output_dir)
        crash_point("finetune.renamed")
        shutil.rmtree(work, ignore_errors=True)
        loss = metrics.get("train_loss")
        say(
            f"trained {built.method} on {n_train} examples in {result.metrics.get('train_runtime', 0):.1f} s"
            + (f", train_loss {loss:.4f}" if loss is not None else "")
            + f"; tokens forwarded {forwarded} of {unshared} unshared ({unshared / max(forwarded, 1):.2f}x, "
            + ("prefix sharing)" if args.prefix_sharing else "--prefix_sharing false)")
            + f"; wrote {output_dir}"
        )
        say(f"next: python -m collect --model {output_dir} ...")
    trainer.accelerator.wait_for_everyone()
    if hasattr(trainer, "end"):
        trainer.end()


def all_ranks_tokens(trainer, count: TokenCount) -> tuple[int, int]:
    """(tokens forwarded, tokens in the sequences), summed over the ranks."""
    import torch

    mine = torch.tensor(count.totals(), dtype=torch.long, device=trainer.accelerator.device)
    total = trainer.accelerator.gather(mine).view(-1, 2).sum(dim=0)
    return int(total[0]), int(total[1])


def _write_full_checkpoint(trained: Path, final: Path, parent: str, peft: bool, dtype, tokenizer) -> None:
    """A folder both collect engines load as is: merged weights, tokenizer with its chat
    template, and the parent's generation config (its stop tokens)."""
    if peft:
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        base = AutoModelForCausalLM.from_pretrained(
            parent, dtype=getattr(torch, dtype) if dtype not in (None, "auto") else "auto"
        )
        merged = PeftModel.from_pretrained(base, str(trained)).merge_and_unload()
        merged.save_pretrained(str(final))
    else:
        shutil.copytree(trained, final, ignore=shutil.ignore_patterns("training_args.bin"))
    tokenizer.save_pretrained(str(final))
    if (Path(parent) / "generation_config.json").is_file():
        shutil.copy2(Path(parent) / "generation_config.json", final / "generation_config.json")
