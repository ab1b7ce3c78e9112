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
_TOKENIZE_PARAMS = frozenset({"tokenize", "padding", "truncation", "max_length", "return_tensors", "return_dict",
                              "return_assistant_tokens_mask", "tokenizer_kwargs", "sanitize_control_tokens"})


def _reply_of(tokenizer, completion: list[int], family: str, strip_tokens: list[str]) -> dict[str, Any]:
    """The assistant message a trainer re-rendering from text would write for the sampled completion."""
    from astuner.chat import parse_completion

    parsed = parse_completion(tokenizer.decode(completion, skip_special_tokens=False), family, strip_tokens)
    reply: dict[str, Any] = {"role": "assistant", "content": parsed.text}
    if parsed.calls:
        reply["tool_calls"] = [{"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["input"]}}
                               for c in parsed.calls]
    if parsed.reasoning:
        reply["reasoning_content"] = parsed.reasoning
    return reply


def rerender_drift_tokens(tokenizer, call: dict[str, Any], family: str | None = None) -> int:
    """How many of the call's prompt + sampled completion ids a re-render of its messages + parsed reply
    through the chat template would not reproduce (0: a trainer re-rendering the text trains on what was sampled)."""
    return rerender_drift_tokens_batch(tokenizer, [call], family)[0]


def rerender_drift_tokens_batch(tokenizer, calls: list[dict[str, Any]], family: str | None = None,
                                strip_tokens: list[str] | None = None) -> list[int]:
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
                again[n] = list(tokenizer.apply_chat_template(conversation, tools=call.get("tools") or None, tokenize=True,
                                                              return_dict=False, **kwargs))
            else:
                texts[n] = tokenizer.apply_chat_template(conversation, tools=call.get("tools") or None, tokenize=False,
                                                         return_dict=False, **kwargs)
        except Exception:  # the template refuses the re-rendered history: nothing of it is reproduced
            pass
    if texts:
        try:
            # the arguments apply_chat_template(tokenize=True) tokenizes with
            ids = tokenizer(list(texts.values()), add_special_tokens=False, padding=False, truncation=False)["input_ids"]
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


# Above this many equal (i, j) pairs the arrays of matched_tokens would pass ~100 MB (about six int64 values
# a pair): difflib instead (the same value, in O(len) memory, slowly).
MAX_PAIRS = 2_000_000


def matched_tokens(a: list[int], b: list[int]) -> int:
    """sum(block.size for block in difflib.SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks()),
    computed on arrays: the same value, several times faster.

    difflib takes the longest matching block of the whole range (ties: smallest i, then smallest j) and
    recurses on the ranges left and right of it. A matching block inside a range is a diagonal run of equal
    tokens (a[i + t] == b[i + d + t]) clipped to that range, so all maximal runs are found once, and each
    range's longest block is an argmax over the clipped runs that intersect it.
    """
    # The common case: the re-render reproduces the sampled ids, often plus the template's end of turn
    # ("<|im_end|>" sampled, "<|im_end|>\n" rendered). One side a prefix of the other is a block as long as the
    # shorter side: difflib's first block, and nothing is left beside it on the shorter side.
    if b == a[: len(b)]:
        return len(b)
    if a == b[: len(a)]:
        return len(a)
    import numpy as np

    try:
        a_ids, b_ids = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):  # not plain ids (a NULL in a list): difflib compares anything
        return _difflib_matched(a, b)
    runs = _diagonal_runs(a_ids, b_ids)
    if runs is None:  # long sequences of common tokens: too many pairs to hold
        block = _longest_block_by_anchors(a_ids, b_ids)
        if block is None:
            return _difflib_matched(a, b)
        # difflib's recursion on a range depends only on the tokens in it: the two sides are sub-problems
        i, j, size = block
        return size + matched_tokens(a[:i], b[:j]) + matched_tokens(a[i + size:], b[j + size:])
    total = 0
    stack = [(0, len(a), 0, len(b), *runs)]
    while stack:
        alo, ahi, blo, bhi, start, diag, end = stack.pop()
        if len(start) <= _FEW_RUNS:  # past here numpy's per-call cost outweighs its speed per run
            total += _matched_in_range(alo, ahi, blo, bhi, list(zip(start.tolist(), diag.tolist(), end.tolist())))
            continue
        lo = np.maximum(np.maximum(start, alo), blo - diag)  # the run clipped to the range, in a's positions
        k = np.minimum(np.minimum(end, ahi), bhi - diag) - lo
        inside = k > 0
        if not inside.any():
            continue
        start, diag, end, lo, k = start[inside], diag[inside], end[inside], lo[inside], k[inside]
        size = int(k.max())
        best = np.flatnonzero(k == size)
        if len(best) > 1:  # difflib's tie-break: the smallest i, then the smallest j
            best = best[np.lexsort((lo[best] + diag[best], lo[best]))]
        i = int(lo[best[0]])
        j = i + int(diag[best[0]])
        total += size
        # A run in both the left and the right range would be longer than this block inside this range:
        # each run of `inside` goes to at most one side.
        if alo < i and blo < j:
            stack.append((alo, i, blo, j, start, diag, end))
        if i + size < ahi and j + size < bhi:
            stack.append((i + size, ahi, j + size, bhi, start, diag, end))
    return total


