"""judge: ingest, judgers, scoring, views, sql, report and locking, on hand-made trajectories
whose right answers are known, and on the tiny model for the LLM judge and template drift."""

import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser

import pytest
from helpers import TESTS, make_call, make_traj, rows, write

from astuner.chat import render_prompt_ids
from astuner.store import open_store
from astuner.trajectory import dump_line
from judge.main import main


def answers_set(tmp_path):
    """Six trajectories of known answers (reference 4)."""
    trajs = [
        make_traj("t0", 0, reward=1.0, final="4"),
        make_traj("t0", 1, reward=0.0, final="5"),
        make_traj("t1", 0, reward=0.5, final="4.0000001"),
        make_traj("t1", 1, reward=None, final=None),  # no final answer
        make_traj("t2", 0, reward=1.0, final="4", answer=None),  # task has no reference
        make_traj("t3", 0, reward=None, final="abc", status="error"),
    ]
    db = tmp_path / "store.duckdb"
    assert main(["ingest", str(write(tmp_path / "traces" / "a.jsonl", trajs)), "--db", str(db)]) == 0
    return db


def scores_of(db, judger):
    return dict(
        rows(
            db,
            """SELECT t.task_id || '/' || t.sample_index, s.value FROM scores s JOIN trajectories t
                            USING (trajectory_id) WHERE s.judger = ? AND s.call_index IS NULL""",
            [judger],
        )
    )


def test_double_ingest_adds_nothing(tmp_path, capsys):
    trajs = [
        make_traj(f"t{i}", s, reward=1.0, calls=[make_call(0), make_call(1, role="other", trainable=False)])
        for i in range(3)
        for s in range(2)
    ]
    traces = write(tmp_path / "out" / "traces" / "part-000000.jsonl", trajs)
    (tmp_path / "out" / "collect.json").write_text(
        json.dumps({"run_id": "run-a", "created_at": 1.0e9, "checkpoint": "c"})
    )
    db = tmp_path / "store.duckdb"
    assert main(["ingest", str(tmp_path / "out"), "--db", str(db)]) == 0
    assert "ingested 6 new trajectories (12 model calls)" in capsys.readouterr().out
    # again, and the same file named twice in one command
    assert main(["ingest", str(traces), str(traces), "--db", str(db)]) == 0
    assert "ingested 0 new trajectories" in capsys.readouterr().out
    assert rows(db, "SELECT count(*), count(DISTINCT trajectory_id) FROM trajectories") == [(6, 6)]
    assert rows(db, "SELECT count(*) FROM calls") == [(12,)]
    assert rows(db, "SELECT stage, count(*) FROM runs GROUP BY stage ORDER BY stage") == [("collect", 1), ("ingest", 2)]
    assert rows(db, "SELECT config->>'checkpoint' FROM runs WHERE stage = 'collect'") == [("c",)]
    # the stored ids, logprobs and JSON round-trip exactly
    call = rows(db, "SELECT prompt_token_ids, completion_token_ids, completion_logprobs, messages FROM calls LIMIT 1")[
        0
    ]
    assert call[:3] == ([1, 2, 3], [4, 5], [-0.5, -0.5]) and json.loads(call[3]) == [{"role": "user", "content": "q"}]


def test_ingest_in_batches_equals_one_batch(tmp_path, capsys, monkeypatch):
    """Batches of files (each staged, inserted and checked before the next) store what one batch does: the
    same rows and drift measures, a trajectory repeated in a later batch counted as already in the store."""
    import judge.ingest

    calls = [make_call(0), make_call(1, prompt=(1, 2, 3, 4, 5, 6)), make_call(2, prompt=(9,))]
    for n in range(3):
        trajs = [make_traj(f"t{n}-{i}", 0, calls=calls) for i in range(4)] + [make_traj("t-again", 0, calls=calls)]
        write(tmp_path / "traces" / f"part-{n:06d}.jsonl", trajs)
    columns = (
        "SELECT trajectory_id, call_index, extends_previous, divergence_at, divergence_cause, drift_measured "
        "FROM calls ORDER BY ALL"
    )
    got = {}
    for batch_bytes in (judge.ingest.BATCH_BYTES, 1):  # one batch; one file a batch
        monkeypatch.setattr(judge.ingest, "BATCH_BYTES", batch_bytes)
        db = tmp_path / f"{batch_bytes}.duckdb"
        assert main(["ingest", str(tmp_path / "traces"), "--db", str(db), "--render_workers", "0"]) == 0
        summary = capsys.readouterr().out
        assert "ingested 13 new trajectories (39 model calls) from 3 file(s)" in summary, summary
        assert "; 2 already in the store;" in summary and "extension: 13 of 26 engine calls extend" in summary, summary
        got[batch_bytes] = rows(db, columns), rows(db, "SELECT * EXCLUDE (ingested_at) FROM trajectories ORDER BY ALL")
    assert got[1] == got[judge.ingest.BATCH_BYTES]


