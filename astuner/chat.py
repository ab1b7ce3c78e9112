"""Prompt rendering and tool-call parsing, shared by every engine and every stage.

`render_prompt_ids` is the one function that turns formatter messages + tool schemas into
the token ids an engine is fed; re-running it on a recorded call must give that call's
`prompt_token_ids` (judge checks this as `template_drift`).
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

# Hermes / Qwen style: <tool_call>{"name": ..., "arguments": {...}}</tool_call>
_TOOL_CALL_RE = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)


def text_of(content: Any) -> str:
    """Formatters disagree on content: str (DashScope), list of blocks (OpenAI), None or []
    for tool-only turns. Chat templates want one string."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, str):
                parts.append(block)
            elif isinstance(block, dict) and isinstance(block.get("text"), str):
                parts.append(block["text"])
        return "\n".join(parts)
    return str(content)


def _arguments_of(arguments: Any) -> Any:
    # OpenAI-style messages carry arguments as JSON text; HF chat templates expect an object.
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except json.JSONDecodeError:
            return arguments
    return arguments


def normalize_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Formatter output -> the message shape HF chat templates expect."""
    out = []
    for msg in messages:
        norm: dict[str, Any] = {"role": msg["role"], "content": text_of(msg.get("content"))}
        if msg.get("tool_calls"):
            norm["tool_calls"] = [
                {
                    "type": "function",
                    "function": {
                        "name": call["function"]["name"],
                        "arguments": _arguments_of(call["function"].get("arguments")),
                    },
                }
                for call in msg["tool_calls"]
            ]
        if msg["role"] == "tool" and msg.get("name"):
            norm["name"] = msg["name"]
        out.append(norm)
    return out


def render_prompt(tokenizer, messages: list[dict], tools: list[dict] | None) -> str:
    return tokenizer.apply_chat_template(
        normalize_messages(messages),
        tools=tools or None,
        add_generation_prompt=True,
        tokenize=False,
    )


def render_prompt_ids(tokenizer, messages: list[dict], tools: list[dict] | None) -> list[int]:
    return render_prompts_ids(tokenizer, [(messages, tools)])[0]


def render_prompts_ids(tokenizer, calls: list[tuple[list[dict], list[dict] | None]]) -> list[list[int]]:
    """Batched render_prompt_ids: one tokenizer call for many (messages, tools) pairs."""
    texts = [render_prompt(tokenizer, messages, tools) for messages, tools in calls]
    # The template already wrote every special token; adding BOS/EOS would change the prompt.
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def parse_tool_calls(text: str) -> tuple[str, list[dict[str, Any]]]:
    """Split a completion into its plain text and well-formed tool calls.

    Returns (text, calls) where calls are {"id", "name", "input"} dicts. A <tool_call> whose
    body is not a JSON object with a string "name" stays in the text: a malformed call is
    the model's mistake to learn from, not a reason to crash the run.
    """
    calls: list[dict[str, Any]] = []
    kept: list[str] = []
    last = 0
    for match in _TOOL_CALL_RE.finditer(text):
        try:
            body = json.loads(match.group(1).strip())
        except json.JSONDecodeError:
            continue
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            continue
        arguments = body.get("arguments", {})
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                continue
        if not isinstance(arguments, dict):
            continue
        kept.append(text[last : match.start()])
        last = match.end()
        calls.append({"id": f"call_{uuid.uuid4().hex[:12]}", "name": body["name"], "input": arguments})
    kept.append(text[last:])
    return "".join(kept).strip(), calls
