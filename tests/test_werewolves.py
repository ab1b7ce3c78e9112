"""The werewolves example end to end on the tiny model: a full 9-player game is collected,
ingested and scored per call, and --trainable-targets moves trainability between roles."""

import json
from pathlib import Path

from helpers import load, rows

from collect.main import main as collect
from judge.main import main as judge

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "werewolves"
WORKFLOW = f"{EXAMPLE / 'workflow.py'}:WerewolvesWorkflow"
SIDES = {
    "werewolf": "werewolves",
    "villager": "villagers",
    "seer": "villagers",
    "witch": "villagers",
    "hunter": "villagers",
}


def play(tmp_path, tiny_model, out, *extra):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(json.dumps({"task_id": "game", "query": "Play a game of werewolves", "seed": 11}) + "\n")
    # greedy: the tiny model's garbage, and so the whole game, is the same on every run
    assert (
        collect(
            [
                "--workflow",
                WORKFLOW,
                "--tasks",
                str(tasks),
                "--model",
                str(tiny_model),
                "--out",
                str(tmp_path / out),
                "--max-tokens",
                "16",
                "--temperature",
                "0",
                *extra,
            ]
        )
        == 0
    )
    [traj] = load(tmp_path / out)
    assert traj.status == "ok", traj.traceback
    return traj


def test_werewolves_game_roles_and_per_role_rewards(tmp_path, tiny_model):
    traj = play(tmp_path, tiny_model, "wolves")
    meta = traj.metadata
    assert meta["winner"] in ("werewolves", "villagers")
    assert sorted(meta["roles"].values()) == sorted(["werewolf"] * 3 + ["villager"] * 3 + ["seer", "witch", "hunter"])
    assert 1 <= meta["rounds"] <= 9 and meta["eliminated"]
    assert traj.reward == (1.0 if meta["winner"] == "werewolves" else 0.0)
    assert len({c.agent_name for c in traj.calls}) == 9
    for call in traj.calls:
        assert call.role == meta["roles"][call.agent_name]
        assert call.trainable == (call.role == "werewolf")
        assert call.completion_token_ids is not None  # every role is served by the checkpoint here

    db = tmp_path / "store.duckdb"
    assert judge(["ingest", str(tmp_path / "wolves" / "traces"), "--db", str(db)]) == 0
    assert (
        judge(["score", "--db", str(db), "--judger", "workflow", "--judger", f"{EXAMPLE / 'judger.py'}:side_reward"])
        == 0
    )
    per_role = dict(
        rows(
            db,
            """SELECT c.role, avg(s.value) FROM scores s JOIN calls c USING (trajectory_id, call_index)
                                WHERE s.call_index IS NOT NULL GROUP BY c.role""",
        )
    )
    assert len(per_role) >= 4
    assert per_role == {role: float(SIDES[role] == meta["winner"]) for role in per_role}
    assert rows(db, "SELECT reward FROM rewards") == [(traj.reward,)]

    # the same game with the seer trained instead: only its calls are trainable, reward for the good side
    seer = play(tmp_path, tiny_model, "seer", "--trainable-targets", "seer")
    assert seer.trainable_targets == ["seer"] and seer.metadata["trainable_side"] == "villagers"
    assert {c.role for c in seer.calls if c.trainable} == {"seer"}
    assert any(not c.trainable for c in seer.calls if c.role == "werewolf")
    assert seer.reward == (1.0 if seer.metadata["winner"] == "villagers" else 0.0)
