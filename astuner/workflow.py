"""What users write: a Workflow subclass whose `execute` runs AgentScope agents on a task."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from astuner.cli import import_object
from astuner.compat.agentscope_tuner import run_workflow_func

if TYPE_CHECKING:
    from astuner.tuner import ModelTuner


@dataclass
class Task:
    """One row of the task set. `metadata` is the row's `metadata` mapping when it has one
    (AgentJet's `{main_query, task_id, init_messages, metadata: {...}}`), else the whole row
    (reference answer and all). `init_messages`: the row's, or []."""

    task_id: str
    main_query: str
    metadata: dict[str, Any] = field(default_factory=dict)
    init_messages: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class WorkflowTask:
    """What `execute` receives: `task.task.main_query`, plus which sample and iteration this is."""

    task: Task
    sample_index: int = 0
    iteration: int = 0

    @property
    def task_id(self) -> str:
        return self.task.task_id

    @property
    def metadata(self) -> dict[str, Any]:
        return self.task.metadata


@dataclass
class WorkflowOutput:
    """reward: None leaves scoring to judge. metadata: anything judgers need (e.g. final_answer).

    is_success and log_metrics are AgentJet's fields; collect records them in the trajectory's
    metadata under those names (judge labels the score success/failure from is_success).
    """

    reward: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    is_success: bool | None = None
    log_metrics: dict[str, Any] = field(default_factory=dict)


def _field_default(info) -> Callable[[], Any]:
    """A pydantic FieldInfo -> a function giving a fresh default (pydantic copies defaults per instance)."""
    if info.default_factory is not None:
        return info.default_factory
    default = None if info.is_required() else info.default
    return lambda: copy.deepcopy(default)


class Workflow:
    """Subclass it, set `name` (and `trainable_targets` for multi-role workflows), write `execute`.

    trainable_targets = None (the default) or [] trains every call made through model_tuner.
    A new instance is made for every run, so `self.agent = ...` inside execute is safe.

    Attributes may also be declared the way AgentJet's pydantic Workflow does,
    `trainable_targets: list = Field(default=["werewolf"])`: the class attribute becomes the
    field's default and each instance gets its own copy; `Workflow(name=...)` sets attributes.
    """

    name: str = "workflow"
    trainable_targets: list[str] | None = None
    _field_defaults: dict[str, Callable[[], Any]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        from pydantic.fields import FieldInfo

        defaults = dict(cls._field_defaults)
        for attr, value in list(vars(cls).items()):
            if isinstance(value, FieldInfo):
                defaults[attr] = _field_default(value)
                # read at class level too (collect takes trainable_targets from the class)
                setattr(cls, attr, defaults[attr]())
            else:  # a plain value here overrides a Field of a base class
                defaults.pop(attr, None)
        cls._field_defaults = defaults

    def __init__(self, **attributes: Any):
        for attr, make in type(self)._field_defaults.items():
            setattr(self, attr, make())
        for attr, value in attributes.items():
            setattr(self, attr, value)

    async def execute(self, task: WorkflowTask, model_tuner: ModelTuner) -> WorkflowOutput:
        raise NotImplementedError(f"{type(self).__name__}.execute is not implemented")


class FunctionWorkflow(Workflow):
    """Runs an `agentscope.tuner` workflow function, `async def f(task, model, auxiliary_models)`,
    unchanged: task is the task row (Task.metadata); its WorkflowOutput(reward, response, metrics)
    maps to ours with response and metrics in metadata. A response that is an AgentScope `Msg`
    (or a pydantic model) is stored as its dict with `response_type` naming it, so that judge
    hands the judge a `Msg` again. `auxiliary_models`: collect's --auxiliary-models.
    The contract is in astuner/compat/agentscope_tuner.py."""

    function = None  # set by for_function

    @classmethod
    def for_function(cls, fn) -> type[Workflow]:
        return type(fn.__name__, (cls,), {"function": staticmethod(fn), "name": fn.__name__})

    async def execute(self, task: WorkflowTask, model_tuner: ModelTuner) -> WorkflowOutput:
        return await run_workflow_func(type(self).function, dict(task.task.metadata), model_tuner, WorkflowOutput)


def load_workflow(ref: str) -> type[Workflow]:
    """'package.module:Name' or 'path/to/file.py:Name' -> a Workflow class.

    Name may be a Workflow subclass or an async agentscope.tuner-style function.
    """
    target = import_object(ref, "--workflow", "Class")
    if inspect.isclass(target) and issubclass(target, Workflow):
        return target
    if inspect.iscoroutinefunction(target):
        return FunctionWorkflow.for_function(target)
    raise TypeError(
        f"--workflow {ref!r}: {ref.rpartition(':')[2]} is a {type(target).__name__}, not a Workflow subclass "
        "or an async workflow function"
    )
