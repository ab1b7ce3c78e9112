"""LLM-as-judge: a prompt template over the task and the trajectory, answered by a model served
through the collect engines; the reply's last "Score: N" becomes the value N / max_score.

Template fields: every task field (e.g. {answer}), {main_query}, {response} (the final answer
or last completion), {transcript} (the trajectory's conversation), {status}, and every field of
the workflow's output metadata (e.g. {final_answer}). Missing fields render empty; write
literal braces as {{ and }}.
"""

from __future__ import annotations

import hashlib
import json
import re

from astuner.chat import text_of
from astuner.scores import Score

DEFAULT_TEMPLATE = """You are grading an AI agent's answer to a task.

Task: {main_query}
Reference answer: {answer}
Agent's final answer: {response}

Judge whether the agent's answer is correct and complete. Give a one-sentence reason, then
end with a line of the form "Score: N" where N is an integer from 0 (wrong) to 10 (correct)."""

_SCORE_RE = re.compile(r"score\s*[:=]\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)


class _Fields(dict):
    def __missing__(self, key):
        return ""


def transcript(traj: dict, limit: int = 6000) -> str:
    """The trajectory as plain text: the last call's messages plus its completion."""
    if not traj["calls"]:
        return ""
    last = traj["calls"][-1]
    lines = []
    for msg in last["messages"]:
        lines.append(f"[{msg.get('role')}] {text_of(msg.get('content'))}")
        for call in msg.get("tool_calls") or []:
            fn = call.get("function", {})
            lines.append(f"[tool call] {fn.get('name')}({fn.get('arguments')})")
    lines.append(f"[assistant] {last['completion_text'] or ''}")
    text = "\n".join(lines)
    return text if len(text) <= limit else "..." + text[-limit:]


class LLMJudge:
    """A batched judger; one engine for the whole scoring run."""

    def __init__(
        self,
        engine,
        template: str = DEFAULT_TEMPLATE,
        *,
        max_score: float = 10.0,
        max_tokens: int = 128,
        checkpoint_sha256: str = "",
    ):
        from astuner.engines import SamplingParams

        self.engine = engine
        self.template = template
        self.max_score = max_score
        self.sampling = SamplingParams(temperature=0.0, max_tokens=max_tokens)
        key = json.dumps([template, max_score, max_tokens, checkpoint_sha256])
        self.version = "llm-" + hashlib.sha256(key.encode()).hexdigest()[:12]

    def prompt(self, traj: dict) -> str:
        fields = _Fields({k: v for k, v in traj["metadata"].items()})
        fields.update(traj["task"])
        fields.update(
            main_query=traj["main_query"],
            response=traj["response"] if traj["response"] is not None else "",
            status=traj["status"],
            transcript=transcript(traj),
        )
        return self.template.format_map(fields)

    def parse(self, reply: str) -> Score:
        matches = _SCORE_RE.findall(reply)
        if not matches:
            return Score(None, explanation=reply, error="no 'Score: N' in the judge's reply")
        raw = float(matches[-1])
        if not 0 <= raw <= self.max_score:
            return Score(None, explanation=reply, error=f"score {raw:g} outside 0..{self.max_score:g}")
        return Score(raw / self.max_score, label=f"{raw:g}/{self.max_score:g}", explanation=reply)

    def __call__(self, trajectories, **_task_columns):
        from astuner.chat import render_prompts_ids

        results: list[Score | None] = [None] * len(trajectories)
        prompts, where = [], []
        for i, traj in enumerate(trajectories):
            try:
                text = self.prompt(traj)
            except (KeyError, IndexError, ValueError) as exc:
                results[i] = Score(None, error=f"template: {type(exc).__name__}: {exc}")
                continue
            prompts.append([{"role": "user", "content": text}])
            where.append(i)
        if prompts:
            ids = render_prompts_ids(self.engine.tokenizer, [(messages, None) for messages in prompts])
            for i, gen in zip(where, self.engine.generate_batch(ids, [self.sampling] * len(ids))):
                results[i] = self.parse(gen.text)
        return results
