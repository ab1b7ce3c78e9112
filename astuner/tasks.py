"""Task sets: JSONL, parquet, a `datasets` folder (save_to_disk), other local files through
`datasets.load_dataset`, or a user generator `module:function` (the "environment" case).

Every row becomes a Task: its id is the row's `task_id`/`id` field or a hash of the row, so
the same row always gets the same id (collect resumes by it). AgentJet's row shape
`{main_query, task_id, init_messages, metadata: {...}}` gives `task.metadata == row["metadata"]`;
a row without any query field gets main_query "[not defined]", as in AgentJet.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from astuner.workflow import Task

QUERY_FIELDS = ("main_query", "query", "question", "prompt", "input")
ID_FIELDS = ("task_id", "id")
NO_QUERY = "[not defined]"  # main_query of a row without a query field, as AgentJet's JSONL reader has it
_LOAD_DATASET_FORMATS = {".parquet": "parquet", ".csv": "csv", ".json": "json", ".arrow": "arrow"}


class TaskFormatError(ValueError):
    """A task row that cannot be used; the message names the file and line (or row)."""


def _row_to_task(row: Any, where: str, query_field: str | None, id_field: str | None) -> Task:
    if not isinstance(row, dict):
        raise TaskFormatError(f"{where}: expected a JSON object, got {type(row).__name__}")
    unencodable = _unencodable(row)
    if unencodable is not None:
        field, text = unencodable
        raise TaskFormatError(
            f"{where}: field {field!r} holds {text!r}, a lone surrogate that UTF-8 cannot encode (no record could hold "
            "it); fix the row (a \\uD800-\\uDFFF escape must be half of a pair)"
        )
    fields = [query_field] if query_field else QUERY_FIELDS
    query_key = next((f for f in fields if f in row), None)
    if query_key is None and query_field:  # the field was named: its absence is a mistake
        raise TaskFormatError(
            f"{where}: no query field {query_field!r} (the row has {', '.join(map(str, row)) or 'no keys'}); "
            "fix --query-field, or drop it to let the workflow build its query from task.metadata"
        )
    id_key = next((f for f in ([id_field] if id_field else ID_FIELDS) if row.get(f) is not None), None)
    if id_key is not None:
        task_id = str(row[id_key])
    else:
        canonical = json.dumps(row, sort_keys=True, default=str)
        task_id = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    # AgentJet's task rows carry their own metadata mapping; other rows are their own metadata
    metadata = row["metadata"] if isinstance(row.get("metadata"), dict) else row
    init_messages = row.get("init_messages")
    return Task(
        task_id=task_id,
        # no query field: AgentJet's reader gives "[not defined]" and the workflow reads metadata
        main_query=NO_QUERY if query_key is None else str(row[query_key]),
        metadata=metadata,
        init_messages=list(init_messages) if isinstance(init_messages, list) else [],
    )


def _unencodable(value: Any, path: str = "") -> tuple[str, str] | None:
    """(the dotted path, the string) of the first string in a row, keys included, that UTF-8 cannot encode."""
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return path, value
        return None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        here = f"{path}.{key}" if path else str(key)
        found = _unencodable(key, here) if isinstance(key, str) else None
        if found is None:
            found = _unencodable(item, here)
        if found is not None:
            return found
    return None


def _jsonl_rows(path: Path) -> Iterable[tuple[str, Any]]:
    with open(path, "rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            where = f"{path}:{line_no}"
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise TaskFormatError(f"{where}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
            if not text.strip():
                continue
            try:
                yield where, json.loads(text)
            except json.JSONDecodeError as exc:
                raise TaskFormatError(f"{where}: not valid JSON ({exc.msg}, column {exc.colno})") from None


def _dataset_rows(path: Path) -> Iterable[tuple[str, Any]]:
    import datasets

    kind = "a datasets save_to_disk folder" if path.is_dir() else _LOAD_DATASET_FORMATS[path.suffix]
    try:
        if path.is_dir():
            ds = datasets.load_from_disk(str(path))
        else:
            ds = datasets.load_dataset(_LOAD_DATASET_FORMATS[path.suffix], data_files=str(path), split="train")
    except Exception as exc:  # datasets wraps the reader's error (pyarrow's names the row): report that one
        cause = exc.__cause__ or exc
        reason = (str(cause).splitlines() or [type(cause).__name__])[0]
        raise TaskFormatError(f"--tasks {path}: cannot read it as {kind} ({reason})") from None
    if isinstance(ds, datasets.DatasetDict):
        raise TaskFormatError(
            f"{path}: a DatasetDict with splits {list(ds)}; pass one split's folder, e.g. {path / next(iter(ds))}"
        )
    for i, row in enumerate(ds):
        yield f"{path}:row {i}", row


def _generator_rows(ref: str) -> Iterable[tuple[str, Any]]:
    module_name, _, attr = ref.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise TaskFormatError(f"--tasks {ref}: cannot load the generator ({exc})") from None
    for i, row in enumerate(fn()):
        yield f"{ref}:item {i}", row


def load_tasks(
    source: str, query_field: str | None = None, id_field: str | None = None, limit: int | None = None
) -> list[Task]:
    path = Path(source)
    if path.exists():
        if path.is_dir():
            rows = _dataset_rows(path)
        elif path.suffix in (".jsonl", ".ndjson"):
            rows = _jsonl_rows(path)
        elif path.suffix in _LOAD_DATASET_FORMATS:
            rows = _dataset_rows(path)
        else:
            raise TaskFormatError(
                f"--tasks {source}: unknown file type {path.suffix!r}; use .jsonl, "
                f"{', '.join(_LOAD_DATASET_FORMATS)}, a save_to_disk folder or module:function"
            )
    elif re.fullmatch(r"[\w.]+:\w+", source):
        rows = _generator_rows(source)
    else:
        raise TaskFormatError(f"--tasks {source}: no such file, and not a module:function generator")

    tasks: list[Task] = []
    seen: dict[str, str] = {}
    for where, row in rows:
        task = _row_to_task(row, where, query_field, id_field)
        if task.task_id in seen:
            raise TaskFormatError(f"{where}: task id {task.task_id!r} repeats {seen[task.task_id]}; ids must be unique")
        seen[task.task_id] = where
        tasks.append(task)
        if limit is not None and len(tasks) >= limit:
            break
    if not tasks:
        raise TaskFormatError(f"--tasks {source}: no tasks")
    return tasks
