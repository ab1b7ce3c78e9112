"""AgentJet's `ajet.task_rollout` path, kept for its judges' imports: see astuner/compat/dashscope.py."""
