"""The learning examples, shortened to one collect -> judge -> finetune round on a few tasks
(their full 3-iteration runs and tables are in their READMEs): the mechanics they depend on.

- learn_tool_use: a two-call ReAct episode (tool call, tool result, answer) is one SFT sequence
  whose loss covers exactly the two completions, never the tool result or the prompts; finetune's
  `merged_sequences` counts those sequences (the loop's table shows it); DPO pairs share their
  prompt ids, and `later_call_pairs` counts the pairs of answers (multi-turn prompts); the DPO
  recipe's tables are shared by the samples of a task and iteration, new every iteration.
- learn_two_roles: only the trained role's calls are trainable and reach the data; per-role
  rewards; --trainable-targets switches the role with no code change.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import assert_token_exact, load, rows

from collect.main import main as collect
from judge.main import main as judge

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TOOL, TWO = EXAMPLES / "learn_tool_use", EXAMPLES / "learn_two_roles"


def export(db, path, *extra):
    from datasets import load_dataset

    from finetune.main import main as finetune

    assert finetune(["--db", str(db), "--export", str(path), *extra]) == 0
    return load_dataset("parquet", data_files=str(path), split="train")


@pytest.fixture(scope="module")
def tool_warmup(tiny_model, tmp_path_factory):
    """A shorter warm-up (the example's is 300 steps): enough for well-formed episodes at a low temperature."""
    out = tmp_path_factory.mktemp("tool") / "warmup"
    cmd = [sys.executable, str(TOOL / "warmup.py"), "--out", str(out), "--model", str(tiny_model), "--steps", "100"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def test_tool_use_episode_is_one_sequence_with_two_trained_spans(tool_warmup, tokenizer, tmp_path, capsys):
    out = tmp_path / "c"
    assert (
        collect(
            [
                "--workflow",
                f"{TOOL / 'workflow.py'}:LookupAgent",
                "--tasks",
                str(TOOL / "tasks.jsonl"),
                "--model",
                str(tool_warmup),
                "--limit",
                "6",
                "--samples-per-task",
                "4",
                "--max-tokens",
                "32",
                "--temperature",
                "0.3",
                "--seed",
                "0",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    trajectories = load(out)
    assert len(trajectories) == 24 and all(t.status == "ok" for t in trajectories)
    assert assert_token_exact(trajectories, tokenizer) > 24
    episodes = [t for t in trajectories if len(t.calls) == 2 and t.metadata["tool_called"]]
    assert episodes, [t.calls[0].completion.text for t in trajectories][:4]
    sys.path.insert(0, str(TOOL))
    from workflow import CODES, run_table

    for t in trajectories:  # the reward follows the rule in workflow.score, on this run's own table
        meta, row = t.metadata, t.task.metadata
        assert meta["table"] == run_table(t.task.task_id, t.sample_index) and sorted(meta["table"].values()) == sorted(
            CODES
        )
        assert all(c["code"] == meta["table"][str(c["key"])] for c in meta["lookups"] if str(c["key"]) in meta["table"])
        right_key = any(str(c["key"]) == str(row["key"]) for c in meta["lookups"])
        used = any(meta["final_answer"] == str(c["code"]) for c in meta["lookups"] if c["code"] is not None)
        assert t.reward == 0.5 * right_key + 0.5 * used
        assert (t.reward == 1.0) == (right_key and meta["final_answer"] == meta["answer"])
    # the table differs between samples of one task: no code can be learned from the question
    assert (
        len({json.dumps(t.metadata["table"]) for t in trajectories if t.task.task_id == trajectories[0].task.task_id})
        > 1
    )

    db = tmp_path / "store.duckdb"
    assert judge(["ingest", str(out / "traces"), "--db", str(db)]) == 0
    assert judge(["score", "--db", str(db), "--judger", "workflow"]) == 0
    sft = export(db, tmp_path / "sft.parquet", "--min_reward", "0", "--top_k", "4")
    assert "merged into an earlier sequence" in capsys.readouterr().out
    by_id = {t.trajectory_id: t for t in trajectories}
    merged = [r for r in sft if len(r["call_indices"]) == 2]
    assert merged, "no two-call episode extended its first call's ids"
    response_id = tokenizer.convert_tokens_to_ids("<tool_response>")
    for r in merged:
        first, second = by_id[r["trajectory_id"]].calls
        assert r["input_ids"] == second.prompt_token_ids + second.completion_token_ids
        start = len(first.prompt_token_ids)
        expected = [0] * start + [1] * len(first.completion_token_ids)
        expected += [0] * (len(second.prompt_token_ids) - len(expected)) + [1] * len(second.completion_token_ids)
        assert r["completion_mask"] == expected  # the prompts, the tool result and the headers carry no loss
        gap = r["input_ids"][start + len(first.completion_token_ids) : len(second.prompt_token_ids)]
        assert response_id in gap and str(first.completion.tool_calls[0].name) == "code"
    # finetune's own counts, as finetune.json records them: merged sequences = the two-call sequences
    from astuner.store import open_store
    from finetune.data import build
    from finetune.options import FinetuneConfig

    con = open_store(db, read_only=True)
    try:
        counts = build(con, FinetuneConfig(min_reward=0.0, top_k=4)).counts
        dpo_counts = build(con, FinetuneConfig(method="dpo", pairing="all")).counts
    finally:
        con.close()
    assert (
        counts["merged_sequences"]
        == len(merged)
        == sum(len(r["call_indices"]) - 1 for r in sft)
        == counts["merged_calls"]
    )

    dpo = export(db, tmp_path / "dpo.parquet", "--method", "dpo", "--pairing", "all")
    for pair in dpo:
        chosen, rejected = (
            by_id[pair[f"{side}_trajectory_id"]].calls[pair[f"{side}_call_index"]] for side in ("chosen", "rejected")
        )
        assert pair["prompt_ids"] == chosen.prompt_token_ids == rejected.prompt_token_ids
        assert pair["chosen_reward"] > pair["rejected_reward"]
    later = [pair for pair in dpo if pair["chosen_call_index"] > 0]
    assert dpo_counts["later_call_pairs"] == len(later)
    for pair in later:  # an answer pair: the shared prompt holds the question, the tool call and its result
        assert response_id in pair["prompt_ids"]

    # dpo.yaml's pairs: each call ranked by its own half of the reward (judger.py), the halves adding up to the reward
    assert (
        judge(["score", "--db", str(db), "--judger", "workflow", "--judger", f"{TOOL / 'judger.py'}:call_reward"]) == 0
    )
    halves = rows(
        db,
        "SELECT r.reward, sum(s.value), count(s.value) FROM rewards r JOIN scores s USING (trajectory_id) "
        "WHERE s.call_index IS NOT NULL GROUP BY r.trajectory_id, r.reward",
    )
    assert len(halves) == 24 and all(reward == total for reward, total, _ in halves), halves
    assert sum(n for *_, n in halves) == sum(len(t.calls) for t in trajectories)
    capsys.readouterr()
    by_call = export(db, tmp_path / "dpo-call.parquet", "--method", "dpo", "--pairing", "all", "--pair_by", "call")
    # sft.yaml's data: the selected episodes' calls, each trained only where it earned its own half
    masked = export(
        db, tmp_path / "sft-call.parquet", "--min_reward", "0.5", "--top_k", "4", "--min_call_reward", "0.5"
    )
    checked = [r for r in masked if len(r["call_indices"]) == 2]
    assert checked, [r["call_indices"] for r in masked]
    for r in checked:
        t = by_id[r["trajectory_id"]]
        first, second = t.calls
        start, key = len(first.prompt_token_ids), str(t.task.metadata["key"])
        first_span = r["completion_mask"][start : start + len(first.completion_token_ids)]
        answer_span = r["completion_mask"][len(second.prompt_token_ids) :]
        assert set(first_span) == {int(any(str(c["key"]) == key for c in t.metadata["lookups"]))}
        assert set(answer_span) == {int(t.metadata["final_answer"] in [c["code"] for c in t.metadata["lookups"]])}
        assert r["completion_mask"][start + len(first.completion_token_ids) : len(second.prompt_token_ids)] == [0] * (
            len(second.prompt_token_ids) - start - len(first.completion_token_ids)
        )  # the tool result: never
    for pair in by_call:
        chosen, rejected = (by_id[pair[f"{side}_trajectory_id"]] for side in ("chosen", "rejected"))
        if (
            pair["chosen_call_index"] == 0
        ):  # a first-call pair: the chosen looked the question's key up, the rejected did not
            key = str(chosen.task.metadata["key"])
            assert any(str(c["key"]) == key for c in chosen.metadata["lookups"])
            assert not any(str(c["key"]) == key for c in rejected.metadata["lookups"])
        else:  # an answer pair: the chosen answered with the tool's result, the rejected did not
            assert chosen.metadata["final_answer"] in [c["code"] for c in chosen.metadata["lookups"]]
            assert rejected.metadata["final_answer"] not in [c["code"] for c in rejected.metadata["lookups"]]


def test_tool_use_dpo_tables_are_shared_by_a_group_and_new_every_iteration():
    sys.path.insert(0, str(TOOL))
    from workflow import CODES, LookupAgent, LookupAgentSharedTables

    from astuner import Task, WorkflowTask
    from astuner.loop import read_recipe

    task = Task(task_id="train-p0-k7", main_query="Code of box 7", metadata={"key": 7})
    agent, group = LookupAgentSharedTables(), LookupAgentSharedTables.table_group
    tables = [agent.table(WorkflowTask(task, i, 1)) for i in range(2 * group)]
    assert all(t == tables[0] for t in tables[:group]) and tables[group] != tables[0]  # a group shares its table
    assert sorted(tables[0].values()) == sorted(CODES)
    assert agent.table(WorkflowTask(task, 0, 2)) != tables[0]  # a new table every iteration: nothing to memorise
    per_run = LookupAgent()  # sft.yaml's and the held-out runs': a table per run
    assert per_run.table(WorkflowTask(task, 0, 1)) != per_run.table(WorkflowTask(task, 1, 1))
    recipe = read_recipe(TOOL / "dpo.yaml")
    assert recipe.stage_config("collect")["workflow"].endswith(":LookupAgentSharedTables")
    assert recipe.stage_config("eval")["workflow"].endswith(":LookupAgent")
    assert (
        recipe.finetune["pair_by"] == "call"
        and "examples/learn_tool_use/judger.py:call_reward" in recipe.judge["judger"]
    )
    sft = read_recipe(TOOL / "sft.yaml")
    assert (
        sft.finetune["min_call_reward"] == 0.5
        and "examples/learn_tool_use/judger.py:call_reward" in sft.judge["judger"]
    )


def two_roles(tmp_path, tiny_model, name, *extra):
    out = tmp_path / name
    assert (
        collect(
            [
                "--workflow",
                f"{TWO / 'workflow.py'}:SpeakerListener",
                "--tasks",
                str(TWO / "tasks.jsonl"),
                "--model",
                str(tiny_model),
                "--limit",
                "4",
                "--samples-per-task",
                "2",
                "--max-tokens",
                "6",
                "--seed",
                "0",
                "--out",
                str(out),
                *extra,
            ]
        )
        == 0
    )
    db = tmp_path / f"{name}.duckdb"
    assert judge(["ingest", str(out / "traces"), "--db", str(db)]) == 0
    assert (
        judge(["score", "--db", str(db), "--judger", "workflow", "--judger", f"{TWO / 'judger.py'}:role_reward"]) == 0
    )
    return load(out), db


def test_two_roles_only_the_trained_role_is_trained_and_the_target_switches(tiny_model, tmp_path):
    from astuner.loop import read_recipe

    for target, other, extra in (
        ("speaker", "listener", ()),
        ("listener", "speaker", ("--trainable-targets", "listener")),
    ):
        trajectories, db = two_roles(tmp_path, tiny_model, target, *extra)
        assert len(trajectories) == 8
        for t in trajectories:
            assert t.status == "ok" and [c.role for c in t.calls] == ["speaker", "listener"]
            assert [c.trainable for c in t.calls] == [target == "speaker", target == "listener"]
            assert all(c.completion_token_ids for c in t.calls)  # both served by the one checkpoint
            assert t.reward == t.metadata["role_scores"][target]  # the reward is the trained role's
        # per-role rewards: each call scored with its own role's score
        per_call = rows(
            db,
            "SELECT c.role, s.value, t.metadata FROM scores s JOIN calls c USING (trajectory_id, call_index) "
            "JOIN trajectories t USING (trajectory_id) WHERE s.call_index IS NOT NULL",
        )
        assert len(per_call) == 16 and all(v == json.loads(m)["role_scores"][role] for role, v, m in per_call)
        # nothing of the other role is trained on: not a row, not a token
        sft = export(db, tmp_path / f"{target}.parquet", "--min_reward", "0", "--top_k", "2")
        assert len(sft) == 8 and {r["role"] for r in sft} == {target}
        by_id = {t.trajectory_id: t for t in trajectories}
        for r in sft:
            [index] = r["call_indices"]
            call = by_id[r["trajectory_id"]].calls[index]
            assert call.role == target and r["input_ids"] == call.prompt_token_ids + call.completion_token_ids
            assert sum(r["completion_mask"]) == len(call.completion_token_ids)
        assert rows(db, "SELECT count(*) FROM sft_candidates WHERE role = ?", (other,)) == [(0,)]
    # the loop passes --trainable-targets to both collect stages: the same recipe, the other role
    recipe = read_recipe(TWO / "sft.yaml", trainable_targets="listener")
    assert (
        recipe.stage_config("collect")["trainable_targets"]
        == "listener"
        == recipe.stage_config("eval")["trainable_targets"]
    )
