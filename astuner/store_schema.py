"""The store's record columns, derived from the trajectory model (astuner/trajectory.py).

The model is the one definition of the record. From it come: the columns each record field fills in the
store's `trajectories` and `calls` tables (`record_columns`), the types judge ingest declares when DuckDB
reads a traces file (`read_columns`), the SQL that fills the tables from those rows (`insert_sql`), and the
checks that send a line to the exact, line-by-line reader: a key the model does not know (`unknown_keys_sql`),
a required field missing (`missing_fields_sql`). The store's migrations (astuner/migrations.py) must give
every table these columns; tests/test_store_schema.py fails when a field is added to the record without one.
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, Union

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from astuner.trajectory import Column, Trajectory

ROOT_TABLE = "trajectories"

# Columns of the store that no record field fills: ingest derives them (n_calls, the drift measures) or
# records where the row came from. They are the store's own, declared in its migrations.
INGEST_COLUMNS = {
    "trajectories": {"n_calls": "INTEGER", "source_file": "VARCHAR", "ingested_at": "TIMESTAMP WITH TIME ZONE"},
    "calls": {
        "trajectory_id": "VARCHAR",  # the parent row
        "template_drift": "BOOLEAN",
        "extends_previous": "BOOLEAN",
        "divergence_at": "INTEGER",
        "divergence_cause": "VARCHAR",
        "rerender_drift_tokens": "INTEGER",
        "drift_measured": "BOOLEAN",
    },
}

# Where a column's type differs from what its field reads as: how the read value becomes the column's.
_CONVERT = {("DOUBLE", "TIMESTAMPTZ"): "to_timestamp({})"}


@dataclass(frozen=True)
class RecordColumn:
    """One store column filled from one record field."""

    table: str  # trajectories | calls
    name: str
    sql: str  # the column's DuckDB type
    read: str  # the type DuckDB reads the field as
    path: tuple[str, ...]  # the field's names from its table's record (Trajectory, ModelCall)
    default: Any  # the model's default (a missing key stores it), None where it has none


def _column_of(info) -> Column:
    return next((m for m in info.metadata if isinstance(m, Column)), Column())


def _unwrap(annotation):
    """`X | None` -> X."""
    if typing.get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _is_record(annotation) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _list_item(annotation):
    return typing.get_args(annotation)[0] if typing.get_origin(annotation) is list else None


def duckdb_type(annotation) -> str:
    """A leaf field's DuckDB type: scalars and lists of scalars typed; anything shaped freely is JSON text."""
    annotation = _unwrap(annotation)
    scalars = {bool: "BOOLEAN", int: "INTEGER", float: "DOUBLE", str: "VARCHAR"}
    if annotation in scalars:
        return scalars[annotation]
    if typing.get_origin(annotation) is Literal:
        return scalars[type(typing.get_args(annotation)[0])]
    item = _list_item(annotation)
    if item in scalars:
        return scalars[item] + "[]"
    return "JSON"


def _default(info) -> Any:
    if info.default_factory is not None:
        return info.default_factory()
    return None if info.default is PydanticUndefined else info.default


def _walk(model: type[BaseModel], table: str, path: tuple[str, ...], prefix: str):
    for name, info in model.model_fields.items():
        column = _column_of(info)
        if not column.stored:
            continue
        annotation = _unwrap(info.annotation)
        if column.table:
            yield from _walk(_list_item(annotation), column.table, (), "")
            continue
        full = column.name or (f"{prefix}_{name}" if prefix else name)
        if column.flatten:
            yield from _walk(annotation, table, path + (name,), full)
            continue
        read = duckdb_type(annotation)
        default = _default(info)
        if read.endswith("[]"):  # no record field has a list default; a list column stores NULL where one is missing
            default = None
        yield RecordColumn(table, full, column.sql or read, read, path + (name,), default)


def record_columns() -> dict[str, list[RecordColumn]]:
    """table -> its columns filled from the record, in the record's field order."""
    tables: dict[str, list[RecordColumn]] = {}
    for column in _walk(Trajectory, ROOT_TABLE, (), ""):
        tables.setdefault(column.table, []).append(column)
    return tables


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _read_type(model: type[BaseModel]) -> str:
    """The STRUCT DuckDB reads one object of `model` as: nested records as STRUCTs, lists of them as STRUCT[]."""
    parts = []
    for name, info in model.model_fields.items():
        parts.append(f"{_quote(name)} {_field_read_type(info)}")
    return f"STRUCT({', '.join(parts)})"


def _field_read_type(info) -> str:
    column = _column_of(info)
    annotation = _unwrap(info.annotation)
    if column.table:
        return _read_type(_list_item(annotation)) + "[]"
    if column.flatten:
        return _read_type(annotation)
    return duckdb_type(annotation)


def read_columns() -> dict[str, str]:
    """The `columns` of DuckDB's read_json for a traces file: every top-level field of the record."""
    return {name: _field_read_type(info) for name, info in Trajectory.model_fields.items()}


