"""The iteration loop: collect -> judge -> finetune -> collect with the new checkpoint, N times.

    python -m astuner iterate --recipe examples/math_agent/recipe.yaml --iterations 1
    python -m astuner iterate --recipe examples/werewolves/recipe.yaml --iterations 2 --trainable-targets seer,witch

One recipe drives every stage. Each stage runs as its own process with the command it prints
(so it can be re-run by hand), and the stages meet only through files:

    RUN_DIR/recipe.yaml                        the recipe this run was started with
    RUN_DIR/{collect,eval,judge,finetune}.yaml each stage's --config, cut from the recipe
    RUN_DIR/iter-K/traces, iter-K/collect.json collect of iteration K with checkpoint K
    RUN_DIR/iter-K/eval/traces                 the held-out split, collected with checkpoint K
    RUN_DIR/iter-K/checkpoint                  finetuned on iteration K: checkpoint K+1
    RUN_DIR/store.duckdb, RUN_DIR/eval.duckdb  training and held-out stores, every iteration
    RUN_DIR/progress.json                      finished stages: an interrupted run resumes there
    RUN_DIR/results.md, RUN_DIR/reward.png     the per-iteration table and reward plot

Checkpoint 0 is the recipe's `model` (default: the embedded tiny model); after N iterations the
held-out split is evaluated once more, with checkpoint N.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from astuner.faults import crash_point

SECTIONS = ("collect", "eval", "judge", "finetune")
# Options each stage gets from the loop, per iteration; a recipe that sets them is refused.
LOOP_OWNED = {
    "collect": ("model", "iteration", "out", "config"),
    "eval": ("model", "iteration", "out", "config"),
    "judge": ("db", "where", "traces", "config"),
    "finetune": ("db", "iterations", "output_dir", "model_name_or_path", "export", "config"),
}
PROGRESS = "progress.json"
# Sections whose options (names, then values, by the stage's own config dataclass) are checked when the recipe
# is read: (module, its config dataclass, the command). finetune's are TRL's (its stage checks them; importing
# TRL here would cost seconds).
STAGE_OPTIONS = {
    "collect": ("collect.main", "CollectConfig", "python -m collect"),
    "eval": ("collect.main", "CollectConfig", "python -m collect"),
    "judge": ("judge.main", "ScoreConfig", "python -m judge score"),
}


class RecipeError(ValueError):
    """A recipe problem; the message names the file, the key and the fix."""


@dataclass
class Recipe:
    path: Path
    run_dir: Path
    model: str | None = None
    collect: dict = field(default_factory=dict)
    eval: dict | None = None
    judge: dict = field(default_factory=dict)
    finetune: dict = field(default_factory=dict)
    accelerate_config: str | None = None
    iterations: int | None = None

    def stage_config(self, section: str) -> dict:
        """What goes into RUN_DIR/SECTION.yaml; eval = collect's options with eval's on top."""
        if section == "eval":
            return {**self.collect, **(self.eval or {})}
        return dict(getattr(self, section))


def read_recipe(path: str | os.PathLike, run_dir: str | None = None, trainable_targets: str | None = None) -> Recipe:
    import dataclasses
    import importlib

    from astuner.cli import ConfigError, config_from_options
    from astuner.cli import read_recipe as read_yaml

    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"--recipe {path}: no such file")
    try:
        raw = read_yaml(path)
    except ConfigError as exc:
        raise RecipeError(str(exc).replace("--config", "--recipe", 1)) from None
    known = {"run_dir", "model", "accelerate_config", "iterations", *SECTIONS}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise RecipeError(f"--recipe {path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    for section in SECTIONS:
        value = raw.get(section)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise RecipeError(
                f"--recipe {path}: {section} must be a mapping of option: value, got {type(value).__name__}"
            )
        value = {str(k).replace("-", "_"): v for k, v in value.items()}
        owned = sorted(set(value) & set(LOOP_OWNED[section]))
        if owned:
            raise RecipeError(
                f"--recipe {path}: {section}.{owned[0]} is set by the loop for each iteration; remove it from the recipe"
            )
        if section in STAGE_OPTIONS:  # refused now, before a stage fails on it with the run dir started
            module, config_class, command = STAGE_OPTIONS[section]
            options = {f.name for f in dataclasses.fields(getattr(importlib.import_module(module), config_class))}
            unknown = sorted(set(value) - options)
            if unknown:
                raise RecipeError(
                    f"--recipe {path}: {section}.{unknown[0]} is not an option of {command} (see {command} --help)"
                )
        if isinstance(value.get("trainable_targets"), list):  # collect takes them comma-separated
            value["trainable_targets"] = ",".join(map(str, value["trainable_targets"]))
        raw[section] = value
    run_dir = run_dir or raw.get("run_dir")
    if not run_dir:
        raise RecipeError(f"--recipe {path}: no run_dir; add `run_dir: runs/NAME` or pass --run-dir")
    recipe = Recipe(
        path=path,
        run_dir=Path(run_dir),
        model=raw.get("model"),
        collect=raw.get("collect") or {},
        eval=raw.get("eval"),
        judge=raw.get("judge") or {},
        finetune=raw.get("finetune") or {},
        accelerate_config=raw.get("accelerate_config"),
        iterations=raw.get("iterations"),
    )
    if trainable_targets is not None:  # one switch for every stage that reads the trajectories
        recipe.collect["trainable_targets"] = trainable_targets
    for section, (module, config_class, command) in STAGE_OPTIONS.items():
        if section == "eval" and recipe.eval is None:
            continue
        try:  # what the stage will make of its --config file, so a bad value is refused now, not after the stages before it
            config_from_options(
                getattr(importlib.import_module(module), config_class), recipe.stage_config(section), command
            )
        except (ConfigError, TypeError, ValueError) as exc:
            raise RecipeError(f"--recipe {path}: {section}: {exc}") from None
    return recipe


def _accelerate_config(name: str | None) -> str | None:
    """A bare name is one of finetune's shipped configs (finetune/accelerate/NAME.yaml); else a path."""
    if name is None:
        return None
    if "/" not in name and not name.endswith((".yaml", ".yml")):
        import importlib.util

        spec = importlib.util.find_spec("finetune")  # locates the folder without importing finetune
        folder = Path(spec.origin).parent / "accelerate" if spec and spec.origin else None
        if folder is None or not (folder / f"{name}.yaml").is_file():
            shipped = sorted(p.stem for p in folder.glob("*.yaml")) if folder else []
            raise RecipeError(
                f"accelerate_config {name!r}: no such shipped config; use one of {', '.join(shipped)} or a path"
            )
        return str(folder / f"{name}.yaml")
    if not Path(name).is_file():
        raise RecipeError(f"accelerate_config {name!r}: no such file")
    return name


