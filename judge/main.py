"""Judge: score trajectories into a DuckDB store that you query with plain SQL.

    python -m judge ingest runs/demo/traces --db runs/store.duckdb
    python -m judge score --db runs/store.duckdb --judger workflow --judger exact:final_answer,answer=2
    python -m judge sql "SELECT * FROM task_stats ORDER BY mean_reward" --db runs/store.duckdb
    python -m judge report --db runs/store.duckdb --out runs/report

Subcommands: ingest, score, sql, report; `python -m judge SUBCOMMAND --help` shows its options.
The store's tables and views are described in docs/store.md (defined in astuner/migrations.py, astuner/store.py).
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass, field

DEFAULT_DB = "runs/store.duckdb"
JUDGE_INPUTS = ("auto", "response", "select_model")  # as astuner/compat/agentscope_tuner.py (imported only to run)


@dataclass
class IngestConfig:
    traces: list[str] = field(
        default_factory=list, metadata={"help": "Trajectory .jsonl files or folders of them (collect's OUT/traces)."}
    )
    db: str = field(default=DEFAULT_DB, metadata={"help": "The store (a DuckDB file); created if missing."})
    strict: bool = field(default=False, metadata={"help": "Fail on the first malformed line instead of skipping it."})
    check_template: bool = field(
        default=True,
        metadata={
            "help": "Re-render trainable calls through the checkpoint's chat template "
            "and record template_drift (--no_check_template skips it)."
        },
    )
    render_workers: int | None = field(
        default=None,
        metadata={
            "help": "Processes that render calls for the drift checks (default: 2, 1 on a 1-core machine, 0 where "
            "this process has imported transformers already; 0 renders in this process)."
        },
    )
    memory_limit: str = field(
        default="2GB",
        metadata={"help": "DuckDB's memory limit while ingesting (beyond it, it spills to disk), e.g. 8GB."},
    )
    per_call_drift: bool = field(
        default=False,
        metadata={
            "help": "Compute the drift checks one call at a time, as before they were batched (slow; the same "
            "values: kept to check the batched path against)."
        },
    )

    def __post_init__(self):
        if self.render_workers is not None and self.render_workers < 0:
            raise ValueError(f"--render_workers {self.render_workers}: must be 0 (render here) or more")


@dataclass
class ScoreConfig:
    db: str = field(default=DEFAULT_DB, metadata={"help": "The store to score."})
    judger: list[str] = field(
        default_factory=list,
        metadata={
            "action": "extend",
            "help": (
                "SPEC[=WEIGHT] ... (default: workflow), repeatable: workflow | exact[:OUT,REF] | numeric[:OUT,REF,TOL] | regex[:OUT,PATTERN_FIELD] | "
                "llm[:TEMPLATE_FILE] | module:function | path/file.py:function. The combined reward is the weighted mean of "
                "the judgers that applied."
            ),
        },
    )
    where: str | None = field(
        default=None, metadata={"help": 'SQL condition on the trajectories table, e.g. "iteration = 2".'}
    )
    batch_size: int = field(default=256, metadata={"help": "Trajectories per judger call (and per write)."})
    remove: list[str] = field(
        default_factory=list,
        metadata={"action": "extend", "help": "Delete every score of these judgers first (by name, no weight)."},
    )
    success_threshold: float | None = field(
        default=None,
        metadata={
            "help": "Combined reward at or above which a trajectory "
            "counts as a success in task_stats (stored in the store; default 1.0)."
        },
    )
    judge_model: str | None = field(
        default=None, metadata={"help": "llm judger: checkpoint folder (default: the embedded tiny model)."}
    )
    judge_engine: str = field(default="transformers", metadata={"help": "llm judger: transformers or vllm."})
    judge_device: str | None = field(default=None, metadata={"help": "llm judger, transformers engine: cpu, cuda, ..."})
    judge_max_tokens: int = field(default=128, metadata={"help": "llm judger: most tokens of the judge's reply."})
    auxiliary_models: str | None = field(
        default=None,
        metadata={
            "help": (
                "The auxiliary_models of agentscope.tuner judges (e.g. a judge model): JSON or YAML name -> spec, or a .json/.yaml "
                "file of it; a spec is a local checkpoint folder, {path: DIR, ...} or an OpenAI-compatible endpoint "
                "{base_url: URL, model: NAME, api_key_env: VAR} (as collect's --auxiliary-models)."
            )
        },
    )
    judge_max_score: float = field(
        default=10.0, metadata={"help": "llm judger: the top of the 'Score: N' scale; value = N / this."}
    )
    judge_input: str = field(
        default="auto",
        metadata={
            "help": "agentscope.tuner judges: what `response` they get. select_model: select_model's "
            '{"response": ..., "metrics": {...}}; response: the workflow\'s response alone; auto (default): '
            "select_model's where the judge's file hands it to select_model or its code reads "
            'response["response"] / response["metrics"] (built-in model_selection judges too), else the response.'
        },
    )

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"--batch_size {self.batch_size}: must be at least 1")
        if self.judge_input not in JUDGE_INPUTS:
            raise ValueError(f"--judge_input {self.judge_input!r}: use one of {', '.join(JUDGE_INPUTS)}")


@dataclass
class SqlConfig:
    query: str | None = field(default=None, metadata={"help": "A SQL query over the store's tables and views."})
    db: str = field(default=DEFAULT_DB, metadata={"help": "The store (opened read-only)."})
    format: str = field(
        default="table", metadata={"help": "table, csv, json (one object per line) or parquet (needs --out)."}
    )
    out: str | None = field(default=None, metadata={"help": "Write the result to this file instead of printing it."})
    max_rows: int = field(default=100, metadata={"help": "table format: print at most this many rows."})

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ValueError(f"--format {self.format!r}: use one of {', '.join(FORMATS)}")
        if self.format == "parquet" and not self.out:
            raise ValueError("--format parquet needs --out FILE.parquet")
        if self.out and self.format == "table":
            raise ValueError("--out needs --format csv, json or parquet")


@dataclass
class ReportConfig:
    db: str = field(default=DEFAULT_DB, metadata={"help": "The store (opened read-only)."})
    out: str = field(default="runs/report", metadata={"help": "Folder for index.html and the PNG plots."})
    max_trajectories: int = field(default=200, metadata={"help": "Trajectories shown in the HTML browser."})


FORMATS = ("table", "csv", "json", "parquet")


def format_table(headers: list[str], rows: list, width: int = 60) -> str:
    def cell(value) -> str:
        text = f"{value:.4g}" if isinstance(value, float) else ("NULL" if value is None else str(value))
        text = text.replace("\n", " ")
        return text if len(text) <= width else text[: width - 3] + "..."

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def _ingest(cfg: IngestConfig) -> int:
    from astuner.store import open_store
    from judge.ingest import IngestError, ingest
    from judge.render_pool import default_workers

    if not cfg.traces:
        raise IngestError("no traces given; e.g. python -m judge ingest runs/demo/traces --db " + cfg.db)
    _ensure_parent(cfg.db)
    con = open_store(cfg.db)
    try:
        result = ingest(
            con,
            cfg.traces,
            strict=cfg.strict,
            check_template=cfg.check_template,
            per_call_drift=cfg.per_call_drift,
            render_workers=default_workers() if cfg.render_workers is None else cfg.render_workers,
            memory_limit=cfg.memory_limit,
        )
    finally:
        con.close()
    for line in result.bad_lines[:20]:
        print(f"skipped {line}", file=sys.stderr)
    if len(result.bad_lines) > 20:
        print(f"... and {len(result.bad_lines) - 20} more bad lines", file=sys.stderr)
    print(result.summary())
    return 0


def _score(cfg: ScoreConfig) -> int:
    from astuner.auxiliary import judge_models, parse_auxiliary_models
    from astuner.store import open_store, set_meta
    from judge.judgers import parse_judger
    from judge.score import score

    con = open_store(cfg.db, create=False)  # a mistyped --db must not become a new, empty store
    try:
        # every option is checked before anything is written (--remove, --success_threshold)
        llm = dict(
            model=cfg.judge_model,
            engine=cfg.judge_engine,
            device=cfg.judge_device,
            max_tokens=cfg.judge_max_tokens,
            max_score=cfg.judge_max_score,
        )
        auxiliary = parse_auxiliary_models(cfg.auxiliary_models)
        auxiliary_models = judge_models(auxiliary, cfg.judge_device) if auxiliary else {}
        judgers = [parse_judger(spec, llm, auxiliary_models, cfg.judge_input) for spec in cfg.judger or ["workflow"]]
        for judger in judgers:
            if cfg.judge_input == "auto" and getattr(judger.fn, "judge_input", None) == "select_model":
                print(
                    f"{judger.name}: called as select_model calls judges (response = "
                    '{"response": ..., "metrics": {...}}); --judge_input response passes the response alone',
                    file=sys.stderr,
                )
        if cfg.where:
            import duckdb

            try:
                con.execute(f"SELECT count(*) FROM trajectories WHERE {cfg.where}").fetchall()
            except duckdb.Error as exc:
                raise ValueError(f"--where {cfg.where!r}: {str(exc).splitlines()[0]}") from None
        if cfg.success_threshold is not None:
            set_meta(con, "success_threshold", str(cfg.success_threshold))
        for name in cfg.remove:
            removed = con.execute("DELETE FROM scores WHERE judger = ?", [name]).fetchall()[0][0]
            print(f"removed {removed} scores of judger {name!r}")
        result = score(con, judgers, where=cfg.where, batch_size=cfg.batch_size)
        print(
            format_table(
                ["judger", "weight", "scored", "applied", "errors", "mean", "seconds"],
                [j.row() for j in result.judgers],
            )
        )
        for stats in result.judgers:
            if stats.first_error:
                trajectory, call = stats.first_error_key
                where = f"trajectory {trajectory}" + (f" call {call}" if call is not None else "")
                print(
                    f"{stats.name}: {stats.errors} error(s), first: {where}: {stats.first_error.splitlines()[0][:200]} "
                    "(recorded as score rows: SELECT * FROM scores WHERE error IS NOT NULL)"
                )
        scope = (
            f" WHERE trajectory_id IN (SELECT trajectory_id FROM trajectories WHERE {cfg.where})" if cfg.where else ""
        )
        n, mean = con.execute(f"SELECT count(reward), avg(reward) FROM rewards{scope}").fetchall()[0]
        print(
            f"combined reward: {n} of {result.trajectories} trajectories"
            + (f", mean {mean:.4f}" if mean is not None else "")
            + " (SELECT * FROM rewards)"
        )
    finally:
        con.close()
    return 0


def _sql(cfg: SqlConfig) -> int:
    import duckdb

    from astuner.store import open_store, store_failure

    if not cfg.query:
        raise ValueError('no query given; e.g. python -m judge sql "SELECT * FROM task_stats" --db ' + cfg.db)
    con = open_store(cfg.db, read_only=True)
    try:
        try:
            if cfg.out:
                options = {"csv": "FORMAT csv, HEADER", "json": "FORMAT json", "parquet": "FORMAT parquet"}[cfg.format]
                query = cfg.query.strip().rstrip(";")
                con.execute(f"COPY ({query}) TO '{cfg.out.replace(chr(39), chr(39) * 2)}' ({options})")
                print(f"wrote {cfg.out}")
                return 0
            cursor = con.execute(cfg.query)
            headers = [d[0] for d in cursor.description] if cursor.description else []
            rows = cursor.fetchall() if headers else []
        except duckdb.Error as exc:
            text = str(exc).splitlines()[0]
            if cfg.out and cfg.out in text:  # the --out file: a missing folder, a read-only or full disk
                raise ValueError(f"--out {cfg.out}: {text}") from None
            damage = store_failure(exc, cfg.db, damage_only=True)  # a damaged store file or disk, not the query
            raise ValueError(damage or f"sql: {text}") from None
    finally:
        con.close()
    if cfg.format == "table":
        print(format_table(headers, rows[: cfg.max_rows]))
        print(
            f"({len(rows)} row{'s' if len(rows) != 1 else ''}"
            + (f", first {cfg.max_rows} shown" if len(rows) > cfg.max_rows else "")
            + ")"
        )
    elif cfg.format == "csv":
        writer = csv.writer(
            sys.stdout, lineterminator="\n"
        )  # as DuckDB's CSV writer: `tail -1` in a shell gives `6`, not `6\r`
        writer.writerow(headers)
        writer.writerows(rows)
    else:
        for row in rows:
            print(json.dumps(dict(zip(headers, row)), default=str))
    return 0


def _report(cfg: ReportConfig) -> int:
    from astuner.store import open_store
    from judge.report import PLOTS, write_report

    con = open_store(cfg.db, read_only=True)
    try:
        page = write_report(con, cfg.out, db_name=cfg.db, max_trajectories=cfg.max_trajectories)
    finally:
        con.close()
    print(f"wrote {page} and {', '.join(PLOTS)} in {page.parent}")
    return 0


def _ensure_parent(path: str) -> None:
    from pathlib import Path

    Path(path).resolve().parent.mkdir(parents=True, exist_ok=True)


COMMANDS = {
    "ingest": (
        IngestConfig,
        _ingest,
        "traces",
        "Load trajectory JSONL into the store (idempotent: ids come from the records).\n\n"
        "    python -m judge ingest runs/demo/traces --db runs/store.duckdb\n"
        "    python -m judge ingest runs/iter-*/traces --db runs/store.duckdb --strict",
    ),
    "score": (
        ScoreConfig,
        _score,
        None,
        "Run judgers and write their scores; re-scoring replaces.\n\n"
        "    python -m judge score --db runs/store.duckdb --judger workflow\n"
        "    python -m judge score --db runs/store.duckdb --judger numeric:final_answer,answer,0.01=2 --judger workflow=1\n"
        "    python -m judge score --db runs/store.duckdb --judger llm --judge_model path/to/checkpoint\n"
        "    python -m judge score --db runs/store.duckdb --judger mypkg.judges:is_polite",
    ),
    "sql": (
        SqlConfig,
        _sql,
        "query",
        "Run a SQL query on the store (read-only) and print or write the result.\n\n"
        '    python -m judge sql "SELECT * FROM task_stats ORDER BY success_rate" --db runs/store.duckdb\n'
        '    python -m judge sql "SELECT * FROM rewards" --db runs/store.duckdb --format parquet --out rewards.parquet',
    ),
    "report": (
        ReportConfig,
        _report,
        None,
        "Write PNG plots and a static HTML page to browse trajectories.\n\n"
        "    python -m judge report --db runs/store.duckdb --out runs/report",
    ),
}


def main(argv: list[str] | None = None) -> int:
    from astuner.cli import ConfigError, parse_config
    from astuner.store import StoreError
    from judge.ingest import IngestError
    from judge.judgers import JudgerError

    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    command = argv[0]
    if command not in COMMANDS:
        print(
            f"judge: unknown subcommand {command!r}; use one of {', '.join(COMMANDS)} (python -m judge --help)",
            file=sys.stderr,
        )
        return 2
    config_cls, run, positional, description = COMMANDS[command]
    cfg = None
    try:
        cfg = parse_config(
            config_cls, argv[1:], prog=f"python -m judge {command}", description=description, positional=positional
        )
        return run(cfg)
    except (ConfigError, StoreError, IngestError, JudgerError, ValueError, FileNotFoundError) as exc:
        print(f"judge {command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # the disk or the store file failed mid-command: one line, not a traceback
        message = _disk_failure(exc, cfg)
        if message is None:
            raise
        print(f"judge {command}: error: {message}", file=sys.stderr)
        return 2


def _disk_failure(exc: Exception, cfg) -> str | None:
    from astuner.store import store_failure

    if isinstance(exc, OSError):  # the report folder, an --out file: read-only, full, a file in the way
        where = exc.filename or getattr(cfg, "out", None) or getattr(cfg, "db", "")
        return f"{where}: {exc.strerror or exc}; pick a writable path with free space and run the same command again"
    return store_failure(exc, getattr(cfg, "db", "the store"))
