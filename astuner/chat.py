"""Prompt rendering and tool-call parsing, shared by every engine and every stage.

`render_prompt_ids` is the one function that turns formatter messages + tool schemas into
the token ids an engine is fed; re-running it on a recorded call must give that call's
`prompt_token_ids` (judge checks this as `template_drift`).

`parse_completion` splits a sampled completion into text, reasoning and tool calls in the
format of the checkpoint's model family (`detect_family` reads it from the chat template):
see docs/model-families.md. transformers 5's `tokenizer.parse_response` (with TRL's response
templates) was the first choice, but it fails the whole response on one malformed call (ours
keeps that call as text and parses the rest), TRL's Llama template misses `<|python_tag|>` /
`<|eom_id|>` and there is none for Mistral; the tests use it as an oracle on well-formed turns.
"""

from __future__ import annotations

import json
import re
import secrets
import string
import uuid
from dataclasses import dataclass, field
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
                    # the id the model wrote (Mistral's template requires it, 9 alphanumerics)
                    **({"id": call["id"]} if call.get("id") else {}),
                    "type": "function",
                    "function": {
                        "name": call["function"]["name"],
                        "arguments": _arguments_of(call["function"].get("arguments")),
                    },
                }
                for call in msg["tool_calls"]
            ]
        if msg.get("reasoning_content"):
            norm["reasoning_content"] = msg["reasoning_content"]
        if msg["role"] == "tool" and msg.get("name"):
            norm["name"] = msg["name"]
        if msg["role"] == "tool" and msg.get("tool_call_id"):
            norm["tool_call_id"] = msg["tool_call_id"]
        out.append(norm)
    return out


def template_kwargs_for(tokenizer, template_kwargs: dict | None = None) -> dict:
    """The extra template variables of a call, completed so that a re-render gives the same prompt.

    Templates that render today's date (Llama 3.x: `Today Date: ` via strftime_now) get a fixed
    `date_string` (today's, unless given): recorded with the call, the same conversation renders
    the same on any later day.
    """
    kwargs = dict(template_kwargs or {})
    template = (
        tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else json.dumps(tokenizer.chat_template)
    )
    if "date_string" not in kwargs and "strftime_now" in (template or ""):
        import datetime

        kwargs["date_string"] = datetime.date.today().strftime("%d %b %Y")
    return kwargs


def render_prompt(
    tokenizer, messages: list[dict], tools: list[dict] | None, template_kwargs: dict | None = None
) -> str:
    return tokenizer.apply_chat_template(
        normalize_messages(messages),
        tools=tools or None,
        add_generation_prompt=True,
        tokenize=False,
        **(template_kwargs or {}),
    )


def render_prompt_ids(
    tokenizer, messages: list[dict], tools: list[dict] | None, template_kwargs: dict | None = None
) -> list[int]:
    return render_prompts_ids(tokenizer, [(messages, tools)], template_kwargs)[0]


def render_prompts_ids(tokenizer, calls: list[tuple], template_kwargs: dict | None = None) -> list[list[int]]:
    """Batched render_prompt_ids: one tokenizer call for many (messages, tools[, template_kwargs]) tuples."""
    texts = [
        render_prompt(tokenizer, call[0], call[1], call[2] if len(call) > 2 else template_kwargs) for call in calls
    ]
    # The template already wrote every special token; adding BOS/EOS would change the prompt.
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


# ----- model families: how a completion writes tool calls and reasoning ------------------------
FAMILIES = ("hermes", "qwen3", "llama3", "mistral")
FAMILY_CHOICES = ("auto",) + FAMILIES

_HERMES_RE = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)
# Llama 3.x writes a bare JSON object, optionally after <|python_tag|>, calls separated by ";".
_LLAMA_START_RE = re.compile(r'(?:<\|python_tag\|>\s*)?\{\s*"name"\s*:')
_MISTRAL_MARK = "[TOOL_CALLS]"
_ALNUM = string.ascii_letters + string.digits


def detect_family(tokenizer) -> str:
    """The tool-call format of a checkpoint, read from its chat template (the format the model was
    trained to write); a template with none of the markers gets today's Hermes <tool_call> parser."""
    template = tokenizer.chat_template or ""
    if isinstance(template, dict):
        template = template.get("tool_use") or template.get("default") or ""
    if _MISTRAL_MARK in template:
        return "mistral"
    if "<|start_header_id|>" in template or "<|python_tag|>" in template:
        return "llama3"
    if "<think>" in template:
        return "qwen3"
    return "hermes"


def special_tokens_of(tokenizer) -> list[str]:
    """Every token decode(skip_special_tokens=True) drops (end of turn, padding, control tokens)."""
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    tokens = [t.content for t in decoder.values() if getattr(t, "special", False)]
    return tokens or list(getattr(tokenizer, "all_special_tokens", ()))


def new_tool_call_id(family: str) -> str:
    """An id for a call the model wrote without one, in the family's rules."""
    if family == "mistral":  # its template raises unless ids are 9 alphanumerics
        return "".join(secrets.choice(_ALNUM) for _ in range(9))
    return f"call_{uuid.uuid4().hex[:12]}"