@dataclass
class Stage:
    iteration: int
    name: str  # collect | eval | judge | judge-eval | finetune
    commands: list[list[str]]
    # A folder that exists only once the stage is complete (renamed into place last): a stage
    # killed after that rename but before progress.json recorded it counts as done.
    output: Path | None = None

    @property
    def key(self) -> str:
        return f"{self.iteration}/{self.name}"


def plan(recipe: Recipe, iterations: int, base_model: str) -> list[Stage]:
    """Every stage of N iterations, in order; commands as printed (python / accelerate as the first word)."""
    run = recipe.run_dir
    accelerate = ["accelerate", "launch"]
    config = _accelerate_config(recipe.accelerate_config)
    if config:
        accelerate += ["--config_file", config]
    judge_score = ["python", "-m", "judge", "score", "--config", str(run / "judge.yaml")]
    stages = []
    for k in range(iterations + 1):
        model = base_model if k == 0 else str(run / f"iter-{k - 1}" / "checkpoint")
        it, db, eval_db = run / f"iter-{k}", str(run / "store.duckdb"), str(run / "eval.duckdb")
        evaluate = (
            [
                Stage(
                    k,
                    "eval",
                    [
                        [
                            "python",
                            "-m",
                            "collect",
                            "--config",
                            str(run / "eval.yaml"),
                            "--model",
                            model,
                            "--iteration",
                            str(k),
                            "--out",
                            str(it / "eval"),
                        ]
                    ],
                ),
                Stage(
                    k,
                    "judge-eval",
                    [
                        ["python", "-m", "judge", "ingest", str(it / "eval" / "traces"), "--db", eval_db],
                        [*judge_score, "--db", eval_db, "--where", f"iteration = {k}"],
                    ],
                ),
            ]
            if recipe.eval is not None
            else []
        )
        if k == iterations:  # after the last round: only the held-out evaluation of the final checkpoint
            stages += evaluate
            break
        stages += [
            Stage(
                k,
                "collect",
                [
                    [
                        "python",
                        "-m",
                        "collect",
                        "--config",
                        str(run / "collect.yaml"),
                        "--model",
                        model,
                        "--iteration",
                        str(k),
                        "--out",
                        str(it),
                    ]
                ],
            ),
            Stage(
                k,
                "judge",
                [
                    ["python", "-m", "judge", "ingest", str(it / "traces"), "--db", db],
                    [*judge_score, "--db", db, "--where", f"iteration = {k}"],
                ],
            ),
            *evaluate,
            Stage(
                k,
                "finetune",
                [
                    [
                        *accelerate,
                        "-m",
                        "finetune",
                        "--config",
                        str(run / "finetune.yaml"),
                        "--db",
                        db,
                        "--iterations",
                        str(k),
                        "--model_name_or_path",
                        model,
                        "--output_dir",
                        str(it / "checkpoint"),
                    ]
                ],
                output=it / "checkpoint",
            ),
        ]
    return stages


