"""Warm-up for the tool-use example: teach the tiny model the FORMAT of a tool-using episode,
not the answers.

    HF_HUB_OFFLINE=1 python examples/learn_tool_use/warmup.py --out runs/tool/warmup

The embedded tiny model is random-init. This script drives the example's own ReActAgent with a
scripted model to get the exact messages collect would send (the empty system turn, the question,
the tool call, the tool's result), renders them with astuner.chat.render_prompt_ids, and trains
on whole two-call episodes: call 1 `<tool_call>{"name": "code", "arguments": {"key": R}}</tool_call>`,
the tool's reply V, call 2 the answer W, where R is a random digit and V and W are random code
letters (workflow.CODES), all three independent and drawn afresh at every step. The loss is on
the two completions only. So the model learns to call `code` with some digit, then to answer
with some code letter and stop, but neither depends on the question or on the tool's reply:
iteration 0 of the loop starts near chance, and using the question's key and the tool's result
is learned from rewards alone.

The call-1 completion is exactly the tokens the template re-renders for that turn in call 2's
prompt, so successive calls of a collected episode extend each other and finetune merges them
into one sequence. Written to OUT.partial, then renamed. Same seed, same checkpoint.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from warmup_lib import parse_args, read_tasks, warm_up  # noqa: E402
from workflow import CODES, make_agent, make_toolkit  # noqa: E402  (the workflow's own agent and code alphabet)

DIGITS = [str(d) for d in range(10)]


async def agent_calls(question: str, key: int, code: int) -> list[tuple[list[dict], list[dict]]]:
    """(messages, tools) of both calls of one episode, as the workflow's agent sends them."""
    from agentscope.message import Msg, TextBlock, ToolUseBlock
    from agentscope.model import ChatModelBase, ChatResponse

    class Scripted(ChatModelBase):
        def __init__(self):
            super().__init__(model_name="warmup-script", stream=False)
            self.calls, self.script = (
                [],
                [
                    [ToolUseBlock(type="tool_use", id="warmup", name="code", input={"key": key})],
                    [TextBlock(type="text", text="0")],
                ],
            )

        async def __call__(self, messages, tools=None, tool_choice=None, **kwargs):
            self.calls.append((messages, tools))
            return ChatResponse(content=self.script.pop(0))

    model = Scripted()
    await make_agent(model, make_toolkit({str(key): CODES[code]}, [])).reply(Msg("user", question, role="user"))
    return model.calls


class Episodes:
    """Token pieces of an episode: prompt(question) + call1(key) + gap(code) + answer + <|im_end|>.

    The pieces after the question do not depend on it, so they are rendered once per digit and
    checked against full renders of other questions."""

    def __init__(self, tokenizer, questions: list[str]):
        from astuner.chat import render_prompt_ids

        self.end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.digit_ids = [tokenizer(d, add_special_tokens=False)["input_ids"] for d in DIGITS]
        self.code_ids = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in CODES]
        assert all(len(ids) == 1 for ids in self.digit_ids + self.code_ids), "each digit and code must be one token"
        self.prompts, self.call1, self.gap = [], {}, {}
        for question in questions:
            (m1, t1), _ = asyncio.run(agent_calls(question, 0, 0))
            self.prompts.append(render_prompt_ids(tokenizer, m1, t1))
        (m1, t1), _ = asyncio.run(agent_calls(questions[0], 0, 0))
        base = render_prompt_ids(tokenizer, m1, t1)
        for d in range(10):
            (_, _), (m2, t2) = asyncio.run(agent_calls(questions[0], d, d))
            rest = render_prompt_ids(tokenizer, m2, t2)[len(base) :]
            cut = rest.index(self.end_id) + 1  # call 1's completion ends with <|im_end|>, as the engine samples it
            self.call1[d], self.gap[d] = rest[:cut], rest[cut:]
        self.check(tokenizer, questions)

    def check(self, tokenizer, questions: list[str]) -> None:
        """The pieces joined equal call 2's full render, for every question and some digit pairs."""
        from astuner.chat import render_prompt_ids

        for i, question in enumerate(questions):
            key, code = i % 10, (3 * i + 1) % 10
            (_, _), (m2, t2) = asyncio.run(agent_calls(question, key, code))
            joined = self.prompts[i] + self.call1[key] + self._gap(key, code)
            assert render_prompt_ids(tokenizer, m2, t2) == joined, (
                f"episode pieces do not match the render of {question!r}"
            )

    def _gap(self, key: int, code: int) -> list[int]:
        # the gap rendered with code CODES[key]: swap that code (one token) for CODES[code]'s
        gap = list(self.gap[key])
        gap[gap.index(self.code_ids[key][0])] = self.code_ids[code][0]
        return gap

    def sample(self, rng) -> tuple[list[int], list[int]]:
        prompt = rng.choice(self.prompts)
        key, code, answer = rng.randrange(10), rng.randrange(10), rng.randrange(10)
        call1, gap, call2 = self.call1[key], self._gap(key, code), self.code_ids[answer] + [self.end_id]
        ids = prompt + call1 + gap + call2
        mask = [0] * len(prompt) + [1] * len(call1) + [0] * len(gap) + [1] * len(call2)
        return ids, mask


def main(argv=None) -> None:
    args = parse_args(
        argv,
        doc=__doc__,
        tasks=HERE / "tasks.jsonl",
        steps=200,
        batch_size=32,
        batch_help="random episodes per step",
        seed_help="seeds torch and the random digits",
    )
    warm_up(args, lambda tokenizer: Episodes(tokenizer, [task["question"] for task in read_tasks(args.tasks)]).sample)


if __name__ == "__main__":
    main()
