"""Collect with worker processes: workflows run in N processes, the engine and the writer stay here.

Each worker (collect/worker.py) runs its share of --concurrency on its own event loop and
sends every model call here, where the one engine batches the calls of all workers together.
Finished runs come back and are recorded by this process alone, so the trace files, resume and
shards behave as with one process. What a worker process buys:

- a run whose code blocks (time.sleep, a busy loop, a synchronous client) is recorded `timeout`
  about GRACE_S after its deadline, with the calls it had made: its worker is stopped (SIGKILL)
  and replaced, and the other runs it held are run again;
- a worker that dies (abort, segfault, OOM kill) costs its run: recorded `error` with the signal
  and the last model call. When the worker held several runs, which one killed it is unknown:
  each is run again alone in a worker ("solo"), so a run that crashes every time is recorded once;
- --max-run-memory-mb: a worker past its start size + the limit per run it holds is stopped the
  same way, and the run is recorded `error`.

Processes come from multiprocessing's forkserver (started once per collect process, with the
heavy imports preloaded), talking over multiprocessing Pipes: no hand-written wire format.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import queue
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from astuner.engines import Engine
from astuner.workflow import Task
from collect.messages import (
    CallMade,
    GenReply,
    GenRequest,
    Idle,
    InitError,
    Message,
    Ready,
    RunDone,
    RunStarted,
    StartRun,
    Stop,
)
from collect.reaper import Reaper, set_subreaper
from collect.runner import CollectStats, Recorder, RunSpec, make_trajectory
from collect.worker import AuxiliaryRef, EngineRef, WorkerSetup, worker_main

GRACE_S = 1.0  # past its deadline this long (and not ended by its own timeout): the run's worker is stopped
TICK_S = 0.1
STALE_S = 0.5  # the watchdog has not beaten this long: native code holds the GIL, who is running is unknown
MEMORY_CHECK_S = 0.5
HELD_S = 0.3  # a run executing this long without yielding: its worker gets no new runs until it yields
MAX_REQUEUES = 3  # a run whose worker was stopped this often while it waited in it is recorded, not run again
# imported once by the fork server, so a worker (also a replacement) starts in well under a second
PRELOAD = ["collect.worker", "agentscope.agent", "agentscope.formatter", "agentscope.tool"]


def start_fork_server() -> None:
    """Start the fork server now (it returns at once; its imports take a few seconds): called before
    the engine loads, the two overlap."""
    import multiprocessing
    from multiprocessing import forkserver

    multiprocessing.get_context("forkserver").set_forkserver_preload(PRELOAD)
    forkserver.ensure_running()


def default_workers() -> int:
    """One worker per core the collect may use, at most 8: workers mostly wait on the engine,
    and each holds its own copy of AgentScope and the tokenizer (~300 MB)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


@dataclass
class Run:
    key: int
    task: Task
    sample_index: int
    solo: bool = False  # run alone in a worker: its last worker died while holding it and others
    requeues: int = 0
    started_wall: float | None = None
    started_mono: float | None = None
    calls: dict = field(default_factory=dict)  # index -> ModelCall, as the worker reports them


class WorkerHandle:
    """Collect's side of one worker slot: the process now in it, and what collect knows of it."""

    def __init__(self, index: int, capacity: int):
        self.index, self.capacity = index, capacity
        self.status = None
        self.baseline_rss = 0
        self.memory_checked = 0.0
        self.reset(None)

    def reset(self, crash_file: str | None) -> None:
        """For a new process in this slot (its first, or a replacement): nothing sent, nothing known."""
        self.process = self.conn = None
        self.runs: dict[int, Run] = {}
        self.waiting = 0  # its model calls in collect's engines now
        self.posted = self.acked = 0  # messages sent to it / of those, how many it has handled and gone idle after
        self.ready = self.dead = False
        self.stopped_for: str | None = None  # why collect stopped it (None: it died by itself)
        self.crash_file = crash_file
        self._outbox: queue.SimpleQueue = (
            queue.SimpleQueue()
        )  # a new one: the old process's sender may still hold its own

    def post(self, message: Message) -> None:
        self.posted += 1
        self._outbox.put(message)

    def stop_sender(self) -> None:
        """The sender thread ends once it has sent what was posted before."""
        self._outbox.put(None)

    def held(self, now: float) -> bool:
        """One run has executed on its loop for more than HELD_S without yielding (the watchdog's word)."""
        return self.status[0] >= 0 and now - self.status[1] > HELD_S

    @property
    def busy(self) -> bool:
        """Running what collect's messages woke up (the worker has not reported it idle since)."""
        return self.acked < self.posted

    def send_loop(self) -> None:
        """Sender thread: a worker that does not read (its GIL held by native code) never blocks collect's loop."""
        while (message := self._outbox.get()) is not None:
            try:
                self.conn.send(message)
            except (OSError, ValueError):
                return


