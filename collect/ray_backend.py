"""Collect on a Ray cluster (--ray): engine replicas and workflow runners as Ray actors; this
process (the driver) hands out the runs, gets each finished run back as an object and alone writes
--out, through the same Recorder and TraceWriter as a plain collect (no shared filesystem).

    replica i:  EngineHost actor  (the checkpoint on 1 GPU per tensor-parallel rank, or 1 CPU)
                RunnerHost actor  (on the same node: runs workflows with collect.runner.run_one on
                                   its event loop; its model calls go to the replica's EngineHost)

Runs, seeds and token ids are those of a plain collect: the runner calls the same run_one with the
same RunSpec, renders prompts with the checkpoint's own tokenizer and samples with per-call seeds.

Faults: a runner or engine process that dies (killed, OOM, node lost) costs the runs it held; each
is started again, at most --retries times, then recorded status=error. Ray restarts the actor
(max_restarts); the driver sends that replica nothing until the restarted actor answers. The
driver itself keeps nothing that --out does not: killed, it is restarted and resumes from --out.

`ray` is imported only inside functions: collect runs without the [ray] extra.
"""

from __future__ import annotations

import contextvars
import dataclasses
import os
import sys
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

MAX_RESTARTS = 3  # per actor (Ray's max_restarts): an actor that dies more often is given up
PROBE_S = 0.5  # between two asks whether a restarting actor is back
RESTART_S = 600.0  # an actor not back this long after it died is given up (its runs go to the other replicas)
WAIT_S = 0.2  # the driver's longest wait for a finished run (then it looks at restarting actors)
INSTALL = "pip install -e '.[ray]'"
AUX_SAMPLING = ("temperature", "top_p", "max_tokens")  # what an auxiliary model's spec may set (astuner/auxiliary.py)
# Environment the driver passes on to its actors, where their node does not set it: offline flags, API keys
# of workflows. Never what describes the driver's own machine or process (paths, devices, thread counts).
_NOT_PASSED = ("PATH", "PWD", "OLDPWD", "HOME", "SHLVL", "TMPDIR", "VIRTUAL_ENV", "PYTHONPATH", "LD_LIBRARY_PATH", "_")
_NOT_PASSED_PREFIXES = ("RAY_", "CUDA_", "NVIDIA_", "HIP_", "ROCR_", "OMP_", "MKL_", "ASTUNER_CRASH_AT", "LC_", "SSH_")
_LOST: contextvars.ContextVar[list | None] = contextvars.ContextVar("astuner_ray_lost", default=None)


class RayCollectError(ValueError):
    """A collect on Ray that cannot go on (an actor that cannot start, every replica gone): one line, which
    collect's main prints as it prints a bad option."""


def require_ray(address: str):
    """The ray module, or one line naming --ray and the install command."""
    try:
        import ray
    except ImportError:
        raise ImportError(f"--ray {address}: ray is not installed; {INSTALL}") from None
    return ray


@dataclass
class HostSetup:
    """What every actor of a collect applies before it loads anything."""

    environ: dict = field(default_factory=dict)  # set where the actor's node has no value of its own
    sys_path: list = field(default_factory=list)  # the driver's; those that exist on the node come first
    cwd: str | None = None  # the driver's, where it exists (relative --tasks and --workflow paths)

    def apply(self) -> None:
        for key, value in self.environ.items():
            os.environ.setdefault(key, value)
        missing = [p for p in self.sys_path if p and p not in sys.path and os.path.isdir(p)]
        sys.path[:0] = missing
        if self.cwd and os.path.isdir(self.cwd):
            os.chdir(self.cwd)


def host_setup() -> HostSetup:
    environ = {k: v for k, v in os.environ.items() if k not in _NOT_PASSED and not k.startswith(_NOT_PASSED_PREFIXES)}
    return HostSetup(environ=environ, sys_path=list(sys.path), cwd=os.getcwd())


