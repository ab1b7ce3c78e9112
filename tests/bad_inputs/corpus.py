"""The bad-input corpus: every way a user can hand a stage a broken input, and what it must answer.

Each case names the command, builds its bad input (small files in the case's tmp folder, or
literal files in data/), and states the exit code (!= 0, or 0 where the documented behaviour is
a per-item error record), a regex that the one error line must match (it names the cause and
the file:line, the option or the item), and for per-item cases the record that must exist.
harness.py runs a case and checks it.

    HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q tests/bad_inputs      # the corpus as tests
    .venv/bin/python tests/bad_inputs/report.py                           # the table: case | exit | error line
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from harness import DATA, JUDGERS, WORKFLOWS, Case, Ctx


def wf(name: str) -> str:
    return f"{WORKFLOWS}:{name}"


def collect_args(
    ctx: Ctx, *extra: str, workflow: str = "Echo", ref: str | None = None, tasks: Path | str | None = None
) -> list[str]:
    """collect of `workflow` (a class of data/corpus_workflows.py, or any --workflow `ref`) into ctx.new_out;
    `extra` flags come last, so they override (e.g. --out)."""
    return [
        "--workflow",
        ref or wf(workflow),
        "--tasks",
        str(tasks or ctx.tasks),
        "--out",
        str(ctx.new_out),
        "--max-tokens",
        "8",
        "--seed",
        "0",
        *extra,
    ]


def trajectories(out: Path) -> list:
    from astuner.trajectory import read_trajectories

    return list(read_trajectories(out / "traces"))


def query(db: Path, sql: str, params=()) -> list[tuple]:
    from astuner.store import open_store

    con = open_store(db, read_only=True)
    try:
        return con.execute(sql, list(params)).fetchall()
    finally:
        con.close()


def errors_recorded(pattern: str, n: int = 2):
    """Per-item collect: n trajectories, each status error with an error matching `pattern`."""

    def check(ctx: Ctx) -> None:
        trajs = trajectories(ctx.new_out)
        assert len(trajs) == n, f"{len(trajs)} trajectories written, expected {n}"
        for t in trajs:
            assert t.status == "error" and re.search(pattern, t.error or ""), f"{t.status}: {t.error}"
            assert t.traceback, "no traceback recorded"

    return check


def score_errors(judger: str, pattern: str):
    """Per-item score: every trajectory got a score row of `judger` with no value and an error."""

    def check(ctx: Ctx) -> None:
        got = query(ctx.db, "SELECT value, error FROM scores WHERE judger = ?", [judger])
        n = query(ctx.db, "SELECT count(*) FROM trajectories")[0][0]
        assert len(got) == n, f"{len(got)} score rows of {judger}, expected {n}"
        for value, error in got:
            assert value is None and error and re.search(pattern, error), (value, error)

    return check


def ingested(n_new: int, run_id: str = "corpus"):
    """Per-item ingest: the good lines went in, the bad ones did not."""

    def check(ctx: Ctx) -> None:
        got = query(ctx.db, "SELECT count(*) FROM trajectories WHERE run_id = ?", [run_id])[0][0]
        assert got == n_new, f"{got} trajectories of run {run_id} ingested, expected {n_new}"

    return check


def absent(name: str):
    def check(ctx: Ctx) -> None:
        assert not (ctx.dir / name).exists(), f"{name} was created"

    return check


def drift_unchecked(n: int):
    def check(ctx: Ctx) -> None:
        got = query(ctx.db, "SELECT count(*) FROM calls WHERE trajectory_id LIKE 'moved-%' AND template_drift IS NULL")[
            0
        ][0]
        assert got == n, f"{got} moved calls with template_drift NULL (not checked), expected {n}"

    return check


def nothing_written(ctx: Ctx) -> None:
    assert not (ctx.new_out / "collect.json").exists(), "collect.json left behind"
    assert not list(ctx.new_out.rglob("*.jsonl")), "traces left behind"


def corrupt_resume_out(ctx: Ctx) -> Path:
    """A collect --out whose traces end in a half-written line (as an editor or a copy, not collect, would leave)."""
    out = ctx.dir / "resume-out"
    shutil.copytree(ctx.out, out)
    [part] = sorted((out / "traces").glob("part-*.jsonl"))
    part.write_bytes(part.read_bytes() + b'{"schema_version": 1, "trajectory_id": "abc", "run_')
    return out


def traces_with_checkpoint(ctx: Ctx, checkpoint: Path) -> Path:
    """The world's traces re-pointed at another checkpoint folder (under another run id, so they are new)."""
    lines = []
    for part in sorted(ctx.traces.glob("part-*.jsonl")):
        for line in part.read_text().splitlines():
            record = json.loads(line)
            record["checkpoint"]["path"] = str(checkpoint)
            record["run_id"] = "moved"
            record["trajectory_id"] = "moved-" + record["trajectory_id"]
            lines.append(json.dumps(record))
    return ctx.write("moved/traces.jsonl", "\n".join(lines) + "\n")


NO_TOKENIZER = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")  # the tiny model's tokenizer files
SYNTAX_ERROR = "from astuner import Workflow\n\n\nclass Broken(Workflow)\n    pass\n"
OTHER_VERSION_STORE = (
    "CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL); "
    "INSERT INTO meta VALUES ('schema_version', '2'), ('success_threshold', '1.0')"
)
NOT_A_STORE = "CREATE TABLE results (id INTEGER, score DOUBLE); INSERT INTO results VALUES (1, 0.5)"


def empty_store(ctx: Ctx) -> Path:
    from astuner.store import open_store

    path = ctx.dir / "empty.duckdb"
    open_store(path).close()
    return path


def finetune_args(ctx: Ctx, *extra: str, output: str = "ckpt") -> list[str]:
    return ["--db", str(ctx.db), "--output_dir", str(ctx.dir / output), "--max_steps", "1", *extra]


