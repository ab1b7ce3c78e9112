"""The drift checks of `judge ingest`, in bulk: what is a comparison of id lists runs in DuckDB, and each
distinct call goes through the tokenizer once.

Their values are those of the per-call path (judge/ingest.py, behind `--per_call_drift`), which
tests/test_ingest_speed.py holds this module to:
- template drift: a trainable call's messages, re-rendered through its checkpoint's template, give other
  ids than its prompt;
- extension: a call's prompt starts with its agent's previous prompt + completion (compared in DuckDB);
  where it does not, astuner.drift.extension names the first diverging position and the cause;
- re-render drift: astuner.drift.rerender_drift_tokens_batch.

Agents re-send one system prompt, tools and history, samples of one task share their first call, and
replicated or resumed runs repeat whole calls: every Python step runs once per distinct input, grouped
in DuckDB on the values themselves (not a hash, so no two inputs can share a value by collision), and
its value is written to every call with that input.
"""

from __future__ import annotations

import json

from astuner.faults import crash_point
from judge.render_pool import Renderer, rerender_drift, template_drift, unchecked_reason

# The calls each check takes: those of the per-call path, to the row.
TEMPLATE_TODO = "c.trainable AND c.prompt_token_ids IS NOT NULL AND c.template_drift IS NULL"
MEASURE_TODO = """c.prompt_token_ids IS NOT NULL AND c.completion_token_ids IS NOT NULL AND c.trajectory_id IN
    (SELECT trajectory_id FROM calls WHERE prompt_token_ids IS NOT NULL AND drift_measured IS NULL)"""
_MEMBERS = "list({'t': c.trajectory_id, 'i': c.call_index}) AS members"


def _json(text):
    return json.loads(text) if text else None


def _batches(query, chunk: int):
    """(rows, their inputs) of a query's rows: key first, the number of calls last, the inputs between."""
    while rows := query.fetchmany(chunk):
        yield rows, [row[1:-1] for row in rows]


def _values_table(con, name: str, columns: dict[str, tuple[str, list]]) -> None:
    """A temp table from Python lists (column -> (SQL type, values)), passed as list parameters: DuckDB's
    scans of Arrow or pandas objects would import pandas (~0.5 s) on the first use."""
    selects = ", ".join(f"unnest(?::{kind}[]) AS {column}" for column, (kind, _) in columns.items())
    con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT {selects}", [v for _, v in columns.values()])


def _write_back(con, groups: str, values: str, columns: str) -> None:
    """Write each group's values (table `values`, keyed by `key`) to every call of the group."""
    con.execute(
        f"""UPDATE calls SET {columns} FROM
              (SELECT g.m.t AS t, g.m.i AS i, v.* FROM (SELECT key, unnest(members) AS m FROM {groups}) g
               JOIN {values} v USING (key)) u
            WHERE calls.trajectory_id = u.t AND calls.call_index = u.i"""
    )
    con.execute(f"DROP TABLE {values}")


def check(con, result, renderer: Renderer) -> None:
    """Both checks; what needs no tokenizer first, while the render workers start."""
    group_template_calls(con)
    measuring = prepare_measures(con)
    check_template_drift(con, result, renderer)
    if measuring:
        measure_drift(con, result, renderer)