class WorkerPool:
    def __init__(
        self,
        spec: RunSpec,
        engine: Engine,
        recorder: Recorder,
        workers: int,
        concurrency: int,
        memory_limit_mb: float | None = None,
    ):
        import multiprocessing

        self.spec, self.engine, self.recorder = spec, engine, recorder
        self.memory_limit = memory_limit_mb * 2**20 if memory_limit_mb else None
        self.engines: list[Engine] = [engine]
        auxiliary = []
        for name, backend in spec.auxiliary.items():
            if backend.engine is not None and all(backend.engine is not e for e in self.engines):
                self.engines.append(backend.engine)
            key = None if backend.engine is None else next(i for i, e in enumerate(self.engines) if e is backend.engine)
            auxiliary.append(AuxiliaryRef(name, key, backend.sampling, backend.spec if key is None else None))
        self.tmp = tempfile.mkdtemp(prefix="astuner-collect-")
        self.setup = WorkerSetup(
            spec=dataclasses.replace(spec, workflow_cls=None, auxiliary={}),
            engines=[EngineRef(i, e.name, e.checkpoint) for i, e in enumerate(self.engines)],
            auxiliary=auxiliary,
            environ=dict(os.environ),
            sys_path=list(sys.path),
            cwd=os.getcwd(),
        )
        self.ctx = multiprocessing.get_context("forkserver")
        start_fork_server()  # at once if collect has started it already
        self.handles = [WorkerHandle(i, concurrency // workers + (i < concurrency % workers)) for i in range(workers)]
        self.pending: deque[Run] = deque()
        self.solo: deque[Run] = deque()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.finished: asyncio.Future | None = None
        self.closing = False
        self.spawned = 0
        self.init_failures = 0

    # ----- workers ----------------------------------------------------------------------
    def _spawn(self, handle: WorkerHandle) -> None:
        self.spawned += 1
        handle.reset(crash_file=os.path.join(self.tmp, f"worker-{self.spawned}.crash"))
        parent, child = self.ctx.Pipe(duplex=True)
        handle.status = self.ctx.RawArray("d", [-1.0, 0.0, 0.0])  # [run key or -1, since, beat]: the watchdog's
        setup = dataclasses.replace(self.setup, crash_file=handle.crash_file)
        handle.process = self.ctx.Process(
            target=worker_main, args=(child, handle.status, setup), daemon=True, name=f"collect-worker-{handle.index}"
        )
        handle.process.start()
        child.close()
        handle.conn = parent
        threading.Thread(target=handle.send_loop, daemon=True, name=f"collect-send-{handle.index}").start()
        threading.Thread(
            target=self._read, args=(handle, parent, handle.process), daemon=True, name=f"collect-read-{handle.index}"
        ).start()

    def _read(self, handle: WorkerHandle, conn, process) -> None:
        """Reader thread of one worker process: its messages into collect's loop; at EOF, its exit."""
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            self._call(self._on_message, handle, process, message)
        process.join(5)
        self._call(self._on_exit, handle, process)

    def _call(self, fn, *args) -> None:
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: collect is over
            pass

    def _stop(self, handle: WorkerHandle, reason: str) -> None:
        """SIGKILL the worker and what its runs started (a tool's subprocess must not outlive the run)."""
        import psutil

        handle.stopped_for, handle.dead = reason, True
        try:
            processes = [psutil.Process(handle.process.pid)]
            processes += processes[0].children(recursive=True)
        except (psutil.Error, AttributeError, ValueError):
            processes = []
        for process in processes:
            try:
                process.kill()
            except psutil.Error:
                pass
        handle.stop_sender()

    # ----- messages ---------------------------------------------------------------------
    def _on_message(self, handle: WorkerHandle, process, message: Message) -> None:
        if handle.dead or handle.process is not process:
            return  # a stopped worker's last words: its runs are already recorded or queued again
        try:
            match message:
                case GenRequest():
                    handle.waiting += 1
                    asyncio.ensure_future(self._generate(handle, process, message))
                case Idle(received):
                    handle.acked = received
                case CallMade(key, call):
                    if (run := handle.runs.get(key)) is not None:
                        run.calls[call.index] = call
                case RunStarted(key, wall_time):
                    if (run := handle.runs.get(key)) is not None:
                        run.started_wall, run.started_mono = wall_time, time.monotonic()
                case RunDone(key, trajectory, roles):
                    run = handle.runs.pop(key)
                    calls = [run.calls[i] for i in sorted(run.calls)]
                    self.recorder.record(trajectory.model_copy(update={"calls": calls}), roles)
                case Ready():
                    handle.ready = True
                    handle.baseline_rss = _rss(process.pid)
                    self.init_failures = 0
                case InitError(text):
                    self._fail(
                        ValueError(f"--workflow {self.spec.workflow_ref}: a worker process could not set it up: {text}")
                    )
        except Exception as exc:  # UnregisteredTargetError, or a bug: the collect stops with it
            self._fail(exc)
            return
        if isinstance(message, (Ready, RunDone)):  # a worker has room now
            self._dispatch()

    async def _generate(self, handle: WorkerHandle, process, message: GenRequest) -> None:
        try:
            generation, error = (
                await self.engines[message.engine_key].generate(message.prompt_ids, message.sampling),
                None,
            )
        except Exception as exc:  # the call fails in the run, as it would in one process
            generation, error = None, _picklable(exc)
        if handle.process is process and not handle.dead:
            handle.waiting -= 1
            handle.post(GenReply(message.request, generation, error))

    def _on_exit(self, handle: WorkerHandle, process) -> None:
        if handle.process is not process:
            return
        if handle.stopped_for is None and not self.closing:
            handle.dead = True
            handle.stop_sender()
            runs = list(handle.runs.values())
            if not handle.ready:
                self.init_failures += 1
                if self.init_failures >= 3:
                    self._fail(
                        RuntimeError(
                            f"worker processes die while starting ({_exit_reason(process.exitcode)}), "
                            f"3 times in a row; try --workers 0 to see the error in this process"
                        )
                    )
                    return
            why = _exit_reason(process.exitcode)
            self.recorder.stats.worker_crashes += 1
            if len(runs) == 1 or any(r.solo for r in runs):
                crash = _read_text(handle.crash_file)
                for run in runs:
                    self._record(
                        run,
                        "error",
                        f"worker process died ({why}) during this run; last model call: {_last_call(run)}",
                        crash or None,
                    )
            else:  # which of them did it is unknown: each runs again alone
                for run in runs:
                    self._requeue(run, solo=True)
        handle.runs = {}
        if not self.closing and (self.pending or self.solo or any(h.runs for h in self.handles)):
            self._spawn(handle)
        self._dispatch()

    # ----- scheduling -------------------------------------------------------------------
    def _expected_requests(self) -> int:
        """Runs that may call an engine any moment (Engine.expected_requests): those not waiting on one in
        workers still running what collect last sent them (unless one run holds that worker's loop), and
        those a starting worker is about to get."""
        expected, queued, now = 0, len(self.pending), time.monotonic()
        for h in self.handles:
            if h.dead or h.held(now):
                continue  # a run holding its loop this long is blocking code, not on its way to a call
            if h.ready:
                if h.busy:
                    expected += max(0, len(h.runs) - h.waiting)
            elif queued:
                expected += min(h.capacity, queued)
                queued -= min(h.capacity, queued)
        return expected

    def _dispatch(self) -> None:
        """Fill the workers. A solo run goes only to an empty worker, which then takes nothing else until it
        ends (a replacement worker starts empty, so they begin at once; the rest run when workers empty)."""
        if self.closing or self.finished is None or self.finished.done():
            return
        now = time.monotonic()
        for handle in self.handles:
            if not handle.ready or handle.dead or any(r.solo for r in handle.runs.values()):
                continue
            if handle.held(now):
                continue  # one run has held its loop a while: a run sent there now would only wait behind it
            if not handle.runs and self.solo:
                self._send(handle, self.solo.popleft())
                continue
            while len(handle.runs) < handle.capacity and self.pending:
                self._send(handle, self.pending.popleft())
        if not self.pending and not self.solo and not any(h.runs for h in self.handles):
            self.finished.set_result(None)

    def _send(self, handle: WorkerHandle, run: Run) -> None:
        run.started_wall = run.started_mono = None
        run.calls = {}
        handle.runs[run.key] = run
        handle.post(StartRun(run.key, run.task, run.sample_index))

    def _requeue(self, run: Run, solo: bool = False) -> None:
        run.requeues += 1
        self.recorder.stats.rerun += 1
        if run.requeues > MAX_REQUEUES:
            self._record(
                run,
                "error",
                f"its worker process was stopped {MAX_REQUEUES} times while this run was in it "
                "(because of other runs); not run again",
            )
            return
        run.solo = run.solo or solo
        (self.solo if run.solo else self.pending).append(run)

    def _record(self, run: Run, status: str, error: str, tb: str | None = None) -> None:
        calls = [run.calls[i] for i in sorted(run.calls)]
        traj = make_trajectory(
            self.spec,
            self.engine.name,
            run.task,
            run.sample_index,
            status=status,
            error=error,
            tb=tb,
            started=run.started_wall or time.time(),
            calls=calls,
        )
        try:
            self.recorder.record(traj, set())
        except Exception as exc:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        if self.finished is not None and not self.finished.done():
            self.finished.set_exception(exc)

    # ----- the watch over deadlines and memory --------------------------------------------------
    async def _watch(self) -> None:
        timeout = self.spec.timeout_s
        while True:
            await asyncio.sleep(TICK_S)
            now = time.monotonic()
            for handle in self.handles:
                if handle.dead or not handle.runs:
                    continue
                overdue = [
                    r
                    for r in handle.runs.values()
                    if r.started_mono is not None and now > r.started_mono + timeout + GRACE_S
                ]
                if overdue:
                    self._stop_overdue(handle, overdue, now)
                elif self.memory_limit and now - handle.memory_checked >= MEMORY_CHECK_S:
                    handle.memory_checked = now
                    self._check_memory(handle)
            self._dispatch()

    def _stop_overdue(self, handle: WorkerHandle, overdue: list[Run], now: float) -> None:
        timeout = self.spec.timeout_s
        current, since, beat = handle.status[0], handle.status[1], handle.status[2]
        runs = list(handle.runs.values())
        limit = f"run exceeded --timeout-s {timeout:g}"
        if now - beat <= STALE_S:
            holder = handle.runs.get(int(current)) if current >= 0 else None
            if holder is not None:
                if holder.started_mono is None or now <= holder.started_mono + timeout:
                    return  # it holds the loop within its own time: the overdue runs are waiting on it
                culprits = {
                    holder.key: f"{limit}; its code held the worker's event loop for {now - since:.1f} s "
                    "(blocking code: time.sleep, a busy loop, a synchronous client), so the worker "
                    "process was stopped"
                }
            else:  # the loop is free, so these did not end when their timeout cancelled them
                culprits = {
                    r.key: f"{limit}; it did not end when cancelled, so its worker process was stopped" for r in overdue
                }
        elif len(runs) == 1 or all(r.solo for r in runs):
            culprits = {
                r.key: f"{limit}; native code held its worker process (no Python ran), so it was stopped"
                for r in overdue
            }
        else:  # native code holds the GIL and which run is in it is unknown: the overdue ones run again alone
            culprits = {}
        self._stop(handle, "timeout")
        self.recorder.stats.worker_kills += 1
        for run in runs:
            if run.key in culprits:
                self._record(run, "timeout", culprits[run.key])
            else:
                self._requeue(run, solo=run in overdue)
        handle.runs = {}

    def _check_memory(self, handle: WorkerHandle) -> None:
        rss = _rss(handle.process.pid)
        runs = list(handle.runs.values())
        budget = handle.baseline_rss + self.memory_limit * max(1, len(runs))
        if not rss or rss <= budget:
            return
        self._stop(handle, "memory")
        self.recorder.stats.worker_kills += 1
        if len(runs) == 1 or all(r.solo for r in runs):
            limit_mb = self.memory_limit / 2**20
            for run in runs:
                self._record(
                    run,
                    "error",
                    f"run exceeded --max-run-memory-mb {limit_mb:g}: its worker process grew to "
                    f"{rss / 2**20:.0f} MB ({(rss - handle.baseline_rss) / 2**20:.0f} MB over its size at start), "
                    "so it was stopped",
                )
        else:
            for run in runs:
                self._requeue(run, solo=True)
        handle.runs = {}

    # ----- the whole collect ------------------------------------------------------------
    async def run(self, todo: list[tuple[Task, int]]) -> None:
        self.loop = asyncio.get_running_loop()
        self.finished = self.loop.create_future()
        self.pending.extend(Run(i, task, sample) for i, (task, sample) in enumerate(todo))
        for handle in self.handles:
            self._spawn(handle)
        for engine in self.engines:
            engine.expected_requests = self._expected_requests
        watch = asyncio.ensure_future(self._watch())
        try:
            await self.finished
        finally:
            watch.cancel()
            for engine in self.engines:
                engine.expected_requests = None
            await self._shutdown(graceful=self.finished.done() and self.finished.exception() is None)

    async def _shutdown(self, graceful: bool) -> None:
        """Graceful: every run is recorded, so the workers are told to stop and left to exit (their reader
        threads reap them); otherwise (an error, Ctrl-C) they are killed."""
        self.closing = True
        for handle in self.handles:
            if handle.process is None:
                continue
            if graceful and not handle.dead:
                handle.post(Stop())
                handle.stop_sender()
            else:
                self._stop(handle, "end")
        shutil.rmtree(self.tmp, ignore_errors=True)


async def run_collect_pool(
    spec: RunSpec,
    engine: Engine,
    todo: list[tuple[Task, int]],
    writer,
    concurrency: int,
    workers: int,
    flush_interval_s: float = 2.0,
    progress: bool = True,
    memory_limit_mb: float | None = None,
) -> CollectStats:
    """run_collect's work in `workers` processes (collect/worker.py); same records, same files."""
    from collect.runner import UnregisteredTargetError

    workers = max(1, min(workers, concurrency, len(todo)))
    recorder = Recorder(spec, writer, len(todo), flush_interval_s, progress)
    pool = WorkerPool(spec, engine, recorder, workers, concurrency, memory_limit_mb)
    # the orphans of a worker that died come here, not to init; with the workers' own descendants,
    # they are killed when the collect ends (collect/reaper.py)
    subreaper = set_subreaper()
    reaper = Reaper()  # after the fork server started: it stays
    refused = False
    try:
        await pool.run(todo)
    except UnregisteredTargetError:
        refused = True
        raise
    finally:
        reaper.reap()
        if subreaper:
            set_subreaper(False)
        stats = recorder.close(refused)
    stats.workers = workers
    return stats


def _rss(pid: int) -> int:
    import psutil

    try:
        return psutil.Process(pid).memory_info().rss
    except psutil.Error:
        return 0


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "exit status unknown"
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def _last_call(run: Run) -> str:
    if not run.calls:
        return "none (it died before its first model call ended)"
    call = run.calls[max(run.calls)]
    state = (
        f"failed: {call.error.splitlines()[0][:200]}"
        if call.error
        else f"{call.completion_tokens or 0} completion tokens"
    )
    return f"#{call.index} (role {call.role}, {state})"


def _read_text(path: str | None) -> str:
    try:
        return Path(path).read_text(errors="replace").strip() if path else ""
    except OSError:
        return ""


def _picklable(exc: Exception) -> Exception:
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
