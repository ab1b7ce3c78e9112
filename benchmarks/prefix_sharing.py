"""Prefix-shared training against per-sequence training (--prefix_sharing false), in one run, on two stores.

    python benchmarks/prefix_sharing.py                          # CPU: synthetic ReAct store + the tool-use example
    python benchmarks/prefix_sharing.py --tool-store runs/tool/sft/iter-0/store.duckdb --tool-model runs/tool/warmup
    python benchmarks/prefix_sharing.py --skip-tool --shape 0.5b --max-length 8192   # GPU

synthetic: shaped like a 10-turn ReAct agent, 8 samples per task: a system prompt with tool schemas shared by every
call, a question shared by a task's samples, each call's prompt = the earlier turns (completions and tool results)
plus a hint the next call drops, as AgentScope's formatter does; so no call extends the one before it and finetune
trains one sequence per call. SFT on every sample (top_k 8), DPO on every pair of each task's first call.

tool-use: the store of examples/learn_tool_use (collected here from its warm-up unless --tool-store is given): two
calls an episode that extend each other (merged into one sequence each), 16 samples a task; SFT as its sft.yaml.

For each: the same trainer, data, seed and batches (--sampling; sequential: the store's order, so a batch holds one
task's calls and samples), once per-sequence and once prefix-shared. Prints tokens forwarded per step, the median
wall time per step (after --warmup steps), their ratios, and the largest relative difference of the logged losses.
"""

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def react_store(tmp: Path, model: Path, tasks: int, samples: int = 8, turns: int = 10, seed: int = 0) -> Path:
    from astuner.trajectory import SCHEMA_VERSION, Trajectory, dump_line, trajectory_id
    from judge.main import main as judge_main

    rng = random.Random(seed)

    def ids(n):
        return [rng.randrange(10, 590) for _ in range(n)]

    system = ids(400)  # the system prompt and the tools' JSON schemas
    lines = []
    for t in range(tasks):
        question, first_hint = ids(40), ids(12)  # a task's samples start from one prompt (DPO pairs their first calls)
        for s in range(samples):
            history, calls = system + question, []
            for c in range(turns):
                completion = ids(rng.randrange(30, 60))  # a thought and a tool call
                prompt = history + (first_hint if c == 0 else ids(12))  # + a hint the next call's prompt drops
                calls.append(
                    {
                        "index": c,
                        "role": "agent",
                        "agent_name": "agent",
                        "trainable": True,
                        "model": "m",
                        "messages": [],
                        "tools": None,
                        "tool_choice": None,
                        "completion": {"text": "", "tool_calls": []},
                        "prompt_token_ids": prompt,
                        "completion_token_ids": completion,
                        "completion_logprobs": [-1.0] * len(completion),
                        "finish_reason": "stop",
                        "prompt_tokens": len(prompt),
                        "completion_tokens": len(completion),
                        "latency_s": 0.0,
                    }
                )
                history = history + completion + ids(rng.randrange(40, 80))  # the tool's result
            record = {
                "schema_version": SCHEMA_VERSION,
                "trajectory_id": trajectory_id("bench", f"t{t}", s),
                "run_id": "bench",
                "workflow": "bench",
                "workflow_ref": "bench",
                "task": {"task_id": f"t{t}", "main_query": "q", "metadata": {}},
                "sample_index": s,
                "iteration": 0,
                "checkpoint": {"path": str(model), "sha256": "0" * 64},
                "engine": "transformers",
                "sampling": {"temperature": 1.0, "top_p": 1.0, "max_tokens": 64, "seed": 0},
                "trainable_targets": None,
                "status": "ok",
                "reward": s / samples,
                "metadata": {},
                "started_at": 0.0,
                "finished_at": 1.0,
                "duration_s": 1.0,
                "calls": calls,
            }
            lines.append(dump_line(Trajectory.model_validate(record)))
    traces = tmp / "react.jsonl"
    traces.write_bytes(b"".join(lines))
    db = tmp / "react.duckdb"
    assert judge_main(["ingest", str(traces), "--db", str(db), "--no_check_template"]) == 0
    assert judge_main(["score", "--db", str(db)]) == 0
    return db


