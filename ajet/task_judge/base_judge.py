"""`from ajet.task_judge.base_judge import BaseJudge`, AgentJet's path: the class is in astuner/compat/agentjet.py."""

from astuner.compat.agentjet import BaseJudge

__all__ = ["BaseJudge"]
