"""finetune with several processes, on CPU over gloo: 2 processes x batch 2 train what 1 process x
batch 4 trains (SFT full, DPO with LoRA), a killed 2-process run resumes bit-identical, a rerun
refuses while an earlier run's workers live, and the launches that would train wrong are refused.

Every launch runs in its own session with a tag in its environment; whatever happens, the
session is killed and so is every process carrying the tag (torchrun's and accelerate's workers
run in sessions of their own, so killing the launcher's group alone would leave them)."""

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from helpers import make_call, make_traj, write

from finetune.main import main

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow
TRAIN = [
    "--seed",
    "0",
    "--learning_rate",
    "1e-3",
    "--max_steps",
    "6",
    "--logging_steps",
    "1",
    "--disable_tqdm",
    "true",
    "--gradient_checkpointing",
    "false",
    "--lr_scheduler_type",
    "constant",
]
ONE = ["--per_device_train_batch_size", "4"]  # the global batch: 1 x 4 and 2 x 2
TWO = ["--per_device_train_batch_size", "2"]
DPO = [
    "--method",
    "dpo",
    "--use_peft",
    "--lora_r",
    "4",
    "--lora_alpha",
    "8",
    "--lora_dropout",
    "0",
    "--lora_target_modules",
    "q_proj",
    "v_proj",
    "--beta",
    "0.1",
]
ERROR = "finetune: error: "


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """8 tasks, 2 samples each with one prompt: sample 0 (reward 1) and sample 1 (reward 0)
    sampled different completions. SFT reads 8 sequences of different lengths, DPO 8 pairs."""
    from judge.main import main as judge_main

    rng = random.Random(7)
    trajs = []
    for t in range(8):
        prompt = [rng.randrange(10, 590) for _ in range(rng.randrange(6, 20))]
        for sample, reward in ((0, 1.0), (1, 0.0)):
            completion = [rng.randrange(10, 590) for _ in range(rng.randrange(3, 12))]
            trajs.append(
                make_traj(f"t{t}", sample, reward=reward, calls=[make_call(0, prompt=prompt, completion=completion)])
            )
    tmp = tmp_path_factory.mktemp("dist")
    db = tmp / "store.duckdb"
    assert judge_main(["ingest", str(write(tmp / "traces.jsonl", trajs)), "--db", str(db)]) == 0
    assert judge_main(["score", "--db", str(db)]) == 0
    return db


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(n=2):
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(n),
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        "-m",
        "finetune",
    ]


def accelerate(*launch):
    return [sys.executable, "-m", "accelerate.commands.launch", *launch, "-m", "finetune"]


def tagged_pids(tag: str) -> list[int]:
    """Live processes whose environment holds `tag` (a launch and everything it started)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if tag.encode() in (entry / "environ").read_bytes():
                    pids.append(int(entry.name))
            except OSError:  # gone, or not ours
                pass
    return pids


def finetune_workers(tag: str) -> list[int]:
    """The tagged processes that run finetune itself (not the launcher)."""
    found = []
    for pid in tagged_pids(tag):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"finetune" in argv and b"accelerate.commands.launch" not in argv and b"torch.distributed.run" not in argv:
            found.append(pid)
    return found


def gone(pid: int) -> bool:
    """Exited with its files closed (a zombie counts): an exiting process loses its environ before its flocks."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] in ("Z", "X")
    except OSError:
        return True


def kill_tagged(tag: str) -> None:
    pids: set[int] = set()
    deadline = time.time() + 30
    while time.time() < deadline:
        pids |= set(tagged_pids(tag))
        alive = [pid for pid in pids if not gone(pid)]
        if not alive:
            return
        for pid in alive:
            try:
                os.killpg(os.getpgid(pid), signal.SIGKILL)  # its session's group: workers lead their own
            except OSError:
                pass
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.05)


