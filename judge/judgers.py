"""Judgers: batched reward functions in TRL's style.

A judger is called as `judger(trajectories, **task_columns)` and returns one item per
trajectory: a float, None (not applicable) or a `Score` (value, label, explanation, error).
`trajectories` are dicts (see `load_batch`); `task_columns` are the task rows' fields as
lists, as TRL passes dataset columns to reward functions (e.g. `answer=[...]`).

Specs on the command line (`--judger SPEC[=WEIGHT]`):
    workflow                        the reward WorkflowOutput returned
    exact[:OUT,REF]                 output metadata OUT == task field REF (default final_answer, answer)
    numeric[:OUT,REF,TOL]           |OUT - REF| <= TOL (absolute or relative, default 1e-6)
    regex[:OUT,PATTERN_FIELD]       re.search(task[PATTERN_FIELD], OUT)
    llm[:TEMPLATE_FILE]             an LLM judge through the collect engines (judge/llm.py)
    module:function, file.py:function
        a batched function as above; an agentscope.tuner judge
        `async judge(task, response[, auxiliary_models][, logger]) -> JudgeOutput` (its built-in
        judges in agentscope.tuner.model_selection too); or a class with
        `compute_reward(workflow_task, workflow_output) -> (reward, is_success)`.
        A function with attribute `level = "call"` scores calls instead of trajectories.
        (The peers' judges are adapted in astuner/compat/.)
"""

from __future__ import annotations

import hashlib
import inspect
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from astuner.compat import peer_judger
from astuner.compat.agentjet import success_label
from astuner.scores import Score  # in astuner: compat's peer judgers return it too; judgers import it from here

BUILTIN_VERSION = "builtin-1"


@dataclass
class Judger:
    name: str  # the spec without its weight: what the scores table records
    version: str
    weight: float
    fn: Callable[..., list]
    level: str = "trajectory"  # or "call"


class JudgerError(ValueError):
    """A --judger spec that cannot be used; one line naming it and the fix."""


_USAGE = (
    "use workflow, exact[:OUT,REF], numeric[:OUT,REF,TOL], regex[:OUT,PATTERN_FIELD], llm[:TEMPLATE_FILE], "
    "or module:function"
)


def _output(traj: dict, field: str) -> Any:
    return (traj.get("metadata") or {}).get(field)


def workflow_reward(trajectories, **_):
    # AgentJet's WorkflowOutput.is_success labels the score
    labels = [success_label(t.get("metadata")) for t in trajectories]
    return [
        t["reward"] if label is None else Score(_number(t["reward"]), label=label)
        for t, label in zip(trajectories, labels)
    ]


def _compare(out_field: str, ref_field: str, equal: Callable[[Any, Any], Score | float]):
    def judge(trajectories, **task_columns):
        refs = task_columns.get(ref_field, [None] * len(trajectories))
        results = []
        for traj, ref in zip(trajectories, refs):
            if ref is None:
                results.append(None)  # the task has no reference: not applicable
                continue
            out = _output(traj, out_field)
            results.append(0.0 if out is None else equal(out, ref))
        return results

    return judge


def _to_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip().replace(",", "").rstrip(".")
    try:
        return float(text)
    except ValueError:
        return None


def exact_match(out_field: str = "final_answer", ref_field: str = "answer"):
    return _compare(out_field, ref_field, lambda out, ref: float(str(out).strip() == str(ref).strip()))


def numeric_match(out_field: str = "final_answer", ref_field: str = "answer", tolerance: str = "1e-6"):
    tol = float(tolerance)

    def equal(out, ref):
        ref_value = _to_float(ref)
        if ref_value is None:
            return Score(None, error=f"reference {ref!r} is not a number")
        out_value = _to_float(out)
        if out_value is None:
            return Score(0.0, label="not a number")
        return float(math.isclose(out_value, ref_value, rel_tol=tol, abs_tol=tol))

    return _compare(out_field, ref_field, equal)


def regex_match(out_field: str = "final_answer", pattern_field: str = "answer_pattern"):
    def equal(out, pattern):
        try:
            return float(re.search(str(pattern), str(out)) is not None)
        except re.error as exc:
            return Score(None, error=f"bad pattern {pattern!r}: {exc}")

    return _compare(out_field, pattern_field, equal)


