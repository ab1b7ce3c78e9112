"""The store: one DuckDB file that judge writes and finetune reads. Here: opening it, and its views.

Its tables are made by the numbered migrations of astuner/migrations.py; the columns that hold record
fields derive from the record model (astuner/store_schema.py).

Tables
    meta          key/value: schema_version (the last migration applied), success_threshold.
    runs          one row per collect run (from its collect.json) and per judge/finetune command.
    trajectories  one row per trajectory record (ids, task, status, workflow reward, metadata).
    calls         one row per model call (the record's call fields; ingest's template_drift and the drift
                  measures of astuner/drift.py: extends_previous, divergence_at/_cause, rerender_drift_tokens).
    scores        one row per (trajectory, call_index, judger): call_index NULL = trajectory-level.
    _migrations   the migrations applied.

Views (the contract with finetune and with users' SQL)
    rewards         combined reward per trajectory: weighted mean of the trajectory-level scores
                    whose value is not NULL (judgers that applied); NULL when none applied.
    task_stats      per (task_id, iteration): n, n_scored, mean/max reward, success_rate
                    (share of all trajectories, failed ones included, with status 'ok' and
                    reward >= meta.success_threshold).
    best_per_task   per (task_id, iteration): the ok trajectory with the highest reward
                    (ties: lowest sample_index).
    sft_candidates  trainable engine calls of ok, rewarded trajectories, with the trajectory's
                    task_rank (1 = best in its task and iteration).
    dpo_candidates  pairs of trainable calls of one task and iteration with identical
                    prompt_token_ids and different completions, chosen = higher reward.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from astuner.migrations import latest_version, migrate

ROW_GROUP_SIZE = 16384

_VIEWS = """
CREATE OR REPLACE VIEW rewards AS
SELECT t.trajectory_id, t.run_id, t.task_id, t.iteration, t.sample_index, t.status, t.workflow,
       t.workflow_reward, s.reward, coalesce(s.n_judgers, 0) AS n_judgers
FROM trajectories t
LEFT JOIN (
    SELECT trajectory_id, sum(value * weight) / nullif(sum(weight), 0) AS reward, count(*) AS n_judgers
    FROM scores WHERE call_index IS NULL AND value IS NOT NULL
    GROUP BY trajectory_id
) s USING (trajectory_id);

CREATE OR REPLACE VIEW task_stats AS
SELECT task_id, iteration, count(*) AS n, count(reward) AS n_scored,
       avg(reward) AS mean_reward, max(reward) AS max_reward,
       avg(CASE WHEN status = 'ok' AND reward >= (SELECT CAST(value AS DOUBLE) FROM meta WHERE key = 'success_threshold')
                THEN 1.0 ELSE 0.0 END) AS success_rate
FROM rewards GROUP BY task_id, iteration;

CREATE OR REPLACE VIEW best_per_task AS
SELECT * FROM rewards WHERE status = 'ok' AND reward IS NOT NULL
QUALIFY row_number() OVER (PARTITION BY task_id, iteration ORDER BY reward DESC, sample_index, trajectory_id) = 1;

CREATE OR REPLACE VIEW sft_candidates AS
SELECT r.task_id, r.iteration, r.trajectory_id, r.sample_index, r.reward, r.task_rank,
       c.call_index, c.role, c.agent_name, c.prompt_token_ids, c.completion_token_ids,
       c.completion_logprobs, c.finish_reason, c.template_drift
FROM (
    SELECT *, row_number() OVER (PARTITION BY task_id, iteration ORDER BY reward DESC, sample_index, trajectory_id) AS task_rank
    FROM rewards WHERE status = 'ok' AND reward IS NOT NULL
) r
JOIN calls c USING (trajectory_id)
WHERE c.trainable AND c.prompt_token_ids IS NOT NULL AND c.completion_token_ids IS NOT NULL;

CREATE OR REPLACE VIEW dpo_candidates AS
__DPO_PAIRS__;
"""

# The pairs of dpo_candidates, each call ranked by a reward: its trajectory's (the view), or its own
# call-level scores (finetune --pair_by call, with CALL_REWARDS joined in as `cr`; a query, not a view, so that
# stores written before it need no migration).
DPO_PAIRS = """WITH tc AS (
    SELECT r.task_id, r.iteration, r.trajectory_id, {reward} AS reward, c.call_index, c.role,
           c.prompt_token_ids, c.completion_token_ids, hash(c.prompt_token_ids) AS prompt_hash
    FROM rewards r JOIN calls c USING (trajectory_id){join}
    WHERE r.status = 'ok' AND {reward} IS NOT NULL AND c.trainable
      AND c.prompt_token_ids IS NOT NULL AND c.completion_token_ids IS NOT NULL
)
SELECT a.task_id, a.iteration, a.role, a.prompt_token_ids,
       a.trajectory_id AS chosen_trajectory_id, a.call_index AS chosen_call_index,
       a.completion_token_ids AS chosen_completion_ids, a.reward AS chosen_reward,
       b.trajectory_id AS rejected_trajectory_id, b.call_index AS rejected_call_index,
       b.completion_token_ids AS rejected_completion_ids, b.reward AS rejected_reward,
       a.reward - b.reward AS margin
FROM tc a JOIN tc b
  ON a.task_id = b.task_id AND a.iteration = b.iteration AND a.prompt_hash = b.prompt_hash AND a.reward > b.reward
