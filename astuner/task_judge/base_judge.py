"""ASTuner's import path for BaseJudge (`from astuner.task_judge.base_judge import BaseJudge`): kept for
files written for it; the class is in astuner/compat/agentjet.py."""

from astuner.compat.agentjet import BaseJudge

__all__ = ["BaseJudge"]