_FEW_RUNS = 128
_MAX_ANCHOR_PAIRS = 20_000


def _difflib_matched(a, b) -> int:
    return sum(block.size for block in difflib.SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks())


def _longest_block_by_anchors(a, b) -> tuple[int, int, int] | None:
    """difflib's first block (longest; ties: smallest i, then j) of two arrays too long to pair every token,
    when they share a prefix or suffix of L tokens (a drifted re-render does): the block is at least L long,
    so it covers one of a's positions 0, L, 2L, ...; only those positions are paired with b and extended.
    None where the pairs would still be too many."""
    import numpy as np

    n, m = len(a), len(b)
    shorter = min(n, m)
    differ = np.flatnonzero(a[:shorter] != b[:shorter])
    prefix = int(differ[0]) if len(differ) else shorter
    differ = np.flatnonzero(a[n - shorter:][::-1] != b[m - shorter:][::-1])
    step = max(prefix, int(differ[0]) if len(differ) else shorter)
    if step < 1:
        return None
    anchors = np.arange(0, n, step)
    order = np.argsort(b, kind="stable")  # b's positions of each token, ascending
    sorted_b = b[order]
    lo = np.searchsorted(sorted_b, a[anchors], "left")
    hi = np.searchsorted(sorted_b, a[anchors], "right")
    if int((hi - lo).sum()) > _MAX_ANCHOR_PAIRS:
        return None
    best = (0, 0, 0)  # (i, j, size)
    for i, first, last in zip(anchors.tolist(), lo.tolist(), hi.tolist()):
        for j in order[first:last].tolist():
            back = _equal_run(a[:i][::-1], b[:j][::-1])
            size = back + _equal_run(a[i:], b[j:])
            start_i, start_j = i - back, j - back
            if size > best[2] or (size == best[2] and (start_i, start_j) < best[:2]):
                best = (start_i, start_j, size)
    return best


def _equal_run(x, y) -> int:
    """How many leading elements of arrays x and y are equal (a short look first: most pairs differ soon)."""
    import numpy as np

    limit = min(len(x), len(y))
    for width in (16, limit):
        width = min(width, limit)
        differ = np.flatnonzero(x[:width] != y[:width])
        if len(differ):
            return int(differ[0])
        if width == limit:
            break
    return limit


def _matched_in_range(alo: int, ahi: int, blo: int, bhi: int, runs: list[tuple[int, int, int]]) -> int:
    """matched_tokens' recursion in plain Python, for ranges holding few runs (start, diagonal, end)."""
    total = 0
    stack = [(alo, ahi, blo, bhi, runs)]
    while stack:
        alo, ahi, blo, bhi, runs = stack.pop()
        size = i = j = 0
        inside = []
        for run in runs:
            start, diag, end = run
            # max() / min() spelled out: this loop is the hot one
            lo = start if start > alo else alo
            if blo - diag > lo:
                lo = blo - diag
            hi = end if end < ahi else ahi
            if bhi - diag < hi:
                hi = bhi - diag
            k = hi - lo
            if k <= 0:
                continue
            inside.append(run)
            if k > size or (k == size and (lo < i or (lo == i and lo + diag < j))):
                size, i, j = k, lo, lo + diag
        if not size:
            continue
        total += size
        if alo < i and blo < j:
            stack.append((alo, i, blo, j, inside))
        if i + size < ahi and j + size < bhi:
            stack.append((i + size, ahi, j + size, bhi, inside))
    return total


def _diagonal_runs(a, b):
    """(start in a, diagonal j - i, end in a) of every maximal run of equal tokens, or None past MAX_PAIRS pairs."""
    import numpy as np

    n, m = len(a), len(b)
    order = np.argsort(b, kind="stable")
    sorted_b = b[order]
    lo = np.searchsorted(sorted_b, a, "left")
    count = np.searchsorted(sorted_b, a, "right") - lo
    pairs = int(count.sum())
    if pairs > MAX_PAIRS:
        return None
    empty = np.zeros(0, dtype=np.int64)
    if not pairs:
        return empty, empty, empty
    # every (i, j) with a[i] == b[j], by i then j
    i = np.repeat(np.arange(n, dtype=np.int64), count)
    j = order[np.arange(pairs) - np.repeat(np.cumsum(count) - count - lo, count)]
    diag = j - i + (n - 1)  # >= 0
    # by diagonal, then i (a stable sort keeps i's order); 16-bit keys sort in linear time
    by_diag = np.argsort(diag.astype(np.uint16) if n + m < 65536 else diag, kind="stable")
    i, diag = i[by_diag], diag[by_diag]
    new_run = np.ones(pairs, dtype=bool)
    new_run[1:] = (diag[1:] != diag[:-1]) | (i[1:] != i[:-1] + 1)
    firsts = np.flatnonzero(new_run)
    lengths = np.diff(np.append(firsts, pairs))
    return i[firsts], diag[firsts] - (n - 1), i[firsts] + lengths
