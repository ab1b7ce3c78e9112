"""Training data from the store, for the trainable roles only, built from the stored token ids.

SFT (rejection sampling): per task and iteration, the top-k trajectories whose combined reward
is at least a threshold (the `sft_candidates` view). Each trainable call becomes
`prompt_token_ids + completion_token_ids` with a loss mask of 1 on exactly the completion ids.
When an agent's next call starts with everything its previous sequence holds (a multi-turn
ReAct loop under a template that re-renders history verbatim), the call is merged into that
sequence: the new tokens between (tool results, other speakers) are masked and its completion
is another span of 1s. With --min_call_reward, a call whose own call-level score is below it stays
in its sequence as context, its completion masked too. Nothing is re-tokenized.

DPO: pairs from the `dpo_candidates` view: two trainable calls of one task and iteration with
identical prompt ids (where two samples first diverge) and different completions, chosen from
the higher-reward trajectory, with margin >= --min_margin. With --pair_by call, chosen and rejected
are ranked by the two calls' own call-level scores instead (a judger with `level = "call"`): a
pair at an agent's first call then compares what that call did, not what a later call of the
episode earned after it.

This module needs duckdb only (no torch), so data can be built and exported quickly.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from typing import NamedTuple

from astuner.store import CALL_REWARDS, DPO_PAIRS
from finetune.options import FinetuneConfig

SFT_COLUMNS = ("input_ids", "completion_mask")
DPO_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")


class EmptyDatasetError(ValueError):
    """The selection produced no training data; the message says which count was zero."""


class SftCall(NamedTuple):
    """A row of the SFT query: one trainable call of a selected trajectory."""

    task_id: str
    iteration: int
    trajectory_id: str
    reward: float
    task_rank: int
    call_index: int
    role: str
    agent_name: str | None
    prompt_token_ids: list[int]
    completion_token_ids: list[int]
    template_drift: bool | None
    trained: bool = True  # False: below --min_call_reward; its completion stays in the sequence, masked


class DpoPair(NamedTuple):
    """A row of the DPO query: two calls of one prompt, chosen from the higher-reward one."""

    task_id: str
    iteration: int
    role: str
    prompt_token_ids: list[int]
    chosen_trajectory_id: str
    chosen_call_index: int
    chosen_completion_ids: list[int]
    chosen_reward: float
    rejected_trajectory_id: str
    rejected_call_index: int
    rejected_completion_ids: list[int]
    rejected_reward: float
    margin: float


def _select(row_type, **expressions: str) -> str:
    """The SELECT list of `row_type`'s fields in order (rows then unpack into it by position);
    a field given an expression is `expression AS field`."""
    return ", ".join(f"{expressions[name]} AS {name}" if name in expressions else name for name in row_type._fields)


@dataclass
class BuiltDataset:
    method: str
    rows: list[dict]
    iterations: list[int]
    query: str
    params: list
    counts: dict

    @property
    def columns(self) -> tuple[str, ...]:
        return SFT_COLUMNS if self.method == "sft" else DPO_COLUMNS

    def sha256(self) -> str:
        """Hash of the training columns in order: same data, same hash, whatever the metadata."""
        digest = hashlib.sha256(self.method.encode())
        for row in self.rows:
            digest.update(json.dumps([row[c] for c in self.columns], separators=(",", ":")).encode())
        return digest.hexdigest()

    def summary(self) -> str:
        c = self.counts
        its = ",".join(map(str, self.iterations))
        roles = ", ".join(f"{role} {n}" for role, n in sorted(c["by_role"].items()))
        if self.method == "sft":
            return (
                f"SFT data: {c['samples']} sequences from {c['calls']} trainable calls ({c['merged_calls']} merged into "
                f"an earlier sequence of their agent: {c['merged_sequences']} sequences of several calls) of {c['trajectories']} trajectories, {c['tasks']} tasks, iteration {its}; "
                f"{c['completion_tokens']} trained tokens of {c['tokens']}; calls by role: {roles}"
                + (
                    f"; {c['masked_calls']} calls below --min_call_reward kept as context, not trained"
                    if c.get("masked_calls")
                    else ""
                )
            )
        return (
            f"DPO data: {c['samples']} pairs from {c['prompts']} prompts of {c['tasks']} tasks, iteration {its}; "
            f"{c['later_call_pairs']} of a later call (their prompt holds the earlier turns); "
            f"margin mean {c['mean_margin']:.3g}, min {c['min_margin']:.3g}; pairs by role: {roles}"
        )


def resolve_iterations(con, iterations: list[int] | None) -> list[int]:
    present = [row[0] for row in con.execute("SELECT DISTINCT iteration FROM trajectories ORDER BY 1").fetchall()]
    if not present:
        raise EmptyDatasetError(
            "the store has no trajectories; ingest some with: python -m judge ingest TRACES --db DB"
        )
    if not iterations:
        return [present[-1]]
    missing = sorted(set(iterations) - set(present))
    if missing:
        raise EmptyDatasetError(f"--iterations {missing}: not in the store, which has iterations {present}")
    return sorted(set(iterations))


def _filters(iterations: list[int], roles: list[str] = ()) -> tuple[str, list]:
    where = f"iteration IN ({', '.join('?' for _ in iterations)})"
    params: list = list(iterations)
    if roles:
        where += f" AND role IN ({', '.join('?' for _ in roles)})"
        params += list(roles)
    return where, params


def build(con, sel: FinetuneConfig) -> BuiltDataset:
    """The training data `sel` selects (its values were checked when it was made)."""
    iterations = resolve_iterations(con, sel.iterations)
    return (_build_sft if sel.method == "sft" else _build_dpo)(con, sel, iterations)


# ---------------------------------------------------------------- SFT


def _build_sft(con, sel: FinetuneConfig, iterations: list[int]) -> BuiltDataset:
    where, params = _filters(iterations, sel.roles)
    # with --min_call_reward, a call whose own call-level reward is below it (or absent) stays in its sequence as
    # context, its completion masked: an episode that earned its reward in one call does not teach the others
    trained, join = "TRUE", ""
    if sel.min_call_reward is not None:
        trained, join = (
            "coalesce(cr.reward >= ?, FALSE)",
            f"LEFT JOIN ({CALL_REWARDS}) cr USING (trajectory_id, call_index) ",
        )
    query = (
        f"SELECT {_select(SftCall, reward='s.reward', trained=trained)} FROM sft_candidates s {join}"
        f"WHERE {where} AND task_rank <= ? AND s.reward >= ? ORDER BY task_id, iteration, task_rank, call_index"
    )
    params = ([] if sel.min_call_reward is None else [sel.min_call_reward]) + params + [sel.top_k, sel.min_reward]
    calls = [SftCall(*row) for row in con.execute(query, params).fetchall()]
    if not calls:
        raise EmptyDatasetError(_why_no_sft(con, sel, iterations))
    rows = merge_calls(calls)
    if sel.min_call_reward is not None:  # a sequence whose every call is masked teaches nothing
        rows = [r for r in rows if any(r["completion_mask"])]
    if not rows:
        raise EmptyDatasetError(
            f"no SFT data: {len(calls)} calls were selected and none has a call-level reward >= "
            f"--min_call_reward {sel.min_call_reward}; score the calls with a judger whose function has "
            "level = 'call', or lower --min_call_reward"
        )
    counts = {
        "samples": len(rows),
        "calls": len(calls),
        "merged_calls": sum(len(r["call_indices"]) - 1 for r in rows),
        # trained sequences made of two or more calls (a sequence of 3 calls is 1 here, 2 in merged_calls)
        "merged_sequences": sum(1 for r in rows if len(r["call_indices"]) > 1),
        "trajectories": len({c.trajectory_id for c in calls}),
        "tasks": len({c.task_id for c in calls}),
        "completion_tokens": sum(sum(r["completion_mask"]) for r in rows),
        "tokens": sum(len(r["input_ids"]) for r in rows),
        "by_role": dict(Counter(c.role for c in calls)),
        "drifted_calls": sum(1 for c in calls if c.template_drift),
        "masked_calls": sum(1 for c in calls if not c.trained),  # below --min_call_reward: context, not trained
    }
    return BuiltDataset("sft", rows, iterations, query, params, counts)


def merge_calls(calls: list[SftCall]) -> list[dict]:
    """Calls in (trajectory, call_index) order -> sequences; an agent's call that extends its
    previous sequence's ids is appended to it (masked gap, unmasked completion). A call not
    `trained` keeps its completion in the sequence, masked."""
    rows: list[dict] = []
    open_seq: dict[tuple[str, str], dict] = {}  # (trajectory, agent) -> its latest sequence
    for call in calls:
        prompt, completion, role, trained = (
            call.prompt_token_ids,
            call.completion_token_ids,
            call.role,
            int(call.trained),
        )
        key = (call.trajectory_id, call.agent_name or role)
        seq = open_seq.get(key)
        if (
            seq is not None
            and seq["role"] == role
            and len(prompt) >= len(seq["input_ids"])
            and prompt[: len(seq["input_ids"])] == seq["input_ids"]
        ):
            gap = prompt[len(seq["input_ids"]) :]
            seq["input_ids"] += gap + list(completion)
            seq["completion_mask"] += [0] * len(gap) + [trained] * len(completion)
            seq["call_indices"].append(call.call_index)
            continue
        seq = {
            "task_id": call.task_id,
            "iteration": call.iteration,
            "trajectory_id": call.trajectory_id,
            "role": role,
            "agent_name": call.agent_name,
            "call_indices": [call.call_index],
            "reward": call.reward,
            "input_ids": list(prompt) + list(completion),
            "completion_mask": [0] * len(prompt) + [trained] * len(completion),
        }
        open_seq[key] = seq
        rows.append(seq)
    return rows


def _why_no_sft(con, sel: FinetuneConfig, iterations: list[int]) -> str:
    where, params = _filters(iterations)
    n, ok, scored, best = con.execute(
        f"SELECT count(*), count(*) FILTER (status = 'ok'), count(reward) FILTER (status = 'ok'), "
        f"max(reward) FILTER (status = 'ok') FROM rewards WHERE {where}",
        params,
    ).fetchall()[0]
    its = f"iteration {','.join(map(str, iterations))}"
    if ok == 0:
        return f"no SFT data: {its} has {n} trajectories and 0 with status ok"
    if scored == 0:
        return f"no SFT data: {its} has {ok} ok trajectories and 0 scored; run: python -m judge score --db DB --judger workflow"
    above = con.execute(
        f"SELECT count(*), count(DISTINCT task_id) FROM rewards WHERE {where} AND status = 'ok' AND reward >= ?",
        params + [sel.min_reward],
    ).fetchall()[0]
    if above[0] == 0:
        return (
            f"no SFT data: {its} has {scored} scored ok trajectories and 0 tasks with a reward >= --min_reward "
            f"{sel.min_reward} (best reward {best:.4g}); lower --min_reward or collect more samples"
        )
    roles = f" of roles {sel.roles}" if sel.roles else ""
    return (
        f"no SFT data: {above[0]} trajectories of {above[1]} tasks reach --min_reward {sel.min_reward}, "
        f"but 0 trainable engine calls{roles} are in their top {sel.top_k}; check --trainable-targets at collect and --roles"
    )


# ---------------------------------------------------------------- DPO


def _dpo_candidates(sel: FinetuneConfig) -> str:
    """The view, or with --pair_by call the same pairs ranked by each call's own reward (a subquery)."""
    if sel.pair_by == "trajectory":
        return "dpo_candidates"
    return (
        f"({DPO_PAIRS.format(reward='cr.reward', join=f' JOIN ({CALL_REWARDS}) cr USING (trajectory_id, call_index)')})"
    )