def test_a_folder_named_like_a_part_file_is_looked_into(tmp_path, capsys):
    traces = tmp_path / "traces"
    write(traces / "part-000000.jsonl", [make_traj("t0", 0)])
    write(traces / "part-000001.jsonl" / "part-000000.jsonl", [make_traj("t1", 0)])  # a folder with a .jsonl name
    assert main(["ingest", str(traces), "--db", str(tmp_path / "s.duckdb"), "--no_check_template"]) == 0
    assert "ingested 2 new trajectories" in capsys.readouterr().out


def test_malformed_lines_named_and_skipped(tmp_path, capsys):
    good = [dump_line(make_traj("t0", s)).decode().strip() for s in range(3)]
    wrong_version = json.loads(good[1])
    wrong_version["schema_version"] = 99
    missing = json.loads(good[2])
    del missing["status"]
    path = tmp_path / "bad.jsonl"
    path.write_bytes(
        b"\n".join(
            [
                good[0].encode(),
                b'{"schema_version": 1, "truncated',
                json.dumps(wrong_version).encode(),
                json.dumps(missing).encode(),
                b"\xff\xfe not utf-8",
                dump_line(make_traj("t9", 0)).strip(),
            ]
        )
        + b"\n"
    )
    db = tmp_path / "store.duckdb"
    assert main(["--help"]) == 0
    capsys.readouterr()
    assert main(["ingest", str(path), "--db", str(db), "--strict"]) == 2
    err = capsys.readouterr().err
    assert f"{path}:2: not valid JSON" in err and err.count("\n") == 1
    assert rows(db, "SELECT count(*) FROM trajectories") == [(0,)]
    assert main(["ingest", str(path), "--db", str(db)]) == 0
    captured = capsys.readouterr()
    for line_no in (2, 3, 4, 5):
        assert f"skipped {path}:{line_no}:" in captured.err
    assert "schema_version 99" in captured.err and "field 'status'" in captured.err
    assert "2 bad line" not in captured.out and "4 bad line(s) skipped" in captured.out
    assert sorted(r[0] for r in rows(db, "SELECT task_id FROM trajectories")) == ["t0", "t9"]


def test_builtin_judgers_on_known_answers(tmp_path, capsys):
    db = answers_set(tmp_path)
    assert (
        main(
            [
                "score",
                "--db",
                str(db),
                "--judger",
                "workflow",
                "exact",
                "numeric:final_answer,answer,1e-3",
                "--judger",
                "regex:final_answer,pattern",
                "--batch_size",
                "2",
            ]
        )
        == 0
    )
    assert scores_of(db, "workflow") == {"t0/0": 1.0, "t0/1": 0.0, "t1/0": 0.5, "t1/1": None, "t2/0": 1.0, "t3/0": None}
    assert scores_of(db, "exact") == {"t0/0": 1.0, "t0/1": 0.0, "t1/0": 0.0, "t1/1": 0.0, "t2/0": None, "t3/0": 0.0}
    assert scores_of(db, "numeric:final_answer,answer,1e-3") == {
        "t0/0": 1.0,
        "t0/1": 0.0,
        "t1/0": 1.0,
        "t1/1": 0.0,
        "t2/0": None,
        "t3/0": 0.0,
    }
    assert rows(db, "SELECT label FROM scores WHERE judger LIKE 'numeric%' AND value = 0 AND label IS NOT NULL") == [
        ("not a number",)
    ]
    # no task has a 'pattern' field: never applicable
    assert set(scores_of(db, "regex:final_answer,pattern").values()) == {None}


