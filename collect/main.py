"""Collect: run a workflow over a task set against a frozen checkpoint, one JSONL trajectory
per run, with the exact token ids and logprobs of every model call.

    python -m collect                                   # the bundled example on the tiny model
    python -m collect --workflow examples/math_agent/workflow.py:MathAgentWorkflow \\
        --tasks examples/math_agent/tasks.jsonl --model path/to/checkpoint \\
        --samples-per-task 4 --concurrency 32 --out runs/iter-0/traces
    python -m collect --config recipe.yaml --trainable-targets werewolf,seer
    python -m collect --config recipe.yaml --shard 0/4 --device cuda:0 &   # ... --shard 3/4 --device cuda:3: one --out
    python -m collect --config recipe.yaml --engine vllm --ray auto      # on a Ray cluster: docs/scaling.md

Re-running the same command resumes: finished (task, sample) pairs are skipped.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from collect.lock import LOCK, busy_shards, lock_out

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
MANIFEST = "collect.json"
# Changing any of these mid-run would mix two experiments in one output folder.
_IDENTITY = (
    "workflow_ref",
    "checkpoint",
    "engine",
    "sampling",
    "trainable_targets",
    "iteration",
    "auxiliary_models",
    "tuner_config",
)


@dataclass
class CollectConfig:
    """collect's options, from flags or a --config file (astuner.cli.parse_config) or a recipe's collect/eval
    section (astuner.loop checks it with this class before any stage runs). Values are checked in __post_init__."""

    workflow: str = field(
        default=str(EXAMPLES / "math_agent" / "workflow.py") + ":MathAgentWorkflow",
        metadata={
            "help": "The workflow: module:Class or path/to/file.py:Class (a Workflow subclass or an "
            "agentscope.tuner-style async function)."
        },
    )
    tasks: str = field(
        default=str(EXAMPLES / "math_agent" / "tasks.jsonl"),
        metadata={"help": "Tasks: .jsonl, .parquet, .csv, .json, a datasets save_to_disk folder, or module:function."},
    )
    model: str | None = field(
        default=None,
        metadata={"help": "Local checkpoint folder. Default: the embedded tiny model, built on first use."},
    )
    engine: str = field(
        default="transformers", metadata={"help": "transformers (CPU or GPU) or vllm (GPU, the [vllm] extra)."}
    )
    samples_per_task: int = field(default=1, metadata={"help": "Runs per task."})
    concurrency: int = field(
        default=16, metadata={"help": "Workflow runs in flight at once; their model calls are batched."}
    )
    out: str = field(
        default="runs/collect",
        metadata={
            "help": "Output folder: traces/part-*.jsonl and collect.json. One collect writes it at a time "
            "(a second is refused; the shards of one run share it)."
        },
    )
    trainable_targets: str | None = field(
        default=None,
        metadata={
            "help": "Comma-separated roles to train, overriding the workflow's trainable_targets. "
            "'*' trains every role. A name that no run has registered when the first run finishes ok stops "
            "collect (exit 2) before anything is written."
        },
    )
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (0 = greedy)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass."})
    max_tokens: int = field(default=256, metadata={"help": "Max new tokens per model call."})
    seed: int | None = field(
        default=None,
        metadata={"help": "Base seed; each run and call derives its own, so results do not depend on batching."},
    )
    timeout_s: float = field(
        default=600.0,
        metadata={
            "help": "Per-run wall-clock limit; a run past it is recorded as status=timeout, "
            "within about a second of it even if its code blocks (its worker process is stopped; see --workers)."
        },
    )
    workers: int | None = field(
        default=None,
        metadata={
            "help": "Worker processes that run the workflows, each with its own event loop and a share of --concurrency; "
            "model calls of all of them reach the one engine here and are batched together. A run that blocks, "
            "crashes its process or passes --max-run-memory-mb costs only itself. Default: one per core, at most 8. "
            "0: every run in this process, as one event loop (no isolation; breakpoints work)."
        },
    )
    max_run_memory_mb: float | None = field(
        default=None,
        metadata={
            "help": "Memory a run may add to its worker process (resident size over the worker's size at start, "
            "per run it holds); a run past it is recorded as status=error. Needs --workers 1 or more."
        },
    )
    flush_interval_s: float = field(
        default=2.0,
        metadata={
            "help": "Seconds between trace part files: a killed collect loses at most "
            "this much finished work, which the next run collects again (0: a part file per run)."
        },
    )
    iteration: int = field(default=0, metadata={"help": "Iteration number recorded in every trajectory."})
    limit: int | None = field(default=None, metadata={"help": "Use only the first N tasks."})
    query_field: str | None = field(
        default=None,
        metadata={"help": "Task field holding the query (default: main_query, query, question, prompt or input)."},
    )
    id_field: str | None = field(
        default=None,
        metadata={"help": "Task field holding the task id (default: task_id or id, else a hash of the row)."},
    )
    max_batch_size: int = field(
        default=64, metadata={"help": "transformers engine: most requests in one generation batch."}
    )
    device: str | None = field(
        default=None, metadata={"help": "transformers engine: cpu, cuda, cuda:1 ... (default: cuda if available)."}
    )
    engine_args: str | None = field(
        default=None,
        metadata={"help": "vllm engine: JSON of extra AsyncEngineArgs, e.g. '{\"tensor_parallel_size\": 2}'."},
    )
    shard: str | None = field(
        default=None,
        metadata={
            "help": "K/N: run only every N-th task from the K-th (0-based). N collects with K = 0..N-1 and the same "
            "--out share one traces folder and run id (data-parallel collect: one engine per GPU or machine)."
        },
    )
    auxiliary_models: str | None = field(
        default=None,
        metadata={
            "help": "The auxiliary_models that agentscope.tuner workflows take (an opponent, a judge): JSON or YAML "
            "name -> spec, or a .json/.yaml file of it (in a recipe, the mapping). A spec is a local checkpoint folder, "
            "{path: DIR, temperature, max_tokens, ...}, or an OpenAI-compatible endpoint {base_url: URL, model: NAME, "
            "api_key_env: VAR}. Their calls are recorded with role = the name and trainable: false."
        },
    )
    tool_format: str = field(
        default="auto",
        metadata={
            "help": "How engine completions write tool calls and thinking: auto (read from the "
            "checkpoint's chat template), hermes, qwen3, llama3 or mistral. Recorded per call as tool_format; "
            "see docs/model-families.md."
        },
    )
    template_kwargs: str | None = field(
        default=None,
        metadata={
            "help": "JSON of extra chat-template variables, e.g. "
            '\'{"enable_thinking": false}\' (Qwen3) or \'{"date_string": "26 Jul 2024"}\' (Llama 3.x; '
            "default: the day of the call). Recorded per call as template_kwargs."
        },
    )
    show_agent_output: bool = field(
        default=False, metadata={"help": "Let agents print their messages (off: the progress bar stays readable)."}
    )
    tuner_config: str | None = field(
        default=None,
        metadata={
            "help": "What AgentJet workflows read as model_tuner.config: a YAML file (AgentJet's own recipe works), "
            "inline YAML/JSON, or a mapping in a recipe. Default: ajet.rollout.multi_turn.max_steps 30."
        },
    )
    max_steps: int | None = field(
        default=None, metadata={"help": "model_tuner.config.ajet.rollout.multi_turn.max_steps (over --tuner-config's)."}
    )
    ray: str | None = field(
        default=None,
        metadata={
            "help": "Collect on a Ray cluster (pip install -e '.[ray]'): auto (a running one, `ray start`), local "
            "(start one on this machine for this collect) or its address. Engine replicas and the workflow runs are "
            "Ray actors (--workers does not apply); this process alone writes --out (no shared filesystem). See docs/scaling.md."
        },
    )
    engine_replicas: int | None = field(
        default=None,
        metadata={
            "help": "--ray: engine actors, each with its share of --concurrency. Default: one per GPU of the cluster "
            "(per tensor_parallel_size GPUs with vllm), 1 without GPUs (each CPU replica takes a core)."
        },
    )
    retries: int = field(
        default=2,
        metadata={
            "help": "--ray: times a run is started again when its Ray actor's process dies under it (killed, "
            "out of memory, node lost); past it, the run is recorded status=error."
        },
    )

    def __post_init__(self):
        """Every check that needs only the values (no file, import or model): one line naming the flag, the value and the fix."""
        from astuner.chat import FAMILY_CHOICES
        from astuner.engines import ENGINES

        if self.engine not in ENGINES:
            raise ValueError(f"--engine {self.engine!r}: unknown engine; choose one of {', '.join(ENGINES)}")
        for name in ("samples_per_task", "concurrency", "max_tokens", "max_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be at least 1")
        # the ranges vLLM enforces; the transformers engine would quietly read them as greedy or as no top-p
        if self.temperature < 0:
            raise ValueError(f"--temperature {self.temperature:g}: must be 0 (greedy) or more")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"--top-p {self.top_p:g}: must be above 0 and at most 1 (1: no nucleus cut)")
        if self.timeout_s <= 0:
            raise ValueError(f"--timeout-s {self.timeout_s}: must be positive")
        if self.workers is not None and self.workers < 0:
            raise ValueError(f"--workers {self.workers}: must be 0 (runs in this process) or more")
        if self.max_run_memory_mb is not None:
            if self.max_run_memory_mb <= 0:
                raise ValueError(f"--max-run-memory-mb {self.max_run_memory_mb:g}: must be positive")
            if self.workers == 0:
                raise ValueError(
                    "--max-run-memory-mb needs worker processes: drop --workers 0 or give --workers 1 or more"
                )
        if self.engine_replicas is not None and (self.ray is None or self.engine_replicas < 1):
            raise ValueError(f"--engine-replicas {self.engine_replicas}: needs --ray and at least 1")
        if self.retries < 0:
            raise ValueError(f"--retries {self.retries}: must be 0 (record a lost run as an error) or more")
        if self.ray is not None and self.max_run_memory_mb is not None:
            raise ValueError("--max-run-memory-mb is not enforced on Ray actors: drop it or drop --ray")
        if self.flush_interval_s < 0:
            raise ValueError(f"--flush-interval-s {self.flush_interval_s}: must be 0 or more")
        if self.tool_format not in FAMILY_CHOICES:
            raise ValueError(
                f"--tool-format {self.tool_format!r}: unknown format; choose one of {', '.join(FAMILY_CHOICES)}"
            )
        for parsed in (
            "template_variables",
            "shard_range",
            "engine_kwargs",
        ):  # each parses its option: a bad one raises now
            getattr(self, parsed)

    @property
    def template_variables(self) -> dict:
        """--template-kwargs parsed."""
        try:
            variables = json.loads(self.template_kwargs) if self.template_kwargs else {}
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"--template-kwargs {self.template_kwargs!r}: not JSON ({exc.msg}); e.g. '{{\"enable_thinking\": false}}'"
            ) from None
        if not isinstance(variables, dict):
            raise ValueError(
                f"--template-kwargs {self.template_kwargs!r}: must be a JSON object, e.g. '{{\"enable_thinking\": false}}'"
            )
        return variables

    @property
    def shard_range(self) -> tuple[int, int] | None:
        """--shard K/N as (K, N); None without --shard."""
        if self.shard is None:
            return None
        k, sep, n = self.shard.partition("/")
        if not (sep and k.isdigit() and n.isdigit() and 0 <= int(k) < int(n)):
            raise ValueError(f"--shard {self.shard!r}: expected K/N with 0 <= K < N, e.g. --shard 0/4")
        return int(k), int(n)

    @property
    def engine_kwargs(self) -> dict:
        """What load_engine takes besides the engine and the model: transformers' flags, or vllm's --engine-args."""
        if self.engine == "transformers":
            return {"device": self.device, "max_batch_size": self.max_batch_size}
        try:
            return json.loads(self.engine_args) if self.engine_args else {}
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"--engine-args {self.engine_args!r}: not JSON ({exc.msg}); e.g. '{{\"tensor_parallel_size\": 2}}'"
            ) from None


def _targets(cfg: CollectConfig, workflow_cls) -> tuple[list[str] | None, bool]:
    """(the run's trainable targets, None = every role; whether they replace the workflow's own list).

    [] means every role, as in AgentJet; '*' trains every role but leaves the workflow's own
    list in self.trainable_targets (a workflow may branch on it).
    """
    if cfg.trainable_targets is None:
        targets = getattr(workflow_cls, "trainable_targets", None)
        if targets is not None and (
            isinstance(targets, str) or not all(isinstance(t, str) for t in _iterable(targets))
        ):
            raise ValueError(
                f"--workflow {cfg.workflow}: trainable_targets must be a list of role names or None, got {targets!r}"
            )
        return (list(targets) or None) if targets is not None else None, False
    if cfg.trainable_targets.strip() == "*":
        return None, False
    names = [t.strip() for t in cfg.trainable_targets.split(",") if t.strip()]
    if not names:
        raise ValueError(
            f"--trainable-targets {cfg.trainable_targets!r}: names no role; give role names (a,b) or '*' for every role"
        )
    return names, True


def _iterable(value) -> list:
    try:
        return list(value)
    except TypeError:
        return [value]


def _open_run(out: Path, identity: dict) -> tuple[str, bool]:
    """(the run id of `out`, whether this call created it); a resume with other settings is refused."""
    manifest = out / MANIFEST
    created = False
    if not manifest.exists():
        # created exclusively (link fails if it exists): shards starting together agree on one run id
        tmp = out / f".collect.{os.getpid()}.tmp"
        try:
            tmp.write_text(
                json.dumps({"run_id": uuid.uuid4().hex[:16], "created_at": time.time(), **identity}, indent=2)
            )
            os.link(tmp, manifest)
            created = True
        except FileExistsError:
            pass
        except OSError as exc:
            raise OSError(f"cannot write {manifest}: [Errno {exc.errno}] {exc.strerror}") from None
        finally:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
    return _check_run(out, identity), created


def _check_run(out: Path, identity: dict) -> str | None:
    """The run id of `out` (None: no run there yet); a resume with other settings is refused."""
    manifest = out / MANIFEST
    if not manifest.exists():
        return None
    try:
        saved = json.loads(manifest.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"--out {out}: cannot read {manifest} ({exc}); move it away to start a new run there"
        ) from None
    for key in _IDENTITY:
        if saved.get(key) != identity[key]:
            raise ValueError(
                f"--out {out} holds a run with {key}={json.dumps(saved.get(key))}, "
                f"this command has {json.dumps(identity[key])}; use another --out or the same settings"
            )
    return saved["run_id"]


def _forget_run(out: Path, created: bool, out_existed: bool, sharded: bool) -> None:
    """Undo what this command made in --out when it wrote no trajectory: the corrected command starts afresh."""
    traces = out / "traces"
    try:
        if traces.is_dir() and any(traces.glob("*.jsonl")):
            return
        # a shard leaves the run to the other shards still collecting it
        if created and not (sharded and any(pid != os.getpid() for pid in busy_shards(out))):
            (out / MANIFEST).unlink(missing_ok=True)
        if not out_existed and not sharded:  # a shard's lock files may be another shard's to hold
            (out / LOCK).unlink(missing_ok=True)
    except OSError:
        return
    for folder in (traces, *([] if out_existed else [out])):
        try:
            folder.rmdir()  # only when empty
        except OSError:
            pass


def _failure_location(traceback_text: str | None, workflow_cls) -> str:
    """' (at FILE:LINE)': the innermost line of the workflow's own file in a recorded traceback, else ''."""
    import inspect

    try:
        source = Path(inspect.getsourcefile(getattr(workflow_cls, "function", None) or workflow_cls)).resolve()
    except (TypeError, OSError):
        return ""
    frames = [
        (name, line)
        for name, line in re.findall(r'File "([^"]+)", line (\d+)', traceback_text or "")
        if Path(name).resolve() == source
    ]
    return f" (at {frames[-1][0]}:{frames[-1][1]})" if frames else ""


