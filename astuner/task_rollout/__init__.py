"""ASTuner's `astuner.task_rollout` path (its judges import the DashScope bridge from it), kept for peers'
files: see astuner/compat/dashscope.py."""
