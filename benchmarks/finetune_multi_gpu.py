"""GPU check: finetune with N processes trains what one process trains, per shipped accelerate config.

    python benchmarks/finetune_multi_gpu.py                     # >= 2 GPUs: multi_gpu, zero2, zero3 x SFT, DPO+LoRA
    python benchmarks/finetune_multi_gpu.py --cpu               # the same checks on CPU over gloo (multi_cpu); the dry run
    python benchmarks/finetune_multi_gpu.py --configs multi_gpu --num-processes 4 --out runs/multi_gpu_check

For each config and method it runs `accelerate launch -m finetune` twice on the same store: one
process (gpu.yaml, or cpu.yaml with --cpu) with per-device batch G, and N processes with the config
and per-device batch G/N (the same global batch), both in fp32 (--mixed_precision no, --bf16
false) so that only data parallelism differs. It prints, and writes to OUT/results.md and
results.json, the largest |loss difference| over the logged steps, the largest |weight
difference|, how far training moved the weights, the manifest's world size and global batch,
and ok when both differences are below --tol (default 1e-5). zero2/zero3 need deepspeed
(`pip install -e '.[deepspeed]'`); without it they are reported as skipped. Exit 1 if any check
fails. The data is synthetic (8 tasks x 2 samples, ids within the tiny model's vocabulary) and
the model the embedded tiny one, so a run takes about a minute per launch, mostly imports.
"""

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CONFIGS = ROOT / "finetune" / "accelerate"
TRAIN = [
    "--seed",
    "0",
    "--learning_rate",
    "1e-3",
    "--max_steps",
    "6",
    "--logging_steps",
    "1",
    "--disable_tqdm",
    "true",
    "--gradient_checkpointing",
    "false",
    "--lr_scheduler_type",
    "constant",
    "--bf16",
    "false",
]
METHODS = {
    "sft": [],
    "dpo-lora": [
        "--method",
        "dpo",
        "--use_peft",
        "--lora_r",
        "4",
        "--lora_alpha",
        "8",
        "--lora_dropout",
        "0",
        "--lora_target_modules",
        "q_proj",
        "v_proj",
        "--beta",
        "0.1",
    ],
}


def make_store(tmp: Path, checkpoint: str, vocab: int) -> Path:
    """8 tasks; sample 0 (reward 1) and sample 1 (reward 0) share a prompt: 8 SFT sequences, 8 DPO pairs."""
    from astuner.trajectory import SCHEMA_VERSION, Trajectory, dump_line, trajectory_id
    from judge.main import main as judge_main

    rng = random.Random(7)
    lines = []
    for t in range(8):
        prompt = [rng.randrange(10, vocab - 10) for _ in range(rng.randrange(6, 20))]
        for sample, reward in ((0, 1.0), (1, 0.0)):
            completion = [rng.randrange(10, vocab - 10) for _ in range(rng.randrange(3, 12))]
            call = {
                "index": 0,
                "role": "default",
                "agent_name": "agent",
                "trainable": True,
                "model": "m",
                "messages": [{"role": "user", "content": "q"}],
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
            record = {
                "schema_version": SCHEMA_VERSION,
                "trajectory_id": trajectory_id("check", f"t{t}", sample),
                "run_id": "check",
                "workflow": "check",
                "workflow_ref": "check",
                "task": {"task_id": f"t{t}", "main_query": "q", "metadata": {}},
                "sample_index": sample,
                "iteration": 0,
                "checkpoint": {"path": checkpoint, "sha256": "0" * 64},
                "engine": "transformers",
                "sampling": {"temperature": 1.0, "top_p": 1.0, "max_tokens": 16, "seed": 0},
                "trainable_targets": None,
                "status": "ok",
                "reward": reward,
                "metadata": {},
                "started_at": 0.0,
                "finished_at": 1.0,
                "duration_s": 1.0,
                "calls": [call],
            }
            lines.append(dump_line(Trajectory.model_validate(record)))
    traces = tmp / "traces.jsonl"
    traces.write_bytes(b"".join(lines))
    db = tmp / "store.duckdb"
    assert judge_main(["ingest", str(traces), "--db", str(db), "--no_check_template"]) == 0
    assert judge_main(["score", "--db", str(db)]) == 0
    return db


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(cmd: list[str], log: Path, timeout: int) -> int:
    """Run in its own session; afterwards kill it and every process tagged with its environment
    marker (launcher workers lead sessions of their own)."""
    tag = f"ASTUNER_CHECK_LAUNCH={os.getpid()}-{time.time_ns()}"
    # one thread per process on CPU: MULTI_CPU gives each rank cores / ranks, so the reference gets the same
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        tag.partition("=")[0]: tag.partition("=")[2],
    }
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            rc = 124
        finally:
            for pid in [proc.pid, *tagged(tag)]:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass
    return rc


