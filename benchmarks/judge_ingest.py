"""Judge ingest benchmark: `judge ingest` end to end with its default checks, the bulk load, the drift
checks bulk vs one call at a time, peak memory; and the best_per_task query. All in one run.

    python benchmarks/judge_ingest.py            # 40k real calls end to end, 32k generated, 1M for memory
    python benchmarks/judge_ingest.py --quick    # a few minutes: smaller sizes, no 1M-call run

1. End to end (printed first): collects real traces of examples/learn_two_roles (two roles, one call each
   per run) with the embedded tiny model, replicates them with fresh trajectory ids to --e2e-calls, and runs
   `python -m judge ingest` (default checks: template drift and the drift measures) as a user would; prints
   the rate its summary line gives and the command's wall time, then the same with --per_call_drift (the
   path before batching) on the same files, and a re-ingest. Target: >= 20,000 calls/s.
2. Generated records (--trajectories x 8 calls; 384 prompt + 128 completion ids, logprobs, four
   ~200-character messages per call), 1,000 per file: the bulk load alone (--no_check_template; target
   >= 100,000 calls/s), a re-ingest, then the drift checks bulk vs per call on --drift-sample calls made
   distinct (every call rendered: the worst case for the bulk path's grouping), first on random ids (every
   re-render misses), then on ids the template renders (no drift).
3. Peak RSS of `judge ingest` (a child process, default checks) over --rss-calls generated calls. Target:
   under 4 GB at 1M calls.
4. Builds a store of M trajectories (100 samples per task, one workflow score each) with SQL and times
   `SELECT * FROM best_per_task` (all rows fetched), median of 3. Target: < 1 s.
"""

import argparse
import hashlib
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def call_json(rng: random.Random, index: int, prompt_len: int, completion_len: int) -> str:
    messages = [
        {"role": "system", "content": "You are a careful agent. " * 8},
        {"role": "user", "content": f"Task {rng.random()}: " + "compute the thing " * 10},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "execute_python_code", "arguments": json.dumps({"code": "print(1 + 1)" * 10})},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "name": "execute_python_code", "content": "2\n" * 60},
    ]
    return json.dumps(
        {
            "index": index,
            "role": "default",
            "agent_name": "agent",
            "trainable": True,
            "model": "ckpt",
            "messages": messages,
            "tools": [{"type": "function", "function": {"name": "execute_python_code", "parameters": {}}}],
            "tool_choice": None,
            "completion": {"text": "x" * completion_len, "tool_calls": []},
            "prompt_token_ids": [rng.randrange(600) for _ in range(prompt_len)],
            "completion_token_ids": [rng.randrange(600) for _ in range(completion_len)],
            "completion_logprobs": [round(-rng.random() * 5, 6) for _ in range(completion_len)],
            "finish_reason": "stop",
            "prompt_tokens": prompt_len,
            "completion_tokens": completion_len,
            "latency_s": 0.1,
        }
    )


