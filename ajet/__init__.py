"""AgentJet's import name: `from ajet import AjetTuner, Workflow, WorkflowOutput, WorkflowTask` is astuner.

AjetTuner is astuner's ModelTuner (as_agentscope_model, as_raw_openai_sdk_client,
as_oai_baseurl_apikey, config). What is not supported is listed in docs/compatibility.md.
"""

from astuner.workflow import Task, Workflow, WorkflowOutput, WorkflowTask

__all__ = ["AjetTuner", "ModelTuner", "Task", "Workflow", "WorkflowOutput", "WorkflowTask"]


def __getattr__(name):
    # the tuner pulls in AgentScope (~1 s): only when asked for, as in astuner
    if name in ("AjetTuner", "ModelTuner"):
        from astuner.tuner import ModelTuner

        return ModelTuner
    raise AttributeError(f"module 'ajet' has no attribute {name!r} (astuner supports: {', '.join(__all__)})")
