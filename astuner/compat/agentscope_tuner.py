"""What lets files written for `agentscope.tuner` (AgentScope 1.0's own tuner) run unchanged.

- The import without dspy: `import agentscope.tuner` loads its prompt-tuning wrapper, whose
  module imports `dspy` at the top, and astuner does not install dspy (collect never runs
  AgentScope's prompt tuner). When dspy is absent, `allow_agentscope_tuner_without_dspy()`
  (called by `import astuner`) puts a stand-in for that one wrapper module in `sys.modules`, so
  `from agentscope.tuner import WorkflowOutput, JudgeOutput, ...` works; only
  `agentscope.tuner.tune_prompt` still needs dspy, and says so when called.
- Its workflow functions, `async def f(task, model[, system_prompt][, auxiliary_models][, logger])`:
  `run_workflow_func` (astuner.workflow.FunctionWorkflow runs them).
- Its judges, `async def judge(task, response[, auxiliary_models][, logger]) -> JudgeOutput`, and
  the built-in ones of `agentscope.tuner.model_selection`: `judge_func_judger`.
- The `response` a workflow returned (an AgentScope `Msg`, a pydantic model, plain JSON) into
  JSON for the trajectory, and back into the object for its judge.
"""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import inspect
import json
import logging
import sys
import textwrap
import types
from collections.abc import Callable
from typing import Any

from astuner.scores import Score

_WRAPPER = "agentscope.tuner.prompt_tune._wrapper"


def allow_agentscope_tuner_without_dspy() -> bool:
    """True when the stand-in was installed (dspy is absent and agentscope.tuner not yet imported)."""
    if _WRAPPER in sys.modules or "agentscope.tuner" in sys.modules:
        return False
    try:
        if importlib.util.find_spec("dspy") is not None:
            return False
    except (ImportError, ValueError):
        pass
    stand_in = types.ModuleType(_WRAPPER)
    stand_in.__doc__ = "astuner's stand-in: agentscope.tuner's prompt tuner needs dspy, which is not installed."

    class _WorkflowWrapperModule:  # the one name agentscope.tuner.prompt_tune imports from the wrapper
        def __init__(self, *args, **kwargs):
            raise ImportError("agentscope.tuner.tune_prompt needs dspy, which is not installed: pip install dspy")

    stand_in._WorkflowWrapperModule = _WorkflowWrapperModule
    sys.modules[_WRAPPER] = stand_in
    return True


# ----- the response a workflow returned, through JSONL and the store --------------------
RESPONSE_TYPE_KEY = "response_type"  # trajectory metadata key: what `response` was, when not plain JSON


def response_to_json(response: Any) -> tuple[Any, str | None]:
    """(JSON of `response`, the name to rebuild it by, or None when it is plain JSON already)."""
    from agentscope.message import Msg
    from pydantic import BaseModel

    if isinstance(response, Msg):
        return response.to_dict(), "agentscope.message.Msg"
    if isinstance(response, BaseModel):
        return response.model_dump(mode="json"), f"{type(response).__module__}.{type(response).__qualname__}"
    return response, None


def response_from_json(data: Any, type_name: str | None) -> Any:
    """The inverse of response_to_json: a Msg comes back as a Msg; other types as their JSON."""
    if type_name == "agentscope.message.Msg" and isinstance(data, dict):
        from agentscope.message import Msg

        return Msg.from_dict(data)
    return data


# ----- workflow functions --------------------------------------------------------------
async def run_workflow_func(fn, task_row: dict, model, output_type: type):
    """One run of workflow function `fn`, called with the parameters it declares: `task` is the task
    row, `model` the run's ModelTuner (its `auxiliary_models` too). Its WorkflowOutput(reward,
    response, metrics) -> `output_type(reward=..., metadata={response, response_type, metrics})`;
    an `output_type` it returned itself (astuner's WorkflowOutput) is kept as it is."""
    offered = {
        "task": task_row,
        "model": model,
        "auxiliary_models": getattr(model, "auxiliary_models", None) or {},
        "system_prompt": None,
        "logger": logging.getLogger(f"astuner.workflow.{fn.__name__}"),
    }
    result = await fn(**_declared(fn, offered))
    if isinstance(result, output_type):
        return result
    if result is None or not hasattr(result, "reward"):
        raise TypeError(f"{fn.__name__} returned {type(result).__name__}; expected a WorkflowOutput")
    metadata = {}
    if getattr(result, "response", None) is not None:
        metadata["response"], type_name = response_to_json(result.response)
        if type_name:
            metadata[RESPONSE_TYPE_KEY] = type_name
    if getattr(result, "metrics", None):
        metadata["metrics"] = result.metrics
    return output_type(reward=result.reward, metadata=metadata)


def _declared(fn, offered: dict) -> dict:
    """The offered keyword arguments that `fn` declares (all of them when it takes **kwargs)."""
    params = inspect.signature(fn).parameters
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    return {k: v for k, v in offered.items() if takes_all or k in params}


