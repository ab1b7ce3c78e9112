"""Collect's scaling with worker processes, on workflows with a fixed amount of synchronous work.

    python benchmarks/collect_workers.py                     # 1, 2, ... every core
    python benchmarks/collect_workers.py --runs 96 --calls 4 --sleep-ms 10 --cpu-ms 20

Each run makes --calls model calls through ModelTuner, and after each one does --sleep-ms of
time.sleep and --cpu-ms of pure-Python CPU work: the synchronous tools, environment steps and
parsing of real agents, which hold the event loop of the process they run in. The engine answers
at once (8 fixed tokens, rendered prompts and all), so what is measured is collect itself.
For --workers 0 (every run in collect's one event loop, as before worker processes) and for
1, 2, ... N workers it prints runs/s and model calls/s, and each against the ideal: N times
the 1-worker rate, measured in the same run.
"""

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from astuner import Workflow, WorkflowOutput  # noqa: E402
from astuner.engines import Engine, Generation  # noqa: E402

WORK = {"calls": 4, "sleep_ms": 10.0, "cpu_ms": 20.0}  # read by the workflow in every process: from the environment


class SyncWork(Workflow):
    name = "sync_work"

    async def execute(self, task, model_tuner):
        calls, sleep_s, cpu_s = (
            int(os.environ["BENCH_CALLS"]),
            float(os.environ["BENCH_SLEEP_MS"]) / 1e3,
            float(os.environ["BENCH_CPU_MS"]) / 1e3,
        )
        messages = [{"role": "user", "content": task.task.main_query}]
        for _ in range(calls):
            reply = await model_tuner(messages)
            messages.append({"role": "assistant", "content": reply.content[0]["text"] if reply.content else ""})
            messages.append({"role": "user", "content": "Go on."})
            time.sleep(sleep_s)  # a synchronous tool or client
            end = time.perf_counter() + cpu_s
            while time.perf_counter() < end:  # CPU-bound Python: parsing, an environment step
                pass
        return WorkflowOutput(reward=1.0)


class InstantEngine(Engine):
    """Answers every request at once with the same 8 tokens."""

    name = "instant"

    def __init__(self, checkpoint: str):
        from transformers import AutoTokenizer

        self.checkpoint, self.tokenizer = checkpoint, AutoTokenizer.from_pretrained(checkpoint)
        self.answer = self.tokenizer.encode("The answer is forty two, done.")[:8]

    async def generate(self, prompt_token_ids, sampling):
        return Generation(
            list(prompt_token_ids),
            list(self.answer),
            [-0.5] * len(self.answer),
            self.tokenizer.decode(self.answer, skip_special_tokens=True),
            "stop",
        )

    def generate_batch(self, prompts, sampling):
        raise NotImplementedError


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["AGENTSCOPE_DISABLE_CONSOLE_OUTPUT"] = "true"
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--calls", type=int, default=WORK["calls"])
    parser.add_argument("--sleep-ms", type=float, default=WORK["sleep_ms"])
    parser.add_argument("--cpu-ms", type=float, default=WORK["cpu_ms"])
    parser.add_argument(
        "--workers", default=None, help="comma-separated counts (default: 0,1,2,4,... up to every core)"
    )
    args = parser.parse_args()
    os.environ.update(BENCH_CALLS=str(args.calls), BENCH_SLEEP_MS=str(args.sleep_ms), BENCH_CPU_MS=str(args.cpu_ms))

    from astuner.tiny import ensure_tiny_model
    from astuner.trajectory import Checkpoint, Sampling
    from astuner.workflow import Task
    from collect.pool import default_workers, run_collect_pool
    from collect.runner import RunSpec, run_collect
    from collect.writer import TraceWriter

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    counts = (
        [int(w) for w in args.workers.split(",")]
        if args.workers
        else [0, 1] + [n for n in (2, 4, 8, 16, 32) if n < cores] + ([cores] if cores > 1 else [])
    )
    model = ensure_tiny_model()
    engine = InstantEngine(str(model))
    tasks = [Task(task_id=f"b{i}", main_query=f"Question {i}: what is {i} times 3?") for i in range(args.runs)]
    spec = RunSpec(
        run_id="bench",
        workflow_cls=SyncWork,
        workflow_ref=f"{Path(__file__).resolve()}:SyncWork",
        checkpoint=Checkpoint(path=str(model), sha256="-"),
        sampling=Sampling(max_tokens=8, seed=0),
        trainable_targets=None,
    )

    def collect(workers: int) -> tuple[float, int]:
        with tempfile.TemporaryDirectory() as tmp:
            writer = TraceWriter(Path(tmp) / "traces")
            todo = [(t, 0) for t in tasks]
            t0 = time.perf_counter()
            if workers == 0:
                stats = asyncio.run(run_collect(spec, engine, todo, writer, args.concurrency, progress=False))
            else:
                stats = asyncio.run(
                    run_collect_pool(spec, engine, todo, writer, args.concurrency, workers, progress=False)
                )
            seconds = time.perf_counter() - t0
        assert stats.ok == args.runs, (
            f"{stats.error} errors, {stats.timeout} timeouts: {stats.first_failure and stats.first_failure.error}"
        )
        return seconds, stats.calls

    collect(1)  # warm-up: the fork server's imports, first allocations
    sync_s = args.calls * (args.sleep_ms + args.cpu_ms) / 1e3
    print(
        f"{args.runs} runs x {args.calls} calls, {sync_s * 1e3:.0f} ms of sync work per run "
        f"({args.sleep_ms:g} ms sleep + {args.cpu_ms:g} ms CPU per call), concurrency {args.concurrency}, "
        f"{cores} cores, default --workers {default_workers()}"
    )
    rows, base = [], None
    for workers in counts:
        seconds, calls = collect(workers)
        runs_s, calls_s = args.runs / seconds, calls / seconds
        if workers == 1:
            base = runs_s
        rows.append((workers, seconds, runs_s, calls_s))
    print("| workers | seconds | runs/s | model calls/s | ideal runs/s (N x 1 worker) | of ideal |")
    print("|---|---|---|---|---|---|")
    for workers, seconds, runs_s, calls_s in rows:
        ideal = base * max(workers, 1) if base else None
        label = "0 (one process)" if workers == 0 else str(workers)
        print(
            f"| {label} | {seconds:.2f} | {runs_s:.1f} | {calls_s:.0f} | {ideal:.1f} | {runs_s / ideal:.2f} |"
            if ideal
            else f"| {label} | {seconds:.2f} | {runs_s:.1f} | {calls_s:.0f} | - | - |"
        )


if __name__ == "__main__":
    main()
