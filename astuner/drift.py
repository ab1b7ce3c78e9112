"""Drift measures that can be true (issue 15): how far a workflow's calls are from one growing sequence.

extension      Does a call's prompt extend the same agent's previous prompt + sampled completion,
               token for token? If not: the first diverging position and a cause category. Where it
               holds, calls can be merged into one training sequence; where not, each call stays its
               own sequence (what finetune does, always correct).
re-render      How many of a call's prompt + sampled tokens a re-render of the conversation from text
               (messages + the parsed reply, through the chat template: what a trainer that rebuilds
               history does) would not reproduce.

Both are computed by `judge ingest` (calls.extends_previous, divergence_at, divergence_cause,
rerender_drift_tokens) and described in docs/model-families.md. The old `template_drift` compares a
re-render of the recorded messages with the ids collect rendered from those same messages, so it
can only flag a changed template, never the workflow.
"""

from __future__ import annotations

import difflib
import json
from typing import Any

CAUSES = {
    "tools_changed": "the tool schemas differ from the previous call's (ReActAgent drops them for its summary call)",
    "history_edited": "the previous call's messages are not a prefix of this call's (a message was removed or changed, "
                      "e.g. ReActAgent's <system-hint>)",
    "prompt_rerendered": "same messages, but the template renders the earlier prompt differently (Mistral moves the "
                         "system message and tools to the last user turn)",
    "thinking_stripped": "the template drops the previous turn's <think> block",
    "completion_rerendered": "the template writes the previous reply differently from the sampled ids (JSON spacing, "
                             "BPE re-tokenization, a dropped control token)",
}


def first_divergence(a: list[int], b: list[int]) -> int:
    """The first index where `a` and `b` differ (the shorter length when one is a prefix of the other)."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _message_key(message: dict) -> str:
    from astuner.chat import normalize_messages

    return json.dumps(normalize_messages([message])[0], sort_keys=True, default=str)


def extension(previous: dict[str, Any], current: dict[str, Any]) -> tuple[bool, int | None, str | None]:
    """(extends, first diverging position in current's prompt, cause) of two calls of one agent.

    Each call is a dict with prompt_token_ids, completion_token_ids, messages, tools, completion_text.
    """
    head = list(previous["prompt_token_ids"]) + list(previous["completion_token_ids"])
    prompt = list(current["prompt_token_ids"])
    at = first_divergence(head, prompt)
    if at == len(head):
        return True, None, None
    if (previous.get("tools") or None) != (current.get("tools") or None):
        cause = "tools_changed"
    elif [_message_key(m) for m in previous["messages"]] != [_message_key(m) for m in current["messages"][: len(previous["messages"])]]:
        cause = "history_edited"
    elif at < len(previous["prompt_token_ids"]):
        cause = "prompt_rerendered"
    elif "<think>" in (previous.get("completion_text") or "") or "</think>" in (previous.get("completion_text") or ""):
        cause = "thinking_stripped"
    else:
        cause = "completion_rerendered"
    return False, at, cause


def rerender_drift_tokens(tokenizer, call: dict[str, Any], family: str | None = None) -> int:
    """How many of the call's prompt + sampled completion ids a re-render of its messages + parsed reply
    through the chat template would not reproduce (0: a trainer re-rendering the text trains on what was sampled)."""
    from astuner.chat import detect_family, normalize_messages, parse_completion, special_tokens_of

    family = family or detect_family(tokenizer)
    completion = list(call["completion_token_ids"])
    parsed = parse_completion(tokenizer.decode(completion, skip_special_tokens=False), family, special_tokens_of(tokenizer))
    reply: dict[str, Any] = {"role": "assistant", "content": parsed.text}
    if parsed.calls:
        reply["tool_calls"] = [{"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["input"]}}
                               for c in parsed.calls]
    if parsed.reasoning:
        reply["reasoning_content"] = parsed.reasoning
    sampled = list(call["prompt_token_ids"]) + completion
    try:
        again = tokenizer.apply_chat_template(normalize_messages(list(call["messages"]) + [reply]), tools=call.get("tools") or None,
                                              tokenize=True, return_dict=False, **(call.get("template_kwargs") or {}))
        again = list(again)
    except Exception:  # the template refuses the re-rendered history: nothing of it is reproduced
        return len(sampled)
    matcher = difflib.SequenceMatcher(None, again, sampled, autojunk=False)
    return len(sampled) - sum(block.size for block in matcher.get_matching_blocks())
