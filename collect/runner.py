"""Run a workflow over (task, sample) pairs with C concurrent runs sharing one engine."""

from __future__ import annotations

import asyncio
import copy
import math
import time
import traceback
from dataclasses import dataclass, field

from astuner.compat.agentjet import output_fields
from astuner.compat.tuner_config import as_tree, build_tuner_config
from astuner.engines import Engine, SamplingParams, derive_seed
from astuner.faults import crash_point
from astuner.openai_endpoint import OpenAIEndpoint
from astuner.trajectory import Checkpoint, Sampling, TaskRecord, Trajectory, to_jsonable, trajectory_id
from astuner.tuner import AuxiliaryModel, ModelTuner
from astuner.workflow import Task, Workflow, WorkflowOutput, WorkflowTask
from collect.reaper import Reaper, set_subreaper
from collect.writer import TraceWriter


@dataclass
class RunSpec:
    run_id: str
    workflow_cls: type[Workflow]
    workflow_ref: str
    checkpoint: Checkpoint
    sampling: Sampling
    trainable_targets: list[str] | None
    iteration: int = 0
    timeout_s: float = 600.0
    auxiliary: dict = field(default_factory=dict)  # name -> astuner.auxiliary.AuxiliaryBackend
    override_targets: bool = True  # False: the workflow keeps its own trainable_targets ('*', or none given)
    tuner_config: dict | None = None  # model_tuner.config (astuner/compat/tuner_config.py); None: the defaults
    tool_format: str = "auto"  # astuner.chat.FAMILY_CHOICES
    template_kwargs: dict = field(default_factory=dict)  # extra chat-template variables (--template-kwargs)
    workflow_name: str | None = (
        None  # the recorded workflow name; None: the class's (set where the class is not at hand)
    )

    def __post_init__(self):
        if self.workflow_name is None and self.workflow_cls is not None:
            self.workflow_name = getattr(self.workflow_cls, "name", self.workflow_cls.__name__)


class UnregisteredTargetError(ValueError):
    """The trainable targets name a role that no run had registered when the first run finished ok:
    most likely a misspelt role, so the runs are collected under the wrong targets."""

    def __init__(self, missing: list[str], known: list[str]):
        self.missing, self.known = missing, known
        super().__init__(
            f"no run registered role{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))} "
            f"(registered: {', '.join(known) or 'none'})"
        )


@dataclass(slots=True)
class RoleStats:
    """The model calls of one role in a collect (the table collect prints at the end)."""

    calls: int = 0
    trainable_calls: int = 0
    completion_tokens: int = 0
    counted_calls: int = 0  # calls that reported their completion tokens (default models may not)
    agents: set = field(default_factory=set)  # agent names ("-": none)


@dataclass
class CollectStats:
    ok: int = 0
    error: int = 0
    timeout: int = 0
    calls: int = 0
    trainable_calls: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    registered_roles: set = field(default_factory=set)
    by_role: dict[str, RoleStats] = field(default_factory=dict)
    first_failure: Trajectory | None = None  # the first run recorded with status error or timeout
    failed_calls: int = 0  # model calls that raised (recorded with their error), in runs of any status
    first_failed_call: str | None = None
    workers: int = 0  # worker processes (0: the runs ran in collect's own process)
    worker_crashes: int = 0  # worker processes that died by themselves (abort, segfault, OOM kill)
    worker_kills: int = 0  # worker processes collect stopped: a run past --timeout-s or --max-run-memory-mb
    rerun: int = 0  # runs started again because their worker was stopped or died while holding them

    @property
    def runs(self) -> int:
        return self.ok + self.error + self.timeout

    @property
    def roles_seen(self) -> set[str]:
        """Roles registered or called so far (model_tuner itself is 'default')."""
        return self.registered_roles | set(self.by_role)

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds else 0.0


