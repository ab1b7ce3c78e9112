"""The trajectory record: one JSON object per workflow run, one per line.

This is the only definition of the record; collect writes it, judge and finetune read it.
Bump SCHEMA_VERSION on any change that an old reader would misread.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

SCHEMA_VERSION = 1

Status = Literal["ok", "error", "timeout"]


@dataclass(frozen=True)
class Column:
    """How a field is kept in the store; astuner/store_schema.py derives the store's columns from these.

    A field without one is a column of its own name, typed by its annotation."""

    name: str | None = None  # the column's name, where it is not the field's (or parent_field, when flattened)
    sql: str | None = None  # the column's DuckDB type, where it is not the one the annotation gives
    flatten: bool = False  # a nested record whose fields become columns of the parent's row, named parent_field
    table: str | None = None  # a list of records kept as a table of its own, one row each
    stored: bool = True  # False: not a column (the record's format version, say)


class _Record(BaseModel):
    # Unknown keys are an error: a misspelt field must not vanish silently.
    model_config = ConfigDict(extra="forbid")


class ToolCall(_Record):
    """One tool call the model wrote, parsed from its completion."""

    id: str
    name: str
    arguments: str = Field(description="JSON text of the arguments, as the model wrote them.")


class Completion(_Record):
    """What the model answered; `text` is the decoded sampled ids (special tokens skipped)."""

    text: str
    tool_calls: Annotated[list[ToolCall], Column(name="tool_calls")] = Field(default_factory=list)
    # Added within version 1 (optional): the thinking the model wrote (Qwen3 <think>), given to the agent as a ThinkingBlock.
    reasoning: str | None = Field(default=None, description="Reasoning parsed out of the completion, if any.")


class ModelCall(_Record):
    """One call of a chat model inside a workflow run."""

    index: Annotated[int, Column(name="call_index")] = Field(
        description="Position of the call within its trajectory, from 0."
    )
    role: str = Field(description="The role the model was registered under ('default' for model_tuner itself).")
    agent_name: str | None = Field(description="Name of the AgentScope agent that made the call, if any.")
    trainable: bool = Field(description="True when the role is a trainable target: finetune learns from it.")
    model: str = Field(description="Checkpoint path for the engine, or the default model's model_name.")
    messages: list[dict[str, Any]] = Field(description="Messages exactly as the agent's formatter produced them.")
    tools: list[dict[str, Any]] | None = Field(description="Tool JSON schemas passed with the call.")
    tool_choice: str | None = None
    completion: Annotated[Completion, Column(flatten=True)]
    prompt_token_ids: list[int] | None = Field(description="Engine calls only: the ids the engine was fed.")
    completion_token_ids: list[int] | None = Field(description="Engine calls only: the ids it sampled.")
    completion_logprobs: list[float] | None = Field(
        description="Log-probability of each sampled id under the model's own (untempered) distribution."
    )
    finish_reason: str | None = Field(
        description="'stop' (an end token), 'length' (max_tokens), 'error' (the call raised: see error) or None."
    )
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float
    # Added within version 1 (optional, so every earlier record still reads): a call that raised.
    error: str | None = Field(
        default=None, description="The exception of a call that raised; such a call is never trainable."
    )
    # Added within version 1 (optional): which tool-call/reasoning format parsed an engine call (astuner.chat.FAMILIES).
    tool_format: str | None = Field(
        default=None, description="Engine calls: hermes, qwen3, llama3 or mistral (--tool-format)."
    )
    template_kwargs: dict[str, Any] | None = Field(
        default=None,
        description="Engine calls: extra chat-template variables the prompt was rendered with (--template-kwargs, "
        "the fixed date_string of templates that render today's date).",
    )


class TaskRecord(_Record):
    """The task as recorded: the reference judges compare against. Not `astuner.workflow.Task`, what a
    run is given (which also carries the row's init_messages, and which the run may not change)."""

    task_id: Annotated[str, Column(name="task_id")]
    main_query: Annotated[str, Column(name="task_query")]
    metadata: dict[str, Any] = Field(default_factory=dict)


class Checkpoint(_Record):
    path: str
    sha256: str


class Sampling(_Record):
    """The collect's sampling options as recorded: `seed` is its base seed. Each request gets an engine
    `astuner.engines.SamplingParams` of these values with a seed derived per run and call."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int | None = None


class Trajectory(_Record):
    """One workflow run. The store keeps it as a `trajectories` row and its calls as `calls` rows."""

    schema_version: Annotated[int, Column(stored=False)] = SCHEMA_VERSION
    trajectory_id: str = Field(description="sha256(run_id, task_id, sample_index)[:32]; stable across resumes.")
    run_id: str
    workflow: str = Field(description="Workflow.name")
    workflow_ref: str = Field(description="What --workflow named: module:Class, module:function or file.py:Class.")
    task: Annotated[TaskRecord, Column(flatten=True)]
    sample_index: int
    iteration: int = 0
    checkpoint: Annotated[Checkpoint, Column(flatten=True)]
    engine: str
    sampling: Sampling
    trainable_targets: list[str] | None = Field(description="None: every role is trainable (simple mode).")
    status: Status
    error: str | None = None
    traceback: str | None = None
    # The store names it for what it is, beside the judged `reward` of its views.
    reward: Annotated[float | None, Column(name="workflow_reward")] = Field(
        default=None, description="What WorkflowOutput.reward returned (None: left to the judgers)."
    )
    metadata: dict[str, Any] = Field(default_factory=dict)
    started_at: Annotated[float, Column(sql="TIMESTAMPTZ")] = Field(description="Unix time.")
    finished_at: Annotated[float, Column(sql="TIMESTAMPTZ")]
    duration_s: float
    calls: Annotated[list[ModelCall], Column(table="calls")] = Field(default_factory=list)


def to_jsonable(value: Any) -> Any:
    """What JSON can hold of `value` (objects it cannot hold become their str)."""
    return json.loads(json.dumps(value, default=str))


def trajectory_id(run_id: str, task_id: str, sample_index: int) -> str:
    key = json.dumps([run_id, task_id, sample_index])
    return hashlib.sha256(key.encode()).hexdigest()[:32]


class TraceFormatError(ValueError):
    """A line of a traces file that is not a valid trajectory; the message names file and line."""


def parse_trajectory(line: str | bytes, source: str = "<string>", line_no: int = 0) -> Trajectory:
    where = f"{source}:{line_no}"
    try:
        raw = json.loads(line)
    except UnicodeDecodeError as exc:
        raise TraceFormatError(f"{where}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise TraceFormatError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise TraceFormatError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    version = raw.get("schema_version")
    if version != SCHEMA_VERSION:
        raise TraceFormatError(
            f"{where}: schema_version {version!r}, this astuner reads version {SCHEMA_VERSION}; "
            "re-collect with this version or use the astuner that wrote it"
        )
    try:
        return Trajectory.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise TraceFormatError(f"{where}: field {field!r}: {first['msg']}") from None


def trace_files(path: str | os.PathLike) -> list[Path]:
    """A .jsonl file, or every *.jsonl file under a folder (sorted; a folder named like one is looked into)."""
    path = Path(path)
    if path.is_dir():
        return sorted(p for p in path.rglob("*.jsonl") if p.is_file())
    if not path.exists():
        raise FileNotFoundError(f"no traces at {path}")
    return [path]


def read_trajectories(path: str | os.PathLike) -> Iterator[Trajectory]:
    """Yield every trajectory under `path`; raises TraceFormatError naming file and line."""
    for file in trace_files(path):
        with open(file, "rb") as fh:
            for line_no, line in enumerate(fh, start=1):
                if line.strip():
                    yield parse_trajectory(line, str(file), line_no)


ESCAPED_KEY = "escaped_strings"  # in a record's metadata: where dump_line escaped strings UTF-8 cannot encode


def dump_line(traj: Trajectory) -> bytes:
    """The record's JSON line. A string UTF-8 cannot encode (a lone surrogate such as '\\ud800', which a
    workflow's metadata, an exception or a message may hold) is written as its backslash escape, as text,
    and metadata[ESCAPED_KEY] lists where (dotted paths): the record stays valid UTF-8 for every reader,
    and token ids, numbers and every other string are written exactly."""
    try:
        return (traj.model_dump_json() + "\n").encode()
    except ValueError:  # pydantic's serialization error on such a string (a UnicodeEncodeError is one too)
        escaped: list[str] = []
        data = _escape_unencodable(traj.model_dump(), "", escaped)
        data["metadata"][ESCAPED_KEY] = escaped
        return (Trajectory.model_validate(data).model_dump_json() + "\n").encode()


def _escape_unencodable(value: Any, path: str, escaped: list[str]) -> Any:
    """`value` with every str (dict keys too) that UTF-8 cannot encode replaced by its backslash escape;
    the dotted path of each is appended to `escaped`."""
    if isinstance(value, str):
        safe = _escaped(value)
        if safe is not value:
            escaped.append(path)
        return safe
    if isinstance(value, dict):
        result = {}
        for key, item in value.items():
            safe = _escaped(key) if isinstance(key, str) else key
            here = f"{path}.{safe}" if path else str(safe)
            if safe is not key:
                escaped.append(here)
            result[safe] = _escape_unencodable(item, here, escaped)
        return result
    if isinstance(value, list):
        return [_escape_unencodable(item, f"{path}.{i}", escaped) for i, item in enumerate(value)]
    return value


def _escaped(text: str) -> str:
    """`text` itself when UTF-8 can encode it, else a new str with the backslash escapes."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode(errors="backslashreplace").decode()
    return text
