"""Collect throughput against the raw engine, on the same requests, in one process.

    python benchmarks/collect_throughput.py                      # tiny model, CPU
    python benchmarks/collect_throughput.py --model CKPT --tasks 256 --max-tokens 256

collect: N one-call ReActAgent workflows, C at a time, through ModelTuner (prompt rendering,
batching, tool-call parsing, recording, trace writing), in --workers processes (0: in this one). raw: the same engine's generate_batch
on exactly the prompt ids collect recorded, generating exactly as many tokens per request,
in one batch. Prints completion tokens/s of each and collect/raw (target >= 0.9 on CPU).

--background-load N: after the idle repeats, the same collect again while N busy processes (one per
core it takes) compete for the CPUs, as on a shared machine; prints idle and loaded collect tokens/s
and loaded/idle (target >= 0.45 with one busy process on a 2-core machine).
"""

import argparse
import asyncio
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from astuner import Workflow, WorkflowOutput  # noqa: E402


class OneReply(Workflow):
    name = "one_reply"

    async def execute(self, task, model_tuner):
        from agentscope.agent import ReActAgent
        from agentscope.formatter import DashScopeChatFormatter
        from agentscope.message import Msg

        agent = ReActAgent(
            name="Bench",
            sys_prompt="Answer briefly.",
            model=model_tuner,
            formatter=DashScopeChatFormatter(),
            max_iters=1,
        )
        await agent(Msg("user", task.task.main_query, "user"))
        return WorkflowOutput(reward=0.0)


def _busy(stop) -> None:
    """A competing CPU load: pure Python, never waiting."""
    count = 0
    while not stop.is_set():
        for _ in range(100_000):
            count += 1


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["AGENTSCOPE_DISABLE_CONSOLE_OUTPUT"] = "true"
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="checkpoint folder (default: the embedded tiny model)")
    parser.add_argument("--engine", default="transformers")
    parser.add_argument("--tasks", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--workers", type=int, default=None, help="collect's --workers (default: collect's default; 0: one process)"
    )
    parser.add_argument(
        "--background-load",
        type=int,
        default=0,
        help="also measure collect while this many busy processes (one per core) run beside it",
    )
    parser.add_argument(
        "--engine-threads", type=int, default=None, help="the engine's torch threads (default: the engine's choice)"
    )
    args = parser.parse_args()

    from astuner.engines import SamplingParams, load_engine
    from astuner.tiny import ensure_tiny_model
    from astuner.trajectory import Checkpoint, Sampling
    from astuner.workflow import Task
    from collect.pool import default_workers, run_collect_pool
    from collect.runner import RunSpec, run_collect
    from collect.writer import TraceWriter

    model = Path(args.model) if args.model else ensure_tiny_model()
    workers = default_workers() if args.workers is None else args.workers
    engine_kwargs = {"max_batch_size": args.concurrency, "threads": args.engine_threads}
    engine = load_engine(args.engine, model, **(engine_kwargs if args.engine == "transformers" else {}))
    tasks = [Task(task_id=f"b{i}", main_query=f"Question {i}: what is {i} times {i + 3}?") for i in range(args.tasks)]

    def collect_once(seed: int):
        spec = RunSpec(
            run_id=f"bench-{seed}",
            workflow_cls=OneReply,
            workflow_ref=f"{Path(__file__).resolve()}:OneReply",
            checkpoint=Checkpoint(path=str(model), sha256="-"),
            sampling=Sampling(max_tokens=args.max_tokens, seed=seed),
            trainable_targets=None,
        )
        with tempfile.TemporaryDirectory() as tmp:
            writer = TraceWriter(Path(tmp) / "traces")
            captured = []
            writer_add = writer.add
            writer.add = lambda traj: (captured.append(traj), writer_add(traj))
            t0 = time.perf_counter()
            todo = [(t, 0) for t in tasks]
            if workers == 0:
                stats = asyncio.run(run_collect(spec, engine, todo, writer, args.concurrency, progress=False))
            else:
                stats = asyncio.run(
                    run_collect_pool(spec, engine, todo, writer, args.concurrency, workers, progress=False)
                )
            seconds = time.perf_counter() - t0
        assert stats.ok == len(tasks), f"{stats.error} errors"
        calls = [c for traj in captured for c in traj.calls]
        return seconds, calls

    def raw_once(calls):
        prompts = [c.prompt_token_ids for c in calls]
        params = [
            SamplingParams(max_tokens=len(c.completion_token_ids), ignore_eos=True, seed=i) for i, c in enumerate(calls)
        ]
        t0 = time.perf_counter()
        out = engine.generate_batch(prompts, params)
        seconds = time.perf_counter() - t0
        assert [len(g.completion_token_ids) for g in out] == [len(c.completion_token_ids) for c in calls]
        return seconds

    collect_once(-1)  # warm-up: imports, first-batch allocations
    # spawned, not forked: a forked copy of this process would hold torch's thread pool
    ctx = multiprocessing.get_context("spawn")
    collect_rates, raw_rates, ratios, loaded_rates = [], [], [], []
    for rep in range(args.repeats):
        c_sec, calls = collect_once(rep)
        tokens = sum(len(c.completion_token_ids) for c in calls)
        r_sec = raw_once(calls)
        collect_rates.append(tokens / c_sec)
        raw_rates.append(tokens / r_sec)
        ratios.append(r_sec / c_sec)
        print(
            f"repeat {rep}: {len(calls)} requests, {tokens} tokens: collect {c_sec:.3f}s, raw {r_sec:.3f}s, ratio {r_sec / c_sec:.3f}"
        )
        if not args.background_load:
            continue
        # each loaded repeat right after its idle one: a shared machine's own load drifts, the pair sees the same
        stop = ctx.Event()
        busy = [ctx.Process(target=_busy, args=(stop,), daemon=True) for _ in range(args.background_load)]
        for process in busy:
            process.start()
        time.sleep(0.5)
        try:
            c_sec, calls = collect_once(rep)
        finally:
            stop.set()
            for process in busy:
                process.join()
        loaded_rates.append(tokens / c_sec)
        print(
            f"repeat {rep} with {args.background_load} busy processes: collect {c_sec:.3f}s, "
            f"{loaded_rates[-1] / collect_rates[-1]:.3f} of idle (load average {os.getloadavg()[0]:.2f})"
        )
    threads = getattr(engine, "threads", None)
    engine.close()

    print()
    print(
        f"engine={args.engine} model={model.name} tasks={args.tasks} concurrency={args.concurrency} max_tokens={args.max_tokens} "
        f"workers={workers} engine_threads={threads}"
    )
    print("| path    | tokens/s (median) |")
    print("|---------|-------------------|")
    print(f"| collect | {statistics.median(collect_rates):17.0f} |")
    print(f"| raw     | {statistics.median(raw_rates):17.0f} |")
    print(f"collect/raw ratio (median of {args.repeats}): {statistics.median(ratios):.3f}  (target >= 0.9)")
    if loaded_rates:
        idle, loaded = statistics.median(collect_rates), statistics.median(loaded_rates)
        print(f"collect idle {idle:.0f} tok/s, with {args.background_load} busy processes {loaded:.0f} tok/s")
        print(f"loaded/idle ratio (medians of {args.repeats}): {loaded / idle:.3f}  (target >= 0.45)")


if __name__ == "__main__":
    main()
