"""Drift measures that can be true: how far a workflow's calls are from one growing sequence.

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


def _history_kept(earlier: list[dict], later: list[dict]) -> bool:
    """`earlier`'s messages, normalized, are the first of `later`'s (compared pair by pair, up to the first change)."""
    if len(later) < len(earlier):
        return False
    return all(_message_key(a) == _message_key(b) for a, b in zip(earlier, later))


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
    elif not _history_kept(previous["messages"], current["messages"]):
        cause = "history_edited"
    elif at < len(previous["prompt_token_ids"]):
        cause = "prompt_rerendered"
    elif "<think>" in (previous.get("completion_text") or "") or "</think>" in (previous.get("completion_text") or ""):
        cause = "thinking_stripped"
    else:
        cause = "completion_rerendered"
    return False, at, cause


# apply_chat_template's own parameters that change how it tokenizes: a call whose template_kwargs
# carry one of them is re-rendered the per-call way (tokenize=True), so its value stays what it was.
_TOKENIZE_PARAMS = frozenset(
    {
        "tokenize",
        "padding",
        "truncation",
        "max_length",
        "return_tensors",
        "return_dict",
        "return_assistant_tokens_mask",
        "tokenizer_kwargs",
        "sanitize_control_tokens",
    }
)


def _reply_of(tokenizer, completion: list[int], family: str, strip_tokens: list[str]) -> dict[str, Any]:
    """The assistant message a trainer re-rendering from text would write for the sampled completion."""
    from astuner.chat import parse_completion

    parsed = parse_completion(tokenizer.decode(completion, skip_special_tokens=False), family, strip_tokens)
    reply: dict[str, Any] = {"role": "assistant", "content": parsed.text}
    if parsed.calls:
        reply["tool_calls"] = [
            {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["input"]}}
            for c in parsed.calls
        ]
    if parsed.reasoning:
        reply["reasoning_content"] = parsed.reasoning
    return reply


def rerender_drift_tokens(tokenizer, call: dict[str, Any], family: str | None = None) -> int:
    """How many of the call's prompt + sampled completion ids a re-render of its messages + parsed reply
    through the chat template would not reproduce (0: a trainer re-rendering the text trains on what was sampled)."""
    return rerender_drift_tokens_batch(tokenizer, [call], family)[0]


def rerender_drift_tokens_batch(
    tokenizer, calls: list[dict[str, Any]], family: str | None = None, strip_tokens: list[str] | None = None
) -> list[int]:
    """rerender_drift_tokens of many calls of one tokenizer: the texts are rendered one by one (each call has
    its own tools and template variables) and tokenized in one batch, and the diff is skipped where the
    re-render starts with the sampled ids. Values are the per-call ones, token for token:
    apply_chat_template(tokenize=True) is this same render + tokenizer(text, add_special_tokens=False)."""
    from astuner.chat import detect_family, normalize_messages, special_tokens_of

    family = family or detect_family(tokenizer)
    strip_tokens = special_tokens_of(tokenizer) if strip_tokens is None else strip_tokens
    sampled = [list(c["prompt_token_ids"]) + list(c["completion_token_ids"]) for c in calls]
    again: list[list[int] | None] = [None] * len(calls)  # None: the template refused this call's history
    texts: dict[int, str] = {}
    for n, call in enumerate(calls):
        reply = _reply_of(tokenizer, list(call["completion_token_ids"]), family, strip_tokens)
        try:  # as wide as the per-call path's was: messages it cannot normalize count as a refusal too
            conversation = normalize_messages(list(call["messages"]) + [reply])
            kwargs = call.get("template_kwargs") or {}
            if _TOKENIZE_PARAMS.intersection(kwargs):
                again[n] = list(
                    tokenizer.apply_chat_template(
                        conversation, tools=call.get("tools") or None, tokenize=True, return_dict=False, **kwargs
                    )
                )
            else:
                texts[n] = tokenizer.apply_chat_template(
                    conversation, tools=call.get("tools") or None, tokenize=False, return_dict=False, **kwargs
                )
        except Exception:  # the template refuses the re-rendered history: nothing of it is reproduced
            pass
    if texts:
        try:
            # the arguments apply_chat_template(tokenize=True) tokenizes with
            ids = tokenizer(list(texts.values()), add_special_tokens=False, padding=False, truncation=False)[
                "input_ids"
            ]
        except Exception:  # one text the tokenizer refuses: find it, as the per-call path would
            ids = []
            for text in texts.values():
                try:
                    ids.append(tokenizer(text, add_special_tokens=False, padding=False, truncation=False)["input_ids"])
                except Exception:
                    ids.append(None)
        for n, row in zip(texts, ids):
            again[n] = list(row) if row is not None else None
    return [len(s) if a is None else len(s) - matched_tokens(a, s) for a, s in zip(again, sampled)]


def matched_tokens(a: list[int], b: list[int]) -> int:
    """How many tokens difflib's matching blocks of a and b cover (autojunk off: every id counts, however common)."""
    # The common case: the re-render reproduces the sampled ids, often plus the template's end of turn
    # ("<|im_end|>" sampled, "<|im_end|>\n" rendered). One side a prefix of the other is a block as long as the
    # shorter side: difflib's first block, and nothing is left beside it on the shorter side.
    if b == a[: len(b)]:
        return len(b)
    if a == b[: len(a)]:
        return len(a)
    return sum(block.size for block in difflib.SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks())