def group_template_calls(con) -> None:
    """template_groups: the trainable calls not checked yet, one row per distinct
    (checkpoint, messages, tools, template variables, prompt ids)."""
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE template_groups AS
            SELECT row_number() OVER () AS key, * FROM (
                SELECT t.checkpoint_path AS checkpoint, c.messages, c.tools, c.template_kwargs, c.prompt_token_ids,
                       {_MEMBERS}
                FROM calls c JOIN trajectories t USING (trajectory_id) WHERE {TEMPLATE_TODO} GROUP BY ALL)"""
    )


def check_template_drift(con, result, renderer: Renderer, chunk: int = 256) -> None:
    """template_drift of every call of template_groups, one render per group."""
    keys, drifted = [], []
    checkpoints = con.execute(
        "SELECT checkpoint, sum(len(members)), count(*) FROM template_groups GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    for checkpoint, count, distinct in checkpoints:
        why = renderer.call(unchecked_reason, checkpoint)
        if why:
            if not result.drift_unchecked:
                result.drift_unchecked_why = why
            result.drift_unchecked += count
            continue
        query = con.execute(
            """SELECT key, messages, tools, template_kwargs, prompt_token_ids, len(members) FROM template_groups
               WHERE checkpoint IS NOT DISTINCT FROM ?""",
            [checkpoint],
        )
        for rows, values in renderer.map(template_drift, checkpoint, _batches(query, chunk), distinct):
            for row, drift in zip(rows, values):
                keys.append(row[0])
                drifted.append(drift)
                result.drift_checked += row[-1]
                result.drift_found += row[-1] * drift
    if keys:
        _values_table(con, "template_values", {"key": ("BIGINT", keys), "drift": ("BOOLEAN", drifted)})
        _write_back(con, "template_groups", "template_values", "template_drift = u.drift")
    con.execute("DROP TABLE template_groups")
    crash_point("ingest.drift_written")


def prepare_measures(con, chunk: int = 256) -> bool:
    """What the drift measures need no tokenizer for, of every engine call not measured yet (drift_measured
    NULL) and the other calls of its trajectory, as the per-call path takes them: `measured` (each call's
    previous call and whether it extends it), `pair_values` (where and why not) and `rerender_groups`.
    False where there is nothing to measure."""
    from astuner.drift import extension

    # Each call's previous call of the same agent and role in its trajectory, and whether it extends it.
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE measured AS
            SELECT r.trajectory_id, r.call_index, r.prev_index, r.checkpoint,
                   CASE WHEN r.prev_index IS NOT NULL THEN
                     len(c.prompt_token_ids) >= len(p.prompt_token_ids) + len(p.completion_token_ids)
                     AND c.prompt_token_ids[1:len(p.prompt_token_ids) + len(p.completion_token_ids)]
                         = list_concat(p.prompt_token_ids, p.completion_token_ids) END AS extends
            FROM (SELECT c.trajectory_id, c.call_index, t.checkpoint_path AS checkpoint,
                         lag(c.call_index) OVER (PARTITION BY c.trajectory_id, coalesce(c.agent_name, ''), c.role
                                                 ORDER BY c.call_index) AS prev_index
                  FROM calls c JOIN trajectories t USING (trajectory_id) WHERE {MEASURE_TODO}) r
            JOIN calls c ON c.trajectory_id = r.trajectory_id AND c.call_index = r.call_index
            LEFT JOIN calls p ON p.trajectory_id = r.trajectory_id AND p.call_index = r.prev_index"""
    )
    total = con.execute("SELECT count(*) FROM measured").fetchall()[0][0]
    if not total:
        con.execute("DROP TABLE measured")
        return False
    # Where a prompt does not extend the previous call: the diverging position and its cause, per distinct pair.
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE pair_groups AS
            SELECT row_number() OVER () AS key, * FROM (
                SELECT p.prompt_token_ids AS p_prompt, p.completion_token_ids AS p_completion, p.messages AS p_messages,
                       p.tools AS p_tools, p.completion_text AS p_text, c.prompt_token_ids AS prompt, c.messages,
                       c.tools, {_MEMBERS}
                FROM measured m JOIN calls c ON c.trajectory_id = m.trajectory_id AND c.call_index = m.call_index
                JOIN calls p ON p.trajectory_id = m.trajectory_id AND p.call_index = m.prev_index
                WHERE NOT m.extends GROUP BY ALL)"""
    )
    keys, positions, causes = [], [], []
    query = con.execute(
        "SELECT key, p_prompt, p_completion, p_messages, p_tools, p_text, prompt, messages, tools FROM pair_groups"
    )
    while rows := query.fetchmany(chunk):
        for key, p_prompt, p_completion, p_messages, p_tools, p_text, prompt, messages, tools in rows:
            previous = {
                "prompt_token_ids": p_prompt,
                "completion_token_ids": p_completion,
                "messages": json.loads(p_messages),
                "tools": _json(p_tools),
                "completion_text": p_text,
            }
            current = {"prompt_token_ids": prompt, "messages": json.loads(messages), "tools": _json(tools)}
            _, at, cause = extension(previous, current)
            keys.append(key)
            positions.append(at)
            causes.append(cause)
    _values_table(
        con, "pair_values", {"key": ("BIGINT", keys), "at": ("INTEGER", positions), "cause": ("VARCHAR", causes)}
    )
    # The re-render drift, per distinct call of a checkpoint whose tokenizer is here.
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE rerender_groups AS
            SELECT row_number() OVER () AS key, * FROM (
                SELECT m.checkpoint, c.messages, c.tools, c.template_kwargs, c.prompt_token_ids, c.completion_token_ids,
                       {_MEMBERS}
                FROM measured m JOIN calls c ON c.trajectory_id = m.trajectory_id AND c.call_index = m.call_index
                GROUP BY ALL)"""
    )
    return True