def write_traces(folder: Path, n: int, calls: int, prompt_len: int, completion_len: int, checkpoint: str) -> int:
    from astuner.trajectory import SCHEMA_VERSION, trajectory_id

    rng = random.Random(0)
    pool = [call_json(rng, 0, prompt_len, completion_len) for _ in range(64)]  # distinct bodies, reused
    size = 0
    for start in range(0, n, 1000):
        lines = []
        for i in range(start, min(n, start + 1000)):
            body = ",".join(pool[(i * calls + k) % 64].replace('"index": 0', f'"index": {k}', 1) for k in range(calls))
            head = json.dumps(
                {
                    "schema_version": SCHEMA_VERSION,
                    "trajectory_id": trajectory_id("bench", f"task-{i % 1000}", i // 1000),
                    "run_id": "bench",
                    "workflow": "bench",
                    "workflow_ref": "bench:Bench",
                    "task": {"task_id": f"task-{i % 1000}", "main_query": "q", "metadata": {"answer": i % 7}},
                    "sample_index": i // 1000,
                    "iteration": 0,
                    "checkpoint": {"path": checkpoint, "sha256": "0" * 64},
                    "engine": "transformers",
                    "sampling": {"temperature": 1.0, "top_p": 1.0, "max_tokens": 128, "seed": 0},
                    "trainable_targets": None,
                    "status": "ok",
                    "error": None,
                    "traceback": None,
                    "reward": i % 3 / 2,
                    "metadata": {"final_answer": str(i % 7)},
                    "started_at": 1.0e9,
                    "finished_at": 1.0e9 + 1,
                    "duration_s": 1.0,
                }
            )
            lines.append(head[:-1] + ', "calls": [' + body + "]}")
        text = "\n".join(lines) + "\n"
        (folder / f"part-{start // 1000:06d}.jsonl").write_text(text)
        size += len(text)
    return size


ROOT = Path(__file__).resolve().parent.parent
_RATE = re.compile(r"\(([\d,]+) model calls\) from .* in ([\d.]+)s \(([\d,]+) calls/s\)")


def judge_ingest(traces: Path, db: Path, *flags: str) -> tuple[int, float, float, str]:
    """`python -m judge ingest` as a user runs it: (calls, seconds and calls/s its summary prints, command wall)."""
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "judge", "ingest", str(traces), "--db", str(db), *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    wall = time.perf_counter() - t0
    if done.returncode:
        sys.exit(f"judge ingest failed ({done.returncode}):\n{done.stderr[-2000:]}")
    found = _RATE.search(done.stdout)
    calls, seconds = int(found.group(1).replace(",", "")), float(found.group(2))
    return calls, seconds, wall, done.stdout.strip()


def real_traces(folder: Path, checkpoint: str) -> Path:
    """A collect of examples/learn_two_roles (80 tasks x 2 samples: a speaker and a listener call each)."""
    out = folder / "collect"
    subprocess.run(
        [
            sys.executable, "-m", "collect",
            "--workflow", "examples/learn_two_roles/workflow.py:SpeakerListener",
            "--tasks", "examples/learn_two_roles/tasks.jsonl",
            "--model", checkpoint, "--samples-per-task", "2", "--max-tokens", "8", "--seed", "0",
            "--out", str(out),
        ],
        cwd=ROOT, check=True, capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    return out / "traces"


def replicate(traces: Path, folder: Path, calls: int) -> int:
    """Copies of the real trajectories with fresh trajectory ids, up to `calls` calls, 1,000 lines a file."""
    records = [json.loads(line) for f in sorted(traces.glob("*.jsonl")) for line in f.read_text().splitlines()]
    per_copy = sum(len(r["calls"]) for r in records)
    folder.mkdir(parents=True)
    lines, written = [], 0
    for copy in range(max(1, round(calls / per_copy))):
        for r in records:
            r["trajectory_id"] = hashlib.md5(f"{copy}:{r['trajectory_id']}".encode()).hexdigest()
            lines.append(json.dumps(r))
            written += len(r["calls"])
    for start in range(0, len(lines), 1000):
        (folder / f"part-{start // 1000:06d}.jsonl").write_text("\n".join(lines[start : start + 1000]) + "\n")
    return written


def bench_end_to_end(args, checkpoint: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        n = replicate(real_traces(tmp, checkpoint), tmp / "replicas", args.e2e_calls)
        print(
            f"(real traces of learn_two_roles, collected and replicated to {n:,} calls in {time.perf_counter() - t0:.0f}s)"
        )
        calls, seconds, wall, out = judge_ingest(tmp / "replicas", tmp / "bulk.duckdb")
        print(
            f"END TO END, judge ingest with its default checks: {calls:,} calls in {seconds:.2f}s = "
            f"{calls / seconds:,.0f} calls/s as the CLI prints it; command wall {wall:.2f}s = {calls / wall:,.0f} calls/s "
            "(target >= 20,000)"
        )
        print("  " + out.replace("\n", "\n  "))
        base_calls, base_seconds, base_wall, base_out = judge_ingest(
            tmp / "replicas", tmp / "per_call.duckdb", "--per_call_drift"
        )
        print(
            f"the same files with --per_call_drift (the path before batching): {base_seconds:.2f}s = "
            f"{base_calls / base_seconds:,.0f} calls/s; bulk / per-call: {base_seconds / seconds:.1f}x"
        )
        same = base_out.splitlines()[1:] == out.splitlines()[1:]
        print(f"  its drift summary lines are {'the same' if same else 'DIFFERENT'}")
        again = judge_ingest(tmp / "replicas", tmp / "bulk.duckdb")[3].splitlines()[0]
        print(f"re-ingest: {again}")


def make_distinct(con, limit: int) -> None:
    """Make each call of the first `limit` trajectories unique (its first prompt id from its own key), so no
    two share a render; and mark them unchecked."""
    con.execute(
        f"""UPDATE calls SET template_drift = NULL, drift_measured = NULL,
               prompt_token_ids = list_concat([(hash(trajectory_id, call_index) % 600)::INTEGER],
                                              prompt_token_ids[2:])
            WHERE trajectory_id IN (SELECT trajectory_id FROM trajectories ORDER BY trajectory_id LIMIT {limit})"""
    )


def bench_ingest(args, checkpoint: str) -> None:
    from astuner.store import open_store
    from judge import drift_measures
    from judge.ingest import IngestResult, check_template_drift, ingest, measure_drift
    from judge.render_pool import Renderer

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        traces = tmp / "traces"
        traces.mkdir()
        t0 = time.perf_counter()
        size = write_traces(
            traces, args.trajectories, args.calls, args.prompt_tokens, args.completion_tokens, "/no/such/ckpt"
        )
        print(
            f"generated {args.trajectories:,} trajectories x {args.calls} calls x {args.prompt_tokens + args.completion_tokens} "
            f"tokens: {size / 1e6:,.0f} MB of JSONL in {time.perf_counter() - t0:.1f}s"
        )
        con = open_store(tmp / "store.duckdb")
        result = ingest(con, [str(traces)], check_template=False, progress=False)
        n_calls = result.new_calls
        print(
            f"bulk load: {n_calls:,} calls in {result.seconds:.2f}s = {n_calls / result.seconds:,.0f} calls/s "
            f"({size / 1e6 / result.seconds:,.0f} MB/s; target >= 100,000 calls/s)"
        )
        t0 = time.perf_counter()
        again = ingest(con, [str(traces)], check_template=False, progress=False)
        print(f"re-ingest of the same files: {again.new_trajectories} new rows, {time.perf_counter() - t0:.2f}s")

        # The drift checks, bulk and per call, on the same sample of calls made distinct.
        con.execute("UPDATE trajectories SET checkpoint_path = ?", [checkpoint])
        con.execute("UPDATE calls SET template_drift = false, drift_measured = true")
        sample = max(1, min(args.drift_sample, n_calls) // args.calls)
        make_distinct(con, 1)  # the warm-up: imports and tokenizer loading are not per-call costs
        check_template_drift(con, IngestResult(), progress=False)
        measure_drift(con, IngestResult(), progress=False)

        columns = f"""SELECT trajectory_id, call_index, template_drift, extends_previous, divergence_at,
                             divergence_cause, rerender_drift_tokens FROM calls WHERE trajectory_id IN
                             (SELECT trajectory_id FROM trajectories ORDER BY trajectory_id LIMIT {sample}) ORDER BY 1, 2"""

        def both(label: str) -> None:
            times, values = {}, {}
            for path in ("per call", "bulk"):
                make_distinct(con, sample)
                t0 = time.perf_counter()
                if path == "bulk":  # rendering in this process, like the per-call path
                    drift_measures.check(con, IngestResult(), Renderer(0))
                else:
                    check_template_drift(con, IngestResult(), progress=False)
                    measure_drift(con, IngestResult(), progress=False)
                times[path] = time.perf_counter() - t0
                values[path] = con.execute(columns).fetchall()
            calls = sample * args.calls
            print(
                f"drift checks (template drift + extension + re-render), {label}, {calls:,} distinct calls: "
                f"per call {calls / times['per call']:,.0f} calls/s, bulk {calls / times['bulk']:,.0f} calls/s "
                f"({times['per call'] / times['bulk']:.1f}x); the two paths' columns "
                f"{'are the same' if values['bulk'] == values['per call'] else 'DIFFER'}"
            )

        both("random ids (every re-render misses: the worst case)")
        # The common case: the sampled ids are what the template renders (a re-render reproduces them).
        from transformers import AutoTokenizer

        from astuner.chat import render_prompts_ids

        tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        rows = con.execute(
            """SELECT c.trajectory_id, c.call_index, c.messages, c.tools, c.completion_text FROM calls c
               WHERE c.trajectory_id IN (SELECT trajectory_id FROM trajectories ORDER BY trajectory_id LIMIT ?)""",
            [sample],
        ).fetchall()
        prompts = render_prompts_ids(tokenizer, [(json.loads(r[2]), json.loads(r[3])) for r in rows])
        completions = tokenizer([r[4] + tokenizer.eos_token for r in rows], add_special_tokens=False)["input_ids"]
        import pyarrow as pa

        con.register(
            "exact_ids",
            pa.table(
                {
                    "trajectory_id": [r[0] for r in rows],
                    "call_index": [r[1] for r in rows],
                    "prompt": prompts,
                    "completion": completions,
                }
            ),
        )
        con.execute("""UPDATE calls SET prompt_token_ids = e.prompt, completion_token_ids = e.completion FROM exact_ids e
                       WHERE calls.trajectory_id = e.trajectory_id AND calls.call_index = e.call_index""")
        con.unregister("exact_ids")
        # distinct by their prompts' first id, as above: the template drift then finds that one id, the
        # re-render drift one token of each call
        both("ids the template renders but one (the common case)")
        con.close()


def bench_memory(args, checkpoint: str) -> None:
    """Peak RSS of a `judge ingest` child with its default checks over --rss-calls generated calls."""
    import resource

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "traces").mkdir()
        n = max(1, args.rss_calls // args.calls)
        size = write_traces(tmp / "traces", n, args.calls, args.prompt_tokens, args.completion_tokens, checkpoint)
        calls, seconds, wall, out = judge_ingest(tmp / "traces", tmp / "store.duckdb")
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the largest child so far, in MiB
        print(
            f"memory: judge ingest of {calls:,} calls ({size / 1e9:.1f} GB of JSONL), default checks: {seconds:.0f}s "
            f"({calls / seconds:,.0f} calls/s), peak RSS {peak:,.0f} MiB of the largest child so far (target < 4,096 MiB)"
        )


def bench_query(args) -> None:
    from astuner.store import open_store

    with tempfile.TemporaryDirectory() as tmp:
        con = open_store(Path(tmp) / "big.duckdb")
        n, per_task = max(100, args.query_trajectories), 100
        t0 = time.perf_counter()
        con.execute(f"""
            INSERT INTO trajectories
            SELECT md5(i::VARCHAR), 'bench', 'bench', 'bench:Bench', 'task-' || (i % {n // per_task}), 'q', '{{}}',
                   i // {n // per_task}, 0, 'ckpt', '0', 'transformers', '{{}}', NULL,
                   CASE WHEN i % 20 = 0 THEN 'error' ELSE 'ok' END, NULL, NULL, (hash(i) % 1000) / 1000.0, '{{}}',
                   now(), now(), 1.0, 8, 'gen', now()
            FROM range({n}) t(i)""")
        con.execute("""
            INSERT INTO scores SELECT trajectory_id, NULL, 'workflow', 'builtin-1', 1.0, workflow_reward, NULL, NULL, NULL, now(), 'bench'
            FROM trajectories""")
        con.execute("CHECKPOINT")
        print(
            f"built a store of {n:,} trajectories ({n // per_task:,} tasks x {per_task} samples, one score each) "
            f"in {time.perf_counter() - t0:.1f}s"
        )
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            rows = con.execute("SELECT * FROM best_per_task").fetchall()
            times.append(time.perf_counter() - t0)
        print(
            f"SELECT * FROM best_per_task: {len(rows):,} rows in {statistics.median(times):.3f}s "
            f"(median of 3: {', '.join(f'{t:.3f}' for t in times)}; target < 1 s)"
        )
        t0 = time.perf_counter()
        con.execute("SELECT * FROM task_stats").fetchall()
        print(f"SELECT * FROM task_stats: {time.perf_counter() - t0:.3f}s")
        con.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="8k calls end to end, 1,000 trajectories, no 1M run")
    parser.add_argument("--e2e-calls", type=int, default=40_000, help="real calls, replicated, for the end-to-end run")
    parser.add_argument("--trajectories", type=int, default=4_000)
    parser.add_argument("--calls", type=int, default=8)
    parser.add_argument("--prompt-tokens", type=int, default=384)
    parser.add_argument("--completion-tokens", type=int, default=128)
    parser.add_argument("--drift-sample", type=int, default=2000, help="calls to time the drift checks on")
    parser.add_argument("--rss-calls", type=int, default=1_000_000, help="calls of the memory run (0: skip)")
    parser.add_argument("--query-trajectories", type=int, default=1_000_000)
    args = parser.parse_args()
    if args.quick:
        args.e2e_calls, args.trajectories, args.drift_sample = 8_000, 1_000, 400
        args.rss_calls, args.query_trajectories = 0, 100_000
    import duckdb

    from astuner.tiny import ensure_tiny_model

    load = os.getloadavg()
    print(f"duckdb {duckdb.__version__}, {os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    checkpoint = str(ensure_tiny_model())
    bench_end_to_end(args, checkpoint)
    bench_ingest(args, checkpoint)
    if args.rss_calls:
        bench_memory(args, checkpoint)
    bench_query(args)
    load = os.getloadavg()
    print(f"load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