def iterate_args(ctx: Ctx, recipe: Path | str, *extra: str) -> list[str]:
    # --iterations 0: should a recipe pass every check, the loop has no stage to run
    return ["--recipe", str(recipe), "--run-dir", str(ctx.dir / "run"), "--iterations", "0", *extra]


def data(name: str) -> Path:
    return DATA / name


def _other_recipe_run(ctx: Ctx) -> Path:
    run = ctx.dir / "run"
    run.mkdir()
    (run / "progress.json").write_text(
        json.dumps(
            {
                "recipe": {
                    "model": None,
                    "accelerate_config": None,
                    "collect": {"seed": 7},
                    "judge": {},
                    "finetune": {},
                },
                "done": {},
            }
        )
    )
    return ctx.write("recipe.yaml", "collect:\n  seed: 0\n")


def _non_empty_run_dir(ctx: Ctx) -> Path:
    ctx.write("run/notes.txt", "my own files\n")
    return ctx.write("recipe.yaml", "collect:\n  seed: 0\n")


# ------------------------------------------------------------------ the corpus

C = Case
CASES: list[Case] = [
    # ---- collect: tasks
    C(
        "collect/tasks-truncated-line",
        "collect",
        "tasks .jsonl whose line 2 is cut off mid-object (data/tasks_truncated.jsonl)",
        lambda c: collect_args(c, tasks=data("tasks_truncated.jsonl")),
        2,
        r"tasks_truncated\.jsonl:2: not valid JSON",
    ),
    C(
        "collect/tasks-not-utf8",
        "collect",
        "tasks .jsonl with Latin-1 bytes on line 2 (data/tasks_not_utf8.jsonl)",
        lambda c: collect_args(c, tasks=data("tasks_not_utf8.jsonl")),
        2,
        r"tasks_not_utf8\.jsonl:2: not UTF-8",
    ),
    C(
        "collect/tasks-empty-file",
        "collect",
        "an empty tasks file (data/tasks_empty.jsonl)",
        lambda c: collect_args(c, tasks=data("tasks_empty.jsonl")),
        2,
        r"--tasks \S*tasks_empty\.jsonl: no tasks",
    ),
    C(
        "collect/tasks-row-without-query",
        "collect",
        "--query-field question, and a task row without it (data/tasks_no_query.jsonl; "
        "with no --query-field such a row is accepted, as AgentJet does)",
        lambda c: collect_args(c, "--query-field", "question", tasks=data("tasks_no_query.jsonl")),
        2,
        r"tasks_no_query\.jsonl:2: no query field 'question' .*--query-field",
    ),
    C(
        "collect/tasks-duplicate-ids",
        "collect",
        "two rows with task_id t0 (data/tasks_duplicate_ids.jsonl)",
        lambda c: collect_args(c, tasks=data("tasks_duplicate_ids.jsonl")),
        2,
        r"tasks_duplicate_ids\.jsonl:3: task id 't0' repeats \S*tasks_duplicate_ids\.jsonl:1",
    ),
    C(
        "collect/tasks-row-not-object",
        "collect",
        "a task line that is a JSON list (data/tasks_not_object.jsonl)",
        lambda c: collect_args(c, tasks=data("tasks_not_object.jsonl")),
        2,
        r"tasks_not_object\.jsonl:1: expected a JSON object, got list",
    ),
    C(
        "collect/tasks-unknown-extension",
        "collect",
        "a .tsv task file (data/tasks.tsv)",
        lambda c: collect_args(c, tasks=data("tasks.tsv")),
        2,
        r"--tasks \S*tasks\.tsv: unknown file type '\.tsv'",
    ),
    C(
        "collect/tasks-missing-file",
        "collect",
        "--tasks naming a file that does not exist",
        lambda c: collect_args(c, tasks=c.dir / "no_such_tasks.jsonl"),
        2,
        r"--tasks \S*no_such_tasks\.jsonl: no such file",
    ),
    C(
        "collect/tasks-json-not-json",
        "collect",
        "a .json task file that is not JSON (data/tasks_bad.json)",
        lambda c: collect_args(c, tasks=data("tasks_bad.json")),
        2,
        r"--tasks \S*tasks_bad\.json: cannot read it as json",
    ),
    C(
        "collect/tasks-parquet-not-parquet",
        "collect",
        "a .parquet task file that is text (data/tasks_bad.parquet)",
        lambda c: collect_args(c, tasks=data("tasks_bad.parquet")),
        2,
        r"--tasks \S*tasks_bad\.parquet: cannot read it as parquet",
    ),
    C(
        "collect/tasks-generator-missing",
        "collect",
        "--tasks naming a module:function that does not import",
        lambda c: collect_args(c, tasks="astuner_no_such_module:tasks"),
        2,
        r"--tasks astuner_no_such_module:tasks: cannot load the generator .*No module named 'astuner_no_such_module'",
    ),
    # ---- collect: workflow
    C(
        "collect/workflow-import-fails",
        "collect",
        "a workflow file whose import raises ModuleNotFoundError (data/broken_import.py)",
        lambda c: collect_args(c, ref=f"{data('broken_import.py')}:Broken"),
        2,
        r"--workflow '\S*broken_import\.py:Broken': importing \S*broken_import\.py failed at line 4: ModuleNotFoundError",
    ),
    C(
        "collect/workflow-syntax-error",
        "collect",
        "a workflow file with a syntax error on line 4 (written at run time, for linters)",
        lambda c: collect_args(c, ref=f"{c.write('syntax_error.py', SYNTAX_ERROR)}:Broken"),
        2,
        r"--workflow '\S*syntax_error\.py:Broken': importing \S*syntax_error\.py failed: SyntaxError: .*line 4",
    ),
    C(
        "collect/workflow-not-a-workflow",
        "collect",
        "--workflow naming a plain class",
        lambda c: collect_args(c, workflow="NotAWorkflow"),
        2,
        r"--workflow '\S*:NotAWorkflow': NotAWorkflow is a type, not a Workflow subclass",
    ),
    C(
        "collect/workflow-sync-function",
        "collect",
        "--workflow naming a plain (not async) function",
        lambda c: collect_args(c, workflow="sync_function"),
        2,
        r"--workflow '\S*:sync_function': sync_function is a function, not a Workflow subclass or an async workflow function",
    ),
    C(
        "collect/workflow-missing-name",
        "collect",
        "--workflow naming a class the file lacks",
        lambda c: collect_args(c, workflow="Nope"),
        2,
        r"--workflow '\S*:Nope': \S* has no attribute 'Nope'",
    ),
    C(
        "collect/workflow-missing-file",
        "collect",
        "--workflow naming a file that does not exist",
        lambda c: collect_args(c, ref=f"{c.dir / 'nowhere.py'}:Flow"),
        2,
        r"--workflow '\S*nowhere\.py:Flow': no file",
    ),
    C(
        "collect/workflow-without-colon",
        "collect",
        "--workflow Echo (no module part)",
        lambda c: collect_args(c, ref="Echo"),
        2,
        r"--workflow 'Echo': expected module:Class or path/to/file\.py:Class",
    ),
    C(
        "collect/execute-returns-dict",
        "collect",
        "execute returns a dict, not a WorkflowOutput (per run: status error)",
        lambda c: collect_args(c, workflow="ReturnsDict"),
        0,
        r"collect: 2 of 2 runs failed .*task t0 sample 0: TypeError: ReturnsDict\.execute returned dict; expected astuner\.WorkflowOutput",
        record=errors_recorded(r"ReturnsDict\.execute returned dict"),
    ),
    C(
        "collect/nonfinite-reward",
        "collect",
        "execute returns WorkflowOutput(reward=nan) (per run: status error)",
        lambda c: collect_args(c, workflow="NanReward"),
        0,
        r"collect: 2 of 2 runs failed .*task t0 sample 0: TypeError: WorkflowOutput\.reward must be a finite float or None, got nan",
        record=errors_recorded(r"finite float or None, got nan"),
    ),
    C(
        "collect/workflow-raises",
        "collect",
        "execute raises RuntimeError (per run: status error, traceback recorded)",
        lambda c: collect_args(c, workflow="Raises"),
        0,
        r"collect: 2 of 2 runs failed .*task t0 sample 0: RuntimeError: the workflow failed on purpose \(at \S*corpus_workflows\.py:\d+\)",
        record=errors_recorded(r"RuntimeError: the workflow failed on purpose"),
    ),
    C(
        "collect/trainable-targets-unregistered",
        "collect",
        "--trainable-targets seerr: a role no run registers",
        lambda c: collect_args(
            c, "--trainable-targets", "seerr", "--samples-per-task", "3", "--flush-interval-s", "0", workflow="Village"
        ),
        2,
        r"^collect: --trainable-targets seerr: no run registered role 'seerr' \(registered: hunter, seer, villager\); "
        r"fix the name \(nothing was written\)$",
        record=nothing_written,
    ),
    C(
        "collect/trainable-targets-unchecked",
        "collect",
        "--trainable-targets seerr, but every run fails: nothing to check against",
        lambda c: collect_args(c, "--trainable-targets", "seerr", workflow="Raises"),
        0,
        r"collect: warning: --trainable-targets names seerr, which no run registered \(registered: none\); no run finished ok",
        record=errors_recorded(r"the workflow failed on purpose"),
    ),
    C(
        "collect/trainable-targets-empty",
        "collect",
        "--trainable-targets ',': names no role",
        lambda c: collect_args(c, "--trainable-targets", ","),
        2,
        r"^collect: --trainable-targets ',': names no role; give role names \(a,b\) or '\*' for every role$",
    ),
    C(
        "collect/tuner-config-bad-yaml",
        "collect",
        "--tuner-config naming a YAML file that does not parse",
        lambda c: collect_args(c, "--tuner-config", str(c.write("tuner.yaml", "ajet:\n  rollout: [unclosed\n"))),
        2,
        r"^collect: --tuner-config \S*tuner\.yaml: not valid YAML at line \d+ .*give a YAML file or a mapping",
    ),
    C(
        "collect/tuner-config-bad-max-steps",
        "collect",
        "--tuner-config mapping with max_steps 0",
        lambda c: collect_args(c, "--tuner-config", "{ajet: {rollout: {multi_turn: {max_steps: 0}}}}"),
        2,
        r"^collect: --tuner-config: ajet\.rollout\.multi_turn\.max_steps must be a positive integer, got 0$",
    ),
    # ---- collect: checkpoint and engine
    C(
        "collect/model-not-a-checkpoint",
        "collect",
        "--model naming a folder without config.json",
        lambda c: collect_args(c, "--model", str(c.write("empty-model/README.md", "weights elsewhere\n").parent)),
        2,
        r"--model \S*empty-model: not a checkpoint folder \(no config\.json\)",
    ),
    C(
        "collect/model-no-tokenizer",
        "collect",
        "a checkpoint folder with config.json and weights but no tokenizer files",
        lambda c: collect_args(c, "--model", str(c.checkpoint("no-tokenizer", NO_TOKENIZER))),
        2,
        r"--model \S*no-tokenizer: no tokenizer files .*tokenizer\.save_pretrained",
    ),
    C(
        "collect/model-no-chat-template",
        "collect",
        "a checkpoint whose tokenizer has no chat template (chat_template.jinja removed)",
        lambda c: collect_args(c, "--model", str(c.checkpoint("no-template", ("chat_template.jinja",)))),
        2,
        r"--model \S*no-template: the tokenizer has no chat template .*chat_template\.jinja",
    ),
    C(
        "collect/model-config-not-json",
        "collect",
        "a checkpoint whose config.json is not JSON",
        lambda c: collect_args(
            c, "--model", str(c.checkpoint("bad-config", edit=lambda p: (p / "config.json").write_text("{x: 1")))
        ),
        2,
        r"--model \S*bad-config: config\.json is not valid JSON \(.*line 1",
    ),
    C(
        "collect/unknown-engine",
        "collect",
        "--engine tensorrt",
        lambda c: collect_args(c, "--engine", "tensorrt"),
        2,
        r"--engine 'tensorrt': unknown engine; choose one of transformers, vllm",
    ),
    C(
        "collect/concurrency-zero",
        "collect",
        "--concurrency 0",
        lambda c: collect_args(c, "--concurrency", "0"),
        2,
        r"--concurrency 0: must be at least 1",
    ),
    C(
        "collect/shard-out-of-range",
        "collect",
        "--shard 3/2",
        lambda c: collect_args(c, "--shard", "3/2"),
        2,
        r"--shard '3/2': expected K/N with 0 <= K < N",
    ),
    C(
        "collect/engine-args-not-json",
        "collect",
        "--engine vllm --engine-args '{bad'",
        lambda c: collect_args(c, "--engine", "vllm", "--engine-args", "{bad"),
        2,
        r"--engine-args '\{bad': not JSON",
        record=nothing_written,
    ),
    C(
        "collect/not-a-number",
        "collect",
        "--concurrency many",
        lambda c: collect_args(c, "--concurrency", "many"),
        2,
        r"argument --concurrency: invalid int value: 'many'",
    ),
    C(
        "collect/unknown-flag",
        "collect",
        "--sampels-per-task 2 (misspelt flag)",
        lambda c: collect_args(c, "--sampels-per-task", "2"),
        2,
        r"unrecognized arguments: --sampels-per-task 2",
    ),
    C(
        "collect/config-not-yaml",
        "collect",
        "--config file that is not YAML (data/config_not_yaml.yaml)",
        lambda c: ["--config", str(data("config_not_yaml.yaml")), "--out", str(c.new_out)],
        2,
        r"--config \S*config_not_yaml\.yaml: not valid YAML at line 2, column 1 \(expected ',' or '\]'",
    ),
    C(
        "collect/config-is-a-list",
        "collect",
        "--config file holding a YAML list (data/config_list.yaml)",
        lambda c: ["--config", str(data("config_list.yaml")), "--out", str(c.new_out)],
        2,
        r"--config \S*config_list\.yaml: expected a mapping of option: value, got list",
    ),
    C(
        "collect/config-unknown-option",
        "collect",
        "--config file with a misspelt option (data/config_unknown_option.yaml)",
        lambda c: ["--config", str(data("config_unknown_option.yaml")), "--out", str(c.new_out)],
        2,
        r"--config \S*config_unknown_option\.yaml: unknown option\(s\) sampels_per_task",
    ),
    C(
        "collect/resume-with-other-settings",
        "collect",
        "re-running into an --out collected with another temperature",
        lambda c: collect_args(c, "--samples-per-task", "2", "--out", str(c.out), "--temperature", "0.5"),
        2,
        r"collect: --out \S*out holds a run with sampling=.*this command has .*use another --out or the same settings",
    ),
    C(
        "collect/resume-over-corrupt-traces",
        "collect",
        "resuming an --out whose part file ends in a half-written line",
        lambda c: collect_args(c, "--samples-per-task", "2", "--out", str(corrupt_resume_out(c))),
        2,
        r"--out \S*resume-out: \S*part-000001\.jsonl:5: not valid JSON",
    ),
    C(
        "collect/out-is-a-file",
        "collect",
        "--out naming an existing file",
        lambda c: collect_args(c, "--out", str(c.write("out.txt", "not a folder\n"))),
        2,
        r"--out \S*out\.txt: cannot create the output folder \(.*\)",
    ),
    # ---- judge ingest
    C(
        "ingest/truncated-line",
        "judge ingest",
        "traces whose line 2 is cut off (data/traces_truncated.jsonl): skipped, named",
        lambda c: [str(data("traces_truncated.jsonl")), "--db", str(c.db)],
        0,
        r"^skipped \S*traces_truncated\.jsonl:2: not valid JSON",
        record=ingested(2),
    ),
    C(
        "ingest/truncated-line-strict",
        "judge ingest",
        "the same with --strict",
        lambda c: [str(data("traces_truncated.jsonl")), "--db", str(c.db), "--strict"],
        2,
        r"traces_truncated\.jsonl:2: not valid JSON .*\(--strict: nothing was ingested\)",
    ),
    C(
        "ingest/not-utf8",
        "judge ingest",
        "a trace line with non-UTF-8 bytes (data/traces_not_utf8.jsonl)",
        lambda c: [str(data("traces_not_utf8.jsonl")), "--db", str(c.db)],
        0,
        r"^skipped \S*traces_not_utf8\.jsonl:2: not UTF-8",
        record=ingested(1),
    ),
    C(
        "ingest/schema-version-2",
        "judge ingest",
        "a trace line of schema_version 2 (data/traces_schema_v2.jsonl)",
        lambda c: [str(data("traces_schema_v2.jsonl")), "--db", str(c.db)],
        0,
        r"^skipped \S*traces_schema_v2\.jsonl:2: schema_version 2, this astuner reads version 1",
        record=ingested(1),
    ),
    C(
        "ingest/schema-version-2-strict",
        "judge ingest",
        "the same with --strict",
        lambda c: [str(data("traces_schema_v2.jsonl")), "--db", str(c.db), "--strict"],
        2,
        r"traces_schema_v2\.jsonl:2: schema_version 2, this astuner reads version 1.*--strict: nothing was ingested",
    ),
    C(
        "ingest/missing-field",
        "judge ingest",
        "a trace line without status (data/traces_missing_field.jsonl)",
        lambda c: [str(data("traces_missing_field.jsonl")), "--db", str(c.db)],
        0,
        r"^skipped \S*traces_missing_field\.jsonl:2: field 'status': Field required",
        record=ingested(1),
    ),
    C(
        "ingest/wrong-type",
        "judge ingest",
        "a trace line whose sample_index is a string (data/traces_wrong_type.jsonl)",
        lambda c: [str(data("traces_wrong_type.jsonl")), "--db", str(c.db)],
        0,
        r"^skipped \S*traces_wrong_type\.jsonl:2: field 'sample_index': Input should be a valid integer",
        record=ingested(1),
    ),
    C(
        "ingest/not-an-object",
        "judge ingest",
        "a trace line that is a JSON list (data/traces_not_object.jsonl)",
        lambda c: [str(data("traces_not_object.jsonl")), "--db", str(c.db)],
        0,
        r"^skipped \S*traces_not_object\.jsonl:1: expected a JSON object, got list",
        record=ingested(1),
    ),
    C(
        "ingest/missing-path",
        "judge ingest",
        "a traces path that does not exist",
        lambda c: [str(c.dir / "no-traces"), "--db", str(c.db)],
        2,
        r"judge ingest: error: no traces at \S*no-traces; pass \.jsonl files",
    ),
    C(
        "ingest/empty-folder",
        "judge ingest",
        "a traces folder with no .jsonl files",
        lambda c: [str(c.write("empty/README.md", "nothing yet\n").parent), "--db", str(c.db)],
        2,
        r"judge ingest: error: no \*\.jsonl files under \S*empty",
    ),
    C(
        "ingest/no-traces-given",
        "judge ingest",
        "no TRACES argument",
        lambda c: ["--db", str(c.db)],
        2,
        r"judge ingest: error: no traces given",
    ),
    C(
        "ingest/db-not-duckdb",
        "judge ingest",
        "--db naming a text file",
        lambda c: [str(c.traces), "--db", str(c.write("notes.duckdb", "my notes\n"))],
        2,
        r"\S*notes\.duckdb: cannot open as a DuckDB store \(not a DuckDB file\); --db takes a store",
    ),
    C(
        "ingest/db-not-a-store",
        "judge ingest",
        "--db naming a DuckDB file of another program",
        lambda c: [str(c.traces), "--db", str(c.store("other.duckdb", NOT_A_STORE))],
        2,
        r"\S*other\.duckdb is a DuckDB file but not an astuner store \(no meta table\); use another --db path",
    ),
    C(
        "ingest/db-other-schema-version",
        "judge ingest",
        "--db naming a store of schema version 2",
        lambda c: [str(c.traces), "--db", str(c.store("v2.duckdb", OTHER_VERSION_STORE))],
        2,
        r"\S*v2\.duckdb has store schema version 2, this astuner uses 3",
    ),
    C(
        "ingest/db-locked",
        "judge ingest",
        "--db held by another process's write connection",
        lambda c: [str(c.traces), "--db", str(c.db)],
        2,
        r"\S*store\.duckdb is held by process \d+ .*wait for it to finish",
        locked=True,
    ),
    C(
        "ingest/db-is-a-folder",
        "judge ingest",
        "--db naming a folder",
        lambda c: [str(c.traces), "--db", str(c.traces)],
        2,
        r"\S*traces is a folder; --db takes a DuckDB file",
    ),
    C(
        "ingest/checkpoint-without-tokenizer",
        "judge ingest",
        "traces whose checkpoint folder has no tokenizer (template drift cannot be checked)",
        lambda c: [str(traces_with_checkpoint(c, c.checkpoint("no-tokenizer", NO_TOKENIZER))), "--db", str(c.db)],
        0,
        r"template drift: .*4 not checked \(checkpoint \S*no-tokenizer: no tokenizer files",
        record=drift_unchecked(4),
    ),
    # ---- judge score
    C(
        "score/unknown-judger",
        "judge score",
        "--judger bogus",
        lambda c: ["--db", str(c.db), "--judger", "bogus"],
        2,
        r"--judger 'bogus': unknown judger; use workflow, exact",
    ),
    C(
        "score/judger-import-fails",
        "judge score",
        "--judger naming a module that does not import",
        lambda c: ["--db", str(c.db), "--judger", "astuner_no_such_module:judge"],
        2,
        r"--judger 'astuner_no_such_module:judge': cannot import astuner_no_such_module",
    ),
    C(
        "score/judger-missing-function",
        "judge score",
        "--judger naming a function the file lacks",
        lambda c: ["--db", str(c.db), "--judger", f"{JUDGERS}:nope"],
        2,
        r"--judger '\S*corpus_judgers\.py:nope': \S* has no attribute 'nope'",
    ),
    C(
        "score/judger-not-callable",
        "judge score",
        "--judger naming an int",
        lambda c: ["--db", str(c.db), "--judger", f"{JUDGERS}:not_callable"],
        2,
        r"--judger '\S*corpus_judgers\.py:not_callable': int is not callable",
    ),
    C(
        "score/judger-negative-weight",
        "judge score",
        "--judger workflow=-1",
        lambda c: ["--db", str(c.db), "--judger", "workflow=-1"],
        2,
        r"--judger 'workflow=-1': weight must be a finite number >= 0",
    ),
    C(
        "score/judger-returns-nan",
        "judge score",
        "a judger returning NaN (per trajectory: a score row with the error)",
        lambda c: ["--db", str(c.db), "--judger", f"{JUDGERS}:nan_judger"],
        0,
        r"corpus_judgers\.py:nan_judger: 4 error\(s\), first: trajectory \w+: returned nan, not a finite number",
        record=score_errors(f"{JUDGERS}:nan_judger", r"returned nan, not a finite number"),
    ),
    C(
        "score/judger-raises",
        "judge score",
        "a judger that raises (per trajectory: a score row with the error)",
        lambda c: ["--db", str(c.db), "--judger", f"{JUDGERS}:raising_judger"],
        0,
        r"corpus_judgers\.py:raising_judger: 4 error\(s\), first: trajectory \w+: RuntimeError: the judger failed on purpose",
        record=score_errors(f"{JUDGERS}:raising_judger", r"RuntimeError: the judger failed on purpose"),
    ),
    C(
        "score/judger-wrong-count",
        "judge score",
        "a judger returning one value too many",
        lambda c: ["--db", str(c.db), "--judger", f"{JUDGERS}:wrong_count_judger"],
        0,
        r"corpus_judgers\.py:wrong_count_judger: 4 error\(s\), first: trajectory \w+: ValueError: returned 2 values for 1 items",
        record=score_errors(f"{JUDGERS}:wrong_count_judger", r"returned 2 values for 1 items"),
    ),
    C(
        "score/judger-returns-strings",
        "judge score",
        "a judger returning text instead of numbers",
        lambda c: ["--db", str(c.db), "--judger", f"{JUDGERS}:string_judger"],
        0,
        r"corpus_judgers\.py:string_judger: 4 error\(s\), first: trajectory \w+: returned str 'very good', expected a float or None",
        record=score_errors(f"{JUDGERS}:string_judger", r"returned str 'very good'"),
    ),
    C(
        "score/where-bad-sql",
        "judge score",
        "--where 'iteration = = 1'",
        lambda c: ["--db", str(c.db), "--where", "iteration = = 1"],
        2,
        r"--where 'iteration = = 1': Parser Error",
    ),
    C(
        "score/where-unknown-column",
        "judge score",
        "--where 'iteraton = 0' (misspelt column)",
        lambda c: ["--db", str(c.db), "--where", "iteraton = 0"],
        2,
        r"--where 'iteraton = 0': Binder Error: .*iteraton",
    ),
    C(
        "score/batch-size-zero",
        "judge score",
        "--batch_size 0",
        lambda c: ["--db", str(c.db), "--batch_size", "0"],
        2,
        r"--batch_size 0: must be at least 1",
    ),
    C(
        "score/db-missing",
        "judge score",
        "--db naming a store that does not exist (must not create one)",
        lambda c: ["--db", str(c.dir / "typo.duckdb")],
        2,
        r"no store at \S*typo\.duckdb; create it with: python -m judge ingest",
        record=absent("typo.duckdb"),
    ),
    C(
        "score/remove-then-unknown-judger",
        "judge score",
        "--remove workflow --judger bogus: nothing may be removed",
        lambda c: ["--db", str(c.db), "--remove", "workflow", "--judger", "bogus"],
        2,
        r"--judger 'bogus': unknown judger",
    ),
    C(
        "score/db-other-schema-version",
        "judge score",
        "--db naming a store of schema version 2",
        lambda c: ["--db", str(c.store("v2.duckdb", OTHER_VERSION_STORE))],
        2,
        r"\S*v2\.duckdb has store schema version 2",
    ),
    C(
        "score/llm-template-missing",
        "judge score",
        "--judger llm:TEMPLATE naming a file that does not exist",
        lambda c: ["--db", str(c.db), "--judger", f"llm:{c.dir / 'no_template.txt'}"],
        2,
        r"--judger llm:\S*no_template\.txt: cannot read the template \(No such file or directory\)",
    ),
    C(
        "score/llm-unknown-engine",
        "judge score",
        "--judger llm --judge_engine tensorrt",
        lambda c: ["--db", str(c.db), "--judger", "llm", "--judge_engine", "tensorrt"],
        2,
        r"--judge_engine 'tensorrt': unknown engine; choose one of transformers, vllm",
    ),
    C(
        "score/llm-judge-model-no-template",
        "judge score",
        "--judge_model naming a checkpoint without a chat template",
        lambda c: [
            "--db",
            str(c.db),
            "--judger",
            "llm",
            "--judge_model",
            str(c.checkpoint("no-template", ("chat_template.jinja",))),
        ],
        2,
        r"--judge_model \S*no-template: the tokenizer has no chat template",
    ),
    # ---- judge sql
    C(
        "sql/bad-sql",
        "judge sql",
        "a query with a syntax error",
        lambda c: ["SELEC * FROM rewards", "--db", str(c.db)],
        2,
        r"judge sql: error: sql: Parser Error: syntax error at or near \"SELEC\"",
    ),
    C(
        "sql/unknown-table",
        "judge sql",
        "a query on a table that does not exist",
        lambda c: ["SELECT * FROM reward", "--db", str(c.db)],
        2,
        r"judge sql: error: sql: Catalog Error: Table with name reward does not exist",
    ),
    C(
        "sql/write-statement",
        "judge sql",
        "a DELETE (the store is opened read-only)",
        lambda c: ["DELETE FROM scores", "--db", str(c.db)],
        2,
        r"judge sql: error: sql: .*DELETE.*read-only mode",
    ),
    C(
        "sql/no-query",
        "judge sql",
        "no QUERY argument",
        lambda c: ["--db", str(c.db)],
        2,
        r"judge sql: error: no query given",
    ),
    C(
        "sql/missing-db",
        "judge sql",
        "--db naming a store that does not exist",
        lambda c: ["SELECT 1", "--db", str(c.dir / "typo.duckdb")],
        2,
        r"no store at \S*typo\.duckdb",
    ),
    C(
        "sql/bad-format",
        "judge sql",
        "--format xml",
        lambda c: ["SELECT 1", "--db", str(c.db), "--format", "xml"],
        2,
        r"--format 'xml': use one of table, csv, json, parquet",
    ),
    C(
        "sql/parquet-without-out",
        "judge sql",
        "--format parquet without --out",
        lambda c: ["SELECT 1", "--db", str(c.db), "--format", "parquet"],
        2,
        r"--format parquet needs --out FILE\.parquet",
    ),
    C(
        "sql/db-not-a-store",
        "judge sql",
        "--db naming a DuckDB file of another program",
        lambda c: ["SELECT 1", "--db", str(c.store("other.duckdb", NOT_A_STORE))],
        2,
        r"other\.duckdb is a DuckDB file but not an astuner store",
    ),
    C(
        "sql/db-locked",
        "judge sql",
        "--db held by another process's write connection",
        lambda c: ["SELECT count(*) FROM rewards", "--db", str(c.db)],
        2,
        r"\S*store\.duckdb is held by process \d+",
        locked=True,
    ),
    # ---- finetune
    C(
        "finetune/empty-training-set",
        "finetune",
        "--min_reward 5: no trajectory reaches it",
        lambda c: finetune_args(c, "--min_reward", "5"),
        2,
        r"no SFT data: iteration 0 has 4 scored ok trajectories and 0 tasks with a reward >= --min_reward 5\.0",
    ),
    C(
        "finetune/no-dpo-pairs",
        "finetune",
        "--method dpo --min_margin 2: no pair is that far apart",
        lambda c: finetune_args(c, "--method", "dpo", "--min_margin", "2"),
        2,
        r"no DPO pairs: \d+ candidate pairs, 0 with a reward margin >= --min_margin 2\.0",
    ),
    C(
        "finetune/store-without-trajectories",
        "finetune",
        "--db naming an empty store",
        lambda c: ["--db", str(empty_store(c)), "--output_dir", str(c.dir / "ckpt")],
        2,
        r"the store has no trajectories; ingest some with: python -m judge ingest",
    ),
    C(
        "finetune/iterations-not-in-store",
        "finetune",
        "--iterations 7",
        lambda c: finetune_args(c, "--iterations", "7"),
        2,
        r"--iterations \[7\]: not in the store, which has iterations \[0\]",
    ),
    C(
        "finetune/roles-nobody-trained",
        "finetune",
        "--roles wizard",
        lambda c: finetune_args(c, "--roles", "wizard"),
        2,
        r"no SFT data: .*0 trainable engine calls of roles \['wizard'\].*--roles",
    ),
    C(
        "finetune/output-dir-exists",
        "finetune",
        "--output_dir naming a non-empty folder",
        lambda c: finetune_args(c, output="out"),
        2,
        r"--output_dir \S*out: already exists and is not empty",
    ),
    C(
        "finetune/no-output-dir",
        "finetune",
        "no --output_dir and no --export",
        lambda c: ["--db", str(c.db)],
        2,
        r"--output_dir: required to train",
    ),
    C(
        "finetune/missing-db",
        "finetune",
        "--db naming a store that does not exist",
        lambda c: ["--db", str(c.dir / "typo.duckdb"), "--output_dir", str(c.dir / "ckpt")],
        2,
        r"no store at \S*typo\.duckdb",
    ),
    C(
        "finetune/db-other-schema-version",
        "finetune",
        "--db naming a store of schema version 2",
        lambda c: ["--db", str(c.store("v2.duckdb", OTHER_VERSION_STORE)), "--output_dir", str(c.dir / "ckpt")],
        2,
        r"\S*v2\.duckdb has store schema version 2, this astuner uses 3",
    ),
    C(
        "finetune/db-not-duckdb",
        "finetune",
        "--db naming a text file",
        lambda c: ["--db", str(c.write("notes.duckdb", "my notes\n")), "--output_dir", str(c.dir / "ckpt")],
        2,
        r"\S*notes\.duckdb: cannot open as a DuckDB store \(not a DuckDB file\); --db takes a store",
    ),
    C(
        "finetune/parent-not-a-checkpoint",
        "finetune",
        "--model_name_or_path naming a folder without config.json",
        lambda c: finetune_args(c, "--model_name_or_path", str(c.write("parent/README.md", "x\n").parent)),
        2,
        r"--model_name_or_path \S*parent: not a checkpoint folder \(no config\.json\)",
    ),
    C(
        "finetune/parent-no-tokenizer",
        "finetune",
        "--model_name_or_path naming a checkpoint without tokenizer files",
        lambda c: finetune_args(c, "--model_name_or_path", str(c.checkpoint("no-tokenizer", NO_TOKENIZER))),
        2,
        r"--model_name_or_path \S*no-tokenizer: no tokenizer files",
    ),
    C(
        "finetune/parent-no-chat-template",
        "finetune",
        "--model_name_or_path naming a checkpoint without a chat template",
        lambda c: finetune_args(c, "--model_name_or_path", str(c.checkpoint("no-template", ("chat_template.jinja",)))),
        2,
        r"--model_name_or_path \S*no-template: the tokenizer has no chat template",
    ),
    C(
        "finetune/unknown-method",
        "finetune",
        "--method ppo",
        lambda c: finetune_args(c, "--method", "ppo"),
        2,
        r"--method 'ppo': use one of sft, dpo",
    ),
    C(
        "finetune/unknown-flag",
        "finetune",
        "--lerning_rate 0.1 (misspelt flag)",
        lambda c: finetune_args(c, "--lerning_rate", "0.1"),
        2,
        r"finetune: error: unrecognized arguments: --lerning_rate 0\.1",
    ),
    C(
        "finetune/not-a-number",
        "finetune",
        "--learning_rate fast",
        lambda c: finetune_args(c, "--learning_rate", "fast"),
        2,
        r"argument --learning_rate/--learning-rate: invalid float value: 'fast'",
    ),
    C(
        "finetune/config-not-yaml",
        "finetune",
        "--config file that is not YAML (data/config_not_yaml.yaml)",
        lambda c: ["--config", str(data("config_not_yaml.yaml"))],
        2,
        r"--config \S*config_not_yaml\.yaml: not valid YAML at line 2, column 1",
    ),
    C(
        "finetune/config-unknown-option",
        "finetune",
        "--config file with a misspelt option (data/finetune_unknown_option.yaml)",
        lambda c: [
            "--config",
            str(data("finetune_unknown_option.yaml")),
            "--db",
            str(c.db),
            "--output_dir",
            str(c.dir / "ckpt"),
        ],
        2,
        r"--config \S*finetune_unknown_option\.yaml: unknown option\(s\) learning_rat for --method sft",
    ),
    # ---- iterate
    C(
        "iterate/recipe-missing",
        "iterate",
        "--recipe naming a file that does not exist",
        lambda c: iterate_args(c, c.dir / "recipe.yaml"),
        2,
        r"--recipe \S*recipe\.yaml: no such file",
    ),
    C(
        "iterate/recipe-not-yaml",
        "iterate",
        "a recipe that is not YAML (data/recipe_not_yaml.yaml)",
        lambda c: iterate_args(c, data("recipe_not_yaml.yaml")),
        2,
        r"--recipe \S*recipe_not_yaml\.yaml: not valid YAML at line 3, column 1",
    ),
    C(
        "iterate/recipe-is-a-list",
        "iterate",
        "a recipe holding a YAML list (data/recipe_list.yaml)",
        lambda c: iterate_args(c, data("recipe_list.yaml")),
        2,
        r"--recipe \S*recipe_list\.yaml: expected a mapping of option: value, got list",
    ),
    C(
        "iterate/recipe-unknown-key",
        "iterate",
        "a recipe with a misspelt section (data/recipe_unknown_key.yaml)",
        lambda c: iterate_args(c, data("recipe_unknown_key.yaml")),
        2,
        r"--recipe \S*recipe_unknown_key\.yaml: unknown key\(s\) colect",
    ),
    C(
        "iterate/recipe-loop-owned-key",
        "iterate",
        "a recipe setting collect.out, which the loop sets (data/recipe_loop_owned.yaml)",
        lambda c: iterate_args(c, data("recipe_loop_owned.yaml")),
        2,
        r"--recipe \S*recipe_loop_owned\.yaml: collect\.out is set by the loop for each iteration; remove it",
    ),
    C(
        "iterate/recipe-section-not-mapping",
        "iterate",
        "a recipe whose judge section is a string (data/recipe_section_not_mapping.yaml)",
        lambda c: iterate_args(c, data("recipe_section_not_mapping.yaml")),
        2,
        r"--recipe \S*recipe_section_not_mapping\.yaml: judge must be a mapping of option: value, got str",
    ),
    C(
        "iterate/recipe-unknown-option",
        "iterate",
        "a recipe whose collect section has a misspelt option (data/recipe_unknown_option.yaml)",
        lambda c: iterate_args(c, data("recipe_unknown_option.yaml")),
        2,
        r"--recipe \S*recipe_unknown_option\.yaml: collect\.sampels_per_task is not an option of python -m collect \(see",
        record=absent("run"),
    ),
    C(
        "iterate/recipe-no-run-dir",
        "iterate",
        "a recipe without run_dir and no --run-dir (data/recipe_no_run_dir.yaml)",
        lambda c: ["--recipe", str(data("recipe_no_run_dir.yaml")), "--iterations", "0"],
        2,
        r"--recipe \S*recipe_no_run_dir\.yaml: no run_dir; add `run_dir: runs/NAME` or pass --run-dir",
    ),
    C(
        "iterate/recipe-unknown-accelerate-config",
        "iterate",
        "accelerate_config: tpu (data/recipe_unknown_accelerate.yaml)",
        lambda c: iterate_args(c, data("recipe_unknown_accelerate.yaml")),
        2,
        r"accelerate_config 'tpu': no such shipped config; use one of cpu, .* or a path",
    ),
    C(
        "iterate/recipe-model-missing",
        "iterate",
        "model: a checkpoint folder that does not exist (data/recipe_model_missing.yaml)",
        lambda c: iterate_args(c, data("recipe_model_missing.yaml")),
        2,
        r"model \(recipe\) no/such/checkpoint: not a checkpoint folder \(no config\.json\)",
    ),
    C(
        "iterate/negative-iterations",
        "iterate",
        "--iterations -1",
        lambda c: iterate_args(c, c.write("recipe.yaml", "collect:\n  seed: 0\n"))[:-2] + ["--iterations", "-1"],
        2,
        r"--iterations -1: give the number of collect-judge-finetune rounds",
    ),
    C(
        "iterate/not-a-number",
        "iterate",
        "--iterations many",
        lambda c: iterate_args(c, c.write("recipe.yaml", "collect:\n  seed: 0\n"))[:-2] + ["--iterations", "many"],
        2,
        r"python -m astuner iterate: error: argument --iterations: invalid int value: 'many'",
    ),
    C(
        "iterate/run-dir-of-another-recipe",
        "iterate",
        "--run-dir holding a run started with another recipe",
        lambda c: iterate_args(c, _other_recipe_run(c)),
        2,
        r"\S*run holds a run started with another recipe \(it differs in: collect\); use another --run-dir",
    ),
    C(
        "iterate/run-dir-not-a-run",
        "iterate",
        "--run-dir naming a non-empty folder that is not a run",
        lambda c: iterate_args(c, _non_empty_run_dir(c)),
        2,
        r"\S*run is not empty and holds no progress\.json",
    ),
]

assert len({c.id for c in CASES}) == len(CASES), "case ids must be unique"
