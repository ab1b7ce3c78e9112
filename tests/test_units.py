"""The tiny model, prompt rendering, tool-call parsing, the engine, tasks and the record."""

import asyncio
import json

import pytest

from astuner.chat import normalize_messages, parse_tool_calls, render_prompt, render_prompt_ids
from astuner.engines import SamplingParams
from astuner.tasks import TaskFormatError, load_tasks
from astuner.trajectory import SCHEMA_VERSION, TraceFormatError, read_trajectories

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "add",
            "description": "Add.",
            "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}},
        },
    }
]


def test_tiny_tokenizer_matches_tokenizer_json(tiny_model, tokenizer):
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(tiny_model / "tokenizer.json"))
    text = 'Hi  there!\n\tdef f(x): return x+1 <tool_call>\n{"name": "f"}\n</tool_call> ünï 中文 12345'
    assert tokenizer(text, add_special_tokens=False)["input_ids"] == raw.encode(text, add_special_tokens=False).ids
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"], skip_special_tokens=True) == text


def test_template_renders_tools_and_marks_generation(tokenizer):
    text = render_prompt(tokenizer, [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}], TOOLS)
    assert text.startswith("<|im_start|>system\nS\n\n# Tools") and '"name": "add"' in text
    assert text.endswith("<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n")
    enc = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}],
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    masked = [t for t, m in zip(enc["input_ids"], enc["assistant_masks"]) if m]
    assert tokenizer.decode(masked) == "A<|im_end|>\n"


def test_formatter_shapes_render_identically(tokenizer):
    call = {"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1}'}}
    dashscope = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [], "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "2", "name": "add"},
    ]
    openai = [
        {"role": "user", "name": "user", "content": [{"type": "text", "text": "hi"}]},
        {"role": "assistant", "name": "F", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "2", "name": "add"},
    ]
    assert normalize_messages(dashscope) == normalize_messages(openai)
    text = render_prompt(tokenizer, dashscope, TOOLS)
    assert '<tool_call>\n{"name": "add", "arguments": {"a": 1}}\n</tool_call>' in text
    assert "<tool_response>\n2\n</tool_response>" in text
    assert render_prompt_ids(tokenizer, dashscope, TOOLS) == render_prompt_ids(tokenizer, openai, TOOLS)


@pytest.mark.parametrize(
    "completion, text, calls",
    [
        (
            'Let me add.\n<tool_call>\n{"name": "add", "arguments": {"a": 1}}\n</tool_call>',
            "Let me add.",
            [("add", {"a": 1})],
        ),
        (
            '<tool_call>{"name": "a", "arguments": {}}</tool_call><tool_call>{"name": "b", "arguments": "{\\"x\\": 2}"}</tool_call>',
            "",
            [("a", {}), ("b", {"x": 2})],
        ),
        (
            '<tool_call>{"name": "add", "arguments": {"a": 1</tool_call>',
            '<tool_call>{"name": "add", "arguments": {"a": 1</tool_call>',
            [],
        ),
        ('<tool_call>{"arguments": {}}</tool_call> rest', '<tool_call>{"arguments": {}}</tool_call> rest', []),
        ('<tool_call>["add"]</tool_call>', '<tool_call>["add"]</tool_call>', []),
        ("<tool_call> never closed", "<tool_call> never closed", []),
        ("plain answer", "plain answer", []),
    ],
)
def test_parse_tool_calls(completion, text, calls):
    got_text, got_calls = parse_tool_calls(completion)
    assert got_text == text
    assert [(c["name"], c["input"]) for c in got_calls] == calls
    assert len({c["id"] for c in got_calls}) == len(got_calls)