@dataclass
class ParsedCompletion:
    text: str
    calls: list[dict[str, Any]] = field(default_factory=list)  # {"id", "name", "input"}
    reasoning: str | None = None


def _call_of(body: Any, family: str, arg_keys=("arguments",)) -> dict[str, Any] | None:
    """A well-formed call ({"id", "name", "input"}) from a decoded JSON body, else None."""
    if not isinstance(body, dict) or not isinstance(body.get("name"), str):
        return None
    key = next((k for k in arg_keys if k in body), None)
    arguments = body.get(key, {}) if key else {}
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return None
    if not isinstance(arguments, dict):
        return None
    call_id = body.get("id")
    if family == "mistral" and not (isinstance(call_id, str) and len(call_id) == 9 and call_id.isalnum()):
        call_id = None
    if family != "mistral":
        call_id = None  # the other formats carry no id: every call gets a fresh one
    return {"id": call_id or new_tool_call_id(family), "name": body["name"], "input": arguments}


def _parse_hermes(text: str, family: str) -> tuple[str, list[dict[str, Any]]]:
    calls, kept, last = [], [], 0
    for match in _HERMES_RE.finditer(text):
        try:
            call = _call_of(json.loads(match.group(1).strip()), family)
        except json.JSONDecodeError:
            call = None
        if call is None:
            continue
        kept.append(text[last : match.start()])
        last = match.end()
        calls.append(call)
    kept.append(text[last:])
    return "".join(kept), calls


def _parse_llama3(text: str, family: str) -> tuple[str, list[dict[str, Any]]]:
    decoder = json.JSONDecoder()
    calls, kept, last, pos = [], [], 0, 0
    while (match := _LLAMA_START_RE.search(text, pos)) is not None:
        brace = text.index("{", match.start())
        try:
            body, end = decoder.raw_decode(text, brace)
        except json.JSONDecodeError:
            pos = match.end()
            continue
        call = _call_of(body, family, arg_keys=("parameters", "arguments"))
        if call is None:
            pos = end
            continue
        kept.append(text[last : match.start()])
        while end < len(text) and text[end] in "; \n":  # the separator between calls
            end += 1
        last = pos = end
        calls.append(call)
    kept.append(text[last:])
    return "".join(kept), calls


def _parse_mistral(text: str, family: str) -> tuple[str, list[dict[str, Any]]]:
    at = text.find(_MISTRAL_MARK)
    if at < 0:
        return text, []
    start = at + len(_MISTRAL_MARK)
    try:
        body, end = json.JSONDecoder().raw_decode(text, start + len(text[start:]) - len(text[start:].lstrip()))
    except json.JSONDecodeError:
        return text, []
    bodies = body if isinstance(body, list) else [body]
    calls = [_call_of(b, family) for b in bodies]
    if not calls or any(c is None for c in calls):  # one malformed call: the whole block stays text
        return text, []
    return text[:at] + text[end:], calls


def _split_thinking(text: str) -> tuple[str | None, str]:
    """Qwen3: the completion opens with <think>…</think> (the template's generation prompt stops
    before it). An unclosed <think> (max_tokens hit) stays text."""
    end = text.find("</think>")
    if end < 0:
        return None, text
    head = text[:end]
    start = head.find("<think>")
    if head[: max(start, 0)].strip():
        return None, text  # text before <think>: not the reasoning preamble
    reasoning = head[start + len("<think>") :] if start >= 0 else head
    return reasoning.strip("\n"), text[end + len("</think>") :].lstrip("\n")


def parse_completion(
    text: str, family: str = "hermes", strip_tokens: list[str] | tuple[str, ...] = ()
) -> ParsedCompletion:
    """Split a completion, decoded with its control tokens kept, into text, reasoning and tool calls.

    A malformed call stays in the text: it is the model's mistake to learn from, not a reason to
    crash the run. `strip_tokens` (the tokenizer's special tokens: end of turn, padding) are
    removed from the text that is left, as the old skip_special_tokens decoding did.
    """
    if family not in FAMILIES:
        raise ValueError(f"tool-call format {family!r}: choose one of {', '.join(FAMILY_CHOICES)}")
    reasoning = None
    if family == "qwen3":
        reasoning, text = _split_thinking(text)
    parser = {"hermes": _parse_hermes, "qwen3": _parse_hermes, "llama3": _parse_llama3, "mistral": _parse_mistral}[
        family
    ]
    text, calls = parser(text, family)
    for token in sorted(set(strip_tokens), key=len, reverse=True):
        if token:
            text = text.replace(token, "")
    return ParsedCompletion(text=text.strip(), calls=calls, reasoning=reasoning)


def parse_tool_calls(text: str, family: str = "hermes") -> tuple[str, list[dict[str, Any]]]:
    """(text, calls) of `text` in `family`'s format; see parse_completion."""
    parsed = parse_completion(text, family)
    return parsed.text, parsed.calls
