"""A collect worker process: runs workflows on its own event loop; model calls go to collect's engine.

Started by collect/pool.py (multiprocessing, forkserver). It talks to collect over one duplex
multiprocessing Pipe of the messages in collect/messages.py. It reports Idle when its event loop
is about to wait (IdleSelector): every callback collect's messages made ready has run, and what
those made ready in turn.

A watchdog thread writes, every WATCH_S, which run the event loop is executing (and since when)
into shared memory: when a run holds the loop past its deadline (time.sleep, a busy loop),
collect knows which one to record as the timeout before it stops this process.
"""

from __future__ import annotations

import asyncio
import contextvars
import faulthandler
import gc
import os
import selectors
import signal
import sys
import threading
import time
from dataclasses import dataclass, field

# Imported here, not in main(): the fork server preloads this module, so every worker starts with them
from transformers import AutoTokenizer

from astuner.auxiliary import AuxiliaryBackend, AuxiliarySpec, endpoint_model
from astuner.engines import Engine, Generation, SamplingParams
from astuner.openai_endpoint import OpenAIEndpoint
from astuner.workflow import load_workflow
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
from collect.runner import run_one

WATCH_S = 0.05
SWITCH_INTERVAL_S = 0.0005
IDLE = -1.0  # the loop is waiting, not running any run's code
RUN_KEY: contextvars.ContextVar[int | None] = contextvars.ContextVar("astuner_collect_run", default=None)


@dataclass
class EngineRef:
    """What a worker needs to stand in for one of collect's engines."""

    key: int
    name: str
    checkpoint: str


@dataclass
class AuxiliaryRef:
    """One of the run's auxiliary models: served by collect's engine `engine_key` with `sampling`,
    or (engine_key None) an endpoint the worker calls itself, per `spec`."""

    name: str
    engine_key: int | None
    sampling: SamplingParams | None
    spec: AuxiliarySpec | None


@dataclass
class WorkerSetup:
    spec: object  # collect.runner.RunSpec without workflow_cls (loaded here from workflow_ref) and auxiliary
    engines: list[EngineRef]
    auxiliary: list[AuxiliaryRef]
    environ: dict = field(default_factory=dict)  # collect's, at start: the fork server's is older
    sys_path: list = field(default_factory=list)
    cwd: str | None = None  # collect's: the fork server's may be another (relative task and workflow paths)
    crash_file: str | None = None  # faulthandler writes a fatal signal's Python traceback here


class RemoteEngine(Engine):
    """The worker's view of an engine in collect: renders with a tokenizer of its own (the same
    files), samples through collect, so concurrent calls of every worker batch together."""

    def __init__(self, ref: EngineRef, tokenizer, worker: Worker):
        self.name, self.checkpoint, self.tokenizer = ref.name, ref.checkpoint, tokenizer
        self.key, self._worker = ref.key, worker

    async def generate(self, prompt_token_ids: list[int], sampling: SamplingParams) -> Generation:
        return await self._worker.request(self.key, list(prompt_token_ids), sampling)

    def generate_batch(self, prompts, sampling):
        raise NotImplementedError("a worker's engine serves one request at a time (collect batches them)")


class IdleSelector(selectors.DefaultSelector):
    """The event loop's selector, which calls `before_wait` whenever the loop is about to wait: a
    loop with callbacks ready to run only polls (timeout 0), one with none waits (None or > 0)."""

    def __init__(self, before_wait):
        super().__init__()
        self.before_wait = before_wait

    def select(self, timeout=None):
        if timeout is None or timeout > 0:
            self.before_wait()
        return super().select(timeout)


@dataclass
class RunEnded:
    """Into the worker's own inbox when a run ends: the main loop looks again whether to stop."""

    key: int


