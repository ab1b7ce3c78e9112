"""collect --ray (collect/ray_backend.py) on a local 2-CPU Ray cluster: the records of a plain
collect, resume and rerun from --out, and what a killed engine actor, runner actor or driver costs."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from helpers import load

from collect.main import main

ray = pytest.importorskip("ray")  # the [ray] extra; `make test` installs it

TESTS = Path(__file__).resolve().parent
WORKFLOW = f"{TESTS / 'ray_workflows.py'}:CallPauseCall"
TASKS = 16
# the parts of a record that say when and how fast, not what: they differ between any two collects
TIMING = {"started_at", "finished_at", "duration_s"}


@pytest.fixture(scope="module")
def cluster():
    """One local cluster for the module (a start costs seconds), stopped at its end."""
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}},
    )
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def tasks(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ray-tasks") / "tasks.jsonl"
    path.write_text(
        "".join(json.dumps({"task_id": f"r{i:02d}", "question": f"What is {i} + 2?"}) + "\n" for i in range(TASKS))
    )
    return path


def options(tasks: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--workflow",
        WORKFLOW,
        "--tasks",
        str(tasks),
        "--out",
        str(out),
        "--max-tokens",
        "8",
        "--seed",
        "7",
        "--flush-interval-s",
        "0",
        *extra,
    ]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tasks, tiny_model):
    """A plain collect (one process) of the same runs: what every --ray collect here must record."""
    out = tmp_path_factory.mktemp("ray-reference") / "out"
    assert main(options(tasks, out, "--workers", "0", "--concurrency", "16")) == 0
    return out


def same_run(reference: Path, out: Path) -> None:
    """`out` starts as the reference's run (its collect.json): the same run id, so the same trajectory ids."""
    out.mkdir(parents=True)
    shutil.copy(reference / "collect.json", out / "collect.json")


def assert_records_match(out: Path, reference: Path) -> None:
    """Every run once, with the reference's ids, seeds, statuses, prompts and sampled ids (logprobs within
    float noise: another batch composition sums in another order)."""
    got, want = load(out), load(reference)
    assert [t.trajectory_id for t in got] == [t.trajectory_id for t in want]
    assert len({t.trajectory_id for t in got}) == TASKS
    for a, b in zip(got, want):
        one, two = a.model_dump(exclude=TIMING), b.model_dump(exclude=TIMING)
        calls_a, calls_b = one.pop("calls"), two.pop("calls")
        assert one == two
        assert len(calls_a) == len(calls_b) == 2
        for x, y in zip(calls_a, calls_b):
            lp_x, lp_y = x.pop("completion_logprobs"), y.pop("completion_logprobs")
            x.pop("latency_s"), y.pop("latency_s")
            assert x == y
            assert lp_x == pytest.approx(lp_y, abs=1e-4)


def test_ray_records_what_a_plain_collect_records_and_a_rerun_adds_nothing(cluster, tasks, reference, tmp_path, capsys):
    out = tmp_path / "out"
    same_run(reference, out)
    assert main(options(tasks, out, "--ray", "auto", "--engine-replicas", "2", "--concurrency", "8")) == 0
    err = capsys.readouterr().err
    assert "on Ray: 2 engine replicas" in err and "ok 16, error 0" in err, err
    assert_records_match(out, reference)

    parts = sorted(p.name for p in (out / "traces").glob("*.jsonl"))
    assert main(options(tasks, out, "--ray", "auto", "--engine-replicas", "2")) == 0
    assert "16 already in" in capsys.readouterr().err
    assert sorted(p.name for p in (out / "traces").glob("*.jsonl")) == parts


