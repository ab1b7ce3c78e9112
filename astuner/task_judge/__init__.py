"""AgentJet/ASTuner's judge module path (`astuner.task_judge.base_judge`), kept for peers' files: see astuner/compat/."""
