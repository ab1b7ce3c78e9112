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
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Callable

BUILTIN_VERSION = "builtin-1"


@dataclass
class Score:
    value: float | None
    label: str | None = None
    explanation: str | None = None
    error: str | None = None


@dataclass
class Judger:
    name: str  # the spec without its weight: what the scores table records
    version: str
    weight: float
    fn: Callable[..., list]
    level: str = "trajectory"  # or "call"


class JudgerError(ValueError):
    """A --judger spec that cannot be used; one line naming it and the fix."""


_USAGE = ("use workflow, exact[:OUT,REF], numeric[:OUT,REF,TOL], regex[:OUT,PATTERN_FIELD], llm[:TEMPLATE_FILE], "
          "or module:function")


def _output(traj: dict, field: str) -> Any:
    return (traj.get("metadata") or {}).get(field)


def _success_label(traj: dict) -> str | None:
    success = (traj.get("metadata") or {}).get("is_success")  # WorkflowOutput.is_success, AgentJet's field
    return None if success is None else ("success" if success else "failure")


def workflow_reward(trajectories, **_):
    return [t["reward"] if _success_label(t) is None else Score(_number(t["reward"]), label=_success_label(t))
            for t in trajectories]


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


def _is_agentscope_judge(target) -> bool:
    """agentscope.tuner's JudgeType: async, (task, response, [auxiliary_models], [logger]); its
    built-in judges name the first parameter `_task`."""
    if not inspect.iscoroutinefunction(target):
        return False
    names = list(inspect.signature(target).parameters)
    return len(names) >= 2 and names[0] in ("task", "_task") and names[1] == "response"


_BUILT_IN_JUDGES = "agentscope.tuner.model_selection"


def _agentscope_judge(fn, auxiliary_models: dict | None = None):
    """agentscope.tuner: async judge(task, response, auxiliary_models, logger) -> JudgeOutput(reward, metrics).

    Called with the parameters it declares only. `response` is the object the workflow returned
    (a Msg comes back as a Msg). Its built-in judges (model_selection) get what select_model
    hands them: {"response": ..., "metrics": {..., execution_time, input/output/total_tokens, usage}}.
    """
    import logging

    params = inspect.signature(fn).parameters
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    task_name, response_name = list(params)[:2]
    optional = {"auxiliary_models": auxiliary_models or {}, "logger": logging.getLogger(f"judge.{fn.__name__}")}
    optional = {k: v for k, v in optional.items() if takes_all or k in params}
    composite = (getattr(fn, "__module__", "") or "").startswith(_BUILT_IN_JUDGES)

    def judge(trajectories, **_):
        async def one(traj):
            response = traj["response"]
            if composite:
                metrics = {**(traj["metadata"].get("metrics") or {}), **_usage(traj)}
                response = {"response": response, "metrics": metrics}
            out = await fn(**{task_name: traj["task"], response_name: response}, **optional)
            metrics = getattr(out, "metrics", None)
            return Score(_number(getattr(out, "reward", out)), explanation=json.dumps(metrics, default=str) if metrics else None)

        async def all_of():
            return await asyncio.gather(*(one(t) for t in trajectories), return_exceptions=True)

        return [Score(None, error=f"{type(r).__name__}: {r}") if isinstance(r, BaseException) else r for r in asyncio.run(all_of())]

    return judge


def _usage(traj: dict) -> dict:
    """select_model's metrics of a run: its wall time and the tokens of its calls."""
    inputs = float(sum(c.get("prompt_tokens") or 0 for c in traj["calls"]))
    outputs = float(sum(c.get("completion_tokens") or 0 for c in traj["calls"]))
    usage = {"input_tokens": inputs, "output_tokens": outputs, "total_tokens": inputs + outputs}
    return {"execution_time": traj.get("duration_s") or 0.0, **usage, "usage": usage}


def _compute_reward_judge(cls):
    """AgentJet's judge class: cls(config).compute_reward(workflow_task, workflow_output) -> (reward, is_success)
    or a bare reward; config is the tree workflows read as model_tuner.config (its defaults)."""
    from astuner.tuner_config import as_tree, build_tuner_config
    from astuner.workflow import Task, WorkflowOutput, WorkflowTask

    try:
        instance = cls(as_tree(build_tuner_config()))
    except TypeError:
        instance = cls()

    def judge(trajectories, **_):
        results = []
        for traj in trajectories:
            task = WorkflowTask(Task(traj["task_id"], traj["main_query"], traj["task"]), traj["sample_index"], traj["iteration"])
            metadata = traj["metadata"] or {}
            output = WorkflowOutput(reward=traj["reward"], metadata=metadata, is_success=metadata.get("is_success"),
                                    log_metrics=metadata.get("log_metrics") or {})
            result = instance.compute_reward(task, output)
            raw, success = result if isinstance(result, (tuple, list)) and len(result) == 2 else (result, None)
            results.append(Score(_number(raw), label=None if success is None else ("success" if success else "failure")))
        return results

    return judge


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def parse_judger(spec: str, llm_options: dict | None = None, auxiliary_models: dict | None = None) -> Judger:
    """'NAME[=WEIGHT]' -> Judger. `auxiliary_models` (name -> chat model) go to agentscope.tuner judges."""
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
        from judge.llm import LLMJudge

        judge = LLMJudge.from_options(arg_text or None, **(llm_options or {}))
        return Judger(name, judge.version, weight, judge)
    if ":" not in name:
        raise JudgerError(f"--judger {spec!r}: unknown judger; {_USAGE}")
    from astuner.cli import import_object

    try:
        target = import_object(name, "--judger")
    except (ImportError, FileNotFoundError, ValueError) as exc:
        raise JudgerError(str(exc).splitlines()[0]) from None
    version = _source_version(target)
    if inspect.isclass(target) and hasattr(target, "compute_reward"):
        return Judger(name, version, weight, _compute_reward_judge(target))
    if not callable(target):
        raise JudgerError(f"--judger {spec!r}: {type(target).__name__} is not callable; {_USAGE}")
    if _is_agentscope_judge(target):
        return Judger(name, version, weight, _agentscope_judge(target, auxiliary_models))
    level = getattr(target, "level", "trajectory")
    if level not in ("trajectory", "call"):
        raise JudgerError(f"--judger {spec!r}: level {level!r}; use 'trajectory' or 'call'")
    return Judger(name, version, weight, target, level)


def as_score(item: Any) -> Score:
    """A judger's item -> Score; NaN, infinities and non-numbers become errors, not rewards."""
    if isinstance(item, Score):
        score = item
    elif item is None:
        return Score(None)
    else:
        try:
            score = Score(float(item))
        except (TypeError, ValueError):
            return Score(None, error=f"returned {type(item).__name__} {str(item)[:80]!r}, expected a float or None")
    if score.value is not None and not math.isfinite(score.value):
        return Score(None, label=score.label, explanation=score.explanation, error=f"returned {score.value}, not a finite number")
    return score
