"""The learning examples' table: the loop's results.md plus what finetune.json and the stores hold.

    python examples/learning_table.py runs/tool/sft            # + merged sequences per iteration
    python examples/learning_table.py runs/two/speaker --roles # + held-out reward per role

Reads RUN_DIR/progress.json, the stores (read-only) and each iter-K/checkpoint/finetune.json, as
`python -m astuner iterate` wrote them; runs nothing. Columns beyond the loop's table: `merged` is
finetune's count of trained sequences made of several calls of one agent (finetune.json
`counts.merged_sequences`; an episode's tool call and answer merged into one sequence); for DPO,
whose pairs are single calls, `later_pairs` counts the pairs of a later call (their shared prompt
holds the episode's earlier turns); with --roles, `held_out_<role>` is the mean call-level score
(judger.py:role_reward) of each role on the held-out split, and `trained` names the roles whose
calls were trainable that iteration.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def per_role(db: Path) -> dict[int, dict[str, float]]:
    from astuner.store import open_store

    if not db.exists():
        return {}
    con = open_store(db, read_only=True)
    try:
        rows = con.execute(
            "SELECT t.iteration, c.role, avg(s.value) FROM scores s "
            "JOIN trajectories t USING (trajectory_id) "
            "JOIN calls c ON c.trajectory_id = s.trajectory_id AND c.call_index = s.call_index "
            "WHERE s.call_index IS NOT NULL AND s.value IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2"
        ).fetchall()
    finally:
        con.close()
    out: dict[int, dict[str, float]] = {}
    for iteration, role, mean in rows:
        out.setdefault(int(iteration), {})[role] = float(mean)
    return out


def trained_roles(db: Path) -> dict[int, list[str]]:
    from astuner.store import open_store

    con = open_store(db, read_only=True)
    try:
        rows = con.execute(
            "SELECT t.iteration, list(DISTINCT c.role ORDER BY c.role) FROM calls c "
            "JOIN trajectories t USING (trajectory_id) WHERE c.trainable GROUP BY 1"
        ).fetchall()
    finally:
        con.close()
    return {int(k): v for k, v in rows}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir")
    p.add_argument("--roles", action="store_true", help="add the held-out reward of each role (call-level scores)")
    args = p.parse_args(argv)
    from astuner.loop import markdown_table, read_recipe, results

    run = Path(args.run_dir)
    progress = json.loads((run / "progress.json").read_text())
    recipe = read_recipe(run / "recipe.yaml", str(run), None)
    iterations = max(int(key.split("/")[0]) for key in progress["done"])
    rows = results(recipe, iterations, progress)
    roles = per_role(run / "eval.duckdb") if args.roles else {}
    trained = trained_roles(run / "store.duckdb") if args.roles else {}
    table = []
    for row in rows:
        manifest = run / f"iter-{row['iteration']}" / "checkpoint" / "finetune.json"
        counts = json.loads(manifest.read_text()).get("counts", {}) if manifest.exists() else {}
        out = {k: row[k] for k in ("iteration", "held_out_reward", "train_reward", "samples", "train_examples")}
        if recipe.finetune.get("method") == "dpo":
            out["later_pairs"] = counts.get("later_call_pairs")
        else:
            out["merged"] = counts.get("merged_sequences", counts.get("merged_calls"))
        out["train_loss"] = row["train_loss"]
        for role, mean in sorted(roles.get(row["iteration"], {}).items()):
            out[f"held_out_{role}"] = mean
        if args.roles:
            out["trained"] = ",".join(trained.get(row["iteration"], [])) or None
        out["seconds"] = row["seconds"]
        table.append(out)
    keys = list(dict.fromkeys(k for r in table for k in r))
    print(markdown_table([{k: r.get(k) for k in keys} for r in table]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