def tagged(tag: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and tag.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            pass
    return found


def compare(one: Path, many: Path, parent: str) -> dict:
    from safetensors.torch import load_file

    def losses(path):
        return [e["loss"] for e in json.loads((path / "finetune.json").read_text())["log_history"] if "loss" in e]

    def delta(a, b):
        wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
        return max((wa[k].double() - wb[k].double()).abs().max().item() for k in wa)

    la, lb = losses(one), losses(many)
    manifest = json.loads((many / "finetune.json").read_text())
    return {
        "steps": len(lb),
        "max_dloss": max(abs(a - b) for a, b in zip(la, lb)) if len(la) == len(lb) else float("inf"),
        "max_dweight": delta(one, many),
        "update": delta(Path(parent), many),
        "world_size": manifest["world_size"],
        "global_batch_size": manifest["global_batch_size"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--cpu", action="store_true", help="CPU over gloo with multi_cpu.yaml (checks the script without a GPU)"
    )
    parser.add_argument(
        "--configs",
        nargs="+",
        default=None,
        help="shipped config names (default: multi_gpu zero2 zero3; multi_cpu with --cpu)",
    )
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--num-processes", type=int, default=2, help="N; must divide the global batch")
    parser.add_argument("--global-batch", type=int, default=4)
    parser.add_argument("--tol", type=float, default=1e-5)
    parser.add_argument("--timeout-s", type=int, default=600, help="per launch")
    parser.add_argument("--out", default=None, help="folder for logs and results (default: a temp folder)")
    args = parser.parse_args()
    configs = args.configs or (["multi_cpu"] if args.cpu else ["multi_gpu", "zero2", "zero3"])
    n, batch = args.num_processes, args.global_batch
    if batch % n:
        parser.error(f"--num-processes {n} must divide --global-batch {batch}")

    import importlib.util

    import torch

    if not args.cpu and torch.cuda.device_count() < n:
        print(
            f"needs {n} GPUs, this machine has {torch.cuda.device_count()}; run with --cpu to check on CPU",
            file=sys.stderr,
        )
        return 2
    from transformers import AutoTokenizer

    from astuner.tiny import ensure_tiny_model

    out = Path(args.out or tempfile.mkdtemp(prefix="finetune-multi-gpu-"))
    out.mkdir(parents=True, exist_ok=True)
    parent = str(ensure_tiny_model())
    db = make_store(out, parent, len(AutoTokenizer.from_pretrained(parent)))
    accelerate = [sys.executable, "-m", "accelerate.commands.launch"]
    device = {
        "device": "cpu" if args.cpu else torch.cuda.get_device_name(0),
        "gpus": 0 if args.cpu else torch.cuda.device_count(),
        "torch": torch.__version__,
        "processes": n,
        "global_batch": batch,
    }
    print(json.dumps(device))
    rows = []
    for method in args.methods:
        single = out / f"{method}-1"
        flags = ["-m", "finetune", "--db", str(db), "--model_name_or_path", parent, *TRAIN, *METHODS[method]]
        ref_config = CONFIGS / ("cpu.yaml" if args.cpu else "gpu.yaml")
        started = time.time()
        rc = launch(
            [
                *accelerate,
                "--config_file",
                str(ref_config),
                "--mixed_precision",
                "no",
                *flags,
                "--output_dir",
                str(single),
                "--per_device_train_batch_size",
                str(batch),
            ],
            out / f"{method}-1.log",
            args.timeout_s,
        )
        print(f"{method}: 1 process ({ref_config.name}) exit {rc} in {time.time() - started:.0f} s")
        for config in configs:
            row = {"config": config, "method": method, "processes": n}
            if config.startswith("zero") and importlib.util.find_spec("deepspeed") is None:
                rows.append({**row, "verdict": "skipped: deepspeed not installed (pip install -e '.[deepspeed]')"})
                continue
            many = out / f"{method}-{config}-{n}"
            started = time.time()
            rc_many = launch(
                [
                    *accelerate,
                    "--config_file",
                    str(CONFIGS / f"{config}.yaml"),
                    "--num_processes",
                    str(n),
                    "--mixed_precision",
                    "no",
                    "--main_process_port",
                    str(free_port()),
                    *flags,
                    "--output_dir",
                    str(many),
                    "--per_device_train_batch_size",
                    str(batch // n),
                ],
                out / f"{method}-{config}-{n}.log",
                args.timeout_s,
            )
            row["seconds"] = round(time.time() - started, 1)
            if rc or rc_many:
                rows.append({**row, "verdict": f"FAILED: exit {rc} (1 process) / {rc_many} ({n}); see {out}/*.log"})
                continue
            row.update(compare(single, many, parent))
            good = row["max_dloss"] < args.tol and row["max_dweight"] < args.tol and row["world_size"] == n
            row["verdict"] = "ok" if good else f"FAILED: differences above --tol {args.tol}"
            rows.append(row)
            print(json.dumps(row))
    table = [
        "| config | method | processes | max abs dloss | max abs dweight | update | world size / global batch | s | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        figures = (
            f"{r['max_dloss']:.3g} | {r['max_dweight']:.3g} | {r['update']:.3g} | {r['world_size']} / {r['global_batch_size']}"
            if "max_dloss" in r
            else " | ".join([""] * 4)
        )
        table.append(
            f"| {r['config']} | {r['method']} | {r['processes']} | {figures} | {r.get('seconds', '')} | {r['verdict']} |"
        )
    (out / "results.md").write_text(json.dumps(device) + "\n\n" + "\n".join(table) + "\n")
    (out / "results.json").write_text(json.dumps({"device": device, "rows": rows}, indent=2) + "\n")
    print("\n".join(table))
    print(f"logs and results in {out}")
    return 0 if all(r["verdict"] == "ok" or r["verdict"].startswith("skipped") for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