def _build_dpo(con, sel: FinetuneConfig, iterations: list[int]) -> BuiltDataset:
    where, params = _filters(iterations, sel.roles)
    candidates = _dpo_candidates(sel)
    query = (
        f"SELECT {_select(DpoPair)} "
        # ties in margin go to the lowest sample indices: trajectory ids hash the random run id, so
        # ordering by them would pick other pairs in a rerun of the same seeds
        f"FROM (SELECT d.*, c.sample_index AS chosen_sample, r.sample_index AS rejected_sample FROM {candidates} d "
        f"JOIN trajectories c ON c.trajectory_id = d.chosen_trajectory_id "
        f"JOIN trajectories r ON r.trajectory_id = d.rejected_trajectory_id) WHERE {where} AND margin >= ? "
        f"ORDER BY task_id, iteration, margin DESC, chosen_sample, chosen_call_index, rejected_sample, rejected_call_index"
    )
    params = params + [sel.min_margin]
    pairs = [DpoPair(*row) for row in con.execute(query, params).fetchall()]
    if not pairs:
        raise EmptyDatasetError(_why_no_dpo(con, sel, iterations))
    rows, seen, best_taken = [], set(), set()
    for pair in pairs:
        prompt_key = (pair.task_id, pair.iteration, tuple(pair.prompt_token_ids))
        content_key = (prompt_key, tuple(pair.chosen_completion_ids), tuple(pair.rejected_completion_ids))
        if content_key in seen or (sel.pairing == "best_worst" and prompt_key in best_taken):
            continue  # the same pair of token sequences from other samples; or this prompt has its widest pair
        seen.add(content_key)
        best_taken.add(prompt_key)
        rows.append(
            {
                "task_id": pair.task_id,
                "iteration": pair.iteration,
                "role": pair.role,
                "chosen_trajectory_id": pair.chosen_trajectory_id,
                "chosen_call_index": pair.chosen_call_index,
                "chosen_reward": pair.chosen_reward,
                "rejected_trajectory_id": pair.rejected_trajectory_id,
                "rejected_call_index": pair.rejected_call_index,
                "rejected_reward": pair.rejected_reward,
                "margin": pair.margin,
                "prompt_ids": list(pair.prompt_token_ids),
                "chosen_ids": list(pair.chosen_completion_ids),
                "rejected_ids": list(pair.rejected_completion_ids),
            }
        )
    margins = [r["margin"] for r in rows]
    counts = {
        "samples": len(rows),
        "prompts": len({(r["task_id"], r["iteration"], tuple(r["prompt_ids"])) for r in rows}),
        "tasks": len({r["task_id"] for r in rows}),
        "candidate_pairs": len(pairs),
        "mean_margin": sum(margins) / len(margins),
        "min_margin": min(margins),
        # pairs of a later call (index > 0): their shared prompt holds the episode's earlier turns
        "later_call_pairs": sum(1 for r in rows if r["chosen_call_index"] > 0),
        "tokens": sum(len(r["prompt_ids"]) + len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in rows),
        "by_role": dict(Counter(r["role"] for r in rows)),
    }
    return BuiltDataset("dpo", rows, iterations, query, params, counts)