class Launch:
    """A launcher command in its own session, tagged, its output in a file (a pipe could fill and
    stall it); `.wait()` or `.kill()`; never leaves a process."""

    def __init__(self, cmd, tmp_path, extra_env=None):
        self.tag = f"ASTUNER_TEST_LAUNCH={uuid.uuid4().hex}"
        home = tmp_path / "home"
        home.mkdir(exist_ok=True)
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "HF_HUB_OFFLINE": "1",
            "HOME": str(home),
            "HF_HOME": str(home / "hf"),
            "OMP_NUM_THREADS": "1",
            **(extra_env or {}),
        }
        for name in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "ASTUNER_CRASH_AT"):
            if name not in (extra_env or {}):
                env.pop(name, None)
        env["ASTUNER_TEST_LAUNCH"] = self.tag.partition("=")[2]
        self.log = tmp_path / f"launch-{self.tag[-8:]}.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                cmd,
                cwd=tmp_path,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout=240):
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"launch ran past {timeout} s:\n{self.output()[-3000:]}")
        finally:
            self.kill()
        return self.proc.returncode, self.output()

    def kill(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        kill_tagged(self.tag)


def run(cmd, tmp_path, timeout=240, **kw):
    return Launch(cmd, tmp_path, **kw).wait(timeout)


@pytest.fixture(scope="module")
def finetune_args(store, tiny_model):
    def args(out, *extra):
        return ["--db", str(store), "--model_name_or_path", str(tiny_model), "--output_dir", str(out), *TRAIN, *extra]

    return args


def weights(path):
    from safetensors.torch import load_file

    return load_file(str(Path(path) / "model.safetensors"))


def max_weight_delta(a, b) -> float:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    return max((wa[k].double() - wb[k].double()).abs().max().item() for k in wa)


def manifest(path) -> dict:
    return json.loads((Path(path) / "finetune.json").read_text())


def step_losses(path) -> list[float]:
    return [e["loss"] for e in manifest(path)["log_history"] if "loss" in e]


def train_here(args) -> int:
    """One process, in this one, with one thread like each rank (MULTI_CPU gives each rank cores / ranks)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return main(args)
    finally:
        torch.set_num_threads(threads)


def assert_same_training(one, two, parent, tol=1e-5):
    """1 process x batch 4 against 2 x 2: every logged loss and every weight within tol."""
    la, lb = step_losses(one), step_losses(two)
    assert len(la) == len(lb) == 6
    dloss = max(abs(a - b) for a, b in zip(la, lb))
    dweight, update = max_weight_delta(one, two), max_weight_delta(parent, two)
    print(
        f"max |dloss| {dloss:.3g}, max |dweight| {dweight:.3g}, update {update:.3g} (losses {la[0]:.4f} -> {la[-1]:.4f})"
    )
    assert dloss < tol and dweight < tol
    assert update > 100 * tol  # and training moved the weights far more than that
    m = manifest(two)
    assert (m["world_size"], m["per_device_train_batch_size"], m["global_batch_size"]) == (2, 2, 4)
    assert (manifest(one)["world_size"], manifest(one)["global_batch_size"]) == (1, 4)
    # prefix-shared (the default) on both: each rank forwards its own batch's tree, the ranks' counts summed
    for run_manifest in (manifest(one), m):
        assert run_manifest["prefix_sharing"] is True
        assert run_manifest["tokens_forwarded"] <= run_manifest["tokens_unshared"]
    assert manifest(one)["tokens_unshared"] == m["tokens_unshared"]


@pytest.fixture(scope="module")
def sft_pair(finetune_args, tmp_path_factory):
    """1 process in this one, and torchrun with 2 and --ddp_backend gloo (without --use_cpu that
    formed a group whose gradients were never averaged)."""
    tmp = tmp_path_factory.mktemp("sft")
    one, two = tmp / "one", tmp / "two"
    assert train_here(finetune_args(one, *ONE)) == 0
    rc, out = run([*torchrun(2), *finetune_args(two, *TWO, "--ddp_backend", "gloo")], tmp)
    assert rc == 0, out[-3000:]
    assert out.count("trained sft on 8 examples") == 1 and not Path(f"{two}.partial").exists()
    return one, two


def test_sft_two_processes_train_what_one_does(sft_pair, tiny_model):
    assert_same_training(*sft_pair, tiny_model)


def test_dpo_lora_two_processes_with_the_shipped_multi_cpu_config(finetune_args, tiny_model, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert train_here(finetune_args(one, *DPO, *ONE)) == 0
    config = ROOT / "finetune" / "accelerate" / "multi_cpu.yaml"
    rc, out = run([*accelerate("--config_file", str(config)), *finetune_args(two, *DPO, *TWO)], tmp_path)
    assert rc == 0, out[-3000:]
    assert out.count("trained dpo on 8 examples") == 1
    assert not any(p.name.startswith("adapter_") for p in two.iterdir())  # LoRA merged on rank 0
    assert_same_training(one, two, tiny_model)


def test_killed_two_process_run_resumes_bit_identical(finetune_args, sft_pair, tmp_path):
    """Both ranks SIGKILLed right after checkpoint-4; the same command resumes from it and ends
    with the weights of the uninterrupted 2-process run, bit for bit, and whole-run metrics."""
    out = tmp_path / "ckpt"
    cmd = [*finetune_args(out, *TWO, "--save_strategy", "steps", "--save_steps", "2")]
    rc, log = run([*torchrun(2), *cmd], tmp_path, extra_env={"ASTUNER_CRASH_AT": "finetune.checkpoint@2"})
    assert rc != 0 and not out.exists(), log[-3000:]
    assert (Path(f"{out}.partial") / "checkpoint-4" / "trainer_state.json").is_file()
    rc, log = run([*torchrun(2), *cmd], tmp_path)
    assert rc == 0, log[-3000:]
    assert log.count("resuming the unfinished run") == 1 and "from checkpoint-4" in log
    uninterrupted = sft_pair[1]
    wa, wb = weights(uninterrupted), weights(out)
    assert all(wa[k].equal(wb[k]) for k in wa), "resumed weights differ from the uninterrupted run"
    assert step_losses(out) == step_losses(uninterrupted)
    metrics, reference = manifest(out)["metrics"], manifest(uninterrupted)["metrics"]
    assert (metrics["resumed_from_step"], metrics["train_steps"], reference["resumed_from_step"]) == (4, 6, 0)
    assert abs(metrics["train_loss"] - reference["train_loss"]) < 1e-6  # the whole run's, not steps 5-6 only
    assert manifest(out)["global_batch_size"] == 4


def test_rerun_refused_while_earlier_workers_live(finetune_args, tmp_path, capsys):
    """accelerate launch --multi_gpu with no other flag starts 2 CPU ranks; a kill -9 of the
    launcher's group leaves them training; a rerun on their --output_dir refuses in one line
    naming them; once they are dead it trains."""
    out = tmp_path / "ckpt"
    partial = Path(f"{out}.partial")
    long = Launch(
        [
            *accelerate("--multi_gpu", "--num_processes", "2", "--main_process_port", str(free_port())),
            *finetune_args(out, *TWO, "--max_steps", "100000"),
        ],
        tmp_path,
    )
    try:
        deadline = time.time() + 180
        while len(workers := finetune_workers(long.tag)) < 2 or "'loss'" not in long.output():  # both ranks training
            if long.proc.poll() is not None or time.time() > deadline:
                long.kill()
                pytest.fail(f"no two ranks training:\n{long.output()[-3000:]}")
            time.sleep(0.2)
        os.killpg(long.proc.pid, signal.SIGKILL)  # the launcher's group, as a user's kill -9 or Ctrl-C would
        long.proc.wait(30)
        time.sleep(1)
        assert all(Path(f"/proc/{pid}").exists() for pid in workers)  # they outlive their launcher
        capsys.readouterr()
        assert main(finetune_args(out, *ONE, "--max_steps", "2")) == 2
        err = capsys.readouterr().err.strip()
        assert (
            err.count("\n") == 0 and err.startswith(ERROR) and "workers of an earlier run on it are still alive" in err
        ), err
        assert all(f"pid {pid} " in err for pid in workers), err
    finally:
        long.kill()
    assert all(gone(pid) for pid in workers)
    capsys.readouterr()
    assert main(finetune_args(out, *ONE, "--max_steps", "2")) == 0, capsys.readouterr().err  # the dead hold nothing
    assert manifest(out)["world_size"] == 1 and not partial.exists()


@pytest.mark.parametrize(
    "name, launch, extra, says",
    [
        (
            "accelerate --cpu",
            lambda: accelerate("--cpu", "--num_processes", "2"),
            [],
            "accelerate launch started 1 process where several were asked for",
        ),
        (
            "torchrun --use_cpu false",
            lambda: torchrun(2),
            ["--use_cpu", "false"],
            "launched as 2 processes, but each would train alone as world size 1",
        ),
        (
            "torchrun --use_cpu false --ddp_backend gloo",
            lambda: torchrun(2),
            ["--use_cpu", "false", "--ddp_backend", "gloo"],
            "so gradients would not be averaged",
        ),
    ],
)
def test_wrong_launches_are_refused_before_training(finetune_args, tmp_path, name, launch, extra, says):
    out = tmp_path / "ckpt"
    rc, log = run([*launch(), *finetune_args(out, *TWO, *extra)], tmp_path)
    lines = [line for line in log.splitlines() if line.startswith(ERROR)]
    assert rc != 0 and len(lines) == 1 and says in lines[0], log[-3000:]
    assert (
        "Traceback (most recent call last)" not in log.split(ERROR)[0]
    )  # finetune's own: no traceback before its line
    assert not out.exists() and not Path(f"{out}.partial").exists()


def test_unwrapped_model_is_refused():
    import torch

    from finetune.launch import LaunchError, check_wrapped

    check_wrapped(torch.nn.Linear(2, 2), 1)
    with pytest.raises(LaunchError, match="not wrapped for data parallelism"):
        check_wrapped(torch.nn.Linear(2, 2), 2)


def test_loop_resolves_the_multi_cpu_config():
    from astuner.loop import _accelerate_config

    assert _accelerate_config("multi_cpu") == str(ROOT / "finetune" / "accelerate" / "multi_cpu.yaml")
