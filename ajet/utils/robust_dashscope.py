"""`from ajet.utils.robust_dashscope import RobustDashScopeChatModel`: astuner/compat/dashscope.py."""


def __getattr__(name):
    # built on first use: it subclasses AgentScope's DashScopeChatModel
    if name == "RobustDashScopeChatModel":
        from astuner.compat.dashscope import robust_dashscope_chat_model

        return robust_dashscope_chat_model()
    raise AttributeError(f"module 'ajet.utils.robust_dashscope' has no attribute {name!r}")


__all__ = ["RobustDashScopeChatModel"]  # noqa: F822 - provided by __getattr__
