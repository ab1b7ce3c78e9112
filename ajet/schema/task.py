"""`from ajet.schema.task import Task, WorkflowTask, WorkflowOutput`."""

from astuner.workflow import Task, WorkflowOutput, WorkflowTask

__all__ = ["Task", "WorkflowOutput", "WorkflowTask"]
