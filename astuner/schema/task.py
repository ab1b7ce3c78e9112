"""ASTuner's `astuner.schema.task`, kept for peers' files: the task records, defined in astuner.workflow."""

from astuner.workflow import Task, WorkflowOutput, WorkflowTask

__all__ = ["Task", "WorkflowOutput", "WorkflowTask"]
