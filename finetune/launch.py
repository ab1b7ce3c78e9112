"""finetune under launchers (torchrun, accelerate launch, deepspeed, mpirun): which rank speaks,
the launches that would train wrong (refused before training, in one line), and the lock that
keeps a second run off an --output_dir whose earlier workers are still alive.

What this guards against (measured with accelerate 1.16, transformers 5.24, torch 2.13 CPU):
- `accelerate launch --cpu --num_processes N`, and a `distributed_type: MULTI_CPU` config, use
  accelerate's single-process launcher unless --mpirun_hostfile is given: ONE process starts,
  with MASTER_ADDR/MASTER_PORT set and no WORLD_SIZE.
- torchrun and accelerate's multi-GPU launcher start N processes (WORLD_SIZE=N), but
  transformers sets up data parallelism on CPU only with use_cpu: without it each rank trains
  alone as world size 1 on all the data; with --ddp_backend gloo the ranks form a group whose
  model is never wrapped, so gradients are never averaged. finetune therefore defaults use_cpu
  to true where torch sees no accelerator, and checks the group and the wrapping.
- Launcher workers run in their own sessions: a kill -9 of the launcher's process group leaves
  them training. Each rank holds an flock in OUTPUT_DIR.partial that the kernel drops when the
  process dies, however it dies; a rerun that finds one held refuses.
"""

from __future__ import annotations

import fcntl
import os
import socket
from contextlib import contextmanager
from pathlib import Path

LAUNCH_HINT = (
    "torchrun --nproc_per_node N -m finetune ..., or accelerate launch --config_file finetune/accelerate/multi_cpu.yaml "
    "--num_processes N -m finetune ..."
)
# torchrun, accelerate and deepspeed set WORLD_SIZE/RANK; mpirun flavours their own (accelerate reads the same ones)
_WORLD_SIZE_VARS = ("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")
_RANK_VARS = ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "MV2_COMM_WORLD_RANK")
LOCK_PREFIX = ".lock-rank"


class LaunchError(ValueError):
    """A launch that would train wrong. Every rank reaches the same verdict; rank 0 prints it."""


def _first_int(names) -> int | None:
    for name in names:
        if os.environ.get(name, "").strip().isdigit():
            return int(os.environ[name])
    return None


def launched_world_size() -> int | None:
    """How many processes the launcher started (None: no launcher said)."""
    return _first_int(_WORLD_SIZE_VARS)


def rank() -> int:
    return _first_int(_RANK_VARS) or 0


def is_main_process() -> bool:
    return rank() == 0


def say(*parts) -> None:
    if is_main_process():
        print(*parts, flush=True)


def check_launcher_env() -> None:
    """Before anything heavy: accelerate's single-process launcher, asked for several processes,
    exports MASTER_ADDR/MASTER_PORT (and ACCELERATE_MIXED_PRECISION) but no world size."""
    asked_several = (
        "ACCELERATE_MIXED_PRECISION" in os.environ and "MASTER_ADDR" in os.environ and "MASTER_PORT" in os.environ
    )
    if launched_world_size() is None and asked_several:
        raise LaunchError(
            "accelerate launch started 1 process where several were asked for (its single-process launcher, "
            "which --cpu, a MULTI_CPU config or no GPU choose unless --mpirun_hostfile is given, starts one); "
            f"run: {LAUNCH_HINT} (for one process, unset MASTER_ADDR and MASTER_PORT)"
        )


def has_accelerator() -> bool:
    import torch

    accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6: CUDA, XPU, MPS, ...
    return bool(accelerator.is_available()) if accelerator is not None else torch.cuda.is_available()


def check_data_parallel(training_args) -> int:
    """All ranks form one data-parallel group of the launched size, or LaunchError. -> world size."""
    expected = launched_world_size() or 1
    state = training_args.distributed_state  # sets up the process group, as the Trainer would
    if expected == 1:
        return state.num_processes
    import torch.distributed as dist
    from accelerate.utils import DistributedType

    group = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    if state.num_processes == expected == group and state.distributed_type != DistributedType.NO:
        return expected
    cpu_fix = (
        "drop --use_cpu false (without an accelerator finetune trains on CPU over gloo)"
        if not has_accelerator()
        else "check that every process sees its own GPU, or pass --use_cpu true to train on CPU"
    )
    if state.num_processes == 1:
        raise LaunchError(
            f"launched as {expected} processes, but each would train alone as world size 1 on all the data "
            f"(use_cpu {training_args.use_cpu}, ddp_backend {training_args.ddp_backend}); {cpu_fix}"
        )
    raise LaunchError(
        f"launched as {expected} processes: accelerate sees {state.num_processes} ranks of type "
        f"{state.distributed_type.value} and the process group {group}, so gradients would not be averaged "
        f"(use_cpu {training_args.use_cpu}, ddp_backend {training_args.ddp_backend}); {cpu_fix}"
    )


def check_wrapped(model_wrapped, world_size: int) -> None:
    """The model the Trainer steps is wrapped for data parallelism (DDP, DeepSpeed, FSDP), or LaunchError."""
    if world_size <= 1:
        return
    names = {cls.__name__ for cls in type(model_wrapped).__mro__}
    if names & {"DistributedDataParallel", "DeepSpeedEngine", "FullyShardedDataParallel", "FSDPModule"}:
        return
    raise LaunchError(
        f"{world_size} processes, but the model was not wrapped for data parallelism ({type(model_wrapped).__name__}): "
        f"gradients would not be averaged; run: {LAUNCH_HINT}"
    )


def all_ranks(value):
    """Every rank's `value`, in rank order (just [value] without a process group)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [value]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def _try_lock(path: Path):
    """(open file holding an exclusive flock, None) or (None, what the holder wrote in it)."""
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "pid unknown"
        handle.close()
        return None, holder
    return handle, None


@contextmanager
def output_lock(work: Path, output_dir: Path, world_size: int):
    """Hold `work/.lock-rankR` (R = this rank) for the run. Refuses (LaunchError, on every rank)
    while any lock file there is held by a live process of an earlier run; a run that finished or
    failed, killed included, holds nothing, so the next one starts."""
    work.mkdir(parents=True, exist_ok=True)
    me = rank()
    mine, holder = _try_lock(work / f"{LOCK_PREFIX}{me}")
    held = [] if mine else [f"{holder} (rank {me})"]
    if me == 0:  # ranks this run does not have (an earlier, larger run): rank 0 probes them
        for path in sorted(work.glob(f"{LOCK_PREFIX}*")):
            index = path.name[len(LOCK_PREFIX) :]
            if index.isdigit() and int(index) >= world_size:
                probe, holder = _try_lock(path)
                if probe:
                    probe.close()
                else:
                    held.append(f"{holder} (rank {index})")
    if mine:
        mine.seek(0)
        mine.truncate()
        mine.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        mine.flush()
    everyone = [h for per_rank in all_ranks(held) for h in per_rank]
    if everyone:
        if mine:
            mine.close()
        raise LaunchError(
            f"--output_dir {output_dir}: workers of an earlier run on it are still alive ({'; '.join(everyone)}); "
            "wait for them to finish or kill them, then run this again"
        )
    try:
        yield
    finally:
        mine.close()


def clear_work(work: Path) -> None:
    """Empty `work` of an earlier run's files, keeping the lock files this run holds."""
    import shutil

    for path in work.iterdir():
        if path.name.startswith(LOCK_PREFIX):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