class Worker:
    def __init__(self, conn, status, setup: WorkerSetup):
        self.conn, self.status, self.setup = conn, status, setup
        self.loop: asyncio.AbstractEventLoop | None = None
        self.inbox: asyncio.Queue | None = None
        self._send_lock = threading.Lock()
        self._requests: dict[int, asyncio.Future] = {}
        self._next_request = 0
        self._runs: dict[int, asyncio.Task] = {}
        self._task_keys: dict = {}  # asyncio.Task -> run key, for the watchdog (child tasks inherit their run's)
        self._stopping = False
        self._received = 0  # collect's messages handled
        self._idle_due = False  # collect's messages woke work up since the last Idle
        self.reaper: Reaper | None = None

    # ----- plumbing ---------------------------------------------------------------------
    def send(self, message: Message) -> None:
        with self._send_lock:
            self.conn.send(message)

    async def request(self, engine_key: int, prompt_ids: list[int], sampling: SamplingParams) -> Generation:
        self._next_request += 1
        request = self._next_request
        future = self.loop.create_future()
        self._requests[request] = future
        try:
            self.send(GenRequest(request, engine_key, prompt_ids, sampling))
            return await future
        finally:
            self._requests.pop(request, None)

    def _read(self) -> None:
        """Reader thread: collect's messages into the loop; collect gone (EOF): this process ends.
        It takes every message already in the pipe at once: while the loop runs Python, each time
        this thread wants the GIL back costs it up to the switch interval."""
        while True:
            try:
                messages = [self.conn.recv()]
                while self.conn.poll():
                    messages.append(self.conn.recv())
            except (EOFError, OSError):
                if self.reaper is not None:
                    self.reaper.reap()
                os._exit(1)  # no collect to report to: never outlive it (nor let the runs' processes)
            self.loop.call_soon_threadsafe(self._on_messages, messages)

    def _on_messages(self, messages: list) -> None:
        for message in messages:
            self._on_message(message)

    def _on_message(self, message: Message) -> None:
        self._received += 1
        self._idle_due = True
        if isinstance(message, GenReply):
            future = self._requests.get(message.request)
            if future is not None and not future.done():
                if message.error is not None:
                    future.set_exception(message.error)
                else:
                    future.set_result(message.generation)
        else:
            self.inbox.put_nowait(message)

    def before_wait(self) -> None:
        """The loop is about to wait (IdleSelector): nothing is ready to run, so the work collect's
        messages woke up has all run to its next wait; tell collect so, once per such wake-up."""
        if self._idle_due:
            self._idle_due = False
            self.send(Idle(self._received))

    def _task_factory(self, loop, coro, **kwargs):
        task = asyncio.Task(coro, loop=loop, **kwargs)
        key = RUN_KEY.get()  # the creating code's run: a run's own child tasks are blamed on it
        if key is not None:
            self._task_keys[task] = key
            task.add_done_callback(self._task_keys.pop)
        return task

    def _watch(self) -> None:
        """Watchdog thread: [run key executing or IDLE, since (monotonic), last beat] into shared memory."""
        current, since = IDLE, time.monotonic()
        while True:
            task = asyncio.current_task(self.loop)
            key = float(self._task_keys.get(task, IDLE)) if task is not None else IDLE
            now = time.monotonic()
            if key != current:
                current, since = key, now
            self.status[0], self.status[1], self.status[2] = current, since, now
            time.sleep(WATCH_S)

    # ----- runs -------------------------------------------------------------------------
    async def main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.loop.set_task_factory(self._task_factory)
        self.inbox = asyncio.Queue()
        threading.Thread(target=self._read, name="collect-reader", daemon=True).start()
        spec = self.setup.spec
        try:
            spec.workflow_cls = load_workflow(spec.workflow_ref)
            tokenizers: dict[str, object] = {}
            engines = {}
            for ref in self.setup.engines:
                if ref.checkpoint not in tokenizers:
                    tokenizers[ref.checkpoint] = AutoTokenizer.from_pretrained(ref.checkpoint)
                engines[ref.key] = RemoteEngine(ref, tokenizers[ref.checkpoint], self)
            spec.auxiliary = {
                aux.name: AuxiliaryBackend(aux.name, model=endpoint_model(aux.spec))
                if aux.engine_key is None
                else AuxiliaryBackend(aux.name, engine=engines[aux.engine_key], sampling=aux.sampling)
                for aux in self.setup.auxiliary
            }
        except BaseException as exc:  # collect loaded the same workflow: this is rare, and fatal to the collect
            self.send(InitError(f"{type(exc).__name__}: {exc}".splitlines()[0][:500]))
            return
        threading.Thread(target=self._watch, name="collect-watchdog", daemon=True).start()
        # the runs' processes, setsid ones included, stay below this process and are killed with their runs
        set_subreaper()
        self.reaper = Reaper()
        endpoint = OpenAIEndpoint()
        # What the imports and the setup made lives as long as this process: out of the collector's
        # sight, a full collection (the heap of torch, transformers and AgentScope) pauses the loop
        # for ~0.2 s instead of scanning them all again
        gc.freeze()
        self.send(Ready())
        try:
            while not (self._stopping and not self._runs):
                match await self.inbox.get():
                    case StartRun(key, task, sample_index):
                        self._runs[key] = self._start(spec, engines[0], endpoint, key, task, sample_index)
                    case Stop():
                        self._stopping = True
                    case RunEnded(key):
                        self._runs.pop(key, None)
                        if not self._runs:  # whose a process is, among runs sharing this one, is unknown
                            self.reaper.reap()
        finally:
            await endpoint.close()
            self.reaper.reap()

    def _start(self, spec, engine, endpoint, key: int, task, sample_index: int) -> asyncio.Task:
        async def run() -> None:
            self.send(RunStarted(key, time.time()))
            traj, roles = await run_one(
                spec, engine, task, sample_index, endpoint, on_call=lambda call: self.send(CallMade(key, call))
            )
            # its calls went one by one, as they were made: collect puts them back (sent once, not twice)
            self.send(RunDone(key, traj.model_copy(update={"calls": []}), roles))
            self.inbox.put_nowait(RunEnded(key))

        token = RUN_KEY.set(key)
        try:
            return self.loop.create_task(run())
        finally:
            RUN_KEY.reset(token)


def worker_main(conn, status, setup: WorkerSetup) -> None:
    """The process's entry point (multiprocessing target)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is collect's to handle: it stops the workers
    # A thread that wants the GIL from the running loop waits up to this long (default 5 ms): the
    # reader thread would take collect's replies one per 5 ms while the loop is busy with runs.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    os.environ.clear()
    os.environ.update(setup.environ)
    sys.path[:] = setup.sys_path
    if setup.cwd:
        os.chdir(setup.cwd)
    if setup.crash_file:
        faulthandler.enable(file=open(setup.crash_file, "w"), all_threads=False)
    worker = Worker(conn, status, setup)

    def new_loop() -> asyncio.AbstractEventLoop:
        loop = asyncio.SelectorEventLoop(IdleSelector(worker.before_wait))
        asyncio.set_event_loop(loop)  # as asyncio.run does (a loop_factory's loop is not set)
        return loop

    with asyncio.Runner(loop_factory=new_loop) as runner:
        runner.run(worker.main())
    conn.close()