def actor_pids(class_name: str) -> set[int]:
    """The live processes of Ray actors of `class_name` (Ray titles them ray::NAME)."""
    found = set()
    for process in psutil.process_iter(["cmdline", "status"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if cmdline.startswith(f"ray::{class_name}") and process.info["status"] != psutil.STATUS_ZOMBIE:
            found.add(process.pid)
    return found


def actor_pid(class_name: str, earlier: set[int]) -> int:
    """The one process of a `class_name` actor that is not among `earlier` (those of collects before)."""
    new = wait_for(lambda: actor_pids(class_name) - earlier, f"a {class_name} actor process")
    assert len(new) == 1, new
    return new.pop()


def wait_for(condition, what: str, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_killed_engine_and_runner_actors_cost_only_their_runs_in_flight(cluster, tasks, reference, tmp_path, capsys):
    """kill -9 of the engine actor's process, then of the runner actor's, mid-collect: the runs they held
    are run again (--retries 2), and the folder ends with every run once, as a plain collect records it."""
    out = tmp_path / "out"
    same_run(reference, out)
    earlier = actor_pids("EngineHost") | actor_pids("RunnerHost")
    result = {}
    collect = threading.Thread(
        target=lambda: result.setdefault(
            "rc", main(options(tasks, out, "--ray", "auto", "--engine-replicas", "1", "--concurrency", "2"))
        )
    )
    collect.start()
    try:
        parts = lambda: len(list((out / "traces").glob("*.jsonl")))  # noqa: E731
        wait_for(lambda: parts() >= 1, "the first finished run")
        engine = actor_pid("EngineHost", earlier)
        os.kill(engine, signal.SIGKILL)
        killed_at = parts()
        wait_for(lambda: parts() >= killed_at + 2, "runs after the engine's restart")
        assert parts() < TASKS, "the collect ended before the runner could be killed"
        os.kill(actor_pid("RunnerHost", earlier), signal.SIGKILL)
    finally:
        collect.join(300)
    assert result.get("rc") == 0
    err = capsys.readouterr().err
    assert "were started again after their Ray actor died" in err and "ok 16, error 0" in err, err
    assert_records_match(out, reference)


def test_a_run_lost_past_its_retries_is_recorded_as_an_error(cluster, tasks, tmp_path, capsys):
    """--retries 0: the runs the killed engine held are recorded once each, status error, naming why;
    the others are ok; a rerun collects nothing again (an error is a finished run)."""
    out = tmp_path / "out"
    earlier = actor_pids("EngineHost")
    result = {}
    collect = threading.Thread(
        target=lambda: result.setdefault(
            "rc",
            main(
                options(tasks, out, "--ray", "auto", "--engine-replicas", "1", "--concurrency", "4", "--retries", "0")
            ),
        )
    )
    collect.start()
    try:
        wait_for(lambda: list((out / "traces").glob("*.jsonl")), "the first finished run")
        os.kill(actor_pid("EngineHost", earlier), signal.SIGKILL)
    finally:
        collect.join(300)
    assert result.get("rc") == 0
    records = load(out)
    assert len(records) == len({t.trajectory_id for t in records}) == TASKS
    lost = [t for t in records if t.status == "error"]
    # those in flight (4), and any sent before the driver saw the engine gone
    assert 1 <= len(lost) < TASKS, [t.status for t in records]
    assert all(t.status == "ok" for t in records if t not in lost)
    assert all("past --retries 0" in t.error and "engine actor was lost" in t.error for t in lost)
    capsys.readouterr()
    assert main(options(tasks, out, "--ray", "auto")) == 0
    assert "16 already in" in capsys.readouterr().err


def test_a_driver_killed_with_sigkill_resumes_from_out(cluster, tasks, reference, tmp_path):
    """The driver (python -m collect --ray ADDRESS) dies by SIGKILL after its 3rd record; the same command
    with --ray local (its own cluster, then stopped) collects what is missing, nothing twice."""
    out = tmp_path / "out"
    same_run(reference, out)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    command = [sys.executable, "-m", "collect", *options(tasks, out, "--concurrency", "4")]
    earlier = actor_pids("EngineHost") | actor_pids("RunnerHost")
    killed = subprocess.run(
        [*command, "--ray", cluster],
        env={**env, "ASTUNER_CRASH_AT": "collect.recorded@3"},
        start_new_session=True,  # the crash point kills its process group: the driver alone
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    before = len(load(out))
    assert 1 <= before < TASKS
    # its actors end with it (Ray ends the actors of a driver that is gone)
    wait_for(lambda: not (actor_pids("EngineHost") | actor_pids("RunnerHost")) - earlier, "its actors to end", 60)
    resumed = subprocess.run([*command, "--ray", "local"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"{before} already in" in resumed.stderr
    assert_records_match(out, reference)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--engine-replicas", "2"], "--engine-replicas 2: needs --ray"),
        (["--ray", "auto", "--retries", "-1"], "--retries -1: must be 0"),
        (["--ray", "auto", "--max-run-memory-mb", "100"], "--max-run-memory-mb is not enforced on Ray actors"),
    ],
)
def test_bad_ray_options_get_one_line_errors(tmp_path, capsys, args, message):
    assert main(["--workflow", WORKFLOW, "--out", str(tmp_path / "o"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_ray_not_installed_is_one_line_naming_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    assert main(["--workflow", WORKFLOW, "--out", str(tmp_path / "o"), "--ray", "auto"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--ray auto: ray is not installed; pip install -e '.[ray]'" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_more_replicas_than_the_cluster_holds_is_one_line(cluster, tasks, tmp_path, capsys):
    assert main(options(tasks, tmp_path / "o", "--ray", "auto", "--engine-replicas", "3")) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("collect: --engine-replicas 3: the Ray cluster has 2 CPUs, each CPU replica takes one"), last