def test_regex_judger_and_bad_pattern(tmp_path):
    trajs = [
        make_traj("a", 0, final="The answer is 42", extra_task={"pattern": r"\b42\b"}),
        make_traj("b", 0, final="4200", extra_task={"pattern": r"\b42\b"}),
        make_traj("c", 0, final="x", extra_task={"pattern": "("}),
    ]
    db = tmp_path / "s.duckdb"
    assert main(["ingest", str(write(tmp_path / "r.jsonl", trajs)), "--db", str(db)]) == 0
    assert main(["score", "--db", str(db), "--judger", "regex:final_answer,pattern"]) == 0
    got = {
        r[0]: r[1:]
        for r in rows(
            db, "SELECT t.task_id, s.value, s.error IS NOT NULL FROM scores s JOIN trajectories t USING (trajectory_id)"
        )
    }
    assert got == {"a": (1.0, False), "b": (0.0, False), "c": (None, True)}


def test_custom_judgers_by_module_function(tmp_path, capsys):
    db = answers_set(tmp_path)
    ref = f"{TESTS / 'judgers_custom.py'}"
    assert (
        main(
            [
                "score",
                "--db",
                str(db),
                "--judger",
                f"{ref}:answer_length",
                "judgers_custom:picky",
                f"{ref}:not_a_number",
                f"{ref}:agentscope_judge",
                f"{ref}:AnswerJudge",
                f"{ref}:completion_chars",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert scores_of(db, f"{ref}:answer_length") == {
        "t0/0": 1.0,
        "t0/1": 1.0,
        "t1/0": 0.0,
        "t1/1": None,
        "t2/0": 0.0,
        "t3/0": 0.0,
    }
    picky = dict(
        rows(
            db,
            """SELECT t.task_id || '/' || t.sample_index, coalesce(s.error, CAST(s.value AS VARCHAR))
                             FROM scores s JOIN trajectories t USING (trajectory_id) WHERE judger = 'judgers_custom:picky'""",
        )
    )
    assert picky == {
        "t0/0": "0.5",
        "t0/1": "0.5",
        "t1/0": "RuntimeError: cannot judge t1",
        "t1/1": "RuntimeError: cannot judge t1",
        "t2/0": "0.5",
        "t3/0": "0.5",
    }
    assert "errors" in out and "cannot judge t1" in out
    assert rows(db, f"SELECT DISTINCT value, error FROM scores WHERE judger = '{ref}:not_a_number'") == [
        (None, "returned nan, not a finite number")
    ]
    assert scores_of(db, f"{ref}:agentscope_judge") == {
        "t0/0": 1.0,
        "t0/1": 0.0,
        "t1/0": 0.0,
        "t1/1": 0.0,
        "t2/0": None,
        "t3/0": 0.0,
    }
    # t1/1 has no final answer, so its response is its last completion; t2's task has no answer: KeyError, recorded
    assert scores_of(db, f"{ref}:AnswerJudge")["t0/0"] == 1.0
    assert rows(db, f"SELECT DISTINCT label FROM scores WHERE judger = '{ref}:AnswerJudge' ORDER BY 1") == [
        ("failure",),
        ("success",),
    ]
    assert rows(
        db, f"SELECT count(*), min(call_index), max(value) FROM scores WHERE judger = '{ref}:completion_chars'"
    ) == [(6, 0, 2.0)]
    # call-level scores stay out of the combined reward
    n_judgers = dict(rows(db, "SELECT task_id || '/' || sample_index, n_judgers FROM rewards"))
    assert n_judgers["t0/0"] == 4  # answer_length, picky, agentscope_judge, AnswerJudge


def test_rescoring_replaces_and_weights_combine(tmp_path):
    db = answers_set(tmp_path)
    assert main(["score", "--db", str(db), "--judger", "workflow", "exact"]) == 0
    assert main(["score", "--db", str(db), "--judger", "workflow=3", "exact"]) == 0
    assert rows(db, "SELECT judger, count(*), min(weight) FROM scores GROUP BY 1 ORDER BY 1") == [
        ("exact", 6, 1.0),
        ("workflow", 6, 3.0),
    ]
    rewards = dict(rows(db, "SELECT task_id || '/' || sample_index, reward FROM rewards"))
    # weighted mean of the judgers that applied: (3 * workflow + 1 * exact) / 4, or the only one that applied
    assert rewards == {"t0/0": 1.0, "t0/1": 0.0, "t1/0": (3 * 0.5 + 0.0) / 4, "t1/1": 0.0, "t2/0": 1.0, "t3/0": 0.0}
    assert main(["score", "--db", str(db), "--remove", "exact", "--judger", "workflow"]) == 0
    assert rows(db, "SELECT DISTINCT judger FROM scores") == [("workflow",)]


def test_views_match_hand_computation(tmp_path):
    shared = [
        make_call(0, prompt=(1, 2), completion=(7,)),
        make_call(1, role="critic", trainable=False, prompt=(9,), completion=(9,)),
    ]
    trajs = []
    rewards = {}
    for iteration in (0, 1):
        for task in ("a", "b", "c"):
            for sample in range(3):
                reward = round(((hash((iteration, task)) % 7) + sample * 3) % 5 / 4, 2) if task != "c" else None
                calls = [make_call(0, prompt=(1, 2), completion=(7 + sample,)), shared[1]]
                trajs.append(
                    make_traj(
                        task,
                        sample,
                        reward=reward,
                        iteration=iteration,
                        calls=calls,
                        run_id=f"r{iteration}",
                        status="error" if (task, sample) == ("b", 2) else "ok",
                    )
                )
                rewards[(iteration, task, sample)] = reward
    db = tmp_path / "s.duckdb"
    assert main(["ingest", str(write(tmp_path / "v.jsonl", trajs)), "--db", str(db)]) == 0
    assert main(["score", "--db", str(db), "--judger", "workflow", "--success_threshold", "0.5"]) == 0

    status = {(i, t, s): "error" if (t, s) == ("b", 2) else "ok" for (i, t, s) in rewards}
    got_stats = {
        (r[0], r[1]): r[2:]
        for r in rows(
            db, "SELECT task_id, iteration, n, n_scored, mean_reward, max_reward, success_rate FROM task_stats"
        )
    }
    for iteration in (0, 1):
        for task in ("a", "b", "c"):
            values = [rewards[(iteration, task, s)] for s in range(3)]
            scored = [v for v in values if v is not None]
            success = (
                sum(
                    1
                    for s in range(3)
                    if status[(iteration, task, s)] == "ok" and values[s] is not None and values[s] >= 0.5
                )
                / 3
            )
            n, n_scored, mean, top, rate = got_stats[(task, iteration)]
            assert (n, n_scored) == (3, len(scored))
            assert mean == (pytest.approx(sum(scored) / len(scored)) if scored else None)
            assert top == (max(scored) if scored else None)
            assert rate == pytest.approx(success)
    best = {
        (r[0], r[1]): (r[2], r[3])
        for r in rows(db, "SELECT task_id, iteration, sample_index, reward FROM best_per_task")
    }
    expected_best = {}
    for (iteration, task, sample), reward in sorted(rewards.items()):
        if reward is None or status[(iteration, task, sample)] != "ok":
            continue
        current = expected_best.get((task, iteration))
        if current is None or reward > current[1]:
            expected_best[(task, iteration)] = (sample, reward)
    assert best == expected_best
    # SFT candidates: trainable calls only, ranked within task and iteration
    sft = rows(db, "SELECT DISTINCT role FROM sft_candidates")
    assert sft == [("default",)]
    ranks = rows(db, "SELECT task_id, iteration, sample_index FROM sft_candidates WHERE task_rank = 1 ORDER BY 1, 2")
    assert {(t, i): s for t, i, s in ranks} == {k: v[0] for k, v in expected_best.items()}
    # DPO candidates: identical prompt ids, different completions, chosen strictly better
    pairs = rows(
        db,
        """SELECT task_id, iteration, prompt_token_ids, chosen_completion_ids, rejected_completion_ids,
                               chosen_reward, rejected_reward, margin, role FROM dpo_candidates""",
    )
    expected_pairs = 0
    for (iteration, task, a), ra in rewards.items():
        for (i2, t2, b), rb in rewards.items():
            if (
                (i2, t2) == (iteration, task)
                and ra is not None
                and rb is not None
                and ra > rb
                and status[(iteration, task, a)] == status[(iteration, task, b)] == "ok"
            ):
                expected_pairs += 1
    assert len(pairs) == expected_pairs > 0
    for _task, _it, prompt, chosen, rejected, rc, rr, margin, role in pairs:
        assert (
            prompt == [1, 2]
            and chosen != rejected
            and rc > rr
            and margin == pytest.approx(rc - rr)
            and role == "default"
        )


def test_template_drift_column(tmp_path, tiny_model, tokenizer):
    messages = [{"role": "system", "content": "You add."}, {"role": "user", "content": "2+2?"}]
    tools = [
        {
            "type": "function",
            "function": {"name": "add", "description": "adds", "parameters": {"type": "object", "properties": {}}},
        }
    ]
    ids = render_prompt_ids(tokenizer, messages, tools)
    calls = [
        make_call(0, prompt=ids, messages=messages, tools=tools),
        make_call(1, prompt=ids[:-1] + [ids[-1] + 1], messages=messages, tools=tools),  # drifted
        make_call(2, trainable=False, prompt=ids + [5], messages=messages, tools=tools),  # not trained: not checked
        make_call(3, prompt=None, completion=None, messages=messages),
    ]  # no engine ids
    db = tmp_path / "s.duckdb"
    path = write(
        tmp_path / "d.jsonl",
        [
            make_traj("t", 0, calls=calls, checkpoint=str(tiny_model)),
            make_traj("u", 0, calls=[make_call(0)], checkpoint="/elsewhere"),
        ],
    )
    assert main(["ingest", str(path), "--db", str(db)]) == 0
    got = rows(
        db,
        "SELECT call_index, template_drift FROM calls JOIN trajectories USING (trajectory_id) WHERE task_id = 't' ORDER BY 1",
    )
    assert got == [(0, False), (1, True), (2, None), (3, None)]
    assert rows(db, "SELECT template_drift FROM calls JOIN trajectories USING (trajectory_id) WHERE task_id = 'u'") == [
        (None,)
    ]


class ScriptedJudgeEngine:
    """Replies from a list, with the tiny model's tokenizer: what the LLM judge must parse."""

    def __init__(self, tokenizer, replies):
        self.tokenizer, self.replies, self.prompts = tokenizer, list(replies), []

    def generate_batch(self, prompts, sampling):
        from astuner.engines import Generation

        self.prompts.extend(prompts)
        return [Generation(p, [], [], self.replies.pop(0), "stop") for p in prompts]


def test_llm_judge_parses_scores_or_records_errors(tokenizer):
    from judge.llm import LLMJudge

    trajs = [
        {
            "trajectory_id": str(i),
            "task_id": "t",
            "main_query": "What is 2+2?",
            "task": {"answer": 4},
            "status": "ok",
            "reward": None,
            "metadata": {"final_answer": "4"},
            "response": "4",
            "calls": [
                {"messages": [{"role": "user", "content": "What is 2+2?"}], "completion_text": "4", "tool_calls": []}
            ],
        }
        for i in range(4)
    ]
    engine = ScriptedJudgeEngine(tokenizer, ["Correct. Score: 7", "score = 10", "Score: 42", "I think it is fine."])
    scores = LLMJudge(engine)(trajs)
    assert [s.value for s in scores] == [0.7, 1.0, None, None]
    assert scores[2].error == "score 42 outside 0..10" and scores[3].error == "no 'Score: N' in the judge's reply"
    assert all(s.explanation for s in scores)
    prompt = tokenizer.decode(engine.prompts[0])
    assert "Reference answer: 4" in prompt and "What is 2+2?" in prompt


@pytest.mark.slow
def test_llm_judge_with_the_tiny_model(tmp_path, tiny_model):
    db = answers_set(tmp_path)
    template = tmp_path / "judge.txt"
    template.write_text("Q: {main_query}\nA: {response}\nRef: {answer}\n{transcript}\nScore 0-10 as 'Score: N'.")
    assert (
        main(
            [
                "score",
                "--db",
                str(db),
                "--judger",
                f"llm:{template}",
                "--judge_model",
                str(tiny_model),
                "--judge_max_tokens",
                "16",
            ]
        )
        == 0
    )
    got = rows(db, "SELECT value, error, explanation FROM scores WHERE judger LIKE 'llm%'")
    assert len(got) == 6
    for value, error, explanation in got:
        assert (value is None) == (error is not None)
        assert explanation is not None  # the raw reply, parsed or not
        if value is not None:
            assert 0.0 <= value <= 1.0


def test_sql_formats(tmp_path, capsys):
    db = answers_set(tmp_path)
    assert main(["score", "--db", str(db)]) == 0
    capsys.readouterr()
    assert main(["sql", "SELECT task_id, mean_reward FROM task_stats ORDER BY task_id", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["task_id", "mean_reward"] and "(4 rows)" in out
    assert main(["sql", "SELECT task_id FROM task_stats ORDER BY 1", "--db", str(db), "--format", "csv"]) == 0
    assert capsys.readouterr().out.split() == ["task_id", "t0", "t1", "t2", "t3"]
    assert (
        main(["sql", "SELECT task_id, n FROM task_stats ORDER BY 1 LIMIT 1", "--db", str(db), "--format", "json"]) == 0
    )
    assert json.loads(capsys.readouterr().out) == {"task_id": "t0", "n": 2}
    out_file = tmp_path / "r.parquet"
    assert main(["sql", "SELECT * FROM rewards", "--db", str(db), "--format", "parquet", "--out", str(out_file)]) == 0
    import datasets

    assert len(datasets.load_dataset("parquet", data_files=str(out_file), split="train")) == 6
    capsys.readouterr()
    assert main(["sql", "SELECT nope FROM rewards", "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("judge sql: error: sql: Binder Error") and err.count("\n") == 1
    assert main(["sql", "SELECT 1", "--db", str(db), "--format", "parquet"]) == 2
    assert "--format parquet needs --out" in capsys.readouterr().err
    # sql opens read-only: writing fails with DuckDB's own read-only error, as one line
    assert main(["sql", "DELETE FROM scores", "--db", str(db)]) == 2
    assert "read-only" in capsys.readouterr().err


def test_bad_options_are_one_line_errors(tmp_path, capsys):
    db = answers_set(tmp_path)
    capsys.readouterr()
    cases = [
        (["score", "--db", str(db), "--judger", "nosuch"], "--judger 'nosuch': unknown judger; use workflow"),
        (["score", "--db", str(db), "--judger", "nosuch_module:fn"], "cannot import nosuch_module"),
        (["score", "--db", str(db), "--where", "iteraton = 1"], "--where 'iteraton = 1'"),
        (["sql", "SELECT 1", "--db", str(tmp_path / "none.duckdb")], "no store at"),
        (["ingest", str(tmp_path / "missing"), "--db", str(db)], "no traces at"),
        (["frobnicate"], "unknown subcommand 'frobnicate'"),
    ]
    for argv, expected in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1, (argv, err)


def test_store_of_another_version_or_kind(tmp_path, capsys):
    db = answers_set(tmp_path)
    con = open_store(db)
    con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    con.close()
    assert main(["sql", "SELECT 1", "--db", str(db)]) == 2
    assert "has store schema version 99, this astuner uses 3" in capsys.readouterr().err
    other = tmp_path / "other.duckdb"
    import duckdb

    duckdb.connect(str(other)).execute("CREATE TABLE x (a INT)").close()
    assert main(["score", "--db", str(other)]) == 2
    assert "not an astuner store" in capsys.readouterr().err
    junk = tmp_path / "junk.duckdb"
    junk.write_text("not a database")
    assert main(["ingest", str(tmp_path / "traces"), "--db", str(junk)]) == 2
    assert "cannot open as a DuckDB store" in capsys.readouterr().err


@pytest.mark.slow
def test_second_writer_gets_a_clear_error(tmp_path, capsys):
    db = answers_set(tmp_path)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; con = duckdb.connect(sys.argv[1]); print('ready', flush=True); sys.stdin.read()",
            str(db),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        capsys.readouterr()
        for argv in (
            ["score", "--db", str(db)],
            ["ingest", str(tmp_path / "traces"), "--db", str(db)],
            ["sql", "SELECT 1", "--db", str(db)],
        ):
            assert main(argv) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and f"is held by process {holder.pid}" in err and "python" in err, err
    finally:
        holder.communicate("", timeout=30)
    assert main(["sql", "SELECT count(*) FROM trajectories", "--db", str(db)]) == 0


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.images = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs)["src"])


def test_report_writes_plots_and_a_browsable_page(tmp_path, capsys):
    calls = [
        make_call(0, text="<b>not bold</b>", messages=[{"role": "user", "content": "q <script>"}]),
        make_call(1, role="critic", trainable=False),
    ]
    trajs = [
        make_traj(f"t{i}", s, reward=float(s), final=str(s), iteration=it, calls=calls, run_id=f"r{it}")
        for it in (0, 1)
        for i in range(3)
        for s in range(2)
    ] + [make_traj("t9", 0, status="error")]
    db = tmp_path / "s.duckdb"
    assert main(["ingest", str(write(tmp_path / "t.jsonl", trajs)), "--db", str(db)]) == 0
    assert main(["score", "--db", str(db), "--judger", "workflow", "exact"]) == 0
    out = tmp_path / "report"
    assert main(["report", "--db", str(db), "--out", str(out)]) == 0
    page = out / "index.html"
    parser = _Tags()
    parser.feed(page.read_text())
    assert parser.images == ["reward_by_iteration.png", "reward_by_role.png", "success_by_iteration.png"]
    for name in parser.images:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = page.read_text()
    assert "&lt;script&gt;" in text and "<script>" not in text and "&lt;b&gt;not bold" in text
    assert (
        text.count("<details><summary><b>") + text.count("<details open><summary><b>") == 13
        and "critic" in text
        and "boom" in text
    )
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium:  # where a browser is installed, open the page headless and screenshot it
        shot = tmp_path / "shot.png"
        subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--no-first-run",
                f"--user-data-dir={tmp_path / 'profile'}",
                f"--screenshot={shot}",
                "--window-size=1200,1600",
                page.as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        assert shot.read_bytes()[:4] == b"\x89PNG"


def test_help_shows_ready_to_paste_examples(capsys):
    assert main(["--help"]) == 0
    assert "python -m judge ingest runs/demo/traces --db" in capsys.readouterr().out
    for command in ("ingest", "score", "sql", "report"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        assert f"python -m judge {command} " in out and "--db" in out


@pytest.mark.slow
def test_python_m_judge_end_to_end(tmp_path):
    """The commands a user pastes, as subprocesses: ingest, score, sql."""
    db = tmp_path / "s.duckdb"
    traces = write(
        tmp_path / "traces" / "p.jsonl",
        [make_traj("t0", 0, reward=1.0, final="4"), make_traj("t1", 0, reward=0.0, final="3")],
    )

    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "judge", *args], capture_output=True, text=True, timeout=300, cwd=TESTS.parent
        )

    assert run("ingest", str(traces), "--db", str(db)).returncode == 0
    assert run("score", "--db", str(db), "--judger", "workflow", "exact=2").returncode == 0
    result = run("sql", "SELECT task_id, reward FROM rewards ORDER BY 1", "--db", str(db), "--format", "csv")
    assert result.returncode == 0 and result.stdout.split() == ["task_id,reward", "t0,1.0", "t1,0.0"]


@pytest.mark.slow
def test_real_collect_traces_ingest_without_drift(tmp_path, capsys):
    """Traces from python -m collect (two roles, one untrained): every trainable engine call
    re-renders to its recorded prompt ids, and the store keeps roles apart."""
    from helpers import workflow_ref, write_tasks

    from collect.main import main as collect_main

    tasks = write_tasks(tmp_path / "tasks.jsonl", 2)
    for workflow in ("WerewolfLite", "ExampleMathLearn"):
        assert (
            collect_main(
                [
                    "--workflow",
                    workflow_ref(workflow),
                    "--tasks",
                    str(tasks),
                    "--out",
                    str(tmp_path / workflow),
                    "--max-tokens",
                    "24",
                    "--seed",
                    "0",
                    "--samples-per-task",
                    "2",
                ]
            )
            == 0
        )
    db = tmp_path / "s.duckdb"
    assert main(["ingest", str(tmp_path / "WerewolfLite"), str(tmp_path / "ExampleMathLearn"), "--db", str(db)]) == 0
    out = capsys.readouterr().out
    checked = rows(db, "SELECT count(*) FROM calls WHERE trainable AND prompt_token_ids IS NOT NULL")[0][0]
    assert checked >= 8 and f"template drift: 0 drifted of {checked} trainable engine calls checked" in out
    assert rows(db, "SELECT DISTINCT template_drift FROM calls WHERE trainable") == [(False,)]
    assert rows(
        db,
        """SELECT role, trainable, count(*), count(template_drift) FROM calls JOIN trajectories USING (trajectory_id)
                       WHERE workflow = 'werewolf_lite' GROUP BY ALL ORDER BY role""",
    ) == [("seer", True, 4, 4), ("villager", False, 4, 0), ("werewolf", True, 4, 4)]
    assert rows(db, "SELECT stage, count(*) FROM runs GROUP BY stage ORDER BY stage") == [("collect", 2), ("ingest", 1)]
