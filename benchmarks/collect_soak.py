"""Collect soak test: many cheap runs with injected failures and timeouts; every record present,
with the right status, and memory flat.

    python benchmarks/collect_soak.py                                  # 2,000 runs, concurrency 64, tiny model
    python benchmarks/collect_soak.py --runs 400 --out runs/soak-small # quick
    python benchmarks/collect_soak.py --kill-at 700                    # SIGKILL collect at 700 records, resume
    python benchmarks/collect_soak.py --agent                          # through a ReActAgent per run

Writes RUNS / --samples-per-task tasks to OUT/tasks.jsonl and runs `python -m collect` on them as
a subprocess with benchmarks/soak_workflow.py: every run makes one model call, then 10% raise
(status error), 5% sleep past --timeout-s (status timeout) and the rest return a reward, each
decided by a hash of (task_id, sample_index). Then reads OUT/traces and checks: exactly RUNS
records, each (task, sample) once, every status the expected one, errors carry the message and
traceback, timeouts say so, ok runs the expected reward. With --kill-at K, collect is killed with
SIGKILL once K records are on disk and the same command resumes it (no loss, no duplicates).

Memory is read from the traces: each ok run records its process's VmRSS and VmHWM (peak RSS).
Prints VmHWM at the 500th and the RUNS-th completed run (by finished_at; the nearest ok run),
their ratio, RSS over time as a table and OUT/rss.png, wall time and runs/s. Exits 1 if a check
fails. Nothing is asserted about speed or memory: those are figures to read.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.soak_workflow import error_message, expected_reward, expected_status  # noqa: E402

WORKFLOW_FILE = ROOT / "benchmarks" / "soak_workflow.py"
MARKER = "soak.json"  # marks an --out folder this script made (and may clear)


def write_tasks(path: Path, n_tasks: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "".join(
            json.dumps({"task_id": f"soak-{i:05d}", "query": f"Soak task {i}: say one word."}) + "\n"
            for i in range(n_tasks)
        )
    )
    return path


def expected_keys(n_tasks: int, samples_per_task: int) -> list[tuple[str, int]]:
    return [(f"soak-{i:05d}", s) for i in range(n_tasks) for s in range(samples_per_task)]


def collect_command(
    out: Path,
    tasks: Path,
    *,
    agent: bool = False,
    concurrency: int = 64,
    timeout_s: float = 5.0,
    samples_per_task: int = 4,
    max_tokens: int = 4,
    seed: int = 0,
    model: str | None = None,
) -> list[str]:
    cls = "SoakAgentWorkflow" if agent else "SoakWorkflow"
    cmd = [
        sys.executable,
        "-m",
        "collect",
        "--workflow",
        f"{WORKFLOW_FILE}:{cls}",
        "--tasks",
        str(tasks),
        "--samples-per-task",
        str(samples_per_task),
        "--concurrency",
        str(concurrency),
        "--timeout-s",
        f"{timeout_s:g}",
        "--max-tokens",
        str(max_tokens),
        "--seed",
        str(seed),
        "--out",
        str(out),
    ]
    return cmd + (["--model", str(model)] if model else [])


def records_on_disk(traces: Path) -> int:
    count = 0
    for part in traces.glob("part-*.jsonl"):
        try:
            with open(part, "rb") as fh:
                count += sum(1 for line in fh if line.strip())
        except FileNotFoundError:  # renamed over while we looked
            pass
    return count


@dataclass
class CollectRun:
    returncodes: list[int] = field(default_factory=list)
    wall_s: list[float] = field(default_factory=list)
    collect_s: list[tuple[int, float]] = field(default_factory=list)  # collect's own "N runs in Xs" (startup excluded)
    killed_at: int | None = None  # records on disk when SIGKILL landed
    log: str = ""

    @property
    def ok(self) -> bool:
        return (
            bool(self.returncodes)
            and self.returncodes[-1] == 0
            and all(rc == 0 or (i == 0 and self.killed_at is not None) for i, rc in enumerate(self.returncodes))
        )


def run_collect(cmd: list[str], out: Path, kill_at: int | None = None, timeout_s: float = 1800.0) -> CollectRun:
    """Run collect to the end; with kill_at, SIGKILL it once that many records are on disk, then resume."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    result = CollectRun()
    log_path = out / "collect.log"
    attempts = 2 if kill_at else 1
    for attempt in range(attempts):
        with open(log_path, "ab") as log:
            log.write(f"\n$ {' '.join(cmd)}\n".encode())
            log.flush()
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log)
            try:
                if attempt == 0 and kill_at:
                    while proc.poll() is None:
                        if (on_disk := records_on_disk(out / "traces")) >= kill_at:
                            os.kill(proc.pid, signal.SIGKILL)
                            result.killed_at = on_disk
                            break
                        time.sleep(0.1)
                proc.wait(timeout=timeout_s)
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            result.wall_s.append(time.perf_counter() - t0)
            result.returncodes.append(proc.returncode)
    result.log = log_path.read_text(errors="replace")
    result.collect_s = [(int(n), float(s)) for n, s in re.findall(r"collect: (\d+) runs in ([0-9.]+)s", result.log)]
    return result