def main(argv: list[str] | None = None) -> int:
    from astuner.cli import ConfigError, parse_config

    try:
        cfg = parse_config(CollectConfig, argv, prog="python -m collect", description=__doc__)
        return run(cfg)
    except (ConfigError, FileNotFoundError, ImportError, TypeError, ValueError) as exc:
        print(f"collect: {_printable(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:  # the output could not be written (a full disk, a read-only folder): it names the path
        print(f"collect: {_printable(str(exc))}", file=sys.stderr)
        return 1


def _printable(text: str) -> str:
    """`text` with what UTF-8 cannot encode (a lone surrogate from a workflow) escaped, for any stderr."""
    return text.encode(errors="backslashreplace").decode()


@dataclass
class _Start:
    """What a collect has made in --out so far (what a failed start undoes)."""

    created_run: bool = False  # collect.json


def run(cfg: CollectConfig) -> int:
    """The collect, holding --out (collect/lock.py); a collect that ends with no trajectory written leaves
    --out as it found it, so the corrected command is not refused as another run."""
    out, shard = Path(cfg.out), cfg.shard_range
    out_existed = out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"--out {out}: cannot create the output folder ({exc.strerror}: {exc.filename})") from None
    lock = lock_out(out, shard)  # one collect per --out (the shards of one run share it)
    start = _Start()
    try:
        return _run(cfg, start)
    except BaseException:
        _forget_run(out, start.created_run, out_existed, sharded=shard is not None)
        raise
    finally:
        lock.release()