def _why_no_dpo(con, sel: FinetuneConfig, iterations: list[int]) -> str:
    where, params = _filters(iterations)
    its = f"iteration {','.join(map(str, iterations))}"
    scored = con.execute(
        f"SELECT count(*) FROM rewards WHERE {where} AND status = 'ok' AND reward IS NOT NULL", params
    ).fetchall()[0][0]
    if scored == 0:
        return f"no DPO pairs: {its} has 0 scored ok trajectories; run: python -m judge score --db DB --judger workflow"
    if sel.pair_by == "call":
        n_call = con.execute(
            f"SELECT count(*) FROM scores s JOIN trajectories t USING (trajectory_id) WHERE s.call_index IS NOT NULL "
            f"AND s.value IS NOT NULL AND {where}",
            params,
        ).fetchall()[0][0]
        if n_call == 0:
            return (
                f"no DPO pairs: --pair_by call, and {its} has 0 call-level scores; score the calls with a judger "
                "whose function has level = 'call' (python -m judge score --judger FILE.py:FUNC), or use --pair_by trajectory"
            )
    where, params = _filters(iterations, sel.roles)
    candidates = _dpo_candidates(sel)
    n, widest = con.execute(f"SELECT count(*), max(margin) FROM {candidates} WHERE {where}", params).fetchall()[0]
    if n == 0:
        return (
            f"no DPO pairs: {its} has {scored} scored ok trajectories and 0 pairs of trainable calls with identical "
            "prompt ids, different completions and different rewards; collect more samples per task"
        )
    return (
        f"no DPO pairs: {n} candidate pairs, 0 with a reward margin >= --min_margin {sel.min_margin} "
        f"(widest {widest:.4g}); lower --min_margin"
    )


def collected_checkpoint(con, iterations: list[int]) -> str:
    """The one checkpoint these iterations were sampled from: the default parent to train."""
    where, params = _filters(iterations)
    paths = [
        row[0]
        for row in con.execute(
            f"SELECT DISTINCT checkpoint_path FROM trajectories WHERE {where} ORDER BY 1", params
        ).fetchall()
    ]
    if len(paths) != 1 or paths[0] is None:
        raise ValueError(
            f"--model_name_or_path: not given, and iteration(s) {iterations} were collected with "
            f"{len(paths)} checkpoints ({', '.join(map(str, paths[:3]))}); pass the one to train from"
        )
    return paths[0]


def to_dataset(built: BuiltDataset):
    """A datasets.Dataset with every column (ids and where they came from)."""
    from datasets import Dataset

    return Dataset.from_list(built.rows)


def export(built: BuiltDataset, path: str) -> None:
    from pathlib import Path

    Path(path).resolve().parent.mkdir(parents=True, exist_ok=True)
    to_dataset(built).to_parquet(path)
