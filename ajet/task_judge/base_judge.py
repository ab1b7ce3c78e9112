"""`from ajet.task_judge.base_judge import BaseJudge`."""

from astuner.task_judge.base_judge import BaseJudge

__all__ = ["BaseJudge"]