@dataclass
class SoakCheck:
    records: int = 0
    statuses: Counter = field(default_factory=Counter)
    expected_statuses: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    # (position by finished_at from 1, status, metadata of ok runs) for memory over time
    timeline: list[tuple[int, str, dict]] = field(default_factory=list)
    pids: int = 0
    spurious_timeouts: int = 0  # runs meant to finish that hit --timeout-s: the machine was too slow for it

    def problem(self, text: str, limit: int = 20) -> None:
        if len(self.problems) < limit:
            self.problems.append(text)
        elif len(self.problems) == limit:
            self.problems.append("... (more problems left out)")


def check_traces(out: Path, keys: list[tuple[str, int]], timeout_s: float, calls_per_run: int | None = 1) -> SoakCheck:
    """Every expected (task, sample) exactly once, with the status, error, reward and calls its fate implies.

    calls_per_run: the exact number of model calls every run made (None: at least one)."""
    from astuner.trajectory import TraceFormatError, read_trajectories, trajectory_id

    check = SoakCheck()
    traces = out / "traces"
    try:
        trajs = list(read_trajectories(traces))
    except (TraceFormatError, FileNotFoundError) as exc:
        check.problem(f"traces unreadable: {exc}")
        return check
    check.records = len(trajs)
    leftovers = sorted(p.name for p in traces.glob(".*.tmp"))
    if leftovers:
        check.problem(f"temp files left in {traces}: {leftovers[:5]}")
    if len(trajs) != len(keys):
        check.problem(f"{len(trajs)} records, expected {len(keys)}")
    seen = Counter((t.task.task_id, t.sample_index) for t in trajs)
    dups = sorted(k for k, n in seen.items() if n > 1)
    missing = sorted(set(keys) - set(seen))
    unexpected = sorted(set(seen) - set(keys))
    for what, items in (("duplicated", dups), ("missing", missing), ("unexpected", unexpected)):
        if items:
            check.problem(f"{len(items)} (task, sample) pairs {what}, e.g. {items[:5]}")
    run_ids = {t.run_id for t in trajs}
    if len(run_ids) != 1:
        check.problem(f"{len(run_ids)} run ids: {sorted(run_ids)[:5]}")
    check.expected_statuses = Counter(expected_status(*k) for k in keys)
    timeout_error = f"run exceeded --timeout-s {timeout_s:g}"

    for t in trajs:
        key = (t.task.task_id, t.sample_index)
        check.statuses[t.status] += 1
        want = expected_status(*key)
        if t.trajectory_id != trajectory_id(t.run_id, *key):
            check.problem(f"{key}: trajectory_id {t.trajectory_id} is not sha256(run_id, task, sample)")
        if t.status != want:
            check.spurious_timeouts += want != "timeout" and t.status == "timeout"
            check.problem(f"{key}: status {t.status!r}, expected {want!r} (error: {t.error!r})")
            continue
        n_calls = len(t.calls)
        if (calls_per_run is not None and n_calls != calls_per_run) or n_calls < 1:
            check.problem(f"{key}: {n_calls} model calls recorded, expected {calls_per_run or 'at least 1'}")
        for call in t.calls:
            if (
                not call.trainable
                or not call.completion_token_ids
                or len(call.completion_logprobs or []) != len(call.completion_token_ids)
            ):
                check.problem(f"{key}: call {call.index} lacks trainable token ids/logprobs")
        if want == "error":
            wanted = f"RuntimeError: {error_message(*key)}"
            if t.error != wanted or "RuntimeError" not in (t.traceback or ""):
                check.problem(f"{key}: error {t.error!r}, expected {wanted!r} with a traceback")
        elif want == "timeout":
            if t.error != timeout_error:
                check.problem(f"{key}: timeout error {t.error!r}, expected {timeout_error!r}")
        else:
            if t.error is not None or t.reward != expected_reward(*key):
                check.problem(
                    f"{key}: ok run with error {t.error!r}, reward {t.reward}, expected {expected_reward(*key)}"
                )
            if "hwm_kib" not in t.metadata or "soak_completed" not in t.metadata:
                check.problem(f"{key}: ok run without soak metadata: {t.metadata}")
        if t.duration_s < 0 or t.finished_at < t.started_at:
            check.problem(f"{key}: finished before it started")
    if check.statuses != check.expected_statuses:
        check.problem(f"status counts {dict(check.statuses)}, expected {dict(check.expected_statuses)}")

    ordered = sorted(trajs, key=lambda t: t.finished_at)
    check.timeline = [(i, t.status, t.metadata if t.status == "ok" else {}) for i, t in enumerate(ordered, start=1)]
    check.pids = len({m["pid"] for _, s, m in check.timeline if s == "ok" and "pid" in m})
    return check