def measure_drift(con, result, renderer: Renderer, chunk: int = 256) -> None:
    """The re-render drift of every group of rerender_groups, then every measure written to its calls."""
    keys, values = [], []
    checkpoints = con.execute("SELECT checkpoint, count(*) FROM rerender_groups GROUP BY ALL ORDER BY ALL").fetchall()
    for checkpoint, distinct in checkpoints:
        if renderer.call(unchecked_reason, checkpoint):
            continue
        query = con.execute(
            """SELECT key, messages, tools, template_kwargs, prompt_token_ids, completion_token_ids, len(members)
               FROM rerender_groups WHERE checkpoint IS NOT DISTINCT FROM ?""",
            [checkpoint],
        )
        for rows, drifts in renderer.map(rerender_drift, checkpoint, _batches(query, chunk), distinct):
            for row, drift in zip(rows, drifts):
                keys.append(row[0])
                values.append(drift)
    # Every measured call at once: a statement on `con` between fetches would end the query being fetched.
    _values_table(con, "rerender_values", {"key": ("BIGINT", keys), "rerender": ("INTEGER", values)})
    con.execute(
        """CREATE OR REPLACE TEMP TABLE measures AS
           SELECT m.trajectory_id, m.call_index, m.extends, pv.at, pv.cause, rv.rerender,
                  len(c.prompt_token_ids) + len(c.completion_token_ids) AS sampled
           FROM measured m JOIN calls c ON c.trajectory_id = m.trajectory_id AND c.call_index = m.call_index
           LEFT JOIN (SELECT unnest(members, recursive := true), key FROM pair_groups) pg
                  ON pg.t = m.trajectory_id AND pg.i = m.call_index
           LEFT JOIN pair_values pv ON pv.key = pg.key
           LEFT JOIN (SELECT unnest(members, recursive := true), key FROM rerender_groups) rg
                  ON rg.t = m.trajectory_id AND rg.i = m.call_index
           LEFT JOIN rerender_values rv ON rv.key = rg.key"""
    )
    con.execute(
        """UPDATE calls SET extends_previous = d.extends, divergence_at = d.at, divergence_cause = d.cause,
                  rerender_drift_tokens = d.rerender, drift_measured = true
           FROM measures d WHERE calls.trajectory_id = d.trajectory_id AND calls.call_index = d.call_index"""
    )
    pairs, extending, tokens, changed = con.execute(
        """SELECT count(extends), count(*) FILTER (extends), coalesce(sum(sampled) FILTER (rerender IS NOT NULL), 0),
                  coalesce(sum(rerender), 0) FROM measures"""
    ).fetchall()[0]
    result.measured_pairs += pairs
    result.extending += extending
    result.rerender_tokens += int(tokens)
    result.rerender_changed += int(changed)
    for cause, n in con.execute("SELECT cause, count(*) FROM measures WHERE cause IS NOT NULL GROUP BY ALL").fetchall():
        result.causes[cause] = result.causes.get(cause, 0) + n
    for table in ("measures", "rerender_values", "rerender_groups", "pair_values", "pair_groups", "measured"):
        con.execute(f"DROP TABLE {table}")