def test_engine_seeds_hold_across_batches_and_logprobs_match_forward(engine, tokenizer):
    import torch

    prompt = render_prompt_ids(tokenizer, [{"role": "user", "content": "hello"}], None)
    alone = engine.generate_batch([prompt], [SamplingParams(max_tokens=16, seed=7)])[0]
    mixed = engine.generate_batch(
        [prompt[:3], prompt, prompt + prompt],
        [
            SamplingParams(max_tokens=5, seed=1),
            SamplingParams(max_tokens=16, seed=7),
            SamplingParams(max_tokens=9, top_p=0.5),
        ],
    )
    assert mixed[1].completion_token_ids == alone.completion_token_ids
    assert len(mixed[0].completion_token_ids) <= 5 and len(mixed[2].completion_token_ids) <= 9
    ids = torch.tensor([alone.prompt_token_ids + alone.completion_token_ids])
    with torch.no_grad():
        logp = engine.model(ids).logits[0].float().log_softmax(-1)
    n = len(alone.prompt_token_ids)
    reference = [logp[n - 1 + i, tok].item() for i, tok in enumerate(alone.completion_token_ids)]
    assert max(abs(a - b) for a, b in zip(reference, alone.completion_logprobs)) < 1e-4
    assert alone.text == tokenizer.decode(alone.completion_token_ids, skip_special_tokens=True)


def test_engine_greedy_ignore_eos_and_context_limit(engine, tokenizer):
    prompt = render_prompt_ids(tokenizer, [{"role": "user", "content": "hi"}], None)
    a, b = engine.generate_batch([prompt, prompt], SamplingParams(temperature=0, max_tokens=12, ignore_eos=True))
    assert a.completion_token_ids == b.completion_token_ids and len(a.completion_token_ids) == 12
    assert a.finish_reason == "length"
    with pytest.raises(ValueError, match="exceeds the model's context"):
        engine.generate_batch([prompt], SamplingParams(max_tokens=10**6))


def test_engine_batches_concurrent_requests(engine, tokenizer):
    prompt = render_prompt_ids(tokenizer, [{"role": "user", "content": "hi"}], None)
    calls = []
    original = engine.generate_batch

    def spy(prompts, sampling):
        calls.append(len(prompts))
        return original(prompts, sampling)

    engine.generate_batch = spy
    try:

        async def many():
            return await asyncio.gather(
                *(engine.generate(prompt, SamplingParams(max_tokens=4, seed=i)) for i in range(20))
            )

        results = asyncio.run(many())
    finally:
        del engine.generate_batch
    assert len(results) == 20 and sum(calls) == 20 and len(calls) <= 2


def test_tasks_jsonl_bad_line_names_file_and_line(tmp_path):
    f = tmp_path / "tasks.jsonl"
    f.write_text('{"question": "a"}\n\n{"question": "b"\n')
    with pytest.raises(TaskFormatError, match=r"tasks\.jsonl:3: not valid JSON"):
        load_tasks(str(f))
    f.write_bytes(b'{"question": "a"}\n{"question": "\xff"}\n')
    with pytest.raises(TaskFormatError, match=r"tasks\.jsonl:2: not UTF-8"):
        load_tasks(str(f))
    f.write_text('{"question": "a"}\n{"text": "b"}\n')
    # a row without any query field is accepted, as AgentJet does (main_query "[not defined]"), unless one was named
    with pytest.raises(TaskFormatError, match=r"tasks\.jsonl:2: no query field 'question' .*the row has text"):
        load_tasks(str(f), query_field="question")
    f.write_text('{"id": 1, "question": "a"}\n{"id": 1, "question": "b"}\n')
    with pytest.raises(TaskFormatError, match=r"tasks\.jsonl:2: task id '1' repeats .*tasks\.jsonl:1"):
        load_tasks(str(f))
    f.write_text("\n")
    with pytest.raises(TaskFormatError, match="no tasks"):
        load_tasks(str(f))