# ----- judges ---------------------------------------------------------------------------
_BUILT_IN_JUDGES = "agentscope.tuner.model_selection"


def is_judge_func(target) -> bool:
    """agentscope.tuner's JudgeType: async, (task, response, [auxiliary_models], [logger]); its
    built-in judges name the first parameter `_task`."""
    if not inspect.iscoroutinefunction(target):
        return False
    names = list(inspect.signature(target).parameters)
    return len(names) >= 2 and names[0] in ("task", "_task") and names[1] == "response"


JUDGE_INPUTS = ("auto", "response", "select_model")  # judge score --judge-input


def judge_func_judger(
    fn, auxiliary_models: dict | None = None, judge_input: str = "auto"
) -> Callable[..., list[Score]]:
    """agentscope.tuner: async judge(task, response, auxiliary_models, logger) -> JudgeOutput(reward, metrics),
    as a batched judger (judge/judgers.py).

    Called with the parameters it declares only. `response` is the object the workflow returned
    (a Msg comes back as a Msg), or, with `judge_input` "select_model" (and "auto" where
    `takes_select_model_input` finds it, its built-in judges always), what select_model hands
    judges: {"response": ..., "metrics": {..., execution_time, input/output/total_tokens, usage}}.
    The judger's attribute `judge_input` says which it got.
    """
    task_name, response_name = list(inspect.signature(fn).parameters)[:2]
    optional = _declared(
        fn, {"auxiliary_models": auxiliary_models or {}, "logger": logging.getLogger(f"judge.{fn.__name__}")}
    )
    composite = judge_input == "select_model" or (judge_input == "auto" and takes_select_model_input(fn))

    def judge(trajectories, **_):
        async def one(traj):
            response = traj["response"]
            if composite:
                metrics = {**(traj["metadata"].get("metrics") or {}), **_usage(traj)}
                response = {"response": response, "metrics": metrics}
            out = await fn(**{task_name: traj["task"], response_name: response}, **optional)
            metrics = getattr(out, "metrics", None)
            reward = getattr(out, "reward", out)
            return Score(
                None if reward is None else float(reward),
                explanation=json.dumps(metrics, default=str) if metrics else None,
            )

        async def all_of():
            return await asyncio.gather(*(one(t) for t in trajectories), return_exceptions=True)

        return [
            Score(None, error=f"{type(r).__name__}: {r}") if isinstance(r, BaseException) else r
            for r in asyncio.run(all_of())
        ]

    judge.judge_input = "select_model" if composite else "response"
    return judge


_COMPOSITE_KEYS = ("response", "metrics")


def takes_select_model_input(fn) -> bool:
    """Whether judge `fn` expects select_model's {"response", "metrics"} as its response: one of
    agentscope.tuner's built-in judges; a judge its own module hands to `select_model(judge_func=...)` (as
    AgentScope's model-selection examples do); or one whose body reads response["response"],
    response["metrics"] (or .get of them, or `"response" in response`)."""
    if (getattr(fn, "__module__", "") or "").startswith(_BUILT_IN_JUDGES):
        return True
    name = getattr(fn, "__name__", None)
    param = list(inspect.signature(fn).parameters)[1]

    def parsed(obj):
        try:
            return ast.parse(textwrap.dedent(inspect.getsource(obj)))
        except (OSError, TypeError, SyntaxError):
            return None

    empty = ast.Module(body=[], type_ignores=[])
    module = inspect.getmodule(fn)
    for node in ast.walk((parsed(module) if module is not None else None) or empty):
        if isinstance(node, ast.Call) and _called_name(node.func) == "select_model":
            if any(k.arg == "judge_func" and _called_name(k.value) == name for k in node.keywords):
                return True
    for node in ast.walk(parsed(fn) or empty):
        if isinstance(node, ast.Subscript) and _is_name(node.value, param) and _is_key(node.slice):
            return True
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            if _is_name(node.func.value, param) and node.args and _is_key(node.args[0]):
                return True
        if isinstance(node, ast.Compare) and _is_key(node.left) and isinstance(node.ops[0], ast.In):
            if _is_name(node.comparators[0], param):
                return True
    return False


def _called_name(node) -> str | None:
    return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None


def _is_name(node, name: str) -> bool:
    return isinstance(node, ast.Name) and node.id == name


def _is_key(node) -> bool:
    return isinstance(node, ast.Constant) and node.value in _COMPOSITE_KEYS


def _usage(traj: dict) -> dict:
    """select_model's metrics of a run: its wall time and the tokens of its calls."""
    inputs = float(sum(c.get("prompt_tokens") or 0 for c in traj["calls"]))
    outputs = float(sum(c.get("completion_tokens") or 0 for c in traj["calls"]))
    usage = {"input_tokens": inputs, "output_tokens": outputs, "total_tokens": inputs + outputs}
    return {"execution_time": traj.get("duration_s") or 0.0, **usage, "usage": usage}
