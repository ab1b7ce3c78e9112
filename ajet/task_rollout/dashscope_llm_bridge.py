"""`from ajet.task_rollout.dashscope_llm_bridge import create_external_llm_fn`: astuner/compat/dashscope.py."""

from astuner.compat.dashscope import create_external_llm_fn

__all__ = ["create_external_llm_fn"]
