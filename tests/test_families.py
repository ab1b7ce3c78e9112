"""Real model families: the engine on padded vocabularies, tool-call / thinking parsing
per family, and render parity over the real chat templates (tests/fixtures/templates)."""

import json

import pytest
from family_models import FAMILIES, build_family_model

from astuner.chat import detect_family, parse_completion, render_prompt, render_prompt_ids
from astuner.engines import SamplingParams, load_engine


@pytest.fixture(scope="session")
def family_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return lambda family: build_family_model(family, root / family)


@pytest.fixture(scope="session")
def mistral_engine(family_dir):
    eng = load_engine("transformers", family_dir("mistral-nemo"))
    yield eng
    eng.close()


# ----- item 5: the engine serves real-vocabulary checkpoints -------------------------------------
def test_engine_never_samples_a_padded_row(mistral_engine):
    eng = mistral_engine
    rows = eng.model.config.vocab_size
    assert rows > len(eng.tokenizer), "the fixture must have padded embedding rows"

    def favour_padding(_module, _inputs, logits):  # the padded rows would win every draw
        logits[..., len(eng.tokenizer) :] += 1000.0
        return logits

    hook = eng.model.lm_head.register_forward_hook(favour_padding)
    try:
        gens = eng.generate_batch(
            [[5, 6, 7]] * 4,
            [SamplingParams(max_tokens=8, seed=s) for s in range(3)] + [SamplingParams(max_tokens=8, temperature=0)],
        )
    finally:
        hook.remove()
    sampled = [i for g in gens for i in g.completion_token_ids]
    assert sampled and max(sampled) < len(eng.tokenizer), f"sampled ids past the tokenizer: {sorted(set(sampled))[-3:]}"


def test_prefill_keeps_only_the_last_logits(mistral_engine):
    eng = mistral_engine
    widths = []
    hook = eng.model.lm_head.register_forward_hook(lambda _m, inputs, _out: widths.append(inputs[0].shape[1]))
    try:
        eng.generate_batch([list(range(5, 45)), list(range(5, 25))], SamplingParams(max_tokens=3, temperature=0))
    finally:
        hook.remove()
    assert widths and max(widths) == 1, f"lm_head ran over {max(widths)} positions in prefill"


# ----- items 1 + 3: parsing and render parity per family, on the real templates -----------------
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "add",
            "description": "Add two integers.",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                "required": ["a", "b"],
            },
        },
    }
]
CALL_ID = "Ab3dE6gH9"  # 9 alphanumerics: valid for every family (Mistral's template requires exactly that)
CONVERSATION = [
    {"role": "system", "content": "You are a calculator."},
    {"role": "user", "content": "What is 2 + 3?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": CALL_ID, "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}
        ],
    },
    {"role": "tool", "tool_call_id": CALL_ID, "name": "add", "content": "5"},
]
# What each family's model natively writes for `add(a=2, b=3)` (its end-of-turn token included)
NATIVE_CALL = {
    "qwen2.5": '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call><|im_end|>',
    "qwen3": '<think>\nI should add.\n</think>\n\n<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call><|im_end|>',
    "llama3.2": '<|python_tag|>{"name": "add", "parameters": {"a": 2, "b": 3}}<|eom_id|>',
    "mistral-nemo": '[TOOL_CALLS][{"name": "add", "arguments": {"a": 2, "b": 3}, "id": "' + CALL_ID + '"}]</s>',
}
NATIVE_ANSWER = {
    "qwen2.5": "The answer is 5.<|im_end|>",
    "qwen3": "<think>\nIt is 5.\n</think>\n\nThe answer is 5.<|im_end|>",
    "llama3.2": "The answer is 5.<|eot_id|>",
    "mistral-nemo": "The answer is 5.</s>",
}