def memory_at(check: SoakCheck, position: int) -> tuple[int, dict] | None:
    """(position, metadata) of the ok run nearest the position-th completion (ties: the later one)."""
    oks = [(p, m) for p, s, m in check.timeline if s == "ok" and m.get("hwm_kib") is not None]
    if not oks:
        return None
    return min(oks, key=lambda pm: (abs(pm[0] - position), -pm[0]))


def rss_slope(check: SoakCheck, start: int) -> float | None:
    """Least-squares slope of VmRSS (KiB) over completed runs, from `start` on: the steepest of the
    processes that ran them (collect's workers, each of which records its own)."""
    by_pid: dict = {}
    for p, s, m in check.timeline:
        if s == "ok" and p >= start and m.get("rss_kib"):
            by_pid.setdefault(m.get("pid"), []).append((p, m["rss_kib"]))
    slopes = []
    for pts in by_pid.values():
        mx, my = sum(p for p, _ in pts) / len(pts), sum(r for _, r in pts) / len(pts)
        var = sum((p - mx) ** 2 for p, _ in pts)
        if len(pts) >= 2 and var:
            slopes.append(sum((p - mx) * (r - my) for p, r in pts) / var)
    return max(slopes) if slopes else None


def mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f}"


def plot(check: SoakCheck, path: Path, title: str, early: int = 500) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    oks = [(p, m) for p, s, m in check.timeline if s == "ok" and m.get("hwm_kib") is not None]
    series = [("peak RSS (VmHWM)", [(p, m["hwm_kib"] / 1024) for p, m in oks])]
    series.append(("RSS (VmRSS)", [(p, m["rss_kib"] / 1024) for p, m in oks if m.get("rss_kib")]))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, zoom in zip(axes, (False, True)):
        for label, pts in series:
            if pts:
                ax.plot([p for p, _ in pts], [v for _, v in pts], label=label, alpha=0.8)
        for mark in (early, check.records):
            ax.axvline(mark, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("completed runs (by finished_at)")
        ax.set_ylabel("MiB")
        if not zoom:
            ax.set_ylim(bottom=0)
        ax.set_title(title + (" (zoomed)" if zoom else ""), fontsize=10)
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def prepare_out(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).exists():
            raise SystemExit(
                f"collect_soak: --out {out} is not empty and was not made by this script; use another --out"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2000, help="workflow runs in all (tasks x samples)")
    parser.add_argument("--samples-per-task", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument(
        "--timeout-s", type=float, default=5.0, help="collect's per-run limit; timeout runs sleep past it"
    )
    parser.add_argument("--max-tokens", type=int, default=4)
    parser.add_argument("--model", default=None, help="checkpoint folder (default: the embedded tiny model)")
    parser.add_argument(
        "--agent", action="store_true", help="SoakAgentWorkflow: a ReActAgent per run instead of one direct call"
    )
    parser.add_argument(
        "--kill-at", type=int, default=None, help="SIGKILL collect once this many records are on disk, then resume"
    )
    parser.add_argument(
        "--memory-at", type=int, default=500, help="the early completion to compare peak RSS at (and the last)"
    )
    parser.add_argument("--out", default="runs/soak", help="output folder (cleared if this script made it)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.samples_per_task < 1 or args.runs % args.samples_per_task:
        parser.error(f"--runs {args.runs} must be a positive multiple of --samples-per-task {args.samples_per_task}")

    out = Path(args.out).resolve()
    prepare_out(out)
    (out / MARKER).write_text(json.dumps(vars(args), indent=2))
    n_tasks = args.runs // args.samples_per_task
    tasks = write_tasks(out / "tasks.jsonl", n_tasks)
    cmd = collect_command(
        out,
        tasks,
        agent=args.agent,
        concurrency=args.concurrency,
        timeout_s=args.timeout_s,
        samples_per_task=args.samples_per_task,
        max_tokens=args.max_tokens,
        model=args.model,
    )
    print(
        f"collect_soak: {n_tasks} tasks x {args.samples_per_task} samples = {args.runs} runs, concurrency {args.concurrency}, "
        f"--timeout-s {args.timeout_s:g}, --max-tokens {args.max_tokens}, {'ReActAgent' if args.agent else 'direct call'}"
        + (f", SIGKILL at {args.kill_at} records then resume" if args.kill_at else "")
    )
    print("$ " + " ".join(cmd))
    run = run_collect(cmd, out, kill_at=args.kill_at)
    if not run.ok:
        print(f"collect failed: exit codes {run.returncodes}; the end of {out / 'collect.log'}:")
        print(run.log[-3000:])
        return 1

    check = check_traces(
        out, expected_keys(n_tasks, args.samples_per_task), args.timeout_s, calls_per_run=None if args.agent else 1
    )
    exp = check.expected_statuses
    print()
    if run.killed_at is not None:
        print(
            f"killed with SIGKILL at {run.killed_at} records on disk (exit {run.returncodes[0]}), resumed (exit {run.returncodes[1]})"
        )
    print(
        f"records: {check.records} (expected {args.runs}); ok {check.statuses['ok']} / error {check.statuses['error']} / "
        f"timeout {check.statuses['timeout']} (expected {exp['ok']} / {exp['error']} / {exp['timeout']})"
    )

    # memory over time, from the traces
    marks = sorted(
        {min(args.memory_at, check.records), check.records} | {round(check.records * k / 8) for k in range(1, 8)} - {0}
    )
    rows = [(m, memory_at(check, m)) for m in marks]
    print()
    print("| completed | nearest ok run | RSS MiB | peak RSS MiB |")
    print("|-----------|----------------|---------|--------------|")
    for m, found in rows:
        if found:
            print(
                f"| {m:9d} | {found[0]:14d} | {mib(found[1].get('rss_kib')):>7} | {mib(found[1].get('hwm_kib')):>12} |"
            )
    at = min(args.memory_at, check.records)
    early, last = memory_at(check, at), memory_at(check, check.records)
    for key, label in (("hwm_kib", "peak RSS"), ("rss_kib", "RSS")):
        if early and last and early[1].get(key) and last[1].get(key):
            e, l_ = early[1][key], last[1][key]
            print(
                f"{label} at {at}: {mib(e)} MiB; at {check.records}: {mib(l_)} MiB; "
                f"ratio {l_ / e:.3f} ({(l_ - e) / 1024:+.1f} MiB, {(l_ - e) / max(1, last[0] - early[0]):+.2f} KiB/run)"
            )
    slope = rss_slope(check, at)
    if slope is not None:
        print(f"RSS trend from run {at} on (least squares): {slope:+.2f} KiB/run")
    if check.pids > 1:
        print(f"(ok runs came from {check.pids} collect processes: memory after a resume is the new process's)")
    png = plot(check, out / "rss.png", f"collect soak: {args.runs} runs, concurrency {args.concurrency}", early=at)
    if png:
        print(f"plot: {png}")

    wall = sum(run.wall_s)
    inside = sum(s for _, s in run.collect_s)
    inside_runs = sum(n for n, _ in run.collect_s)
    print()
    print(f"wall time: {wall:.1f}s (collect processes, startup and model load included); {args.runs / wall:.1f} runs/s")
    if inside:
        print(
            f"collect's own run time: {inside:.1f}s for {inside_runs} runs; {inside_runs / inside:.1f} runs/s"
            + (" (the resumed part only: the killed process printed none)" if run.killed_at is not None else "")
        )
    if check.problems:
        print()
        print(f"FAILED: {len(check.problems)} problem(s):")
        for p in check.problems:
            print(f"  - {p}")
        if check.spurious_timeouts:
            print(
                f"{check.spurious_timeouts} run(s) meant to finish timed out: on a loaded machine raise --timeout-s "
                f"(now {args.timeout_s:g}); ok runs normally take 1-2 s at concurrency 64 on 2 cores"
            )
        return 1
    print("all checks passed: every (task, sample) once, every status as expected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