def test_tasks_from_every_source(tmp_path, monkeypatch):
    import datasets

    rows = [{"question": "q1", "answer": 1}, {"question": "q2", "answer": 2}]
    ds = datasets.Dataset.from_list(rows)
    ds.to_parquet(str(tmp_path / "t.parquet"))
    ds.to_csv(str(tmp_path / "t.csv"), index=False)
    ds.save_to_disk(str(tmp_path / "saved"))
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "envgen.py").write_text(
        "def tasks():\n    for i in (1, 2):\n        yield {'question': f'q{i}', 'answer': i}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sources = ["t.parquet", "t.csv", "saved", "t.jsonl"]
    loaded = [load_tasks(str(tmp_path / s)) for s in sources] + [load_tasks("envgen:tasks")]
    for tasks in loaded:
        assert [t.main_query for t in tasks] == ["q1", "q2"]
        assert [t.metadata["answer"] for t in tasks] == [1, 2]
    # content-derived ids: the same row gets the same id from every source
    assert len({tuple(t.task_id for t in tasks) for tasks in loaded}) == 1
    assert [t.task_id for t in load_tasks(str(tmp_path / "t.jsonl"), limit=1)] == [loaded[0][0].task_id]


def test_trace_reader_names_file_and_line(tmp_path):
    f = tmp_path / "part-000001.jsonl"
    f.write_text(f'{{"schema_version": {SCHEMA_VERSION}}}\n')
    with pytest.raises(TraceFormatError, match=r"part-000001\.jsonl:1: field 'trajectory_id'"):
        list(read_trajectories(tmp_path))
    f.write_text('{"schema_version": 99}\n')
    with pytest.raises(TraceFormatError, match="schema_version 99, this astuner reads version 1"):
        list(read_trajectories(f))
    f.write_text("\n{oops\n")
    with pytest.raises(TraceFormatError, match=r"part-000001\.jsonl:2: not valid JSON"):
        list(read_trajectories(f))


def test_reference_import_name():
    import agentscope_tuner
    import astuner
    from agentscope_tuner import ModelTuner, Workflow, WorkflowOutput, WorkflowTask

    assert (Workflow, WorkflowTask, WorkflowOutput, ModelTuner) == (
        astuner.Workflow,
        astuner.WorkflowTask,
        astuner.WorkflowOutput,
        astuner.ModelTuner,
    )
    assert "ModelTuner" in agentscope_tuner.__all__


def test_matched_tokens_is_difflibs_count():
    """matched_tokens (difflib, with a shortcut where one side is a prefix of the other) counts what difflib's
    matching blocks cover: prefix cases, empty sides, tiny alphabets, near-copies."""
    import difflib
    import random

    from astuner.drift import matched_tokens

    rng = random.Random(7)
    cases = [
        ([], []),
        ([1], []),
        ([], [1]),
        ([1, 2, 3], [1, 2, 3]),
        ([1, 2, 3, 9], [1, 2, 3]),
        ([1, 2, 3], [1, 2, 3, 9, 8]),
        ([1, 2], [1, 2, 9, 1, 2]),
        ([1, 1, 1, 1], [1, 1]),
        ([1, 2] * 20, [2, 1] * 20),
        ([1, None, 3], [1, None, 3, 4]),
    ]
    for _ in range(200):
        alphabet = rng.choice([2, 3, 40, 600])
        a = [rng.randrange(alphabet) for _ in range(rng.randrange(120))]
        b = list(a)
        roll = rng.random()
        if roll < 0.3:  # the re-render adds or drops the template's end of turn: one side a prefix of the other
            if rng.random() < 0.5:
                b += [rng.randrange(alphabet) for _ in range(rng.randrange(3))]
            else:
                b = b[: rng.randrange(len(b) + 1)]
        elif roll < 0.7:  # a near-copy: the drift a re-render makes
            for _ in range(rng.randrange(1, 6)):
                at = rng.randrange(len(b) + 1)
                b[at : at + rng.randrange(3)] = [rng.randrange(alphabet) for _ in range(rng.randrange(3))]
        else:
            b = [rng.randrange(alphabet) for _ in range(rng.randrange(120))]
        cases.append((a, b) if rng.random() < 0.5 else (b, a))
    for a, b in cases:
        expected = sum(m.size for m in difflib.SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks())
        assert matched_tokens(a, b) == expected, (a, b)