class EngineHost:
    """One engine replica (an async Ray actor): the collected checkpoint as engine 0, and the other
    checkpoints that auxiliary models name. Concurrent generate calls batch as in one process."""

    def __init__(self, setup: HostSetup, engines: list[tuple[str, str, dict]]):
        setup.apply()
        from astuner.engines import load_engine

        self.engines = [load_engine(name, path, **kwargs) for name, path, kwargs in engines]

    async def generate(self, key: int, prompt_ids: list[int], sampling):
        return await self.engines[key].generate(prompt_ids, sampling)

    async def ready(self) -> dict:
        import ray

        return {"pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id()}


class RunnerHost:
    """Runs workflows (an async Ray actor, several runs at once on its loop) against one EngineHost."""

    def __init__(self, setup: HostSetup, spec, engine_refs: list, auxiliary: list, engine_name: str):
        setup.apply()
        import ray
        from transformers import AutoTokenizer

        from astuner.auxiliary import AuxiliaryBackend, endpoint_model
        from astuner.openai_endpoint import OpenAIEndpoint
        from astuner.workflow import load_workflow
        from collect.worker import RemoteEngine

        # looked up by name, not passed: a restarted runner finds its engine (a handle among the constructor's
        # arguments would live in the object store, which Ray warns may fail a restart)
        self.engine_host = ray.get_actor(engine_name)
        spec.workflow_cls = load_workflow(spec.workflow_ref)
        tokenizers: dict[str, object] = {}
        self.engines = {}
        for ref in engine_refs:
            if ref.checkpoint not in tokenizers:
                tokenizers[ref.checkpoint] = AutoTokenizer.from_pretrained(ref.checkpoint)
            self.engines[ref.key] = RemoteEngine(ref, tokenizers[ref.checkpoint], self)
        spec.auxiliary = {
            aux.name: AuxiliaryBackend(aux.name, model=endpoint_model(aux.spec))
            if aux.engine_key is None
            else AuxiliaryBackend(aux.name, engine=self.engines[aux.engine_key], sampling=aux.sampling)
            for aux in auxiliary
        }
        self.spec = spec
        self.endpoint = OpenAIEndpoint()  # listens only once a workflow asks for it

    async def request(self, engine_key: int, prompt_ids: list[int], sampling):
        """RemoteEngine's call: one generation from this replica's engine actor. Its death marks the run lost
        (the run's own error would record a model call that failed only because a process was killed)."""
        import ray

        try:
            return await self.engine_host.generate.remote(engine_key, prompt_ids, sampling)
        except ray.exceptions.RayActorError as exc:
            lost = _LOST.get()
            if lost is not None:
                lost.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            raise
        except ray.exceptions.RayTaskError as exc:  # the engine's own error (a prompt past the context): as is
            raise exc.cause from None

    async def run(self, task, sample_index: int):
        """(trajectory, roles, None), or (None, None, why) when the engine actor was lost during the run."""
        from collect.runner import run_one

        lost: list[str] = []
        _LOST.set(lost)  # this call's own task (and the tasks it starts) see it
        traj, roles = await run_one(self.spec, self.engines[0], task, sample_index, self.endpoint)
        if lost:
            return None, None, f"its engine actor was lost ({lost[0]})"
        return traj, roles, None

    async def ready(self) -> dict:
        import ray

        return {"pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id()}


@dataclass
class ActorState:
    """The driver's view of one actor: usable, or restarting (probed until it answers)."""

    handle: object
    name: str  # the Ray actor name (engines: runners look them up by it)
    deaths: int = 0
    healthy: bool = True
    epoch: int = 0  # its restarts seen so far: a run sent before the last one tells of an old death
    gone: bool = False  # died more than MAX_RESTARTS times, or not back within RESTART_S: not used again
    probe: object = None  # the outstanding ready() call while restarting
    next_probe: float = 0.0
    down_since: float = 0.0
    pid: int | None = None

    def died(self, epoch: int) -> None:
        if self.healthy and epoch == self.epoch:
            self.deaths += 1
            self.healthy = False
            self.down_since = time.monotonic()
            self.gone = self.deaths > MAX_RESTARTS

    def still_down(self) -> None:
        """A probe failed: ask again soon, unless it has been down too long (Ray gave up, or no node has room)."""
        self.next_probe = time.monotonic() + PROBE_S
        self.gone = self.gone or time.monotonic() - self.down_since > RESTART_S


@dataclass
class Runner:
    actor: ActorState
    engine: ActorState
    capacity: int
    runs: dict = field(default_factory=dict)  # ObjectRef -> Run

    @property
    def usable(self) -> bool:
        return self.actor.healthy and self.engine.healthy


@dataclass
class Run:
    task: object
    sample_index: int
    attempts: int = 0
    epochs: tuple = (0, 0)  # (runner's, engine's) when it was sent


def plan_replicas(ray, engine: str, engine_args: dict, device: str | None, replicas: int | None) -> tuple[int, dict]:
    """(how many engine replicas, the Ray resources of each), checked against the cluster: one line if it
    cannot hold them. GPU: one replica per tensor_parallel_size GPUs (vllm; the transformers engine unless
    --device cpu); CPU: one core each."""
    cluster = ray.cluster_resources()
    gpus, cpus = int(cluster.get("GPU", 0)), int(cluster.get("CPU", 0))
    if (device or "").startswith("cuda") and not gpus:
        raise ValueError(f"--device {device}: the Ray cluster has no GPUs; drop --device or give --device cpu")
    on_gpu = engine == "vllm" or (gpus > 0 and not (device or "").startswith("cpu"))
    if on_gpu:
        per = int(engine_args.get("tensor_parallel_size", 1)) if engine == "vllm" else 1
        if replicas is None:
            replicas = max(1, gpus // per)
        if replicas * per > gpus:
            raise ValueError(
                f"--engine-replicas {replicas}: the Ray cluster has {gpus} GPUs, each replica takes {per}; "
                f"give --engine-replicas {max(1, gpus // per)} or fewer{'' if gpus else ' (or --device cpu)'}"
            )
        return replicas, {"num_gpus": per, "num_cpus": 1 if cpus >= replicas else 0}
    replicas = replicas or 1
    if replicas > cpus:
        raise ValueError(
            f"--engine-replicas {replicas}: the Ray cluster has {cpus} CPUs, each CPU replica takes one; "
            f"give --engine-replicas {max(1, cpus)} or fewer"
        )
    return replicas, {"num_cpus": 1}


def connect(ray, address: str) -> bool:
    """Join (auto, HOST:PORT, ray://...) or start (local) a cluster; False when this process was already in one
    (then it is left as it was)."""
    import logging

    if ray.is_initialized():
        return False
    kwargs = {"include_dashboard": False} if address == "local" else {}
    if address == "local":  # its workers import this checkout's code, as this process does
        kwargs["runtime_env"] = {"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}}
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING, **kwargs)
    except ConnectionError as exc:
        raise ValueError(
            f"--ray {address}: no Ray cluster there ({str(exc).splitlines()[0][:200]}); start one with "
            "`ray start --head`, or use --ray local"
        ) from None
    return True


def _first_line(exc: BaseException) -> str:
    """A Ray error in one line: the remote exception (a task's), else Ray's own first line."""
    cause = getattr(exc, "cause", None)
    text = f"{type(cause).__name__}: {cause}" if cause is not None else f"{type(exc).__name__}: {exc}"
    return next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)[:300]


def run_collect_ray(
    spec,
    todo: list,
    writer,
    *,
    address: str,
    engine: str,
    model_path: Path,
    engine_kwargs: dict,
    auxiliary: dict,
    concurrency: int,
    replicas: int | None,
    retries: int,
    flush_interval_s: float = 2.0,
    progress: bool = True,
):
    """Every run of `todo` on a Ray cluster; records as run_collect's (collect/runner.py). Returns CollectStats."""
    ray = require_ray(address)
    from astuner.engines import SamplingParams
    from collect.runner import Recorder, UnregisteredTargetError
    from collect.worker import AuxiliaryRef, EngineRef

    started_here = connect(ray, address)
    actors: list = []
    cleanup: list = []
    recorder = None
    refused = False
    try:
        count, resources = plan_replicas(
            ray, engine, engine_kwargs if engine == "vllm" else {}, engine_kwargs.get("device"), replicas
        )
        # engine 0 is the collected checkpoint; an auxiliary model's other checkpoint loads beside it in each replica
        main_key = str(Path(model_path).resolve())
        kwargs = dict(engine_kwargs)
        if engine == "transformers":  # the replica's core, or its GPU (the one the actor sees: cuda)
            gpu = "num_gpus" in resources
            kwargs.update(device="cuda" if gpu else "cpu", **({} if gpu else {"threads": resources["num_cpus"]}))
        loads, keys = [(engine, str(model_path), kwargs)], {main_key: 0}
        engine_refs = [EngineRef(0, engine, str(model_path))]
        aux_refs = []
        for name, aux in auxiliary.items():
            if aux.base_url is not None:
                aux_refs.append(AuxiliaryRef(name, None, None, aux))
                continue
            path = str(Path(aux.path).resolve())
            if path not in keys:
                keys[path] = len(loads)
                aux_kwargs = {"device": aux.device or kwargs.get("device")} if aux.engine == "transformers" else {}
                loads.append((aux.engine, aux.path, aux_kwargs))
                engine_refs.append(EngineRef(keys[path], aux.engine, aux.path))
            params = SamplingParams(
                **{
                    k: getattr(aux, k) if getattr(aux, k) is not None else getattr(spec.sampling, k)
                    for k in AUX_SAMPLING
                }
            )
            aux_refs.append(AuxiliaryRef(name, keys[path], params, None))

        setup = host_setup()
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        # one bundle per replica: its engine takes the bundle's CPU or GPUs, its runner (no resources of its own)
        # starts beside it on the same node at the same time
        bundle = {"CPU": resources.get("num_cpus", 0), "GPU": resources.get("num_gpus", 0)}
        group = placement_group([{k: v for k, v in bundle.items() if v}] * count, strategy="PACK")
        cleanup.append(lambda: ray.util.remove_placement_group(group))
        ray.get(group.ready())
        engine_cls, runner_cls = ray.remote(EngineHost), ray.remote(RunnerHost)
        shares = [concurrency // count + (i < concurrency % count) for i in range(count)]
        remote_spec = dataclasses.replace(spec, workflow_cls=None, auxiliary={})
        prefix = f"astuner-collect-{uuid.uuid4().hex[:12]}"
        runners = []
        for i, share in enumerate(shares):
            if share < 1:  # fewer runs in flight than replicas
                break
            in_bundle = PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=i)
            name = f"{prefix}-engine-{i}"
            engine_actor = engine_cls.options(
                name=name, max_restarts=MAX_RESTARTS, scheduling_strategy=in_bundle, **resources
            ).remote(setup, loads)
            runner_actor = runner_cls.options(
                num_cpus=0,
                max_restarts=MAX_RESTARTS,
                max_concurrency=share + 8,  # the runs, and the driver's ready() probes beside them
                scheduling_strategy=in_bundle,
            ).remote(setup, remote_spec, engine_refs, aux_refs, name)
            actors.extend([engine_actor, runner_actor])
            runners.append(
                Runner(ActorState(runner_actor, f"{prefix}-runner-{i}"), ActorState(engine_actor, name), share)
            )
        _wait_ready(ray, [state for r in runners for state in (r.engine, r.actor)])
        print(
            f"collect: on Ray: {len(runners)} engine replicas ({', '.join(f'{k} {v:g}' for k, v in bundle.items() if v)} "
            f"each), each with a runner actor; {concurrency} runs in flight",
            file=sys.stderr,
        )

        recorder = Recorder(spec, writer, len(todo), flush_interval_s, progress)
        _drive(ray, runners, deque(Run(task, sample) for task, sample in todo), recorder, retries, engine)
    except UnregisteredTargetError:
        refused = True
        raise
    finally:
        stats = recorder.close(refused) if recorder is not None else None
        for handle in actors:
            try:
                ray.kill(handle, no_restart=True)
            except Exception:  # already gone
                pass
        for step in cleanup:
            step()
        if started_here:
            ray.shutdown()
    return stats


def _wait_ready(ray, states: list[ActorState]) -> None:
    """Every actor constructed (they start together); one whose constructor raised: one line with its error."""
    asks = [state.handle.ready.remote() for state in states]
    for state, ask in zip(states, asks):
        try:
            state.pid = ray.get(ask)["pid"]
        except ray.exceptions.RayError as exc:
            raise RayCollectError(f"--ray: {state.name} could not start: {_first_line(exc)}") from None


def _drive(ray, runners: list[Runner], pending: deque, recorder, retries: int, engine_name: str) -> None:
    """Hand out runs to usable runners, record what comes back, put lost runs back in the queue."""
    from collect.runner import make_trajectory

    spec, stats = recorder.spec, recorder.stats

    def lose(run: Run, why: str) -> None:
        run.attempts += 1
        if run.attempts > retries:
            traj = make_trajectory(
                spec,
                engine_name,
                run.task,
                run.sample_index,
                status="error",
                error=f"lost {run.attempts} times with its Ray actor (past --retries {retries}); last: {why}",
                started=time.time(),
                calls=[],
            )
            recorder.record(traj, set())
        else:
            stats.rerun += 1
            pending.appendleft(run)

    while pending or any(r.runs for r in runners):
        now = time.monotonic()
        for runner in runners:
            for state in (runner.actor, runner.engine):
                if not state.healthy and not state.gone and now - state.down_since > RESTART_S:
                    state.gone, state.probe = True, None  # a probe that never answers: Ray will not restart it
                if not state.healthy and not state.gone and state.probe is None and now >= state.next_probe:
                    state.probe = state.handle.ready.remote()
            while runner.usable and pending and len(runner.runs) < runner.capacity:
                run = pending.popleft()
                run.epochs = (runner.actor.epoch, runner.engine.epoch)
                runner.runs[runner.actor.handle.run.remote(run.task, run.sample_index)] = run
        if not any(r.usable or not (r.actor.gone or r.engine.gone) for r in runners):
            raise RayCollectError(
                f"--ray: every replica's actors died more than {MAX_RESTARTS} times; "
                f"{len(pending)} runs not collected (rerun the command to resume)"
            )
        probes = {s.probe: s for r in runners for s in (r.actor, r.engine) if s.probe is not None}
        waiting = [ref for r in runners for ref in r.runs] + list(probes)
        if not waiting:
            time.sleep(PROBE_S / 5)
            continue
        done, _ = ray.wait(waiting, num_returns=len(waiting), timeout=WAIT_S, fetch_local=True)
        for ref in done:
            if ref in probes:
                state = probes[ref]
                state.probe = None
                try:
                    state.pid = ray.get(ref)["pid"]
                    state.healthy = True
                    state.epoch += 1
                except ray.exceptions.RayError:
                    state.still_down()
                continue
            runner = next(r for r in runners if ref in r.runs)
            run = runner.runs.pop(ref)
            try:
                traj, roles, lost = ray.get(ref)
            except ray.exceptions.RayActorError as exc:  # the runner's process died with this run in it
                runner.actor.died(run.epochs[0])
                lose(run, f"its runner actor died ({_first_line(exc)})")
                continue
            except ray.exceptions.RayTaskError as exc:  # not the workflow's (run_one records those): a bug here
                raise RayCollectError(f"--ray: a runner actor failed: {_first_line(exc)}") from None
            if lost is not None:
                runner.engine.died(run.epochs[1])
                lose(run, lost)
                continue
            recorder.record(traj, roles)