@pytest.fixture(scope="session")
def family_tokenizer(family_dir):
    from transformers import AutoTokenizer

    cache = {}

    def get(family):
        if family not in cache:
            cache[family] = AutoTokenizer.from_pretrained(family_dir(family))
        return cache[family]

    return get


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_detected_and_render_parity(family, family_tokenizer):
    tok = family_tokenizer(family)
    assert detect_family(tok) == FAMILIES[family][1]
    # parity: our ids are the real template's own rendering and tokenization of the formatter's messages
    ours = render_prompt_ids(tok, CONVERSATION, TOOLS)
    from astuner.chat import normalize_messages

    theirs = tok.apply_chat_template(
        normalize_messages(CONVERSATION), tools=TOOLS, add_generation_prompt=True, tokenize=True, return_dict=False
    )
    assert ours == list(theirs)
    text = render_prompt(tok, CONVERSATION, TOOLS)
    assert "add" in text and "5" in text
    if family == "mistral-nemo":  # the model's own call id reached the prompt, twice
        assert text.count(f'"{CALL_ID}"') == 2


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_parse_round_trip(family, family_tokenizer):
    """The template's own rendering of an assistant tool-call turn parses back to the same call."""
    from astuner.chat import normalize_messages, special_tokens_of

    tok = family_tokenizer(family)
    fmt = FAMILIES[family][1]
    # Mistral's template moves the system message into the *last* user turn, so a rendered history
    # never extends the prompt it was sampled from when there is one (see the extension test)
    head = CONVERSATION[1:2] if family == "mistral-nemo" else CONVERSATION[:2]
    turn = CONVERSATION[2]
    if family == "qwen3":
        turn = {**turn, "reasoning_content": "I should add."}
    prompt = tok.apply_chat_template(normalize_messages(head), tools=TOOLS, add_generation_prompt=True, tokenize=False)
    full = tok.apply_chat_template(normalize_messages(head + [turn]), tools=TOOLS, tokenize=False)
    assert full.startswith(prompt), "the template's generation prompt must prefix the rendered turn"
    parsed = parse_completion(full[len(prompt) :], fmt, strip_tokens=special_tokens_of(tok))
    assert [(c["name"], c["input"]) for c in parsed.calls] == [("add", {"a": 2, "b": 3})], full[len(prompt) :]
    assert parsed.text == ""
    assert parsed.reasoning == ("I should add." if family == "qwen3" else None)
    if family == "mistral-nemo":
        assert parsed.calls[0]["id"] == CALL_ID
    # native completions (what the model writes), and the oracle where transformers + TRL have a parser
    native = parse_completion(NATIVE_CALL[family], fmt, strip_tokens=special_tokens_of(tok))
    assert [(c["name"], c["input"]) for c in native.calls] == [("add", {"a": 2, "b": 3})] and native.text == ""
    if family in ("qwen2.5", "qwen3", "llama3.2"):
        from transformers.utils.chat_parsing import parse_response
        from trl.chat_template_utils import llama3_template, qwen3_template

        schema = llama3_template if family == "llama3.2" else qwen3_template
        oracle = parse_response(full[len(prompt) :], schema, prefix=prompt)
        assert [(c["function"]["name"], c["function"]["arguments"]) for c in oracle["tool_calls"]] == [
            (c["name"], c["input"]) for c in parsed.calls
        ]
        assert oracle.get("reasoning_content") == parsed.reasoning


@pytest.mark.parametrize(
    "fmt, completion",
    [
        ("llama3", '{"name": "add", "parameters": {"a": 2}'),  # unclosed
        ("llama3", 'I think {"name": 3, "parameters": {}} works'),  # name not a string
        ("mistral", '[TOOL_CALLS][{"name": "add", "arguments": {"a": 2}'),  # unclosed
        ("mistral", '[TOOL_CALLS][{"name": "add", "arguments": [1]}]'),  # arguments not an object
        ("qwen3", "<think>\nnever closed, max_tokens hit"),  # unclosed thinking
    ],
)
def test_family_malformed_stays_text(fmt, completion):
    parsed = parse_completion(completion, fmt)
    assert parsed.calls == [] and parsed.reasoning is None and parsed.text == completion.strip()


