"""Calls rendered through their checkpoints' tokenizers, for ingest's drift checks: in this process, or
(`judge ingest` from the command line) in worker processes.

The workers are a ProcessPoolExecutor of spawned interpreters (a fork of a process whose DuckDB threads
are running is not safe). Each blocks `import torch` before importing transformers: rendering and
tokenizing need only the `tokenizers` backend, and transformers imports torch whenever it is installed,
which doubles its ~1 s import. The first worker starts when ingest does, so that import overlaps the
bulk load; both cores render once the load is done. tests/test_families.py holds the values to those of
the per-call path, which renders in-process with torch imported.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

IN_FLIGHT = 4  # batches submitted ahead: both workers busy, few rows held
# Fewer rows than this go to the first worker alone: starting the second (~1 s of a core) would cost more.
ONE_WORKER_ROWS = 2048


def load_tokenizer(checkpoint: str | None):
    """(tokenizer, None), or (None, why the drift of this checkpoint's calls cannot be checked here)."""
    if not checkpoint or not Path(checkpoint).is_dir():
        return None, "checkpoint folder not found here"
    from transformers import AutoTokenizer

    from astuner.engines import tokenizer_problem

    problem = tokenizer_problem(checkpoint)
    if problem:
        return None, f"checkpoint {checkpoint}: {problem}"
    return AutoTokenizer.from_pretrained(checkpoint), None


_LOADED: dict = {}  # checkpoint -> (tokenizer, family, special tokens) or the reason there is none


def _loaded(checkpoint: str | None):
    if checkpoint not in _LOADED:
        from astuner.chat import detect_family, special_tokens_of

        tokenizer, why = load_tokenizer(checkpoint)
        _LOADED[checkpoint] = (
            why if tokenizer is None else (tokenizer, detect_family(tokenizer), special_tokens_of(tokenizer))
        )
    return _LOADED[checkpoint]


def _json(text):
    return json.loads(text) if text else None


def unchecked_reason(checkpoint: str | None) -> str | None:
    """Why this checkpoint's calls cannot be rendered here, or None."""
    loaded = _loaded(checkpoint)
    return loaded if isinstance(loaded, str) else None


def template_drift(checkpoint: str, rows: list[tuple]) -> list[bool]:
    """rows: (messages, tools, template variables, prompt ids), the first three as JSON text; True where the
    messages rendered with the generation prompt give other ids than the prompt's."""
    from astuner.chat import render_prompts_ids

    tokenizer = _loaded(checkpoint)[0]
    rendered = render_prompts_ids(tokenizer, [(json.loads(r[0]), _json(r[1]), _json(r[2])) for r in rows])
    return [again != list(row[3]) for row, again in zip(rows, rendered)]


def rerender_drift(checkpoint: str, rows: list[tuple]) -> list[int]:
    """rows: (messages, tools, template variables, prompt ids, completion ids); astuner.drift's re-render drift."""
    from astuner.drift import rerender_drift_tokens_batch

    tokenizer, family, special_tokens = _loaded(checkpoint)
    calls = [
        {
            "messages": json.loads(r[0]),
            "tools": _json(r[1]),
            "template_kwargs": _json(r[2]),
            "prompt_token_ids": r[3],
            "completion_token_ids": r[4],
        }
        for r in rows
    ]
    return rerender_drift_tokens_batch(tokenizer, calls, family, special_tokens)


def default_workers() -> int:
    """2 on the 2-core machines this is measured on (a worker's start costs ~1.5 s of one core), 1 on one core;
    0 in a process that has imported transformers already, where rendering costs no start at all."""
    if "transformers" in sys.modules:
        return 0
    return min(2, os.cpu_count() or 1)


def _start_worker() -> None:
    if "torch" not in sys.modules:
        sys.modules["torch"] = None  # `import torch` fails: transformers then takes torch as not installed
    os.environ["TRANSFORMERS_VERBOSITY"] = "error"  # not its "PyTorch was not found" line
    from transformers import AutoTokenizer  # noqa: F401


class Renderer:
    """Runs the functions above in `workers` processes, or here (0).

    Only a command line's main module should ask for workers: a spawned interpreter re-runs the parent's
    main script (not a `python -m` module) unless it is guarded by `if __name__ == "__main__"`."""

    def __init__(self, workers: int = 0) -> None:
        self.pool = None
        _LOADED.clear()  # tokenizers are loaded once per ingest, here as in a worker: a checkpoint may be rewritten
        if workers:
            self.pool = ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker
            )
            self.pool.submit(unchecked_reason, None)  # starts the first worker, and its import, now

    def call(self, fn, *args):
        return fn(*args) if self.pool is None else self.pool.submit(fn, *args).result()

    def map(self, fn, checkpoint: str, batches: Iterable[tuple], rows: int) -> Iterator[tuple]:
        """(context, fn(checkpoint, inputs)) for each (context, inputs) of `batches` (`rows` inputs in all), in
        order, a few batches in flight."""
        if self.pool is None:
            for context, inputs in batches:
                yield context, fn(checkpoint, inputs)
            return
        in_flight = IN_FLIGHT if rows > ONE_WORKER_ROWS else 1
        pending: deque = deque()
        for context, inputs in batches:
            pending.append((context, self.pool.submit(fn, checkpoint, inputs)))
            if len(pending) >= in_flight:
                context, future = pending.popleft()
                yield context, future.result()
        while pending:
            context, future = pending.popleft()
            yield context, future.result()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)

    def __enter__(self) -> Renderer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
