"""`from ajet.workflow import Workflow, WorkflowOutput, WorkflowTask`."""

from astuner.workflow import Workflow, WorkflowOutput, WorkflowTask

__all__ = ["Workflow", "WorkflowOutput", "WorkflowTask"]