def _executable(command: list[str]) -> list[str]:
    """The printed command as run here: this interpreter, and accelerate through it."""
    if command[0] == "python":
        return [sys.executable, *command[1:]]
    if command[:2] == ["accelerate", "launch"]:
        return [sys.executable, "-m", "accelerate.commands.launch", *command[2:]]
    return command


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _start(recipe: Recipe) -> dict:
    """Write the stage configs on first use; on a resume, refuse a recipe that changed."""
    import yaml

    run = recipe.run_dir
    run.mkdir(parents=True, exist_ok=True)
    sections = {s: recipe.stage_config(s) for s in SECTIONS if s != "eval" or recipe.eval is not None}
    identity = {"model": recipe.model, "accelerate_config": recipe.accelerate_config, **sections}
    progress_path = run / PROGRESS
    if progress_path.exists():
        progress = json.loads(progress_path.read_text())
        saved = progress["recipe"]
        changed = sorted(k for k in set(saved) | set(identity) if saved.get(k) != identity.get(k))
        if changed:
            raise RecipeError(
                f"{run} holds a run started with another recipe (it differs in: {', '.join(changed)}); "
                f"use another --run-dir, or restore the recipe saved in {run / 'recipe.yaml'}"
            )
        return progress
    ours = {"recipe.yaml", *(f"{section}.yaml" for section in SECTIONS)}  # a start killed before progress.json
    if any(p.name not in ours and not p.name.endswith(".tmp") for p in run.iterdir()):
        raise RecipeError(
            f"{run} is not empty and holds no {PROGRESS} (not a run of this loop); use another --run-dir or remove it"
        )
    for section, options in sections.items():
        _write_atomic(run / f"{section}.yaml", yaml.safe_dump(options, sort_keys=False))
    _write_atomic(run / "recipe.yaml", recipe.path.read_text())
    progress = {"recipe": identity, "done": {}}
    _write_atomic(progress_path, json.dumps(progress, indent=2))
    return progress


def run_stages(recipe: Recipe, stages: list[Stage], progress: dict) -> int:
    from tqdm.auto import tqdm

    progress_path = recipe.run_dir / PROGRESS
    todo = [s for s in stages if s.key not in progress["done"]]
    if len(todo) < len(stages):
        print(
            f"iterate: {len(stages) - len(todo)} of {len(stages)} stages already done in {recipe.run_dir}; resuming at "
            f"{todo[0].key if todo else 'the results'}",
            flush=True,
        )
    bar = tqdm(
        total=len(stages),
        initial=len(stages) - len(todo),
        desc="iterate",
        unit="stage",
        file=sys.stdout,
        disable=not todo,
        position=0,
        leave=True,
    )
    env = {"HF_HUB_OFFLINE": "1", **os.environ}  # every checkpoint is a local folder: never reach a hub
    for stage in todo:
        started = time.time()
        if stage.output is not None and stage.output.is_dir():
            print(
                f"\n[iteration {stage.iteration} {stage.name}] {stage.output} is complete (a run killed before recording it); "
                "not run again",
                flush=True,
            )
            shutil.rmtree(f"{stage.output}.partial", ignore_errors=True)  # what that run had left to delete
        else:
            for command in stage.commands:
                print(f"\n[iteration {stage.iteration} {stage.name}] $ {shlex.join(command)}", flush=True)
                rc = subprocess.call(_executable(command), env=env)
                if rc != 0:
                    print(
                        f"\niterate: iteration {stage.iteration} {stage.name} failed (exit {rc}): {shlex.join(command)}\n"
                        f"iterate: fix the cause and run the same iterate command again; the {len(progress['done'])} finished "
                        "stages are kept",
                        file=sys.stderr,
                        flush=True,
                    )
                    return rc
        crash_point("loop.stage_done")  # the stage's work is done, not yet recorded
        progress["done"][stage.key] = {
            "seconds": round(time.time() - started, 1),
            "finished_at": time.time(),
            "commands": [shlex.join(c) for c in stage.commands],
        }
        _write_atomic(progress_path, json.dumps(progress, indent=2))
        bar.update(1)
    bar.close()
    return 0


def _mean_rewards(db: Path) -> dict[int, tuple[int, float]]:
    """iteration -> (trajectories, mean reward); failed or unscored trajectories count 0."""
    if not db.exists():
        return {}
    from astuner.store import open_store

    con = open_store(db, read_only=True)
    try:
        rows = con.execute("SELECT iteration, count(*), avg(coalesce(reward, 0)) FROM rewards GROUP BY 1").fetchall()
    finally:
        con.close()
    return {int(it): (int(n), float(mean)) for it, n, mean in rows}


