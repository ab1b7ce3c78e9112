"""Judge store benchmark: ingest rate and the best_per_task query, in one run.

    python benchmarks/judge_ingest.py                       # 10k x 8 calls x 512 tokens; 1M for the query
    python benchmarks/judge_ingest.py --trajectories 2000 --query-trajectories 100000   # quick

1. Writes N generated trajectories (8 calls each; 384 prompt + 128 completion token ids, with
   logprobs and four ~200-character messages per call) as JSONL, 1,000 per file, then times
   `judge ingest` into a new store: the bulk load alone (--no_check_template), then the
   template-drift check and the drift measures on their own over a sample of calls rendered with
   the tiny model's chat template: first with the generated (random) ids, which every re-render
   misses (the worst case for the drift measures' diff), then with the ids the template renders
   (the common case: no drift). Targets: bulk load >= 50k calls/s on the 2-core CI machine.
2. Builds a store of M trajectories (100 samples per task, one workflow score each) with SQL
   and times `SELECT * FROM best_per_task` (all rows fetched), median of 3. Target: < 1 s.
"""

import argparse
import json
import random
import statistics
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


def bench_ingest(args) -> None:
    from astuner.store import open_store
    from astuner.tiny import ensure_tiny_model
    from judge.ingest import IngestResult, check_template_drift, ingest, measure_drift

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
            f"({size / 1e6 / result.seconds:,.0f} MB/s; target >= 50,000 calls/s)"
        )
        t0 = time.perf_counter()
        again = ingest(con, [str(traces)], check_template=False, progress=False)
        print(f"re-ingest of the same files: {again.new_trajectories} new rows, {time.perf_counter() - t0:.2f}s")

        # Drift check rate: real renders through the tiny model's chat template, on a sample.
        checkpoint = str(ensure_tiny_model())
        sample = min(args.drift_sample, n_calls)
        con.execute("UPDATE trajectories SET checkpoint_path = ?", [checkpoint])
        # Both checks take every call not yet checked in the store: mark all as checked, then
        # unmark one trajectory (the warm-up: imports and tokenizer loading are not per-call costs),
        # then the sample, and time each check on the sample alone.
        con.execute("UPDATE calls SET template_drift = false, drift_measured = true")

        def unmark(limit: int) -> None:
            con.execute(
                f"UPDATE calls SET template_drift = NULL, drift_measured = NULL WHERE trajectory_id IN "
                f"(SELECT trajectory_id FROM trajectories ORDER BY trajectory_id LIMIT {limit})"
            )

        unmark(1)
        check_template_drift(con, IngestResult(), progress=False)
        measure_drift(con, IngestResult(), progress=False)
        unmark(max(1, sample // args.calls))
        drift = IngestResult()
        t0 = time.perf_counter()
        check_template_drift(con, drift, progress=False)
        seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        measure_drift(con, IngestResult(), progress=False)
        measure_seconds = time.perf_counter() - t0
        print(
            f"template-drift check: {drift.drift_checked:,} calls in {seconds:.2f}s = {drift.drift_checked / seconds:,.0f} calls/s "
            f"(one chat-template render + tokenization per trainable call; skip with --no_check_template)"
        )
        print(
            f"drift measures (extension + re-render): {drift.drift_checked:,} calls in {measure_seconds:.2f}s = "
            f"{drift.drift_checked / measure_seconds:,.0f} calls/s (every engine call; skipped with --no_check_template too; "
            f"random ids: every call drifts, the worst case)"
        )
        seconds += measure_seconds
        full = result.seconds + n_calls / (drift.drift_checked / seconds)
        print(f"ingest with both checks, all {n_calls:,} calls trainable: ~{full:.1f}s = {n_calls / full:,.0f} calls/s")

        # The common case: the sampled ids are what the template renders (a re-render reproduces them).
        from transformers import AutoTokenizer

        from astuner.chat import render_prompts_ids

        tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        rows = con.execute(
            """SELECT c.trajectory_id, c.call_index, c.messages, c.tools, c.completion_text FROM calls c
                              WHERE c.drift_measured AND c.trajectory_id IN (SELECT trajectory_id FROM trajectories
                                    ORDER BY trajectory_id LIMIT ?)""",
            [max(1, sample // args.calls)],
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
        unmark(max(1, sample // args.calls))
        exact = IngestResult()
        t0 = time.perf_counter()
        check_template_drift(con, IngestResult(), progress=False)
        exact_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        measure_drift(con, exact, progress=False)
        exact_measure = time.perf_counter() - t0
        con.close()
        full = result.seconds + n_calls * (exact_seconds + exact_measure) / len(rows)
        print(
            f"the same calls with the ids the template renders (no drift: {exact.rerender_changed} of "
            f"{exact.rerender_tokens:,} tokens): template-drift check {len(rows) / exact_seconds:,.0f} calls/s, "
            f"drift measures {len(rows) / exact_measure:,.0f} calls/s; ingest with both ~{n_calls / full:,.0f} calls/s"
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
    parser.add_argument("--trajectories", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=8)
    parser.add_argument("--prompt-tokens", type=int, default=384)
    parser.add_argument("--completion-tokens", type=int, default=128)
    parser.add_argument("--drift-sample", type=int, default=4000, help="calls to time the template-drift check on")
    parser.add_argument("--query-trajectories", type=int, default=1_000_000)
    args = parser.parse_args()
    import duckdb

    print(f"duckdb {duckdb.__version__}, {__import__('os').cpu_count()} CPUs")
    bench_ingest(args)
    bench_query(args)


if __name__ == "__main__":
    main()
