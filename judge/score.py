"""Scoring: run judgers over the store's trajectories in batches and write their scores.

Each batch's scores replace that judger's earlier scores of the same trajectories in one
transaction, so re-scoring never duplicates and a killed run loses only the batch in flight.
A judger that raises on a batch is retried one trajectory at a time; the ones that still
raise get a score row with the error, and scoring goes on.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field

from astuner.compat.agentscope_tuner import RESPONSE_TYPE_KEY, response_from_json
from astuner.faults import crash_point
from judge.judgers import Judger, Score, as_score, storable_text


@dataclass
class JudgerStats:
    name: str
    weight: float
    scored: int = 0
    applied: int = 0
    errors: int = 0
    total: float = 0.0
    seconds: float = 0.0
    first_error: str | None = None
    first_error_key: tuple | None = None  # (trajectory_id, call_index) of the first error

    def add(self, scores: list[Score], seconds: float, keys: list[tuple] | None = None) -> None:
        self.seconds += seconds
        for i, s in enumerate(scores):
            self.scored += 1
            if s.error:
                self.errors += 1
                if self.first_error is None:
                    self.first_error, self.first_error_key = s.error, keys[i] if keys else (None, None)
            elif s.value is not None:
                self.applied += 1
                self.total += s.value

    def row(self) -> list:
        mean = f"{self.total / self.applied:.3f}" if self.applied else "-"
        return [self.name, self.weight, self.scored, self.applied, self.errors, mean, f"{self.seconds:.2f}"]


@dataclass
class ScoreResult:
    judgers: list[JudgerStats] = field(default_factory=list)
    trajectories: int = 0


def load_batch(con, ids: list[str]) -> list[dict]:
    """Trajectories as judgers see them: task row, workflow reward and metadata, final
    response, and calls (role, agent, messages, completion), without token ids."""
    rows = con.execute(
        """SELECT trajectory_id, task_id, task_query, task_metadata, sample_index, iteration, status, error,
                  workflow_reward, metadata, workflow, duration_s
           FROM trajectories WHERE trajectory_id IN (SELECT unnest(?::VARCHAR[])) ORDER BY trajectory_id""",
        [ids],
    ).fetchall()
    calls: dict[str, list[dict]] = {}
    for tid, index, role, agent, trainable, messages, text, tool_calls, finish, n_prompt, n_completion in con.execute(
        """SELECT trajectory_id, call_index, role, agent_name, trainable, messages, completion_text, tool_calls,
                  finish_reason, prompt_tokens, completion_tokens
           FROM calls WHERE trajectory_id IN (SELECT unnest(?::VARCHAR[])) ORDER BY trajectory_id, call_index""",
        [ids],
    ).fetchall():
        calls.setdefault(tid, []).append(
            {
                "call_index": index,
                "role": role,
                "agent_name": agent,
                "trainable": trainable,
                "messages": json.loads(messages) if messages else [],
                "completion_text": text,
                "tool_calls": json.loads(tool_calls) if tool_calls else [],
                "finish_reason": finish,
                "prompt_tokens": n_prompt,
                "completion_tokens": n_completion,
            }
        )
    batch = []
    for tid, task_id, query, task_meta, sample, iteration, status, error, reward, meta, workflow, duration in rows:
        metadata = json.loads(meta) if meta else {}
        traj_calls = calls.get(tid, [])
        # the object the workflow returned (an AgentScope Msg comes back as a Msg), for agentscope.tuner judges
        response = response_from_json(metadata.get("response"), metadata.get(RESPONSE_TYPE_KEY))
        if response is None and traj_calls:
            response = traj_calls[-1]["completion_text"]
        batch.append(
            {
                "trajectory_id": tid,
                "task_id": task_id,
                "main_query": query,
                "task": json.loads(task_meta) if task_meta else {},
                "sample_index": sample,
                "iteration": iteration,
                "status": status,
                "error": error,
                "reward": reward,
                "metadata": metadata,
                "workflow": workflow,
                "response": response,
                "calls": traj_calls,
                "duration_s": duration,
            }
        )
    return batch


def task_columns(items: list[dict]) -> dict[str, list]:
    """The task rows' fields as columns, None where a row lacks the field (TRL's convention)."""
    keys: dict[str, None] = {}
    for item in items:
        keys.update(dict.fromkeys(item["task"]))
    return {key: [item["task"].get(key) for item in items] for key in keys}


def apply_judger(judger: Judger, items: list[dict]) -> list[Score]:
    # BaseException too: a judger's sys.exit() (or an escaping CancelledError) is its error, not the end of
    # the command; only Ctrl-C stops scoring.
    try:
        out = list(judger.fn(items, **task_columns(items)))
        if len(out) != len(items):
            raise ValueError(f"returned {len(out)} values for {len(items)} items")
        return [as_score(item) for item in out]
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        if len(items) == 1:
            return [Score(None, error=_error_text(exc))]
        return [score for item in items for score in apply_judger(judger, [item])]


def _error_text(exc: BaseException) -> str:
    try:
        text = f"{type(exc).__name__}: {exc}"
    except BaseException:  # a hostile __str__
        text = f"{type(exc).__name__}: (its message could not be read)"
    return storable_text(text)[:2000]


def _call_items(batch: list[dict]) -> list[dict]:
    items = []
    for traj in batch:
        for call in traj["calls"]:
            items.append({**{k: v for k, v in traj.items() if k != "calls"}, **call})
    return items


def _write_scores(con, judger: Judger, chunk: list[str], keys: list[tuple], scores: list[Score], run_id: str) -> None:
    """Replace the judger's scores of this batch's trajectories, in one transaction."""
    import pyarrow as pa

    table = pa.table(
        {
            "trajectory_id": pa.array([k[0] for k in keys], pa.string()),
            "call_index": pa.array([k[1] for k in keys], pa.int32()),
            "value": pa.array([s.value for s in scores], pa.float64()),
            "label": pa.array([s.label for s in scores], pa.string()),
            "explanation": pa.array([s.explanation for s in scores], pa.string()),
            "error": pa.array([s.error for s in scores], pa.string()),
        }
    )
    con.execute("BEGIN")
    try:
        con.execute(
            "DELETE FROM scores WHERE judger = ? AND trajectory_id IN (SELECT unnest(?::VARCHAR[]))",
            [storable_text(judger.name), chunk],
        )
        con.register("new_scores", table)
        con.execute(
            """INSERT INTO scores SELECT trajectory_id, call_index, ?, ?, ?, value, label, explanation, error,
                      to_timestamp(?), ? FROM new_scores""",
            [storable_text(judger.name), judger.version, judger.weight, time.time(), run_id],
        )
        con.unregister("new_scores")
        crash_point("score.inserted")  # inside the transaction
        con.execute("COMMIT")
    except BaseException:
        try:
            con.execute("ROLLBACK")
        except Exception:  # a fatal IO error (a full disk) already ended the transaction: report that error
            pass
        raise


def score(
    con, judgers: list[Judger], *, where: str | None = None, batch_size: int = 256, progress: bool = True
) -> ScoreResult:
    from tqdm.auto import tqdm

    ids = [
        r[0]
        for r in con.execute(
            f"SELECT trajectory_id FROM trajectories {'WHERE ' + where if where else ''} ORDER BY trajectory_id"
        ).fetchall()
    ]
    result = ScoreResult(trajectories=len(ids), judgers=[JudgerStats(j.name, j.weight) for j in judgers])
    run_id = uuid.uuid4().hex[:16]
    started = time.time()
    for start in tqdm(range(0, len(ids), batch_size), desc="score", unit="batch", disable=not progress):
        chunk = ids[start : start + batch_size]
        batch = load_batch(con, chunk)  # once per batch, whatever the number of judgers
        for judger, stats in zip(judgers, result.judgers):
            t0 = time.perf_counter()
            items = _call_items(batch) if judger.level == "call" else batch
            keys = [(it["trajectory_id"], it["call_index"] if judger.level == "call" else None) for it in items]
            scores = apply_judger(judger, items) if items else []
            _write_scores(con, judger, chunk, keys, scores, run_id)
            stats.add(scores, time.perf_counter() - t0, keys)
            crash_point("score.committed")
    con.execute(
        "INSERT INTO runs VALUES (?, 'score', ?, NULL, NULL, to_timestamp(?), now())",
        [
            run_id,
            json.dumps(
                {
                    "judgers": [{"name": j.name, "version": j.version, "weight": j.weight} for j in judgers],
                    "where": where,
                    "trajectories": len(ids),
                }
            ),
            started,
        ],
    )
    return result
