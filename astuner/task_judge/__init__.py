"""AgentJet/ASTuner's judge module path: `from astuner.task_judge.base_judge import BaseJudge`."""