def _source_version(obj) -> str:
    explicit = getattr(obj, "version", None)
    if explicit is not None:
        return str(explicit)
    try:
        source = inspect.getsource(obj)
    except (OSError, TypeError):
        source = repr(obj)
    return "src-" + hashlib.sha256(source.encode()).hexdigest()[:12]


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def _llm_judge(
    template_file: str | None,
    *,
    model: str | None = None,
    engine: str = "transformers",
    max_score: float = 10.0,
    max_tokens: int = 128,
    device: str | None = None,
):
    """--judger llm[:TEMPLATE_FILE] with the --judge_* options -> an LLMJudge on its own engine."""
    from astuner.checkpoint import checkpoint_sha256
    from astuner.engines import ENGINES, load_engine
    from astuner.tiny import ensure_tiny_model
    from judge.llm import DEFAULT_TEMPLATE, LLMJudge

    if engine not in ENGINES:
        raise JudgerError(f"--judge_engine {engine!r}: unknown engine; choose one of {', '.join(ENGINES)}")

    template = DEFAULT_TEMPLATE
    if template_file:
        try:
            template = Path(template_file).read_text()
        except OSError as exc:
            raise JudgerError(f"--judger llm:{template_file}: cannot read the template ({exc.strerror})") from None
    checkpoint = model or str(ensure_tiny_model())
    kwargs = {"device": device} if device and engine == "transformers" else {}
    return LLMJudge(
        load_engine(engine, checkpoint, option="--judge_model", **kwargs),
        template,
        max_score=max_score,
        max_tokens=max_tokens,
        checkpoint_sha256=checkpoint_sha256(checkpoint),
    )


def parse_judger(
    spec: str, llm_options: dict | None = None, auxiliary_models: dict | None = None, judge_input: str = "auto"
) -> Judger:
    """'NAME[=WEIGHT]' -> Judger. `auxiliary_models` (name -> chat model) go to agentscope.tuner judges (and
    AgentJet's external LLM); `judge_input` says what an agentscope.tuner judge gets as its response."""
    name, weight = spec, 1.0
    head, sep, tail = spec.rpartition("=")
    if sep and head and re.fullmatch(r"[-+0-9.eE]+", tail):
        try:
            weight = float(tail)
        except ValueError:
            raise JudgerError(f"--judger {spec!r}: weight {tail!r} is not a number; write NAME=2.0") from None
        name = head
    if not math.isfinite(weight) or weight < 0:
        raise JudgerError(f"--judger {spec!r}: weight must be a finite number >= 0, got {weight}")
    kind, _, arg_text = name.partition(":")
    args = [a for a in arg_text.split(",") if a] if arg_text else []
    builtins = {"exact": (exact_match, 2), "numeric": (numeric_match, 3), "regex": (regex_match, 2)}
    if kind == "workflow" and not args:
        return Judger(name, BUILTIN_VERSION, weight, workflow_reward)
    if kind in builtins:
        factory, most = builtins[kind]
        if len(args) > most:
            raise JudgerError(f"--judger {spec!r}: {kind} takes at most {most} comma-separated arguments; {_USAGE}")
        try:
            return Judger(name, BUILTIN_VERSION, weight, factory(*args))
        except ValueError as exc:
            raise JudgerError(f"--judger {spec!r}: {exc}") from None
    if kind == "llm":
        judge = _llm_judge(arg_text or None, **(llm_options or {}))
        return Judger(name, judge.version, weight, judge)
    if ":" not in name:
        raise JudgerError(f"--judger {spec!r}: unknown judger; {_USAGE}")
    from astuner.cli import import_object

    try:
        target = import_object(name, "--judger")
    except (ImportError, FileNotFoundError, ValueError) as exc:
        raise JudgerError(str(exc).splitlines()[0]) from None
    version = _source_version(target)
    peer = peer_judger(target, auxiliary_models, judge_input)  # an AgentJet judge class or an agentscope.tuner judge
    if peer is not None:
        return Judger(name, version, weight, peer)
    if not callable(target):
        raise JudgerError(f"--judger {spec!r}: {type(target).__name__} is not callable; {_USAGE}")
    level = getattr(target, "level", "trajectory")
    if level not in ("trajectory", "call"):
        raise JudgerError(f"--judger {spec!r}: level {level!r}; use 'trajectory' or 'call'")
    return Judger(name, version, weight, target, level)


def storable_text(value: Any) -> str | None:
    """Text the store can hold: a non-str becomes its str(); characters UTF-8 cannot encode (lone
    surrogates such as '\\ud800') become their backslash escapes, so the row is kept, not the run lost."""
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def as_score(item: Any) -> Score:
    """A judger's item -> Score; NaN, infinities and non-numbers become errors, not rewards; its texts storable."""
    if isinstance(item, Score):
        score = Score(item.value, *(storable_text(t) for t in (item.label, item.explanation, item.error)))
    elif item is None:
        return Score(None)
    else:
        try:
            score = Score(float(item))
        except (TypeError, ValueError):
            return Score(
                None, error=f"returned {type(item).__name__} {storable_text(item)[:80]!r}, expected a float or None"
            )
    if score.value is not None and not math.isfinite(score.value):
        return Score(
            None, label=score.label, explanation=score.explanation, error=f"returned {score.value}, not a finite number"
        )
    return score