def results(recipe: Recipe, iterations: int, progress: dict) -> list[dict]:
    held_out = _mean_rewards(recipe.run_dir / "eval.duckdb")
    train = _mean_rewards(recipe.run_dir / "store.duckdb")
    rows = []
    for k in range(iterations + 1):
        manifest = recipe.run_dir / f"iter-{k}" / "checkpoint" / "finetune.json"
        trained = json.loads(manifest.read_text()) if manifest.exists() else {}
        seconds = sum(v["seconds"] for key, v in progress["done"].items() if key.split("/")[0] == str(k))
        held_out_n, held_out_reward = held_out.get(k, (None, None))
        samples, train_reward = train.get(k, (None, None))
        rows.append(
            {
                "iteration": k,
                "held_out_reward": held_out_reward,
                "held_out_n": held_out_n,
                "train_reward": train_reward,
                "samples": samples,
                "train_examples": trained.get("counts", {}).get("samples"),
                # SFT: trained sequences made of several calls of one agent (an episode's calls merged)
                "merged_sequences": trained.get("counts", {}).get("merged_sequences"),
                "train_loss": (trained.get("metrics") or {}).get("train_loss"),
                "seconds": round(seconds),
            }
        )
    return rows


def markdown_table(rows: list[dict]) -> str:
    def cell(value) -> str:
        return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)

    headers = list(rows[0])
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(row[h]) for h in headers) + " |" for row in rows]
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for key, label in (("held_out_reward", "held-out"), ("train_reward", "train samples")):
        points = [(r["iteration"], r[key]) for r in rows if r[key] is not None]
        if points:
            ax.plot(*zip(*points), marker="o", label=label)
    ax.set_xlabel("iteration (checkpoint)")
    ax.set_ylabel("mean reward")
    ax.set_xticks([r["iteration"] for r in rows])
    ax.set_ylim(bottom=0)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def iterate(args: argparse.Namespace) -> int:
    recipe = read_recipe(args.recipe, args.run_dir, args.trainable_targets)
    iterations = args.iterations if args.iterations is not None else recipe.iterations
    if iterations is None or iterations < 0:
        raise RecipeError(
            f"--iterations {iterations}: give the number of collect-judge-finetune rounds, e.g. --iterations 3"
        )
    if recipe.model:
        from astuner.engines import require_checkpoint

        base_model = str(require_checkpoint(recipe.model, option="model (recipe)"))
    else:
        from astuner.tiny import ensure_tiny_model

        base_model = str(ensure_tiny_model())
    stages = plan(recipe, iterations, base_model)
    progress = _start(recipe)
    print(
        f"iterate: {iterations} iteration(s) of {recipe.path} in {recipe.run_dir}: {len(stages)} stages; "
        f"checkpoint 0 is {base_model}",
        flush=True,
    )
    rc = run_stages(recipe, stages, progress)
    if rc != 0:
        return rc
    rows = results(recipe, iterations, progress)
    table = markdown_table(rows)
    _write_atomic(recipe.run_dir / "results.md", f"# {recipe.path}\n\n{table}\n")
    plot(rows, recipe.run_dir / "reward.png", f"{recipe.path}: mean reward per checkpoint")
    print(
        f"\n{table}\n\niterate: wrote {recipe.run_dir / 'results.md'} and {recipe.run_dir / 'reward.png'}; "
        f"final checkpoint {recipe.run_dir / f'iter-{iterations - 1}' / 'checkpoint' if iterations else base_model}",
        flush=True,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    from astuner.cli import one_line_errors

    parser = argparse.ArgumentParser(
        prog="python -m astuner", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", metavar="iterate")
    it = commands.add_parser(
        "iterate",
        help="collect -> judge -> finetune, N times, from one recipe",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    one_line_errors(it)
    it.add_argument(
        "--recipe",
        required=True,
        help="The recipe YAML: run_dir, model, collect, eval, judge, finetune, accelerate_config.",
    )
    it.add_argument(
        "--iterations",
        type=int,
        default=None,
        help="Collect-judge-finetune rounds (default: the recipe's `iterations`).",
    )
    it.add_argument("--run-dir", "--run_dir", dest="run_dir", default=None, help="Overrides the recipe's run_dir.")
    it.add_argument(
        "--trainable-targets",
        "--trainable_targets",
        dest="trainable_targets",
        default=None,
        help="Comma-separated roles to train ('*' = all), overriding the recipe and the workflow.",
    )
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return iterate(args)
    except (RecipeError, ValueError, FileNotFoundError) as exc:
        print(f"iterate: error: {exc}", file=sys.stderr)
        return 2