def _select(column: RecordColumn, row: str) -> str:
    expr = ".".join([row] + [_quote(p) for p in column.path])
    if column.sql != column.read:
        expr = _CONVERT[(column.read, column.sql)].format(expr)
    if column.default is not None:
        literal = json.dumps(column.default) if column.read == "JSON" else column.default
        expr = f"coalesce({expr}, {_sql_literal(literal)})"
    return f"{expr} AS {_quote(column.name)}"


def _sql_literal(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def insert_sql(table: str, row: str, extra: dict[str, str]) -> str:
    """`INSERT INTO table BY NAME SELECT ...` of the record's columns of `table`, read from `row` (a staged
    trajectory, or one of its calls), plus `extra` (column -> SQL expression) for the ingest columns."""
    selects = [_select(c, row) for c in record_columns()[table]]
    selects += [f"{expr} AS {_quote(name)}" for name, expr in extra.items()]
    return f"INSERT INTO {table} BY NAME SELECT {', '.join(selects)}"


def _record_paths(model: type[BaseModel], path: str):
    """(JSON path, wildcard?, the record type there) for the record and every record nested in it."""
    yield path, "[*]" in path, model
    for name, info in model.model_fields.items():
        annotation = _unwrap(info.annotation)
        item = _list_item(annotation)
        if _is_record(annotation):
            yield from _record_paths(annotation, f"{path}.{name}")
        elif _is_record(item):
            yield from _record_paths(item, f"{path}.{name}[*]")


# DuckDB's JSON reader sets aside buffers of twice this size, inside ingest's memory limit; a longer line
# sends its file to the line-by-line reader, which takes any length.
MAX_LINE_BYTES = 128 << 20


def unknown_keys_query(files_param: str = "?") -> str:
    """A query naming the traces files (of `files_param`) that hold a line where an object of the record, at any
    depth, has a key its model does not declare. DuckDB's typed read would drop such keys without a word.

    One parse of each line: json_structure merges the objects of each list into one (the keys of all of a
    trajectory's calls in one object), and the key lists are read from that small text. A record's place
    holding something other than an object or null needs no check here: the typed read refuses the file
    ("Expected OBJECT"), which sends it to the line-by-line reader."""
    paths = [(path.replace("[*]", "[0]"), model) for path, _, model in _record_paths(Trajectory, "$")]
    literal = "[" + ", ".join(_sql_literal(p) for p, _ in paths) + "]"
    checks = [
        f"NOT list_has_all({_allowed(model)}, coalesce(k[{i}], []))" for i, (_, model) in enumerate(paths, start=1)
    ]
    # MATERIALIZED: else the optimizer inlines the key lists into each check, parsing every line once per check
    return (
        f"WITH keys AS MATERIALIZED (SELECT filename, json_keys(json_structure(json), {literal}) AS k "
        f"FROM read_json_objects({files_param}, format='newline_delimited', filename=true, "
        f"maximum_object_size={MAX_LINE_BYTES})) "
        f"SELECT DISTINCT filename FROM keys WHERE {' OR '.join(checks)}"
    )


def _allowed(model: type[BaseModel]) -> str:
    return "[" + ", ".join(_sql_literal(name) for name in model.model_fields) + "]"


def missing_fields_sql(row: str) -> str:
    """A predicate over a staged row (the typed read): true where a required field is missing or null, or a
    Literal field holds another value, in the trajectory or any of its calls (and their nested records)."""
    return " OR ".join(_missing(Trajectory, row))


def _missing(model: type[BaseModel], expr: str) -> list[str]:
    checks = []
    for name, info in model.model_fields.items():
        sub = f"{expr}.{_quote(name)}"
        annotation = _unwrap(info.annotation)
        if info.is_required() and annotation is info.annotation:  # required, and None is not a value
            checks.append(f"{sub} IS NULL")
        if typing.get_origin(annotation) is Literal:
            checks.append(f"{sub} NOT IN ({', '.join(_sql_literal(v) for v in typing.get_args(annotation))})")
        column = _column_of(info)
        if column.flatten:
            checks += _missing(annotation, sub)
        elif column.table:
            checks.append(
                f"len(list_filter({sub}, lambda c: {' OR '.join(_missing(_list_item(annotation), 'c'))})) > 0"
            )
    return checks


def schema_mismatches(con) -> list[str]:
    """What the store `con` lacks or types otherwise than the record and ingest expect (empty: they agree)."""
    problems = []
    expected: dict[str, dict[str, str]] = {table: dict(columns) for table, columns in INGEST_COLUMNS.items()}
    for table, columns in record_columns().items():
        for column in columns:
            expected.setdefault(table, {})[column.name] = column.sql
    for table, columns in expected.items():
        have = dict(
            con.execute(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ? "
                "AND table_catalog = current_database()",
                [table],
            ).fetchall()
        )
        for name, sql in columns.items():
            if name not in have:
                problems.append(f"{table}.{name} ({sql}) is not in the store: add a migration (astuner/migrations.py)")
            elif _canonical(have[name]) != _canonical(sql):
                problems.append(f"{table}.{name} is {have[name]} in the store, {sql} in the record")
    return problems


def _canonical(sql: str) -> str:
    return sql.upper().replace("TIMESTAMPTZ", "TIMESTAMP WITH TIME ZONE")