def test_ids_follow_the_family_rules():
    from astuner.chat import new_tool_call_id

    for _ in range(20):
        mistral = new_tool_call_id("mistral")
        assert len(mistral) == 9 and mistral.isalnum()
    # a Mistral call with an id the template would reject gets a valid one
    parsed = parse_completion('[TOOL_CALLS][{"name": "add", "arguments": {}, "id": "call_123456789"}]', "mistral")
    assert len(parsed.calls[0]["id"]) == 9 and parsed.calls[0]["id"].isalnum()


class ScriptedEngine:
    """An engine that 'samples' each family's native turns, in order: the token ids of the script."""

    name = "scripted"

    def __init__(self, checkpoint, tokenizer, script):
        from astuner.engines import Engine

        self.checkpoint, self.tokenizer, self.script = str(checkpoint), tokenizer, list(script)
        self.decode = lambda ids: Engine.decode(self, ids)

    async def generate(self, prompt_token_ids, sampling):
        from astuner.engines import Generation

        ids = self.tokenizer(self.script.pop(0), add_special_tokens=False)["input_ids"]
        return Generation(
            prompt_token_ids=list(prompt_token_ids),
            completion_token_ids=ids,
            completion_logprobs=[0.0] * len(ids),
            text=self.decode(ids),
            finish_reason="stop",
        )


def _scripted_react(family, tokenizer, checkpoint, template_kwargs=None):
    """A ReActAgent on `family`'s checkpoint: turn 1 calls add(2, 3) natively, turn 2 answers."""
    import asyncio

    from agentscope.agent import ReActAgent
    from agentscope.formatter import OpenAIChatFormatter
    from agentscope.message import Msg, TextBlock
    from agentscope.tool import Toolkit, ToolResponse

    from astuner.tuner import ModelTuner

    def add(a: int, b: int) -> ToolResponse:
        """Add two integers.

        Args:
            a (int): the first
            b (int): the second
        """
        return ToolResponse(content=[TextBlock(type="text", text=str(a + b))])

    toolkit = Toolkit()
    toolkit.register_tool_function(add)
    tuner = ModelTuner(
        ScriptedEngine(checkpoint, tokenizer, [NATIVE_CALL[family], NATIVE_ANSWER[family]]),
        SamplingParams(max_tokens=64),
        template_kwargs=template_kwargs,
    )
    agent = ReActAgent(
        name="Calc",
        sys_prompt="You are a calculator.",
        model=tuner,
        formatter=OpenAIChatFormatter(),
        toolkit=toolkit,
        max_iters=3,
    )
    agent.set_console_output_enabled(False)
    reply = asyncio.run(agent(Msg("user", "What is 2 + 3?", "user")))
    return tuner.calls, reply


def extends(previous, current) -> bool:
    """Does `current`'s prompt start with `previous`'s prompt + sampled completion (token for token)?"""
    head = previous.prompt_token_ids + previous.completion_token_ids
    return current.prompt_token_ids[: len(head)] == head