def _run(cfg: CollectConfig, start: _Start) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # checkpoints are local folders; never reach a hub
    if not cfg.show_agent_output:
        os.environ["AGENTSCOPE_DISABLE_CONSOLE_OUTPUT"] = "true"
    import asyncio

    from transformers.utils import logging as hf_logging

    from astuner.auxiliary import close_backends, load_backends, parse_auxiliary_models
    from astuner.checkpoint import check_safetensors, checkpoint_sha256
    from astuner.compat.tuner_config import build_tuner_config
    from astuner.engines import load_engine, require_checkpoint
    from astuner.tasks import NO_QUERY, QUERY_FIELDS, load_tasks
    from astuner.tiny import ensure_tiny_model
    from astuner.trajectory import Checkpoint, Sampling, TraceFormatError
    from astuner.workflow import load_workflow
    from collect.pool import default_workers, run_collect_pool, start_fork_server
    from collect.runner import RunSpec, UnregisteredTargetError, role_table, run_collect
    from collect.writer import TraceWriter

    hf_logging.disable_progress_bar()  # our own bar is the one to watch
    if cfg.ray is not None:  # before anything is made in --out
        from collect.ray_backend import require_ray

        require_ray(cfg.ray)
    shard = cfg.shard_range  # the values were checked when cfg was made
    auxiliary = parse_auxiliary_models(cfg.auxiliary_models)
    workflow_cls = load_workflow(cfg.workflow)
    tasks = load_tasks(cfg.tasks, cfg.query_field, cfg.id_field, cfg.limit)
    no_query = sum(t.main_query == NO_QUERY for t in tasks)
    if no_query:
        print(
            f"collect: note: {no_query} of {len(tasks)} task rows have no query field ({', '.join(QUERY_FIELDS)}); their "
            f"task.main_query is {NO_QUERY!r}, as in AgentJet (the workflow builds its query from task.metadata); "
            "name the field with --query-field if it should be the query",
            file=sys.stderr,
        )
    if shard:
        tasks = tasks[shard[0] :: shard[1]]
    model_path = require_checkpoint(cfg.model) if cfg.model else ensure_tiny_model()
    check_safetensors(model_path)
    checkpoint = Checkpoint(path=str(model_path.resolve()), sha256=checkpoint_sha256(model_path))
    sampling = Sampling(temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens, seed=cfg.seed)
    targets, override_targets = _targets(cfg, workflow_cls)
    tuner_config = build_tuner_config(cfg.tuner_config, cfg.max_steps)

    out = Path(cfg.out)
    identity = {
        "workflow_ref": cfg.workflow,
        "checkpoint": checkpoint.model_dump(),
        "engine": cfg.engine,
        "sampling": sampling.model_dump(),
        "trainable_targets": targets,
        "iteration": cfg.iteration,
        # None without auxiliary models: a collect.json written before this key existed still resumes
        "auxiliary_models": {name: spec.identity() for name, spec in auxiliary.items()} or None,
        # only when given: folders written before the option existed (no key) resume as before
        "tuner_config": tuner_config if cfg.tuner_config is not None or cfg.max_steps is not None else None,
    }
    _check_run(out, identity)  # a resume with other settings is refused before the model loads
    writer = TraceWriter(out / "traces", name=f"part-{shard[0]}of{shard[1]}" if shard else "part")
    try:
        done = writer.finished_keys()
    except TraceFormatError as exc:  # collect writes whole lines only: this came from elsewhere
        raise ValueError(
            f"--out {out}: {exc}; repair or delete that line (collect runs again what is missing)"
        ) from None
    todo = [(t, s) for t in tasks for s in range(cfg.samples_per_task) if (t.task_id, s) not in done]
    total = len(tasks) * cfg.samples_per_task
    print(
        f"collect: {f'shard {cfg.shard}: ' if shard else ''}{len(tasks)} tasks x {cfg.samples_per_task} samples = {total} runs; "
        f"{total - len(todo)} already in {out}, {len(todo)} to go",
        file=sys.stderr,
    )
    if not todo:
        return 0

    workers = default_workers() if cfg.workers is None else cfg.workers
    if cfg.ray is not None:  # the engines load in Ray actors (collect/ray_backend.py), none here
        workers, engine, backends = 0, None, {}
    if workers:
        start_fork_server()  # its imports overlap the engine's loading
    if cfg.ray is None:
        engine = load_engine(cfg.engine, model_path, **cfg.engine_kwargs)
        try:
            backends = load_backends(auxiliary, engine, model_path, sampling, cfg.device)
        except BaseException:
            engine.close()
            raise
    try:  # written only now that the run is set up: a start that failed leaves no run to resume
        run_id, start.created_run = _open_run(out, identity)
    except BaseException:
        if engine is not None:
            close_backends(backends, engine)
            engine.close()
        raise
    spec = RunSpec(
        run_id=run_id,
        workflow_cls=workflow_cls,
        workflow_ref=cfg.workflow,
        checkpoint=checkpoint,
        sampling=sampling,
        trainable_targets=targets,
        iteration=cfg.iteration,
        timeout_s=cfg.timeout_s,
        auxiliary=backends,
        override_targets=override_targets,
        tuner_config=tuner_config,
        tool_format=cfg.tool_format,
        template_kwargs=cfg.template_variables,
    )
    try:
        if cfg.ray is not None:
            from collect.ray_backend import run_collect_ray

            stats = run_collect_ray(
                spec,
                todo,
                writer,
                address=cfg.ray,
                engine=cfg.engine,
                model_path=model_path,
                engine_kwargs=cfg.engine_kwargs,
                auxiliary=auxiliary,
                concurrency=cfg.concurrency,
                replicas=cfg.engine_replicas,
                retries=cfg.retries,
                flush_interval_s=cfg.flush_interval_s,
            )
        elif workers == 0:
            stats = asyncio.run(run_collect(spec, engine, todo, writer, cfg.concurrency, cfg.flush_interval_s))
        else:
            stats = asyncio.run(
                run_collect_pool(
                    spec,
                    engine,
                    todo,
                    writer,
                    cfg.concurrency,
                    workers,
                    cfg.flush_interval_s,
                    memory_limit_mb=cfg.max_run_memory_mb,
                )
            )
    except UnregisteredTargetError as exc:
        named = (
            f"--trainable-targets {cfg.trainable_targets}"
            if cfg.trainable_targets is not None
            else f"--workflow {cfg.workflow}: trainable_targets {targets}"
        )
        raise ValueError(f"{named}: {exc}; fix the name (nothing was written)") from None  # run() undoes the start
    finally:
        if engine is not None:
            close_backends(backends, engine)
            engine.close()

    print(
        f"collect: {stats.runs} runs in {stats.seconds:.1f}s: ok {stats.ok}, error {stats.error}, "
        f"timeout {stats.timeout}; {stats.calls} model calls ({stats.trainable_calls} trainable), "
        f"{stats.completion_tokens} completion tokens, {stats.tokens_per_s:.0f} tok/s"
        f"{f'; {stats.workers} worker processes' if stats.workers else ''}",
        file=sys.stderr,
    )
    if stats.rerun and cfg.ray is not None:
        print(
            f"collect: {stats.rerun} runs were started again after their Ray actor died under them "
            "(none lost: every run is recorded once)",
            file=sys.stderr,
        )
    if stats.worker_crashes or stats.worker_kills:
        print(
            f"collect: worker processes: {stats.worker_crashes} died by themselves, {stats.worker_kills} stopped by collect "
            f"(a run past --timeout-s or --max-run-memory-mb); {stats.rerun} runs they held were started again "
            f"(none lost: every run is recorded once)",
            file=sys.stderr,
        )
    if stats.by_role:
        print(_printable(role_table(stats)), file=sys.stderr)
    if stats.failed_calls:
        print(
            f"collect: {stats.failed_calls} model calls raised (recorded with their error, trainable: false); "
            f"first: {_printable(stats.first_failed_call.splitlines()[0][:300])}",
            file=sys.stderr,
        )
    print(f"collect: traces in {out / 'traces'}", file=sys.stderr)
    if stats.first_failure is not None:
        first = stats.first_failure
        reason = _printable((first.error or first.status).splitlines()[0][:300])
        print(
            f"collect: {stats.error + stats.timeout} of {stats.runs} runs failed (each recorded with status, error and traceback); "
            f"first: task {first.task.task_id} sample {first.sample_index}: {reason}{_failure_location(first.traceback, workflow_cls)}",
            file=sys.stderr,
        )
    # With a run that finished ok, run_collect has checked the targets; without one, say what could not be checked.
    known = stats.roles_seen
    unregistered = sorted(set(targets or []) - known)
    if unregistered and stats.ok == 0:
        print(
            f"collect: warning: --trainable-targets names {', '.join(unregistered)}, which no run registered "
            f"(registered: {', '.join(sorted(known)) or 'none'}); no run finished ok, so the names were not checked",
            file=sys.stderr,
        )
    return 0
