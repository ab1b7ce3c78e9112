"""Finetune: rejection-sampling SFT or DPO on the trainable roles' own tokens, from the store,
into the next checkpoint folder that collect serves.

    accelerate launch -m finetune --db runs/store.duckdb --output_dir runs/iter-1/checkpoint
    accelerate launch -m finetune --method dpo --min_margin 0.5 --db runs/store.duckdb --output_dir runs/ckpt-dpo
    accelerate launch --config_file finetune/accelerate/zero2.yaml -m finetune --config recipe.yaml
    python -m finetune --db runs/store.duckdb --export runs/sft.parquet     # build and write the data only

Data: SFT takes, per task and iteration, the --top_k trajectories with reward >= --min_reward
and trains on exactly the completion tokens of their trainable calls (sft_candidates view);
DPO pairs trainable calls with identical prompt ids and a reward margin >= --min_margin
(dpo_candidates view). Both use the token ids the engine produced; nothing is re-tokenized.

Training: every field of TRL's SFTConfig or DPOConfig (per --method) and ModelConfig is a flag
or a key of --config recipe.yaml, e.g. --learning_rate, --num_train_epochs, --max_length,
--use_peft --lora_r 16 --lora_alpha 32 --lora_target_modules q_proj v_proj, --report_to wandb.
The parent checkpoint (--model_name_or_path) defaults to the one the trajectories were
collected with. The result is a full checkpoint folder (LoRA merged) with the tokenizer, its
chat template and finetune.json (parent, method, store, query, dataset hash, counts, metrics).

Accelerate configs shipped in finetune/accelerate/: cpu, multi_cpu, gpu, multi_gpu, zero2, zero3. Several processes
(torchrun --nproc_per_node N, accelerate launch --multi_gpu or multi_cpu.yaml) train data-parallel, on CPU over gloo
where no GPU is present; a launch that would not is refused before training.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from finetune.data import EmptyDatasetError, build, collected_checkpoint, export
from finetune.launch import LaunchError, check_data_parallel, check_launcher_env, has_accelerator, is_main_process, say
from finetune.options import FinetuneConfig

ACCELERATE_CONFIGS = Path(__file__).resolve().parent / "accelerate"


def _method_of(argv: list[str]) -> tuple[str, str | None, dict]:
    """--method decides which TRL config class parses the rest, so read it (flag, else recipe) first.
    Returns (method, the --config path, its recipe). Its value is checked with the others, by FinetuneConfig."""
    import argparse

    from astuner.cli import read_recipe

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--method", default=None)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    recipe = read_recipe(known.config) if known.config else {}  # read here too, so a bad file is one clear line
    method = known.method or recipe.get("method") or "sft"
    return method, known.config, recipe


def parse_args(argv: list[str]):
    """-> (FinetuneConfig, SFTConfig | DPOConfig, ModelConfig), from --config recipe.yaml and flags."""
    import warnings

    # TRL's configs still set gradient_checkpointing, which transformers 5 renames: noise to users.
    warnings.filterwarnings("ignore", category=FutureWarning, message=r"(?s).*activation_checkpointing")
    method, config, recipe = _method_of(argv)
    import torch
    from trl import DPOConfig, ModelConfig, SFTConfig, TrlParser

    from astuner.cli import one_line_errors

    parser = TrlParser(
        (FinetuneConfig, DPOConfig if method == "dpo" else SFTConfig, ModelConfig),
        prog="python -m finetune",
        description=__doc__,
        formatter_class=__import__("argparse").RawDescriptionHelpFormatter,
    )
    one_line_errors(parser, "--help-all")
    unknown = sorted(
        set(recipe) - {action.dest for action in parser._actions} - {"env"}
    )  # `env`: TrlParser's environment
    if unknown:
        raise ValueError(
            f"--config {config}: unknown option(s) {', '.join(unknown)} for --method {method}; "
            "all options: python -m finetune --help-all"
        )
    # Defaults that depend on the machine: bf16 only where a GPU has it; no tracker unless asked.
    # use_cpu where there is no accelerator: without it transformers never sets up data parallelism on CPU, so
    # torchrun or `accelerate launch --multi_gpu` would start ranks that each train alone (finetune/launch.py)
    gpu = torch.cuda.is_available()
    parser.set_defaults(
        bf16=gpu and torch.cuda.is_bf16_supported(),
        dataloader_pin_memory=gpu,
        report_to="none",
        output_dir="",
        save_strategy="no",  # "": TrainingArguments would default None to trainer_output
        use_cpu=not has_accelerator(),
    )
    try:
        args, training_args, model_args, unknown = parser.parse_args_and_config(
            args=argv, return_remaining_strings=True
        )
    except FileNotFoundError as exc:
        raise ValueError(f"--config: {exc.strerror}: {exc.filename}") from None
    if unknown:  # the recipe's keys are checked above, so these are flags
        raise ValueError(f"unrecognized arguments: {' '.join(unknown)} (all options: python -m finetune --help-all)")
    return args, training_args, model_args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("-h", "--help") and len(argv) == 1:
        configs = ", ".join(sorted(p.stem for p in ACCELERATE_CONFIGS.glob("*.yaml")))
        print(
            __doc__.strip() + f"\n(in {ACCELERATE_CONFIGS}: {configs})\n\n"
            "All options: python -m finetune --help-all (with TRL's config fields; imports torch, so it takes a few seconds)."
        )
        return 0
    if "--help-all" in argv:
        argv = [a for a in argv if a != "--help-all"] + ["--help"]
    from astuner.store import StoreError, store_failure

    output_dir = db = None
    try:
        check_launcher_env()
        args, training_args, model_args = parse_args(argv)
        output_dir, db = training_args.output_dir, args.db
        return run(args, training_args, model_args)
    except (StoreError, EmptyDatasetError, ValueError, FileNotFoundError) as exc:
        if not isinstance(exc, LaunchError) or is_main_process():  # every rank refuses a launch alike: one says so
            print(f"finetune: error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return 2
    except Exception as exc:
        damaged = store_failure(exc, db)  # the store's file damaged past its first blocks
        if damaged:
            print(f"finetune: error: {damaged}", file=sys.stderr)
            return 2
        # a full or read-only disk while training or saving (safetensors reports it as its own error type)
        if not (isinstance(exc, OSError) or type(exc).__name__ == "SafetensorError"):
            raise
        filename = getattr(exc, "filename", None)
        where = f"{filename}: " if filename else f"writing in {output_dir}.partial: " if output_dir else ""
        cause = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
        print(
            f"finetune: error: {where}{cause}; --output_dir is renamed into place only when complete: "
            "free space or pick a writable folder and run the same command again",
            file=sys.stderr,
        )
        return 2


def run(args: FinetuneConfig, training_args, model_args) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # checkpoints are local folders; never reach a hub
    from astuner.checkpoint import check_safetensors
    from astuner.engines import require_checkpoint
    from astuner.store import open_store

    if args.export is None and not training_args.output_dir:
        raise ValueError(
            "--output_dir: required to train (the checkpoint folder to write); or pass --export PATH.parquet to only build data"
        )
    output_dir = Path(training_args.output_dir) if training_args.output_dir else None
    if output_dir is not None and output_dir.exists() and any(output_dir.iterdir()):
        raise ValueError(
            f"--output_dir {output_dir}: already exists and is not empty; pick a new folder (checkpoints are never overwritten)"
        )

    if args.export is None:
        check_writable_parent(output_dir)
        check_data_parallel(training_args)  # before any data or model is loaded
    con = open_store(args.db, read_only=True)
    try:
        built = build(con, args)
        parent = model_args.model_name_or_path or collected_checkpoint(con, built.iterations)
    finally:
        con.close()
    say(built.summary())
    if args.export:
        export(built, args.export)
        say(
            f"wrote {len(built.rows)} {'sequences' if built.method == 'sft' else 'pairs'} to {args.export} "
            f"(datasets.load_dataset('parquet', data_files='{args.export}'))"
        )
        return 0
    model_args.model_name_or_path = str(require_checkpoint(parent, option="--model_name_or_path"))
    check_safetensors(model_args.model_name_or_path, "--model_name_or_path")

    from finetune.train import train

    train(args, training_args, model_args, built, output_dir)
    return 0


def check_writable_parent(output_dir: Path) -> None:
    """Refuse an --output_dir whose folder cannot be written (read-only, no permission) before any
    data or model is loaded; the probe file is removed at once."""
    import tempfile

    parent = output_dir.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{output_dir.name}.probe-", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ValueError(
            f"--output_dir {output_dir}: cannot write in {parent} ({exc.strerror}); pick a writable folder"
        ) from None
