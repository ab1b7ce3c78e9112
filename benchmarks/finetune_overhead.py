"""Finetune's training step against plain TRL fed the same examples, in one process.

    python benchmarks/finetune_overhead.py                            # CPU: a small random Qwen2 shape
    python benchmarks/finetune_overhead.py --shape 0.5b --seq-len 1024 --batch-size 8   # GPU

Data: synthetic trajectories (a trained solver whose second call extends its first, and an
untrained critic), ingested and scored by judge, then built by finetune.data exactly as
`python -m finetune` does. finetune: finetune.train.build_trainer (pre-tokenized labels for SFT,
PretokenizedDPOTrainer for DPO). plain TRL: SFTTrainer on the same input_ids with TRL's own
completion_mask (completion_only_loss), and DPOTrainer on the same pairs decoded to text.
Same config, same example order; repeats alternate which trainer runs first. Prints the median step time of each, the ratio
(target <= 1.05), tokens/s, and MFU against a matmul rate measured in the same run
(bf16 on GPU, fp32 on CPU).
"""

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SHAPES = {  # Qwen2 configs; 0.5b is Qwen2-0.5B's
    "small": dict(
        hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2
    ),
    "0.5b": dict(
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        vocab_size=151936,
    ),
}


def make_model(shape: str, out: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from astuner.tiny import ensure_tiny_model

    tiny = ensure_tiny_model()
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    cfg = dict(
        vocab_size=max(len(tokenizer), 1024), max_position_embeddings=4096, tie_word_embeddings=True, **SHAPES[shape]
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(
        Qwen2Config(**cfg, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


WORDS = "the a of to and is in it you that he was for on are with as his they be at one have this from".split() + [
    str(i) for i in range(100)
]


def make_store(tmp: Path, tokenizer, n_tasks: int, samples: int, seq_len: int) -> Path:
    """Trajectories of random words (so plain TRL's decode + re-tokenize gives back the same
    ids and both trainers see the same tokens): solver call 2 extends call 0, critic untrained."""
    from astuner.trajectory import SCHEMA_VERSION, Trajectory, dump_line, trajectory_id
    from judge.main import main as judge_main

    rng = random.Random(0)

    def ids(n):
        out = []
        while len(out) < n:
            out += tokenizer.encode(" " + rng.choice(WORDS), add_special_tokens=False)
        return out

    lines = []
    for t in range(n_tasks):
        shared = ids(seq_len // 4)
        for s in range(samples):
            c0 = ids(seq_len // 4)
            critic = ids(16)
            c1 = ids(seq_len // 4)
            p1 = shared + c0 + ids(8) + critic + ids(8)
            calls = [
                (0, "solver", True, shared, c0),
                (1, "critic", False, shared + c0 + ids(8), critic),
                (2, "solver", True, p1, c1),
            ]
            record = {
                "schema_version": SCHEMA_VERSION,
                "trajectory_id": trajectory_id("bench", f"t{t}", s),
                "run_id": "bench",
                "workflow": "bench",
                "workflow_ref": "bench",
                "task": {"task_id": f"t{t}", "main_query": "q", "metadata": {}},
                "sample_index": s,
                "iteration": 0,
                "checkpoint": {"path": str(tmp / "model"), "sha256": "0" * 64},
                "engine": "transformers",
                "sampling": {"temperature": 1.0, "top_p": 1.0, "max_tokens": seq_len, "seed": 0},
                "trainable_targets": ["solver"],
                "status": "ok",
                "reward": float(s % 2 == 0),
                "metadata": {},
                "started_at": 0.0,
                "finished_at": 1.0,
                "duration_s": 1.0,
                "calls": [
                    {
                        "index": i,
                        "role": role,
                        "agent_name": role,
                        "trainable": tr,
                        "model": "m",
                        "messages": [],
                        "tools": None,
                        "tool_choice": None,
                        "completion": {"text": "", "tool_calls": []},
                        "prompt_token_ids": p,
                        "completion_token_ids": c,
                        "completion_logprobs": [-1.0] * len(c),
                        "finish_reason": "stop",
                        "prompt_tokens": len(p),
                        "completion_tokens": len(c),
                        "latency_s": 0.0,
                    }
                    for i, role, tr, p, c in calls
                ],
            }
            lines.append(dump_line(Trajectory.model_validate(record)))
    traces = tmp / "traces.jsonl"
    traces.write_bytes(b"".join(lines))
    db = tmp / "store.duckdb"
    assert judge_main(["ingest", str(traces), "--db", str(db), "--no_check_template"]) == 0
    assert judge_main(["score", "--db", str(db)]) == 0
    return db


def step_timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times, self.tokens, self._t = [], [], None

        def on_step_begin(self, args, state, control, **kw):
            self._sync()
            self._t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self._sync()
            self.times.append(time.perf_counter() - self._t)

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "num_tokens" in logs:
                self.tokens.append(float(logs["num_tokens"]))

        @staticmethod
        def _sync():
            import torch

            if torch.cuda.is_available():
                torch.cuda.synchronize()

    return StepTimer()


def run_trainer(trainer, warmup: int) -> dict:
    from transformers.trainer_callback import PrinterCallback

    timer = step_timer()
    trainer.add_callback(timer)
    trainer.remove_callback(PrinterCallback)  # one table at the end instead of a dict per step
    trainer.train()
    steady = timer.times[warmup:]
    tokens = [b - a for a, b in zip(timer.tokens, timer.tokens[1:])][warmup:] or [0.0]
    return {"step_s": statistics.median(steady), "tokens_per_step": statistics.median(tokens)}


def matmul_rate(device: str) -> float:
    import torch

    n, dtype = (8192, torch.bfloat16) if device == "cuda" else (1024, torch.float32)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    reps = 20 if device == "cuda" else 5
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - start)


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=list(SHAPES), default="small")
    parser.add_argument("--method", choices=["sft", "dpo", "both"], default="both")
    parser.add_argument("--seq-len", type=int, default=512, help="about the length of one merged solver sequence")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging
    from trl import DPOConfig, DPOTrainer, ModelConfig, SFTConfig, SFTTrainer

    from astuner.store import open_store
    from finetune.data import build
    from finetune.options import FinetuneConfig
    from finetune.train import build_trainer, training_dataset

    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*pin_memory.*")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tmp = Path(tempfile.mkdtemp(prefix="astuner-ft-bench-"))
    model = make_model(args.shape, tmp / "model")
    tokenizer = AutoTokenizer.from_pretrained(model)
    n_params = sum(
        p.numel() for p in __import__("transformers").AutoModelForCausalLM.from_pretrained(model).parameters()
    )
    n_rows = args.batch_size * (args.steps + 1)
    db = make_store(tmp, tokenizer, n_tasks=n_rows, samples=2, seq_len=args.seq_len)
    peak = matmul_rate(device)
    print(
        f"model: Qwen2 shape {args.shape}, {n_params / 1e6:.1f}M params, {device}; measured matmul "
        f"{'bf16' if device == 'cuda' else 'fp32'} {peak / 1e12:.2f} TFLOP/s"
    )

    common = dict(
        per_device_train_batch_size=args.batch_size,
        max_steps=args.steps,
        learning_rate=1e-5,
        logging_steps=1,
        gradient_checkpointing=False,
        bf16=device == "cuda",
        report_to="none",
        save_strategy="no",
        seed=0,
        disable_tqdm=True,
        dataloader_pin_memory=device == "cuda",
        max_length=4 * args.seq_len,
    )
    model_args = ModelConfig(model_name_or_path=str(model), dtype="float32")
    results = []
    for method in ["sft", "dpo"] if args.method == "both" else [args.method]:
        con = open_store(db, read_only=True)
        data = build(con, FinetuneConfig(method=method, min_reward=1.0, top_k=1))
        con.close()
        print(data.summary())
        config_cls = SFTConfig if method == "sft" else DPOConfig

        def ours(method=method, config_cls=config_cls, data=data):
            return build_trainer(
                method,
                config_cls(output_dir=str(tmp / "ours"), **common),
                model_args,
                training_dataset(data),
                tokenizer,
            )

        def plain(method=method, config_cls=config_cls, data=data):
            cfg = config_cls(output_dir=str(tmp / "plain"), **common, model_init_kwargs={"dtype": "float32"})
            if method == "sft":
                ds = Dataset.from_list(
                    [{"input_ids": r["input_ids"], "completion_mask": r["completion_mask"]} for r in data.rows]
                )
                cfg.completion_only_loss = True
                return SFTTrainer(model=str(model), args=cfg, train_dataset=ds, processing_class=tokenizer)
            dec = lambda ids: tokenizer.decode(ids, skip_special_tokens=False)  # noqa: E731
            ds = Dataset.from_list(
                [
                    {"prompt": dec(r["prompt_ids"]), "chosen": dec(r["chosen_ids"]), "rejected": dec(r["rejected_ids"])}
                    for r in data.rows
                ]
            )
            return DPOTrainer(model=str(model), args=cfg, train_dataset=ds, processing_class=tokenizer)

        runs = {"finetune": [], "plain TRL": []}
        for repeat in range(args.repeats):
            order = [("finetune", ours), ("plain TRL", plain)]
            for name, make in order if repeat % 2 == 0 else order[::-1]:  # alternate who runs first
                runs[name].append(run_trainer(make(), args.warmup))
        step = {k: statistics.median(r["step_s"] for r in v) for k, v in runs.items()}
        tokens = {k: statistics.median(r["tokens_per_step"] for r in v) for k, v in runs.items()}
        for name in runs:
            tok_s = tokens[name] / step[name]
            # MFU: 6 FLOPs per parameter per token (forward + backward); DPO adds a reference forward (2 more)
            flops = (6 if method == "sft" else 8) * n_params * tok_s
            results.append((method, name, step[name], tok_s, flops / peak, tokens[name]))
        results.append((method, "ratio finetune/plain", step["finetune"] / step["plain TRL"], None, None, None))

    print(f"\n{'method':6}  {'trainer':22}  {'step s (median)':>15}  {'tokens/step':>11}  {'tokens/s':>10}  {'MFU':>6}")
    for method, name, step_s, tok_s, mfu, per_step in results:
        if tok_s is None:
            print(f"{method:6}  {name:22}  {step_s:15.3f}  (target <= 1.05)")
        else:
            print(f"{method:6}  {name:22}  {step_s:15.4f}  {per_step:11.0f}  {tok_s:10.0f}  {mfu:6.1%}")
    print(json.dumps({"shape": args.shape, "device": device, "results": results}))


if __name__ == "__main__":
    main()
