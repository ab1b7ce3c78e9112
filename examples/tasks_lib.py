"""Shared by the learning examples' make_tasks.py: the train and held-out task files, one JSON
object a line, next to the example's workflow (tasks.jsonl and eval_tasks.jsonl)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path


def write_tasks(folder: Path, train: Iterable[dict], held_out: Iterable[dict]) -> None:
    for name, rows in (("tasks.jsonl", train), ("eval_tasks.jsonl", held_out)):
        with open(folder / name, "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")


def digit_tasks(split: str, phrasings: list[str], name: str, fields: Callable[[int, int], dict]) -> Iterator[dict]:
    """One task a phrasing and a digit n: task_id SPLIT-pP-NAMEn, the phrasing with {NAME} = n as
    the question, then fields(p, n)."""
    for p, phrasing in enumerate(phrasings):
        for n in range(10):
            yield {"task_id": f"{split}-p{p}-{name}{n}", "question": phrasing.format(**{name: n}), **fields(p, n)}
