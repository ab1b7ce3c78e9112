"""astuner: turn AgentScope workflows into token-exact training data and better models.

from astuner import Workflow, WorkflowTask, WorkflowOutput, ModelTuner
"""

from astuner.compat.agentscope_tuner import allow_agentscope_tuner_without_dspy
from astuner.trajectory import SCHEMA_VERSION, ModelCall, Trajectory, read_trajectories
from astuner.workflow import Task, Workflow, WorkflowOutput, WorkflowTask

# Files written for agentscope.tuner import it; without dspy installed that import would fail (astuner/compat/).
allow_agentscope_tuner_without_dspy()

__all__ = [
    "SCHEMA_VERSION",
    "ModelCall",
    "ModelTuner",
    "Task",
    "Trajectory",
    "Workflow",
    "WorkflowOutput",
    "WorkflowTask",
    "read_trajectories",
]


def __getattr__(name):
    # ModelTuner pulls in AgentScope (~1 s): only when asked for.
    if name == "ModelTuner":
        from astuner.tuner import ModelTuner

        return ModelTuner
    raise AttributeError(f"module 'astuner' has no attribute {name!r}")
