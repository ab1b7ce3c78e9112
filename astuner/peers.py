"""What lets files written for `agentscope.tuner` (AgentScope 1.0's own tuner) run unchanged.

`import agentscope.tuner` loads its prompt-tuning wrapper, whose module imports `dspy` at the
top, and astuner does not install dspy (collect never runs AgentScope's prompt tuner). When
dspy is absent, `allow_agentscope_tuner_without_dspy()` puts a stand-in for that one wrapper
module in `sys.modules`, so `from agentscope.tuner import WorkflowOutput, JudgeOutput, ...`
works; only `agentscope.tuner.tune_prompt` still needs dspy, and says so when called.

Also here: turning the `response` a workflow returned (an AgentScope `Msg`, a pydantic model,
plain JSON) into JSON for the trajectory, and back into the object for its judge.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from typing import Any

_WRAPPER = "agentscope.tuner.prompt_tune._wrapper"


def allow_agentscope_tuner_without_dspy() -> bool:
    """True when the stand-in was installed (dspy is absent and agentscope.tuner not yet imported)."""
    if _WRAPPER in sys.modules or "agentscope.tuner" in sys.modules:
        return False
    try:
        if importlib.util.find_spec("dspy") is not None:
            return False
    except (ImportError, ValueError):
        pass
    stand_in = types.ModuleType(_WRAPPER)
    stand_in.__doc__ = "astuner's stand-in: agentscope.tuner's prompt tuner needs dspy, which is not installed."

    class _WorkflowWrapperModule:  # the one name agentscope.tuner.prompt_tune imports from the wrapper
        def __init__(self, *args, **kwargs):
            raise ImportError("agentscope.tuner.tune_prompt needs dspy, which is not installed: pip install dspy")

    stand_in._WorkflowWrapperModule = _WorkflowWrapperModule
    sys.modules[_WRAPPER] = stand_in
    return True


# ----- the response a workflow returned, through JSONL and the store --------------------
RESPONSE_TYPE_KEY = "response_type"  # trajectory metadata key: what `response` was, when not plain JSON


def response_to_json(response: Any) -> tuple[Any, str | None]:
    """(JSON of `response`, the name to rebuild it by, or None when it is plain JSON already)."""
    from agentscope.message import Msg
    from pydantic import BaseModel

    if isinstance(response, Msg):
        return response.to_dict(), "agentscope.message.Msg"
    if isinstance(response, BaseModel):
        return response.model_dump(mode="json"), f"{type(response).__module__}.{type(response).__qualname__}"
    return response, None


def response_from_json(data: Any, type_name: str | None) -> Any:
    """The inverse of response_to_json: a Msg comes back as a Msg; other types as their JSON."""
    if type_name == "agentscope.message.Msg" and isinstance(data, dict):
        from agentscope.message import Msg

        return Msg.from_dict(data)
    return data
