"""AgentJet's DashScope helpers, so that its tutorials' files import and run unchanged.

- `RobustDashScopeChatModel` (`ajet.utils.robust_dashscope`): AgentScope's DashScopeChatModel that
  retries a failed call (`max_try`, default 4) with another key: DASHSCOPE_API_KEY may hold several
  keys separated by '|', DASHSCOPE_API_KEY_BACKUP more for the middle attempt, as AgentJet's does. A
  missing key is reported at the first call, not at construction, so that a file making one at
  import time (its learn2ask tutorial) still imports where the model is not used.
- `create_external_llm_fn(alien_llm_model, alien_llm_response_length)`
  (`astuner.task_rollout.dashscope_llm_bridge`, ASTuner's path; `ajet.task_rollout...` later): a sync
  `fn(messages, sampling_params_override={}, request_id="") -> {"role", "content"}`. Under
  `judge score` it asks the auxiliary model of that name (`--auxiliary_models '{"NAME": SPEC}'`: a local
  checkpoint or an OpenAI-compatible endpoint); without one, DashScope itself as AgentJet does (network,
  DASHSCOPE_API_KEY). Neither: a RuntimeError naming both ways, recorded as that trajectory's error.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import random

logger = logging.getLogger("astuner.compat.dashscope")
_judge_models: dict = {}  # judge score's --auxiliary_models: name -> AgentScope chat model


def use_judge_models(models: dict) -> None:
    """The chat models create_external_llm_fn serves names from (judge score sets them)."""
    _judge_models.clear()
    _judge_models.update(models)


def _keys(variable: str) -> list[str]:
    return [k for k in os.environ.get(variable, "").split("|") if k]


def _missing_key_error() -> RuntimeError:
    return RuntimeError(
        "RobustDashScopeChatModel: set DASHSCOPE_API_KEY (several keys: 'sk-a|sk-b'; DASHSCOPE_API_KEY_BACKUP optional)"
    )


def _robust_class():
    from agentscope.model import DashScopeChatModel

    class RobustDashScopeChatModel(DashScopeChatModel):
        """DashScopeChatModel with retries and key rotation (AgentJet's ajet.utils.robust_dashscope)."""

        retry_delay_s = 5.0  # between attempts, as AgentJet waits

        def __init__(self, model_name="qwen3-max", stream=False, max_try=4, **kwargs):
            self.regular_key_list = _keys("DASHSCOPE_API_KEY")
            self.backup_key_list = _keys("DASHSCOPE_API_KEY_BACKUP")
            self.max_try = max_try
            first = random.choice(self.regular_key_list) if self.regular_key_list else ""
            super().__init__(api_key=first, model_name=model_name, stream=stream, **kwargs)

        def _key_for(self, attempt: int) -> str:
            if attempt < self.max_try // 2 or not self.backup_key_list:
                return random.choice(self.regular_key_list)
            if attempt == self.max_try // 2:
                return random.choice(self.backup_key_list)
            return random.choice(self.regular_key_list + self.backup_key_list)

        async def __call__(self, messages, tools=None, tool_choice=None, structured_model=None, **kwargs):
            if not self.regular_key_list:
                raise _missing_key_error()
            for attempt in range(self.max_try):
                self.api_key = self._key_for(attempt)
                try:
                    return await super().__call__(
                        messages=messages,
                        tools=tools,
                        tool_choice=tool_choice,
                        structured_model=structured_model,
                        **kwargs,
                    )
                except Exception as exc:  # noqa: BLE001 - any failure is retried, as AgentJet's is
                    logger.warning("DashScope call failed (%s), attempt %d of %d", exc, attempt + 1, self.max_try)
                    if attempt + 1 < self.max_try:
                        await asyncio.sleep(self.retry_delay_s)
            raise RuntimeError(f"Failed to get response from DashScope API after {self.max_try} attempts")

    RobustDashScopeChatModel.__module__ = "ajet.utils.robust_dashscope"
    return RobustDashScopeChatModel


_robust = None


def robust_dashscope_chat_model():
    """The class (built on first use: it subclasses AgentScope's model, which takes ~1 s to import)."""
    global _robust
    if _robust is None:
        _robust = _robust_class()
    return _robust


def _run(coroutine):
    """Run `coroutine` to its end from sync code, also when called inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _text(response) -> str:
    parts = []
    for block in getattr(response, "content", None) or []:
        text = block.get("text") if isinstance(block, dict) else getattr(block, "text", None)
        if text:
            parts.append(text)
    return "".join(parts)


def create_external_llm_fn(alien_llm_model, alien_llm_response_length):
    """ASTuner/AgentJet's LLM-as-judge helper: a sync chat function on model `alien_llm_model` (see above)."""

    def external_llm_chat_fn(messages, sampling_params_override={}, request_id=""):  # noqa: B006 - its signature
        model = _judge_models.get(alien_llm_model)
        kwargs = {}
        if model is None:
            if not _keys("DASHSCOPE_API_KEY"):
                raise RuntimeError(
                    f"external LLM {alien_llm_model!r}: no auxiliary model of that name and no DASHSCOPE_API_KEY; "
                    f"""give judge score --auxiliary_models '{{"{alien_llm_model}": CHECKPOINT or {{base_url, model}}}}'"""
                )
            model = robust_dashscope_chat_model()(alien_llm_model, stream=False)
            kwargs = {"max_tokens": alien_llm_response_length, "temperature": 0.0, **dict(sampling_params_override)}
        response = _run(model(list(messages), **kwargs))
        return {"role": "assistant", "content": _text(response)}

    return external_llm_chat_fn