WHERE a.prompt_token_ids = b.prompt_token_ids AND a.completion_token_ids <> b.completion_token_ids"""
# A call's own reward: the weighted mean of its call-level scores (as `rewards` is of the trajectory-level ones).
CALL_REWARDS = (
    "SELECT trajectory_id, call_index, sum(value * weight) / nullif(sum(weight), 0) AS reward "
    "FROM scores WHERE call_index IS NOT NULL AND value IS NOT NULL GROUP BY 1, 2"
)
_VIEWS = _VIEWS.replace("__DPO_PAIRS__", DPO_PAIRS.format(reward="r.reward", join=""))

VIEWS = ("rewards", "task_stats", "best_per_task", "sft_candidates", "dpo_candidates")


def create_views(con) -> None:
    """The views, as this astuner defines them (replaced after any migration)."""
    con.execute(_VIEWS)


class StoreError(RuntimeError):
    """A store that cannot be used; the message is one line naming the file and the fix."""


class StoreLockedError(StoreError):
    pass


class StoreVersionError(StoreError):
    pass


def _lock_holder(message: str) -> str:
    match = re.search(r"PID (\d+)", message)
    if not match:
        return "another process"
    pid = match.group(1)
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        cmd = ""
    return f"process {pid}" + (f" ({cmd[:120]})" if cmd else "")


def open_store(path: str | os.PathLike, *, read_only: bool = False, create: bool = True):
    """Open (and, writable with `create`, create) the store at `path`; errors are StoreError with one line."""
    import duckdb

    path = Path(path)
    if (read_only or not create) and not path.exists():
        raise StoreError(f"no store at {path}; create it with: python -m judge ingest TRACES --db {path}")
    if path.is_dir():
        raise StoreError(f"{path} is a folder; --db takes a DuckDB file, e.g. {path / 'store.duckdb'}")
    # Attached rather than opened, for its row group size: an ingest's calls then fill row
    # groups that go straight to the file instead of through the WAL (commit 1.8 s -> 0.1 s
    # for 80k calls in benchmarks/judge_ingest.py).
    con = duckdb.connect()
    new = not path.exists()
    try:
        quoted = str(path).replace("'", "''")
        con.execute(f"ATTACH '{quoted}' AS store (ROW_GROUP_SIZE {ROW_GROUP_SIZE}{', READ_ONLY' if read_only else ''})")
        con.execute("USE store")
    except duckdb.IOException as exc:
        con.close()
        if new:  # a store that could not be created (a full disk) is not left behind as an empty file
            _remove_new_store(path)
        text = str(exc)
        if "lock" in text.lower():
            raise StoreLockedError(
                f"{path} is held by {_lock_holder(text)}; DuckDB allows one writer (and no readers beside it): "
                "wait for it to finish or stop it"
            ) from None
        if "not a valid DuckDB database file" in text:
            raise StoreError(
                f"{path}: cannot open as a DuckDB store (not a DuckDB file); --db takes a store written by "
                "python -m judge ingest, or a new path"
            ) from None
        fix = _failure_fix(text.splitlines()[0])
        raise StoreError(
            f"{path}: cannot open as a DuckDB store ({text.splitlines()[0]})" + (f"; {fix}" if fix else "")
        ) from None
    except duckdb.Error as exc:
        con.close()
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        fix = _failure_fix(text)
        raise StoreError(f"{path}: cannot open as a DuckDB store ({text})" + (f"; {fix}" if fix else "")) from None
    tables = {
        row[0]
        for row in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_catalog = 'store'"
        ).fetchall()
    }
    if not tables and not read_only:
        try:
            migrate(con)
            create_views(con)
        except duckdb.Error as exc:
            con.close()
            if new:
                _remove_new_store(path)
            raise StoreError(store_failure(exc, path)) from None
        return con
    if "meta" not in tables:
        con.close()
        raise StoreError(f"{path} is a DuckDB file but not an astuner store (no meta table); use another --db path")
    row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
    version = int(row[0][0]) if row and row[0][0].isdigit() else None
    latest = latest_version()
    # Before migrations were recorded, every store was version 1; any other number is from elsewhere.
    known = version is not None and version <= latest and ("_migrations" in tables or version == 1)
    if not known:
        con.close()
        raise StoreVersionError(
            f"{path} has store schema version {version}, this astuner uses {latest}; "
            "ingest the traces into a new --db, or use the astuner that wrote it"
        )
    if version < latest and not read_only:  # a reader leaves an older store as it is; a writer migrates it
        names = migrate(con)
        create_views(con)
        print(f"store {path}: migrated from schema version {version} to {latest} ({', '.join(names)})", file=sys.stderr)
    return con


def store_failure(exc: BaseException, path, *, damage_only: bool = False) -> str | None:
    """One line for a DuckDB error met while using the store at `path` (a damaged file, a full or failing
    disk), or None when `exc` is not DuckDB's (or, with `damage_only`, is another error: a bad query).
    The transaction it hit was rolled back: what was committed stays."""
    if not type(exc).__module__.startswith(("duckdb", "_duckdb")):
        return None
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    fix = _failure_fix(text)
    if fix is None and damage_only:
        return None
    return f"{path}: {text}; {fix or 'the store could not be used'}"


def _failure_fix(text: str) -> str | None:
    lowered = text.lower()
    if "no space left" in lowered:
        return (
            "the disk is full: free space and run the same command again (the unfinished transaction was rolled back)"
        )
    if "corrupt" in lowered or "could not read enough bytes" in lowered or "checksum" in lowered:
        return "the store file is truncated or corrupt: restore it from a copy, or ingest the traces into a new --db"
    if "invalidated" in lowered:
        return "an earlier write failed (a full or failing disk): fix the disk, then run the same command again"
    return None


def _remove_new_store(path: Path) -> None:
    for leftover in (path, Path(f"{path}.wal")):
        leftover.unlink(missing_ok=True)


def set_meta(con, key: str, value: str) -> None:
    con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [key, value])