def _check_output(out, owner: str = "Workflow") -> tuple[float | None, dict]:
    if not isinstance(out, WorkflowOutput):
        raise TypeError(
            f"{owner}.execute returned {type(out).__name__}; expected astuner.WorkflowOutput(reward=..., metadata={{...}})"
        )
    reward = out.reward
    if reward is not None:
        if isinstance(reward, (list, tuple)):  # AgentJet refuses step rewards too ("future versions")
            raise TypeError(
                f"WorkflowOutput.reward must be a finite float or None, got a list {reward!r}; "
                "per-step rewards are not supported: return their sum or put them in metadata"
            )
        if isinstance(reward, bool) or not isinstance(reward, (int, float)) or not math.isfinite(reward):
            raise TypeError(f"WorkflowOutput.reward must be a finite float or None, got {reward!r}")
        reward = float(reward)
    metadata = to_jsonable(out.metadata or {})
    metadata.update(
        output_fields(out)
    )  # AgentJet's is_success and log_metrics ride in the metadata, where judge finds them
    return reward, metadata


async def run_one(
    spec: RunSpec, engine: Engine, task: Task, sample_index: int, endpoint: OpenAIEndpoint | None = None, on_call=None
) -> tuple[Trajectory, set[str]]:
    """One workflow run. `on_call(call)` sees each model call as it is recorded (a worker process
    streams them to collect, so a run it has to stop keeps the calls it had made)."""
    # keyed by (task, sample), not the run: the same --seed reproduces a run in another folder
    sampling = SamplingParams(
        **{**spec.sampling.model_dump(), "seed": derive_seed(spec.sampling.seed, f"{task.task_id}/{sample_index}")}
    )
    config = as_tree(spec.tuner_config if spec.tuner_config is not None else build_tuner_config())
    tuner = ModelTuner(
        engine,
        sampling,
        spec.trainable_targets,
        config=config,
        endpoint=endpoint,
        tool_format=spec.tool_format,
        template_kwargs=spec.template_kwargs,
    )
    tuner.on_call = on_call
    # what agentscope.tuner workflows get as auxiliary_models: recorded per call, never trainable
    tuner.auxiliary_models = {name: AuxiliaryModel(tuner, backend) for name, backend in spec.auxiliary.items()}
    status, error, tb, reward, metadata = "ok", None, None, None, {}
    started, deadline = time.time(), None
    try:
        workflow = spec.workflow_cls()
        if spec.override_targets:  # --trainable-targets a,b replaces the class attribute for this run
            workflow.trainable_targets = None if spec.trainable_targets is None else list(spec.trainable_targets)
        elif isinstance(getattr(workflow, "trainable_targets", None), list):  # its own list, a copy per run
            workflow.trainable_targets = list(workflow.trainable_targets)
        async with asyncio.timeout(spec.timeout_s) as deadline:
            # its own copy: a run that edits task.metadata changes neither the record nor later samples
            out = await workflow.execute(WorkflowTask(_own_copy(task), sample_index, spec.iteration), tuner)
        if deadline.expired():  # the cancellation was swallowed (AgentScope's agents catch it as an interrupt)
            raise TimeoutError
        reward, metadata = _check_output(out, spec.workflow_cls.__name__)
    except TimeoutError:
        if deadline is not None and deadline.expired():
            status, error = "timeout", f"run exceeded --timeout-s {spec.timeout_s:g}"
        else:  # the workflow's own TimeoutError is an error like any other
            status, error, tb = "error", "TimeoutError raised by the workflow", traceback.format_exc()
    except (Exception, SystemExit) as exc:  # a workflow's sys.exit() ends its run, not the collect
        status, error, tb = "error", f"{type(exc).__name__}: {exc}", traceback.format_exc()
    except BaseException as exc:
        # Ctrl-C, a coroutine being closed and a cancellation of this run's task (collect stopping) go on;
        # any other BaseException (a library's own, a CancelledError the workflow raised) is its run's error
        if isinstance(exc, (KeyboardInterrupt, GeneratorExit)) or _cancel_requested():
            raise
        status, error, tb = "error", f"{type(exc).__name__}: {exc}", traceback.format_exc()
    await tuner.aclose()  # the run's OpenAI clients and endpoint keys
    # a call cancelled by the timeout left its reserved slot empty (one that raised is recorded with its error)
    calls = [c for c in tuner.calls if c is not None]
    traj = make_trajectory(
        spec,
        engine.name,
        task,
        sample_index,
        status=status,
        error=error,
        tb=tb,
        reward=reward,
        metadata=metadata,
        started=started,
        calls=calls,
    )
    return traj, set(tuner.registered_roles)


