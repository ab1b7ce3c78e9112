"""What lets workflows and judges written for AgentJet (`ajet`, formerly ASTuner) run unchanged.

- Its WorkflowOutput's extra fields, `is_success` and `log_metrics`: collect records them in the
  trajectory's metadata under those names (`output_fields`); judge labels scores from is_success
  (`success_label`).
- Its judge classes, BaseJudge subclasses with `compute_reward(workflow_task, workflow_output)
  -> (raw_reward, is_success)`: `compute_reward_judger` makes one a batched judger.
- Its config tree (`model_tuner.config.ajet...`): astuner/compat/tuner_config.py.
The import names (`ajet...`, `astuner.schema...`, `astuner.task_judge...`) are thin modules that
re-export astuner's classes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from astuner.compat.tuner_config import JUDGE_DEFAULTS, as_tree, build_tuner_config
from astuner.scores import Score
from astuner.trajectory import to_jsonable
from astuner.workflow import Task, WorkflowOutput, WorkflowTask


class BaseJudge:
    """AgentJet's judge base class, as its tutorials' judges subclass it.

    `python -m judge score --judger file.py:MyJudge` constructs the class with the judge's config
    (the same tree as model_tuner.config) and calls `compute_reward(workflow_task, workflow_output)`
    per trajectory; it returns `(raw_reward, is_success)` (or a bare reward). The reward is the
    score's value, is_success its label (success / failure).
    """

    def __init__(self, config=None):
        self.config = config

    def compute_reward(self, workflow_task: WorkflowTask, workflow_output: WorkflowOutput) -> tuple:
        raise NotImplementedError(f"{type(self).__name__}.compute_reward is not implemented")


def output_fields(output) -> dict:
    """A WorkflowOutput's AgentJet fields that were set, as trajectory metadata entries (where judge finds them)."""
    fields = {}
    if getattr(output, "is_success", None) is not None:
        fields["is_success"] = bool(output.is_success)
    if getattr(output, "log_metrics", None):
        fields["log_metrics"] = to_jsonable(output.log_metrics)
    return fields


def success_label(metadata: dict | None) -> str | None:
    """'success' / 'failure' from the recorded is_success; None when the workflow did not set it."""
    success = (metadata or {}).get("is_success")
    return None if success is None else ("success" if success else "failure")


def is_judge_class(target) -> bool:
    return isinstance(target, type) and hasattr(target, "compute_reward")


def compute_reward_judger(cls, auxiliary_models: dict | None = None) -> Callable[..., list[Score]]:
    """AgentJet's judge class: cls(config).compute_reward(workflow_task, workflow_output) -> (reward, is_success)
    or a bare reward, as a batched judger (judge/judgers.py); config is the tree workflows read as
    model_tuner.config (its defaults). `auxiliary_models` (judge's --auxiliary_models) serve the
    external LLM its create_external_llm_fn asks for by name (astuner/compat/dashscope.py)."""
    from astuner.compat.dashscope import use_judge_models

    use_judge_models(auxiliary_models or {})
    try:
        instance = cls(as_tree(build_tuner_config({"ajet": JUDGE_DEFAULTS})))
    except TypeError:
        instance = cls()

    def judge(trajectories, **_):
        results = []
        for traj in trajectories:
            task = WorkflowTask(
                Task(traj["task_id"], traj["main_query"], traj["task"]), traj["sample_index"], traj["iteration"]
            )
            metadata = traj["metadata"] or {}
            output = WorkflowOutput(
                reward=traj["reward"],
                metadata=metadata,
                is_success=metadata.get("is_success"),
                log_metrics=metadata.get("log_metrics") or {},
            )
            result = instance.compute_reward(task, output)
            raw, success = result if isinstance(result, (tuple, list)) and len(result) == 2 else (result, None)
            results.append(
                Score(_number(raw), label=None if success is None else ("success" if success else "failure"))
            )
        return results

    return judge


def _number(value: Any) -> float | None:
    return None if value is None else float(value)