def tool_store(tmp: Path, model: Path | None, tasks: int) -> tuple[Path, Path]:
    """Collect the tool-use example from its warm-up (written here when no model is given), judged as sft.yaml is."""
    example = ROOT / "examples" / "learn_tool_use"
    py = [sys.executable]
    if model is None:
        model = tmp / "warmup"
        subprocess.run([*py, str(example / "warmup.py"), "--out", str(model)], check=True, cwd=ROOT)
    lines = (example / "tasks.jsonl").read_text().splitlines()[:tasks]
    (tmp / "tasks.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp / "tool-collect"
    subprocess.run(
        [*py, "-m", "collect", "--model", str(model), "--workflow", f"{example / 'workflow.py'}:LookupAgent"]
        + ["--tasks", str(tmp / "tasks.jsonl"), "--out", str(out), "--samples-per-task", "16", "--max-tokens", "32"]
        + ["--seed", "0"],
        check=True,
        cwd=ROOT,
    )
    db = tmp / "tool.duckdb"
    subprocess.run([*py, "-m", "judge", "ingest", str(out), "--db", str(db)], check=True, cwd=ROOT)
    judgers = ["--judger", "workflow", "--judger", f"{example / 'judger.py'}:call_reward"]
    subprocess.run([*py, "-m", "judge", "score", "--db", str(db), *judgers], check=True, cwd=ROOT)
    return db, model


def run(method: str, db: Path, model: Path, selection: dict, args, prefix_sharing: bool) -> dict:
    from finetune_overhead import step_timer
    from transformers import AutoTokenizer
    from transformers.trainer_callback import PrinterCallback
    from trl import DPOConfig, ModelConfig, SFTConfig

    from astuner.store import open_store
    from finetune.data import build
    from finetune.options import FinetuneConfig
    from finetune.prefix_tree import install
    from finetune.train import build_trainer, training_dataset

    con = open_store(str(db), read_only=True)
    try:
        built = build(con, FinetuneConfig(method=method, **selection))
    finally:
        con.close()
    config = (SFTConfig if method == "sft" else DPOConfig)(
        output_dir=tempfile.mkdtemp(),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=1e-4,
        lr_scheduler_type="constant",
        seed=0,
        max_length=args.max_length,
        train_sampling_strategy=args.sampling,
        gradient_checkpointing=False,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        use_cpu=args.device == "cpu",
        bf16=args.device == "cuda",
    )
    tokenizer = AutoTokenizer.from_pretrained(model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    trainer = build_trainer(
        method, config, ModelConfig(model_name_or_path=str(model)), training_dataset(built), tokenizer
    )
    count = install(trainer, prefix_sharing)
    timer = step_timer()
    trainer.add_callback(timer)
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return {
        "step_s": statistics.median(timer.times[args.warmup :]),
        "forwarded": count.totals()[0] / args.steps,
        "unshared": count.totals()[1] / args.steps,
        "losses": losses,
        "rows": len(built.rows),
    }


def compare(name: str, method: str, db: Path, model: Path, selection: dict, args) -> dict:
    per_sequence = run(method, db, model, selection, args, prefix_sharing=False)
    shared = run(method, db, model, selection, args, prefix_sharing=True)
    dloss = max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(per_sequence["losses"], shared["losses"]))
    row = {
        "store": name,
        "method": method,
        "examples": shared["rows"],
        "tokens/step per-seq": round(per_sequence["forwarded"]),
        "tokens/step shared": round(shared["forwarded"]),
        "token ratio": round(per_sequence["forwarded"] / shared["forwarded"], 2),
        "s/step per-seq": round(per_sequence["step_s"], 4),
        "s/step shared": round(shared["step_s"], 4),
        "speedup": round(per_sequence["step_s"] / shared["step_s"], 2),
        "max rel dloss": float(f"{dloss:.2g}"),
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2, help="first steps left out of the median")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=4096)
    p.add_argument("--sampling", default="sequential", choices=["sequential", "random"])
    p.add_argument("--shape", default="small", help="small (CPU) or 0.5b (Qwen2-0.5B's shape, random weights)")
    p.add_argument("--tasks", type=int, default=2, help="synthetic store: tasks (x 8 samples x 10 calls)")
    p.add_argument("--skip-tool", action="store_true", help="only the synthetic store")
    p.add_argument("--tool-store", type=Path, help="a judged store of examples/learn_tool_use (else collected here)")
    p.add_argument("--tool-model", type=Path, help="its checkpoint (default: the example's warm-up, trained here)")
    p.add_argument("--tool-tasks", type=int, default=10, help="tasks to collect (x 16 samples)")
    args = p.parse_args()
    import torch
    from finetune_overhead import make_model

    args.device = "cuda" if torch.cuda.is_available() else "cpu"
    tmp = Path(tempfile.mkdtemp(prefix="prefix-bench-"))
    started = time.time()
    model = make_model(args.shape, tmp / "model")
    react = react_store(tmp, model, args.tasks)
    rows = [
        compare("synthetic ReAct", "sft", react, model, {"top_k": 8, "min_reward": 0.0}, args),
        compare("synthetic ReAct", "dpo", react, model, {"pairing": "all"}, args),
    ]
    if not args.skip_tool:
        db, tool_model = (
            (args.tool_store, args.tool_model) if args.tool_store else tool_store(tmp, args.tool_model, args.tool_tasks)
        )
        if tool_model is None:
            from astuner.store import open_store
            from finetune.data import collected_checkpoint

            con = open_store(str(db), read_only=True)
            tool_model = Path(collected_checkpoint(con, [0]))
            con.close()
        selection = {"top_k": 16, "min_reward": 0.5, "min_call_reward": 0.5}
        rows.append(compare("tool-use example", "sft", db, tool_model, selection, args))
        rows.append(compare("tool-use example", "dpo", db, tool_model, {"pair_by": "call", "pairing": "all"}, args))
    print(
        f"\n{args.device}, shape {args.shape}, batch {args.batch_size}, {args.sampling} batches, "
        f"{args.steps} steps ({args.warmup} warm-up), {time.time() - started:.0f} s in all"
    )
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row[k]) for k in keys) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