def _own_copy(task: Task) -> Task:
    """A copy of `task` for one run: deep, or where a row holds what cannot be copied (a generator's live
    object), its metadata and messages one level down."""
    try:
        return copy.deepcopy(task)
    except Exception:
        return Task(task.task_id, task.main_query, dict(task.metadata), list(task.init_messages))


def _cancel_requested() -> bool:
    """Someone asked to cancel the task running this (Task.cancel), as opposed to code raising CancelledError."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def make_trajectory(
    spec: RunSpec,
    engine_name: str,
    task: Task,
    sample_index: int,
    *,
    status: str,
    started: float,
    calls: list,
    error: str | None = None,
    tb: str | None = None,
    reward: float | None = None,
    metadata: dict | None = None,
) -> Trajectory:
    """The record of one run (the run: spec, engine, task, sample; how it went: the rest), finished now:
    by run_one, or by collect for a run whose worker process it had to stop."""
    finished = time.time()
    return Trajectory(
        trajectory_id=trajectory_id(spec.run_id, task.task_id, sample_index),
        run_id=spec.run_id,
        workflow=spec.workflow_name,
        workflow_ref=spec.workflow_ref,
        task=TaskRecord(task_id=task.task_id, main_query=task.main_query, metadata=to_jsonable(task.metadata)),
        sample_index=sample_index,
        iteration=spec.iteration,
        checkpoint=spec.checkpoint,
        engine=engine_name,
        sampling=spec.sampling,
        trainable_targets=spec.trainable_targets,
        status=status,
        error=error,
        traceback=tb,
        reward=reward,
        metadata={} if metadata is None else metadata,
        started_at=started,
        finished_at=finished,
        duration_s=round(finished - started, 6),
        calls=calls,
    )


class Recorder:
    """Where finished runs go, whoever ran them (this process or a worker): the trace writer,
    the stats, the progress bar and the trainable-targets check."""

    def __init__(
        self, spec: RunSpec, writer: TraceWriter, total: int, flush_interval_s: float = 2.0, progress: bool = True
    ):
        from tqdm.auto import tqdm

        self.spec, self.writer, self.flush_interval_s = spec, writer, flush_interval_s
        self.stats = CollectStats()
        self.bar = tqdm(total=total, desc="collect", unit="run", disable=not progress, dynamic_ncols=True)
        self.started = self.oldest_unflushed = time.monotonic()
        # Named targets are checked once, when the first run finishes ok; nothing is flushed before,
        # so runs collected under a misspelt role are discarded rather than written.
        self.targets_unchecked = spec.trainable_targets is not None
        self.refused: UnregisteredTargetError | None = None

    def record(self, traj: Trajectory, roles: set) -> None:
        stats = self.stats
        if self.refused is not None:  # other runs finishing before the error reaches the caller: keep nothing
            return
        self.writer.add(traj)
        if self.writer.pending == 1:
            self.oldest_unflushed = time.monotonic()
        crash_point("collect.recorded")  # finished but only in the buffer
        setattr(stats, traj.status, getattr(stats, traj.status) + 1)
        stats.calls += len(traj.calls)
        stats.trainable_calls += sum(c.trainable for c in traj.calls)
        stats.completion_tokens += sum(
            c.completion_tokens or 0 for c in traj.calls if c.completion_token_ids is not None
        )
        stats.registered_roles |= roles
        for call in traj.calls:
            if call.error is not None:
                stats.failed_calls += 1
                if stats.first_failed_call is None:
                    stats.first_failed_call = f"task {traj.task.task_id} sample {traj.sample_index} call {call.index} ({call.role}): {call.error}"
            counts = stats.by_role.get(call.role)
            if counts is None:
                counts = stats.by_role[call.role] = RoleStats()
            counts.calls += 1
            counts.trainable_calls += call.trainable
            if call.completion_tokens is not None:
                counts.completion_tokens += call.completion_tokens
                counts.counted_calls += 1
            counts.agents.add(call.agent_name or "-")
        if traj.status != "ok" and stats.first_failure is None:
            stats.first_failure = traj
        if self.targets_unchecked and traj.status == "ok":
            self.targets_unchecked = False
            known = stats.roles_seen
            missing = [t for t in self.spec.trainable_targets if t not in known]
            if missing:
                self.refused = UnregisteredTargetError(missing, sorted(known))
                raise self.refused
        stats.seconds = time.monotonic() - self.started
        # Flush in batches: one part file per interval keeps the file count low while a
        # kill loses at most the last interval of finished runs.
        if not self.targets_unchecked and time.monotonic() - self.oldest_unflushed >= self.flush_interval_s:
            self.writer.flush()
        self.bar.update(1)
        self.bar.set_postfix(failed=stats.error + stats.timeout, tok_s=f"{stats.tokens_per_s:.0f}", refresh=False)

    def close(self, refused: bool = False) -> CollectStats:
        if refused:
            self.writer.discard()  # collected under targets that name no role: keep none of it
        try:
            self.writer.flush()
        finally:
            self.bar.close()
        self.stats.seconds = time.monotonic() - self.started
        return self.stats


async def run_collect(
    spec: RunSpec,
    engine: Engine,
    todo: list[tuple[Task, int]],
    writer: TraceWriter,
    concurrency: int,
    flush_interval_s: float = 2.0,
    progress: bool = True,
) -> CollectStats:
    """Every run in this process, on this event loop (--workers 0: no isolation; breakpoints work)."""
    recorder = Recorder(spec, writer, len(todo), flush_interval_s, progress)
    queue: asyncio.Queue = asyncio.Queue()
    for item in todo:
        queue.put_nowait(item)
    endpoint = OpenAIEndpoint()  # listens only once a workflow asks for it (as_oai_baseurl_apikey)
    subreaper = set_subreaper()  # the runs' processes stay below this one (collect/reaper.py)
    reaper, in_flight = Reaper(), 0

    async def worker() -> None:
        nonlocal in_flight
        while True:
            try:
                task, sample_index = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            in_flight += 1
            try:
                result = await run_one(spec, engine, task, sample_index, endpoint)
            finally:
                in_flight -= 1
            if not in_flight:  # whose a process is, among concurrent runs, is unknown: reaped when none runs
                reaper.reap()
            recorder.record(*result)

    workers = [asyncio.ensure_future(worker()) for _ in range(max(1, min(concurrency, len(todo))))]
    refused = False
    try:
        await asyncio.gather(*workers)
    except BaseException as exc:  # a refused target, a write that failed, Ctrl-C: the other runs stop too
        refused = isinstance(exc, UnregisteredTargetError)
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        raise
    finally:
        await endpoint.close()
        reaper.reap()
        if subreaper:
            set_subreaper(False)
        stats = recorder.close(refused)
    return stats


def role_table(stats: CollectStats) -> str:
    rows = [("role", "agents", "calls", "trainable", "mean completion tokens")]
    for role, row in sorted(stats.by_role.items()):
        names = ", ".join(sorted(row.agents))
        mean = f"{row.completion_tokens / row.counted_calls:.1f}" if row.counted_calls else "-"
        rows.append(
            (role, names if len(names) <= 40 else names[:37] + "...", str(row.calls), str(row.trainable_calls), mean)
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