# Written down per family, on this scripted ReAct run: does the 2nd call's prompt extend
# the 1st call's prompt + sampled ids (else the cause), and does re-rendering the 1st call's conversation
# from text change sampled tokens?
EXPECTED = {
    "qwen2.5": (None, False),  # extends: calls merge
    # AgentScope's formatter drops the ThinkingBlock; the tuner puts it back as reasoning_content (item 4),
    # so within one query the template re-renders the <think> block the model wrote
    "qwen3": (None, False),
    "llama3.2": ("completion_rerendered", True),  # the template writes no <|python_tag|>, and <|eot_id|> for <|eom_id|>
    "mistral-nemo": ("prompt_rerendered", True),  # system + tools move to the last user turn
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_scripted_react_run(family, family_tokenizer, family_dir):
    calls, reply = _scripted_react(family, family_tokenizer(family), family_dir(family))
    assert len(calls) == 2, [c.completion.text for c in calls]
    first, second = calls
    assert [(t.name, json.loads(t.arguments)) for t in first.completion.tool_calls] == [("add", {"a": 2, "b": 3})], (
        f"{family}: the native tool call was not parsed: {first.completion.text!r}"
    )
    assert first.tool_format == FAMILIES[family][1]
    # Llama 3.x renders today's date: the record names the date it rendered, so a re-render matches on any day
    assert bool((first.template_kwargs or {}).get("date_string")) == (family == "llama3.2")
    tool_messages = [m for m in second.messages if m["role"] == "tool"]
    assert tool_messages and "5" in json.dumps(tool_messages[0]["content"]), "the agent never ran the tool"
    assert tool_messages[0]["tool_call_id"] == first.completion.tool_calls[0].id  # the id survived
    if family == "mistral-nemo":
        assert first.completion.tool_calls[0].id == CALL_ID  # the model's own id, 9 alphanumerics
    if family == "qwen3":
        assert first.completion.reasoning == "I should add."
        assert second.completion.reasoning == "It is 5."
    assert "The answer is 5." in json.dumps(reply.content)
    assert "<think>" not in json.dumps(reply.content) and "[TOOL_CALLS]" not in json.dumps(reply.content)
    from astuner.drift import extension, rerender_drift_tokens

    got = extension({**first.model_dump(), "completion_text": first.completion.text}, second.model_dump())
    tok = family_tokenizer(family)
    drift = [rerender_drift_tokens(tok, c.model_dump()) for c in calls]
    sampled = sum(len(c.prompt_token_ids) + len(c.completion_token_ids) for c in calls)
    print(f"{family}: extension {got} rerender drift {drift} of {sampled}")
    cause, drifts = EXPECTED[family]
    assert got[0] == (cause is None) and got[2] == cause, got
    assert (drift[0] > 0) == drifts and drift[1] == 0, drift


# ----- item 2: ingest measures the drift the matrix says is there, and none where there is none ----
def test_ingest_measures_family_drift(tmp_path, family_tokenizer, family_dir, capsys):
    from helpers import make_traj, rows, write

    from judge.main import main as judge_main

    trajectories = []
    for family in FAMILIES:
        calls, _ = _scripted_react(family, family_tokenizer(family), family_dir(family))
        records = [c.model_dump() for c in calls]
        trajectories.append(make_traj(f"t-{family}", 0, calls=records, checkpoint=str(family_dir(family))))
    db = tmp_path / "s.duckdb"
    assert judge_main(["ingest", str(write(tmp_path / "traces" / "part.jsonl", trajectories)), "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "extension: 2 of 4 engine calls extend" in out and "re-render drift: " in out, out
    got = rows(
        db,
        """SELECT task_id, tool_format, bool_or(extends_previous), max(divergence_cause),
                             max(CASE WHEN call_index = 0 THEN rerender_drift_tokens END), count(drift_measured)
                      FROM calls JOIN trajectories USING (trajectory_id) GROUP BY ALL ORDER BY task_id""",
    )
    expected = sorted(
        (f"t-{family}", FAMILIES[family][1], EXPECTED[family][0] is None, EXPECTED[family][0], EXPECTED[family][1], 2)
        for family in FAMILIES
    )
    assert [(t, f, e, c, d > 0, m) for t, f, e, c, d, m in got] == expected
    # the old measure, on the same calls, flags nothing (it compares a re-render with itself)
    assert rows(db, "SELECT DISTINCT template_drift FROM calls") == [(False,)]
    # ingesting again measures nothing twice
    assert judge_main(["ingest", str(tmp_path / "traces"), "--db", str(db)]) == 0
    assert "extension:" not in capsys.readouterr().out
    # the report shows the rates per checkpoint and role
    from astuner.store import open_store
    from judge.report import write_report

    con = open_store(db, read_only=True)
    try:
        page = write_report(con, tmp_path / "report").read_text()
    finally:
        con.close()
    assert "Drift per checkpoint and role" in page and "completion_rerendered" in page and "prompt_rerendered" in page


def _rerender_drift_per_call(tokenizer, call):
    """The oracle: rerender_drift_tokens as it was before batching (one apply_chat_template(tokenize=True)
    per call, then difflib), kept verbatim so the batched path is held to its values."""
    import difflib

    from astuner.chat import detect_family, normalize_messages, parse_completion, special_tokens_of

    completion = list(call["completion_token_ids"])
    parsed = parse_completion(
        tokenizer.decode(completion, skip_special_tokens=False), detect_family(tokenizer), special_tokens_of(tokenizer)
    )
    reply = {"role": "assistant", "content": parsed.text}
    if parsed.calls:
        reply["tool_calls"] = [
            {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["input"]}}
            for c in parsed.calls
        ]
    if parsed.reasoning:
        reply["reasoning_content"] = parsed.reasoning
    sampled = list(call["prompt_token_ids"]) + completion
    try:
        again = list(
            tokenizer.apply_chat_template(
                normalize_messages(list(call["messages"]) + [reply]),
                tools=call.get("tools") or None,
                tokenize=True,
                return_dict=False,
                **(call.get("template_kwargs") or {}),
            )
        )
    except Exception:
        return len(sampled)
    matcher = difflib.SequenceMatcher(None, again, sampled, autojunk=False)
    return len(sampled) - sum(block.size for block in matcher.get_matching_blocks())


def test_batched_rerender_drift_equals_the_per_call_values(family_tokenizer, family_dir):
    """measure_drift's batched path (one tokenizer batch per chunk and checkpoint, the array diff, the skip
    when the re-render is exact) gives every call the per-call value, drifted calls included."""
    from astuner.drift import rerender_drift_tokens, rerender_drift_tokens_batch

    drifted_somewhere = exact_somewhere = False
    for family in FAMILIES:
        tok = family_tokenizer(family)
        base = [c.model_dump() for c in _scripted_react(family, tok, family_dir(family))[0]]
        calls = list(base)
        for c in base:
            prompt, completion = list(c["prompt_token_ids"]), list(c["completion_token_ids"])
            middle = len(prompt) // 2
            calls += [
                {**c, "prompt_token_ids": prompt[:middle] + [prompt[middle] + 1] + prompt[middle + 1 :]},  # one id off
                {**c, "prompt_token_ids": prompt[:middle] + prompt[middle + 3 :]},  # ids missing
                {**c, "completion_token_ids": completion[::-1]},  # reply scrambled
                {**c, "prompt_token_ids": prompt * 2},  # repeats: ties
                {**c, "template_kwargs": {**(c.get("template_kwargs") or {}), "truncation": True, "max_length": 16}},
                {**c, "messages": [{"content": "no role"}]},  # refused
            ]
        expected = [_rerender_drift_per_call(tok, c) for c in calls]
        assert rerender_drift_tokens_batch(tok, calls) == expected, family
        assert [rerender_drift_tokens(tok, c) for c in calls] == expected, family
        assert expected[-1] == len(calls[-1]["prompt_token_ids"]) + len(calls[-1]["completion_token_ids"])
        drifted_somewhere |= any(0 < d < len(c["prompt_token_ids"]) for d, c in zip(expected, calls))
        exact_somewhere |= 0 in expected
    assert drifted_somewhere and exact_somewhere


def test_measure_drift_in_chunks_equals_one_chunk(tmp_path, family_tokenizer, family_dir):
    """Chunk boundaries (fetchmany) change nothing: not the extension against the agent's previous call,
    not the re-render drift."""
    from helpers import make_traj, write

    from astuner.store import open_store
    from judge.ingest import IngestResult, ingest, measure_drift

    trajectories = []
    for family in FAMILIES:
        records = [c.model_dump() for c in _scripted_react(family, family_tokenizer(family), family_dir(family))[0]]
        trajectories.append(make_traj(f"t-{family}", 0, calls=records, checkpoint=str(family_dir(family))))
    con = open_store(tmp_path / "s.duckdb")
    try:
        ingest(
            con, [str(write(tmp_path / "traces" / "part.jsonl", trajectories))], check_template=False, progress=False
        )
        columns = (
            "SELECT trajectory_id, call_index, extends_previous, divergence_at, divergence_cause, rerender_drift_tokens "
            "FROM calls ORDER BY 1, 2"
        )
        got = {}
        for chunk in (512, 3, 1):
            con.execute(
                "UPDATE calls SET extends_previous = NULL, divergence_at = NULL, divergence_cause = NULL, "
                "rerender_drift_tokens = NULL, drift_measured = NULL"
            )
            measure_drift(con, IngestResult(), progress=False, chunk=chunk)
            got[chunk] = con.execute(columns).fetchall()
    finally:
        con.close()
    assert len(got[512]) == 8 and any(r[5] for r in got[512]) and any(r[2] is False for r in got[512])
    assert got[3] == got[512] and got[1] == got[512]


def test_store_from_before_the_drift_columns_gains_them(tmp_path, capsys):
    from astuner.migrations import latest_version
    from astuner.store import open_store

    drift_columns = [
        "tool_format",
        "extends_previous",
        "divergence_at",
        "divergence_cause",
        "rerender_drift_tokens",
        "drift_measured",
        "template_kwargs",
    ]
    db = tmp_path / "old.duckdb"
    con = open_store(db)
    for name in drift_columns + ["error", "completion_reasoning"]:  # what a store written before them looks like
        con.execute(f"ALTER TABLE calls DROP COLUMN {name}")
    con.execute("DROP TABLE _migrations")  # version 1 recorded no migrations
    con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    con.close()
    open_store(db, read_only=True).close()  # a reader leaves it as it is
    con = open_store(db)
    have = {
        r[0]
        for r in con.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 'calls'").fetchall()
    }
    version = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()[0][0]
    con.close()
    assert set(drift_columns) <= have and version == str(latest_version())
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1
        and f"migrated from schema version 1 to {latest_version()}" in err[0]
        and "m002_drift_columns" in err[0]
    )


def test_llama_date_is_recorded_and_rerenders_on_another_day(tmp_path, family_tokenizer, family_dir):
    from helpers import make_traj, rows, write

    from astuner.chat import render_prompt
    from judge.main import main as judge_main

    tok = family_tokenizer("llama3.2")
    calls, _ = _scripted_react("llama3.2", tok, family_dir("llama3.2"), template_kwargs={"date_string": "01 Jan 2020"})
    assert calls[0].template_kwargs == {"date_string": "01 Jan 2020"}
    assert "Today Date: 01 Jan 2020" in render_prompt(tok, calls[0].messages, calls[0].tools, calls[0].template_kwargs)
    traj = make_traj("t", 0, calls=[c.model_dump() for c in calls], checkpoint=str(family_dir("llama3.2")))
    db = tmp_path / "s.duckdb"
    assert judge_main(["ingest", str(write(tmp_path / "part.jsonl", [traj])), "--db", str(db)]) == 0
    assert rows(db, "SELECT DISTINCT template_drift FROM calls") == [(False,)]  # re-rendered with the recorded date


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--tool-format", "harmony"],
            "--tool-format 'harmony': unknown format; choose one of auto, hermes, qwen3, llama3, mistral",
        ),
        (["--template-kwargs", "[1]"], "--template-kwargs '[1]': must be a JSON object"),
        (["--template-kwargs", "{x"], "--template-kwargs '{x': not JSON"),
    ],
)
def test_collect_family_options_bad_input(tmp_path, capsys, args, message):
    from helpers import workflow_ref, write_tasks

    from collect.main import main as collect_main

    tasks = write_tasks(tmp_path / "tasks.jsonl", 1)
    assert (
        collect_main(
            ["--workflow", workflow_ref("ExampleMathLearn"), "--tasks", str(tasks), "--out", str(tmp_path / "o"), *args]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_qwen3_strips_thinking_of_an_earlier_query(family_tokenizer, family_dir):
    """A second user query: Qwen3's template drops the thinking of turns before the last query, so
    the 2nd call cannot extend the 1st, and the measure says why."""
    import asyncio

    from agentscope.agent import ReActAgent
    from agentscope.formatter import OpenAIChatFormatter
    from agentscope.message import Msg

    from astuner.drift import extension
    from astuner.tuner import ModelTuner

    tok = family_tokenizer("qwen3")
    tuner = ModelTuner(
        ScriptedEngine(family_dir("qwen3"), tok, [NATIVE_ANSWER["qwen3"]] * 2), SamplingParams(max_tokens=64)
    )
    agent = ReActAgent(
        name="Calc", sys_prompt="You are a calculator.", model=tuner, formatter=OpenAIChatFormatter(), max_iters=2
    )
    agent.set_console_output_enabled(False)

    async def two_queries():
        await agent(Msg("user", "What is 2 + 3?", "user"))
        await agent(Msg("user", "And 3 + 2?", "user"))

    asyncio.run(two_queries())
    first, second = tuner.calls
    assert first.completion.reasoning == "It is 5."
    extends, at, cause = extension(
        {**first.model_dump(), "completion_text": first.completion.text}, second.model_dump()
    )
    assert (extends, cause) == (False, "thinking_stripped") and at >= len(first.prompt_token_ids)


# ----- ingest's bulk drift checks give the per-call path's values, call for call ----------------------
DRIFT_COLUMNS = (
    "SELECT trajectory_id, call_index, template_drift, extends_previous, divergence_at, divergence_cause, "
    "rerender_drift_tokens, drift_measured FROM calls ORDER BY 1, 2"
)


def _drift_cases(family, tokenizer, checkpoint):
    """The scripted ReAct run of `family` and variants that drift each way, as lists of call records."""
    base = [c.model_dump() for c in _scripted_react(family, tokenizer, checkpoint)[0]]
    first, second = base
    prompt = list(second["prompt_token_ids"])
    middle = len(prompt) // 2
    return [
        base,
        [first, {**second, "prompt_token_ids": prompt[:middle] + [prompt[middle] + 1] + prompt[middle + 1 :]}],
        [first, {**second, "tools": None}],  # tools_changed
        [first, {**second, "messages": second["messages"][1:]}],  # history_edited
        [{**first, "completion_token_ids": first["completion_token_ids"][::-1]}, second],  # reply scrambled
        [first, {**second, "agent_name": "Other"}],  # another agent: no previous call
        [{**first, "trainable": False}, {**second, "role": "critic"}],  # another role, an untrained call
        [first, {**second, "template_kwargs": {"truncation": True, "max_length": 16}}],  # the per-call render
        [first, {**second, "completion_token_ids": None, "prompt_token_ids": None}],  # no ids kept
    ]


def test_bulk_drift_checks_equal_the_per_call_path(tmp_path, family_tokenizer, family_dir, capsys):
    """Every drift column, call for call, and the summary's counts: the bulk path (distinct calls rendered
    once, extension compared in DuckDB) against the per-call path (--per_call_drift), on the four families'
    traces, each case twice (samples that repeat a call), and one checkpoint that is not here."""
    from helpers import make_traj, rows, write

    from judge.main import main as judge_main

    trajectories = []
    for family in FAMILIES:
        for n, calls in enumerate(_drift_cases(family, family_tokenizer(family), family_dir(family))):
            for sample in range(2):
                trajectories.append(
                    make_traj(f"t-{family}-{n}", sample, calls=calls, checkpoint=str(family_dir(family)))
                )
    trajectories.append(
        make_traj("t-elsewhere", 0, calls=_drift_cases("qwen3", family_tokenizer("qwen3"), family_dir("qwen3"))[1])
    )
    traces = write(tmp_path / "traces" / "part.jsonl", trajectories)
    got, summaries = {}, {}
    # the bulk path in worker processes (transformers without torch), the per-call one here (with torch)
    for path, flags in (("bulk", ["--render_workers", "2"]), ("per_call", ["--per_call_drift"])):
        db = tmp_path / f"{path}.duckdb"
        assert judge_main(["ingest", str(traces), "--db", str(db), *flags]) == 0
        summaries[path] = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("ingested")]
        got[path] = rows(db, DRIFT_COLUMNS)
    assert got["bulk"] == got["per_call"]
    assert summaries["bulk"] == summaries["per_call"]
    values = got["bulk"]
    causes = {r[5] for r in values}
    assert {"tools_changed", "history_edited", None} <= causes and len(causes) >= 4, causes
    assert any(r[2] is True for r in values) or any(r[2] is False for r in values)
    assert any(r[6] for r in values) and any(r[6] == 0 for r in values) and any(r[6] is None for r in values)
    assert any(r[3] is True for r in values) and any(r[3] is False for r in values)
