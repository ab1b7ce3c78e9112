"""The record is defined once: the store's columns and ingest's reads derive from astuner/trajectory.py."""

import json

import pytest
from helpers import make_call, make_traj, rows, write
from pydantic import create_model

from astuner import store_schema
from astuner.migrations import MIGRATIONS, latest_version
from astuner.store import open_store
from astuner.trajectory import Completion, ModelCall, Trajectory
from judge.ingest import ingest


def test_a_new_store_has_a_column_for_every_field_of_the_record(tmp_path):
    con = open_store(tmp_path / "store.duckdb")
    try:
        assert store_schema.schema_mismatches(con) == []
        assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall() == [
            (str(len(MIGRATIONS)),)
        ]
    finally:
        con.close()


def test_a_field_added_to_the_record_without_a_migration_is_found(tmp_path, monkeypatch):
    # What a maintainer does who adds `cost_usd` to ModelCall and forgets the store.
    call = create_model("ModelCall", __base__=ModelCall, cost_usd=(float | None, None))
    trajectory = create_model("Trajectory", __base__=Trajectory, calls=(list[call], []))
    trajectory.model_fields["calls"].metadata = Trajectory.model_fields["calls"].metadata
    monkeypatch.setattr(store_schema, "Trajectory", trajectory)
    con = open_store(tmp_path / "store.duckdb")
    try:
        problems = store_schema.schema_mismatches(con)
    finally:
        con.close()
    assert problems == ["calls.cost_usd (DOUBLE) is not in the store: add a migration (astuner/migrations.py)"]


def test_ingest_reads_every_field_of_a_call(tmp_path):
    """A call's error and the reasoning parsed out of its completion reach the store, as every other field."""
    failed = {**make_call(0, prompt=None, completion=None), "error": "HTTPError: 500", "finish_reason": "error"}
    thought = make_call(1)
    thought["completion"] = {
        "text": "4",
        "tool_calls": [{"id": "c1", "name": "add", "arguments": '{"a": 2}'}],
        "reasoning": "two and two",
    }
    thought["tool_format"] = "qwen3"
    write(tmp_path / "t.jsonl", [make_traj("a", 0, reward=0.5, calls=[failed, thought])])
    con = open_store(tmp_path / "store.duckdb")
    ingest(con, [str(tmp_path / "t.jsonl")], check_template=False, progress=False)
    con.close()
    got = rows(
        tmp_path / "store.duckdb",
        "SELECT call_index, error, completion_reasoning, tool_format, tool_calls FROM calls ORDER BY call_index",
    )
    assert got[0][:3] == (0, "HTTPError: 500", None)
    assert got[1][:4] == (1, None, "two and two", "qwen3")
    assert json.loads(got[1][4]) == [{"id": "c1", "name": "add", "arguments": '{"a": 2}'}]
    assert rows(tmp_path / "store.duckdb", "SELECT workflow_reward, task_query FROM trajectories") == [(0.5, "q a")]


@pytest.mark.parametrize("where", ["top", "task", "call", "completion", "tool_call", "sampling"])
def test_ingest_refuses_a_line_with_a_field_the_record_does_not_know(tmp_path, where):
    calls = [make_call(0)]
    calls[0]["completion"]["tool_calls"] = [{"id": "c1", "name": "add", "arguments": "{}"}]
    good = [make_traj(f"t{i}", 0, calls=calls) for i in range(3)]
    bad = json.loads(good[1].model_dump_json())
    target = {
        "top": bad,
        "task": bad["task"],
        "call": bad["calls"][0],
        "completion": bad["calls"][0]["completion"],
        "tool_call": bad["calls"][0]["completion"]["tool_calls"][0],
        "sampling": bad["sampling"],
    }[where]
    target["surprise"] = 1  # a misspelt or newer field: DuckDB's typed read would drop it without a word
    path = tmp_path / "traces.jsonl"
    path.write_text("\n".join([good[0].model_dump_json(), json.dumps(bad), good[2].model_dump_json()]) + "\n")
    con = open_store(tmp_path / "store.duckdb")
    result = ingest(con, [str(path)], check_template=False, progress=False)
    con.close()
    assert len(result.bad_lines) == 1 and result.bad_lines[0].startswith(f"{path}:2: field ")
    assert "surprise" in result.bad_lines[0] and "Extra inputs are not permitted" in result.bad_lines[0]
    assert sorted(r[0] for r in rows(tmp_path / "store.duckdb", "SELECT task_id FROM trajectories")) == ["t0", "t2"]


def test_the_exact_reader_stores_the_same_rows_as_the_bulk_reader(tmp_path):
    """A file that goes line by line (here: for one bad line) stores its good lines as the bulk read does."""
    calls = [make_call(0), {**make_call(1, prompt=None, completion=None), "error": "boom", "finish_reason": "error"}]
    calls[0]["completion"]["reasoning"] = "hm"
    good = [make_traj(f"t{i}", i, reward=i / 2, final=str(i), calls=calls, iteration=1) for i in range(3)]
    write(tmp_path / "bulk" / "t.jsonl", good)
    (tmp_path / "exact").mkdir()
    (tmp_path / "exact" / "t.jsonl").write_text((tmp_path / "bulk" / "t.jsonl").read_text() + '{"schema_version": 1}\n')
    for name in ("bulk", "exact"):
        con = open_store(tmp_path / f"{name}.duckdb")
        result = ingest(con, [str(tmp_path / name)], check_template=False, progress=False)
        con.close()
        assert result.new_trajectories == 3 and len(result.bad_lines) == (name == "exact")
    for table, key in (("trajectories", "trajectory_id"), ("calls", "trajectory_id, call_index")):
        query = (
            f"SELECT * EXCLUDE (source_file, ingested_at) FROM {table} ORDER BY {key}"
            if table == "trajectories"
            else f"SELECT * FROM {table} ORDER BY {key}"
        )
        assert rows(tmp_path / "bulk.duckdb", query) == rows(tmp_path / "exact.duckdb", query)


def test_a_version_1_store_is_migrated_in_order_and_a_newer_one_refused(tmp_path, capsys):
    from astuner.store import StoreVersionError

    db = tmp_path / "store.duckdb"
    con = open_store(db)
    con.execute("ALTER TABLE calls DROP COLUMN error")
    con.execute("ALTER TABLE calls DROP COLUMN completion_reasoning")
    con.execute("DELETE FROM _migrations WHERE name = 'm003_call_error_and_reasoning'")
    con.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    con.close()
    con = open_store(db)
    assert store_schema.schema_mismatches(con) == []
    assert [r[0] for r in con.execute("SELECT name FROM _migrations ORDER BY name").fetchall()] == [
        f.__name__ for f in MIGRATIONS
    ]
    con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(latest_version() + 1)])
    con.close()
    assert "migrated from schema version 2" in capsys.readouterr().err
    with pytest.raises(
        StoreVersionError, match=f"schema version {latest_version() + 1}, this astuner uses {latest_version()}"
    ):
        open_store(db)


def test_completion_field_order_is_the_records():
    """The store's columns follow the record's field order (a reader of `SELECT *` sees the record's order)."""
    names = [c.name for c in store_schema.record_columns()["calls"]]
    assert names.index("completion_text") < names.index("tool_calls") < names.index("completion_reasoning")
    assert list(Completion.model_fields) == ["text", "tool_calls", "reasoning"]
