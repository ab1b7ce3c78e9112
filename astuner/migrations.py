"""The store's schema, as numbered migrations: each function changes a store of the schema before it into
the next, and is never edited once released (a change is a new function at the end).

Views are not migrations: astuner/store.py replaces them after any migration ran.

A store records the migrations applied to it in `_migrations`; `migrate` applies the missing ones in
order, each in its own transaction, and sets meta.schema_version to the number of the last. Stores
written before this file (schema version 1) have no `_migrations` table: they count as migrated by m001,
and m002 adds the drift columns they may lack.
"""

from __future__ import annotations

from collections.abc import Callable

MIGRATIONS: list[Callable] = []


def migration(fn: Callable) -> Callable:
    MIGRATIONS.append(fn)
    return fn


def latest_version() -> int:
    return len(MIGRATIONS)


def _columns(con, table: str) -> set[str]:
    return {
        row[0]
        for row in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'main' AND table_name = ? "
            "AND table_catalog = current_database()",
            [table],
        ).fetchall()
    }


def _add_columns(con, table: str, columns: dict[str, str]) -> None:
    have = _columns(con, table)
    for name, kind in columns.items():
        if name not in have:
            con.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")


@migration
def m001_initial(con) -> None:
    con.execute("""
CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
CREATE TABLE runs (
    run_id VARCHAR PRIMARY KEY,
    stage VARCHAR NOT NULL,              -- collect | ingest | score | finetune
    config JSON,
    checkpoint_path VARCHAR,
    checkpoint_sha256 VARCHAR,
    started_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ
);
CREATE TABLE trajectories (
    trajectory_id VARCHAR PRIMARY KEY,
    run_id VARCHAR NOT NULL,
    workflow VARCHAR NOT NULL,
    workflow_ref VARCHAR,
    task_id VARCHAR NOT NULL,
    task_query VARCHAR,
    task_metadata JSON,
    sample_index INTEGER NOT NULL,
    iteration INTEGER NOT NULL,
    checkpoint_path VARCHAR,
    checkpoint_sha256 VARCHAR,
    engine VARCHAR,
    sampling JSON,
    trainable_targets VARCHAR[],         -- NULL: every role trainable (simple mode)
    status VARCHAR NOT NULL,             -- ok | error | timeout
    error VARCHAR,
    traceback VARCHAR,
    workflow_reward DOUBLE,              -- what WorkflowOutput.reward returned
    metadata JSON,                       -- WorkflowOutput.metadata
    started_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ,
    duration_s DOUBLE,
    n_calls INTEGER NOT NULL,
    source_file VARCHAR,
    ingested_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE calls (
    trajectory_id VARCHAR NOT NULL,
    call_index INTEGER NOT NULL,
    role VARCHAR NOT NULL,
    agent_name VARCHAR,
    trainable BOOLEAN NOT NULL,
    model VARCHAR,
    messages JSON,
    tools JSON,
    tool_choice VARCHAR,
    completion_text VARCHAR,
    tool_calls JSON,
    prompt_token_ids INTEGER[],
    completion_token_ids INTEGER[],
    completion_logprobs DOUBLE[],
    finish_reason VARCHAR,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    latency_s DOUBLE,
    template_drift BOOLEAN,              -- trainable engine calls: re-rendering != prompt ids; NULL = not checked
    PRIMARY KEY (trajectory_id, call_index)
);
CREATE TABLE scores (
    trajectory_id VARCHAR NOT NULL,
    call_index INTEGER,                  -- NULL: a trajectory-level score
    judger VARCHAR NOT NULL,
    judger_version VARCHAR NOT NULL,
    weight DOUBLE NOT NULL,
    value DOUBLE,                        -- NULL: not applicable, or an error
    label VARCHAR,
    explanation VARCHAR,
    error VARCHAR,
    scored_at TIMESTAMPTZ NOT NULL,
    run_id VARCHAR
);
INSERT INTO meta VALUES ('schema_version', '1'), ('success_threshold', '1.0');
""")


@migration
def m002_drift_columns(con) -> None:
    """The drift measures of astuner/drift.py (stores of version 1 gained them in place, so some have them)."""
    _add_columns(
        con,
        "calls",
        {
            "tool_format": "VARCHAR",  # hermes | qwen3 | llama3 | mistral: the parser of an engine call
            "extends_previous": "BOOLEAN",  # prompt starts with the same agent's previous prompt + completion; NULL = its first
            "divergence_at": "INTEGER",  # not extending: first diverging position in prompt_token_ids
            "divergence_cause": "VARCHAR",  # tools_changed | history_edited | prompt_rerendered | thinking_stripped | completion_rerendered
            "rerender_drift_tokens": "INTEGER",  # of prompt + completion ids, how many a re-render from text would not reproduce
            "drift_measured": "BOOLEAN",  # NULL = not measured yet (new, or left by a killed ingest)
            "template_kwargs": "JSON",  # extra chat-template variables the prompt was rendered with
        },
    )


@migration
def m003_call_error_and_reasoning(con) -> None:
    """Two fields of the record that earlier stores dropped: a call's error, and the reasoning parsed out of its
    completion. Rows ingested before keep NULL (re-ingest their traces into a new store to fill them)."""
    _add_columns(con, "calls", {"error": "VARCHAR", "completion_reasoning": "VARCHAR"})


def applied(con) -> list[str]:
    tables = {
        row[0]
        for row in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_catalog = current_database()"
        ).fetchall()
    }
    if "_migrations" in tables:
        return [row[0] for row in con.execute("SELECT name FROM _migrations ORDER BY name").fetchall()]
    if "meta" in tables:  # written before migrations were recorded: schema version 1
        return [m001_initial.__name__]
    return []


def migrate(con) -> list[str]:
    """Apply the migrations `con`'s store lacks, in order; returns their names."""
    import time

    done = applied(con)
    todo = [fn for fn in MIGRATIONS if fn.__name__ not in done]
    for fn in todo:
        con.execute("BEGIN")
        try:
            con.execute("CREATE TABLE IF NOT EXISTS _migrations (name VARCHAR PRIMARY KEY, applied_at TIMESTAMPTZ)")
            for name in done:  # a version-1 store: record what it already had
                con.execute("INSERT OR IGNORE INTO _migrations VALUES (?, NULL)", [name])
            fn(con)
            con.execute("INSERT INTO _migrations VALUES (?, to_timestamp(?))", [fn.__name__, time.time()])
            con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(MIGRATIONS.index(fn) + 1)])
            con.execute("COMMIT")
        except BaseException:
            try:
                con.execute("ROLLBACK")
            except Exception:  # a failed COMMIT (a full disk) already ended the transaction: report that error
                pass
            raise
    return [fn.__name__ for fn in todo]
