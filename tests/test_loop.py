"""python -m astuner iterate: two iterations on the tiny model, killed between stages and
resumed with the same command; recipe errors are one line."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import rows, workflow_ref, write_tasks

from astuner.loop import RecipeError, main, read_recipe

ROOT = Path(__file__).resolve().parent.parent


def write_recipe(tmp: Path, **changes) -> Path:
    recipe = {
        "run_dir": str(tmp / "run"),
        "collect": {
            "workflow": workflow_ref("Debate"),
            "tasks": str(write_tasks(tmp / "tasks.jsonl", 2)),
            "samples_per_task": 2,
            "max_tokens": 16,
            "seed": 0,
        },
        "eval": {"tasks": str(write_tasks(tmp / "eval.jsonl", 1, prefix="e")), "seed": 1234},
        "judge": {"judger": ["workflow"]},
        "finetune": {
            "method": "sft",
            "max_steps": 2,
            "per_device_train_batch_size": 4,
            "gradient_checkpointing": False,
            "learning_rate": 1e-3,
            "disable_tqdm": True,
        },
        "accelerate_config": "cpu",
        **changes,
    }
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_two_iterations_killed_between_stages_resume(tmp_path, tiny_model, capsys):
    recipe = write_recipe(tmp_path)
    run = tmp_path / "run"
    command = [sys.executable, "-m", "astuner", "iterate", "--recipe", str(recipe), "--iterations", "2"]
    proc = subprocess.Popen(
        command, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    progress = run / "progress.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if progress.exists() and "0/eval" in json.loads(progress.read_text())["done"]:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    os.killpg(proc.pid, signal.SIGKILL)  # the loop and the stage it had started
    proc.wait()
    done_before = set(json.loads(progress.read_text())["done"])
    assert {"0/collect", "0/judge", "0/eval"} <= done_before and "0/finetune" not in done_before

    assert main(["iterate", "--recipe", str(recipe), "--iterations", "2"]) == 0
    out = capsys.readouterr().out
    assert f"{len(done_before)} of 12 stages already done" in out, out[:3000]

    done = json.loads(progress.read_text())["done"]
    assert len(done) == 12  # 2 x (collect, eval, judge, judge-eval, finetune) + final eval, judge-eval
    for k in (0, 1):
        assert (run / f"iter-{k}" / "checkpoint" / "finetune.json").is_file()
        assert not (run / f"iter-{k}" / "checkpoint.partial").exists()
    # every (iteration, task, sample) once, in the store and in the traces
    assert rows(
        run / "store.duckdb",
        "SELECT iteration, count(*), count(DISTINCT (task_id, sample_index)) FROM trajectories GROUP BY 1 ORDER BY 1",
    ) == [(0, 4, 4), (1, 4, 4)]
    assert rows(run / "eval.duckdb", "SELECT iteration, count(*) FROM trajectories GROUP BY 1 ORDER BY 1") == [
        (0, 2),
        (1, 2),
        (2, 2),
    ]
    for k in (0, 1):
        lines = [
            json.loads(line)
            for f in (run / f"iter-{k}" / "traces").glob("*.jsonl")
            for line in f.read_text().splitlines()
        ]
        assert len(lines) == 4 and len({(t["task"]["task_id"], t["sample_index"]) for t in lines}) == 4
    # iteration 1 was collected with the checkpoint trained on iteration 0, which records its parent
    assert rows(run / "store.duckdb", "SELECT DISTINCT checkpoint_path FROM trajectories WHERE iteration = 1") == [
        (str((run / "iter-0" / "checkpoint").resolve()),)
    ]
    manifest = json.loads((run / "iter-1" / "checkpoint" / "finetune.json").read_text())
    assert manifest["parent_checkpoint"] == str((run / "iter-0" / "checkpoint").resolve()) and manifest[
        "iterations"
    ] == [1]
    table = (run / "results.md").read_text()
    assert "| iteration | held_out_reward" in table and "\n| 2 |" in table
    assert (run / "reward.png").stat().st_size > 0

    # a finished run re-prints its results and runs nothing
    assert main(["iterate", "--recipe", str(recipe), "--iterations", "2"]) == 0
    assert "12 of 12 stages already done" in capsys.readouterr().out


def test_recipe_errors(tmp_path, capsys):
    with pytest.raises(RecipeError, match=r"unknown key\(s\) colect"):
        read_recipe(write_recipe(tmp_path, colect={}))
    with pytest.raises(RecipeError, match=r"finetune.output_dir is set by the loop"):
        read_recipe(write_recipe(tmp_path, finetune={"output_dir": "x"}))
    with pytest.raises(RecipeError, match="no run_dir"):
        read_recipe(write_recipe(tmp_path, run_dir=None))
    assert main(["iterate", "--recipe", str(tmp_path / "nope.yaml"), "--iterations", "1"]) == 2
    assert "iterate: error: --recipe" in capsys.readouterr().err
    assert main(["iterate", "--recipe", str(write_recipe(tmp_path, accelerate_config="tpu")), "--iterations", "1"]) == 2
    assert "accelerate_config 'tpu': no such shipped config; use one of cpu, gpu" in capsys.readouterr().err

    # the same run_dir with another recipe is refused, naming what changed
    from astuner.loop import _start

    _start(read_recipe(write_recipe(tmp_path)))
    with pytest.raises(RecipeError, match=r"another recipe \(it differs in: finetune\)"):
        _start(read_recipe(write_recipe(tmp_path, finetune={"method": "dpo"})))
    # the command-line targets reach collect (and so every stage after it)
    recipe = read_recipe(write_recipe(tmp_path), trainable_targets="critic")
    assert (
        recipe.stage_config("collect")["trainable_targets"]
        == "critic"
        == recipe.stage_config("eval")["trainable_targets"]
    )


def test_recipe_bad_value_refused_before_any_stage(tmp_path, capsys):
    """A value the stage would refuse (collect's samples_per_task: 0, eval's top_p: 2, a number that is not one) is
    one line naming the section, the option and the value, before the run folder or any stage is started."""
    for section, key, value, message in [
        ("collect", "samples_per_task", 0, "collect: --samples-per-task 0: must be at least 1"),
        ("eval", "top_p", 2, "eval: --top-p 2: must be above 0 and at most 1"),
        ("collect", "concurrency", "many", "collect: argument --concurrency: invalid int value: 'many'"),
        ("judge", "batch_size", 0, "judge: --batch_size 0: must be at least 1"),
    ]:
        recipe = yaml.safe_load(write_recipe(tmp_path).read_text())
        recipe[section][key] = value
        path = tmp_path / f"bad-{key}.yaml"
        path.write_text(yaml.safe_dump(recipe))
        assert main(["iterate", "--recipe", str(path), "--iterations", "1"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"iterate: error: --recipe {path}: {message}"), err
        assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("recipe", sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("examples/*/*.yaml")))
def test_shipped_recipes_parse_and_their_files_load(recipe, monkeypatch):
    """Every example's recipe: known keys, an importable Workflow, task files that load."""
    from astuner.loop import plan
    from astuner.tasks import load_tasks
    from astuner.workflow import load_workflow

    monkeypatch.chdir(ROOT)  # recipes name paths from the repository root, as their commands run
    parsed = read_recipe(recipe)
    assert load_workflow(parsed.collect["workflow"])
    for section in ("collect", "eval"):
        assert load_tasks(parsed.stage_config(section)["tasks"])
    assert [s.name for s in plan(parsed, 1, "BASE")][:5] == ["collect", "judge", "eval", "judge-eval", "finetune"]
