"""Ingest: trajectory JSONL files -> the store, in bulk through DuckDB's JSON reader.

Each file is read by DuckDB with columns declared from the record model (no per-line Python). A
file that DuckDB cannot read, or whose rows miss required fields, carry another schema version or
hold a key the record does not declare (at any depth), is re-read
line by line with the trajectory model so every bad line is named by file:line and skipped
(or, with --strict, fails the ingest). Rows are keyed by trajectory_id, so ingesting the same
files again adds nothing. Trainable engine calls not checked yet (new ones, or ones a killed
ingest left) then get `template_drift`, and every engine call the drift measures of
astuner/drift.py (does it extend its agent's previous call; what a re-render would change).
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from astuner.faults import crash_point
from astuner.store_schema import MAX_LINE_BYTES, insert_sql, missing_fields_sql, read_columns, unknown_keys_query
from astuner.trajectory import SCHEMA_VERSION, TraceFormatError, dump_line, parse_trajectory, trace_files
from judge import drift_measures
from judge.render_pool import Renderer, load_tokenizer

# Declared from the record model, so DuckDB neither guesses nor merges shapes: messages, tools and
# metadata vary per workflow and stay JSON text; token ids become typed lists.
READ_COLUMNS = read_columns()
_COLUMNS_SQL = "{" + ", ".join(f"'{k}': '{v}'" for k, v in READ_COLUMNS.items()) + "}"
_READ = (
    "read_json(?, format='newline_delimited', filename=true, columns="
    + _COLUMNS_SQL
    + f", maximum_object_size={MAX_LINE_BYTES})"
)

# Rows the typed read cannot vouch for: re-read those files line by line to name the bad lines.
_SUSPECT = f"""
SELECT DISTINCT source_file FROM staged s
WHERE s.schema_version IS DISTINCT FROM {SCHEMA_VERSION} OR {missing_fields_sql("s")}
"""
# The typed read drops keys the record does not declare, at any depth: find the files that hold one.
_UNKNOWN_KEYS = unknown_keys_query()

_NEW_ROWS = "FROM staged s JOIN new_ids n ON s.trajectory_id = n.trajectory_id AND s.rowid = n.row_id"
_INSERT_TRAJECTORIES = (
    insert_sql(
        "trajectories",
        "s",
        {"n_calls": "coalesce(len(s.calls), 0)", "source_file": "s.source_file", "ingested_at": "now()"},
    )
    + " "
    + _NEW_ROWS
)
_INSERT_CALLS = insert_sql("calls", "c", {"trajectory_id": "trajectory_id"}) + (
    f" FROM (SELECT s.trajectory_id, unnest(s.calls) AS c {_NEW_ROWS})"
)


BATCH_BYTES = 128 << 20  # ~0.8 GB of DuckDB memory for the benchmark's records


class IngestError(ValueError):
    """--strict and a bad line, or no traces at all; one line naming the file."""


@dataclass
class IngestResult:
    files: int = 0
    rows_read: int = 0
    new_trajectories: int = 0
    new_calls: int = 0
    already_in_store: int = 0
    bad_lines: list[str] = field(default_factory=list)
    drift_checked: int = 0
    drift_found: int = 0
    drift_unchecked: int = 0
    drift_unchecked_why: str = "checkpoint folder not found here"  # the first reason
    measured_pairs: int = 0  # engine calls with an earlier call of the same agent
    extending: int = 0
    causes: dict = field(default_factory=dict)
    rerender_tokens: int = 0  # prompt + completion ids of the calls re-rendered
    rerender_changed: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        rate = self.new_calls / self.seconds if self.seconds else 0.0
        lines = [
            f"ingested {self.new_trajectories} new trajectories ({self.new_calls} model calls) from {self.files} file(s) "
            f"in {self.seconds:.2f}s ({rate:,.0f} calls/s); {self.already_in_store} already in the store; "
            f"{len(self.bad_lines)} bad line(s) skipped",
            f"template drift: {self.drift_found} drifted of {self.drift_checked} trainable engine calls checked"
            + (f"; {self.drift_unchecked} not checked ({self.drift_unchecked_why})" if self.drift_unchecked else ""),
        ]
        if self.measured_pairs or self.rerender_tokens:
            causes = ", ".join(f"{k} {v}" for k, v in sorted(self.causes.items(), key=lambda kv: (-kv[1], kv[0])))
            share = self.rerender_changed / self.rerender_tokens if self.rerender_tokens else 0.0
            lines.append(
                f"extension: {self.extending} of {self.measured_pairs} engine calls extend their agent's previous "
                f"prompt + completion"
                + (f" (not: {causes})" if causes else "")
                + f"; re-render drift: {self.rerender_changed} of {self.rerender_tokens} tokens ({share:.1%}) "
                "would differ if the conversation were re-rendered from text"
            )
        return "\n".join(lines)


def _stage_files(con, paths: list[Path], source: str | None = None) -> None:
    """One read over many files, so DuckDB parses them in parallel."""
    source_sql = "?::VARCHAR" if source else "filename"
    params = [source] if source else []
    con.execute(
        f"INSERT INTO staged SELECT * EXCLUDE (filename), {source_sql} FROM {_READ}", params + [[str(p) for p in paths]]
    )


def _stage_line_by_line(con, path: Path, strict: bool, result: IngestResult) -> None:
    """The slow, exact path: validate each line, stage the good ones, name the bad ones."""
    good = []
    with open(path, "rb") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                trajectory = parse_trajectory(line, str(path), line_no)
            except TraceFormatError as exc:
                if strict:
                    raise IngestError(f"{exc} (--strict: nothing was ingested)") from None
                result.bad_lines.append(str(exc))
                continue
            good.append(dump_line(trajectory))  # as validated: defaults filled in, as the typed read expects
    if not good:
        return
    with tempfile.NamedTemporaryFile("wb", suffix=".jsonl", delete=False) as tmp:
        tmp.writelines(good)
    try:
        _stage_files(con, [Path(tmp.name)], str(path))
    finally:
        Path(tmp.name).unlink(missing_ok=True)


def _unfinished_files(con, files: list[Path]) -> tuple[list[Path], int]:
    """Drop files whose every record is already in the store (a cheap pass: DuckDB parses only
    the ids), so re-ingesting a growing traces folder stays fast. Returns (files, records skipped)."""
    import duckdb

    if not con.execute("SELECT count(*) FROM trajectories").fetchall()[0][0]:
        return files, 0
    try:
        known = con.execute(
            f"""SELECT filename, count(*), count(*) FILTER (trajectory_id IN (SELECT trajectory_id FROM trajectories))
                FROM (SELECT filename, trajectory_id FROM {_READ}) GROUP BY filename""",
            [[str(p) for p in files]],
        ).fetchall()
    except duckdb.Error:
        return files, 0  # a file DuckDB cannot read: _stage finds and names it
    done = {name for name, total, present in known if total == present}
    return [p for p in files if str(p) not in done], sum(total for name, total, _ in known if name in done)


class _UnknownKeys:
    """The files holding a key the record does not declare (unknown_keys_query), asked on a connection of its
    own in a thread, so that DuckDB runs it beside the typed read of the same files. `files()` waits for it:
    a set of names, or None where the query failed (a file it cannot read)."""

    def __init__(self, con, files: list[Path]) -> None:
        import threading

        self.found: set[str] | None = None
        self.cursor = con.cursor()
        self.thread = threading.Thread(target=self._ask, args=([str(p) for p in files],), daemon=True)
        self.thread.start()

    def _ask(self, names: list[str]) -> None:
        try:
            if names:
                self.found = {row[0] for row in self.cursor.execute(_UNKNOWN_KEYS, [names]).fetchall()}
            else:
                self.found = set()
        except Exception:  # the caller asks again, of the files it could read
            self.found = None

    def files(self) -> set[str] | None:
        self.thread.join()
        self.cursor.close()
        return self.found


def _stage(con, files: list[Path], strict: bool, result: IngestResult, progress: bool) -> None:
    import duckdb
    from tqdm.auto import tqdm

    exact: set[str] = set()  # files staged line by line, through the record model
    keys = _UnknownKeys(con, files)  # a second parse of the files, beside the typed read
    try:
        if files:
            _stage_files(con, files)
    except duckdb.Error:
        # Some file DuckDB cannot read: find it by reading one file at a time.
        con.execute("DELETE FROM staged")
        for path in tqdm(files, desc="ingest", unit="file", disable=not progress or len(files) < 2):
            try:
                _stage_files(con, [path])
            except duckdb.Error:
                _stage_line_by_line(con, path, strict, result)
                exact.add(str(path))
    # Files with rows the typed read cannot vouch for are re-read line by line.
    staged = {row[0] for row in con.execute("SELECT DISTINCT source_file FROM staged").fetchall()} - exact
    suspect = {row[0] for row in con.execute(_SUSPECT).fetchall()} - exact
    unknown = keys.files()
    if staged - suspect:
        if unknown is None:  # it could not read some file: ask again of the files the typed read took
            unknown = {row[0] for row in con.execute(_UNKNOWN_KEYS, [sorted(staged - suspect)]).fetchall()}
        suspect |= unknown & staged
    for source in sorted(suspect):
        con.execute("DELETE FROM staged WHERE source_file = ?", [source])
        _stage_line_by_line(con, Path(source), strict, result)


def _collect_runs(con, paths: list[str]) -> None:
    """A collect.json beside or above the traces gives the collect run's config."""
    seen = set()
    for raw in paths:
        path = Path(raw).resolve()
        for folder in [path, *path.parents][:3]:
            manifest = folder / "collect.json"
            if manifest.is_file() and manifest not in seen:
                seen.add(manifest)
                try:
                    saved = json.loads(manifest.read_text())
                    run_id = saved["run_id"]
                except (OSError, ValueError, KeyError):
                    break
                con.execute(
                    "INSERT OR IGNORE INTO runs VALUES (?, 'collect', ?, ?, NULL, to_timestamp(?), NULL)",
                    [run_id, json.dumps(saved), saved.get("checkpoint"), saved.get("created_at", time.time())],
                )
                break
    # Runs whose manifest is not here still get a row, from their trajectories.
    con.execute(
        """INSERT OR IGNORE INTO runs
           SELECT run_id, 'collect', NULL, any_value(checkpoint_path), any_value(checkpoint_sha256),
                  min(started_at), max(finished_at)
           FROM trajectories WHERE run_id NOT IN (SELECT run_id FROM runs) GROUP BY run_id"""
    )


def ingest(
    con,
    paths: list[str],
    *,
    strict: bool = False,
    check_template: bool = True,
    progress: bool = True,
    per_call_drift: bool = False,
    render_workers: int = 0,
    memory_limit: str | None = "2GB",
) -> IngestResult:
    """Stage, insert, then (check_template) the drift checks: in bulk (judge/drift_measures.py), rendering in
    `render_workers` processes (0: here), or with per_call_drift the per-call path below, kept to hold the bulk
    one to its values. memory_limit: DuckDB's, for the ingest (None: the connection's own)."""
    started = time.perf_counter()
    # started first: the workers' start (an interpreter, transformers) overlaps the bulk load
    renderer = Renderer(render_workers) if check_template and not per_call_drift else None
    # DuckDB keeps the store's blocks cached up to its limit (80% of RAM by default): bounded here, it spills
    limit = con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
    try:
        if memory_limit:
            con.execute("SET memory_limit = ?", [memory_limit])
        return _ingest(con, paths, strict, check_template, progress, renderer, started)
    finally:
        con.execute("SET memory_limit = ?", [limit])
        if renderer is not None:
            renderer.close()


def _batches(files: list[Path]) -> list[list[Path]]:
    """Files in batches of about BATCH_BYTES of JSON: each is staged, inserted (one transaction) and checked
    before the next is read, so memory stays bounded whatever the ingest's size."""
    batches: list[list[Path]] = [[]]
    size = 0
    for path in files:
        length = path.stat().st_size
        if batches[-1] and size + length > BATCH_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(path)
        size += length
    return batches


def _ingest_batch(con, files, paths, strict, check_template, progress, renderer, result, bar) -> None:
    columns = ", ".join(f'"{name}" {kind}' for name, kind in READ_COLUMNS.items())
    con.execute(f"CREATE OR REPLACE TEMP TABLE staged ({columns}, source_file VARCHAR)")
    _stage(con, files, strict, result, progress)
    crash_point("ingest.staged")
    result.rows_read += con.execute("SELECT count(*) FROM staged").fetchall()[0][0]

    # One row per id: the first occurrence not already in the store.
    con.execute(
        """CREATE OR REPLACE TEMP TABLE new_ids AS
           SELECT trajectory_id, min(rowid) AS row_id FROM staged
           WHERE trajectory_id NOT IN (SELECT trajectory_id FROM trajectories) GROUP BY trajectory_id"""
    )
    con.execute("BEGIN")
    try:
        con.execute(_INSERT_TRAJECTORIES)
        con.execute(_INSERT_CALLS)
        _collect_runs(con, paths)
        crash_point("ingest.inserted")  # inside the transaction
        con.execute("COMMIT")
    except BaseException:
        try:
            con.execute("ROLLBACK")
        except Exception:  # a failed COMMIT (disk full) leaves no transaction: its error is the one to see
            pass
        raise
    trajectories, calls = con.execute(
        "SELECT count(*), coalesce(sum(n_calls), 0) FROM trajectories JOIN new_ids USING (trajectory_id)"
    ).fetchall()[0]
    result.new_trajectories += trajectories
    result.new_calls += calls
    con.execute("DROP TABLE staged")
    con.execute("DROP TABLE new_ids")
    crash_point("ingest.committed")  # before the template drift check
    if check_template and renderer is None:
        check_template_drift(con, result, progress)
        measure_drift(con, result, progress)
    elif check_template:
        drift_measures.check(con, result, renderer)
    bar.update(calls)


def _ingest(con, paths, strict, check_template, progress, renderer, started) -> IngestResult:
    result = IngestResult()
    files: list[Path] = []
    for raw in paths:
        try:
            files.extend(trace_files(raw))
        except FileNotFoundError as exc:
            raise IngestError(f"{exc}; pass .jsonl files or folders of them") from None
    if not files:
        raise IngestError(f"no *.jsonl files under {', '.join(paths)}")
    files = list(dict.fromkeys(p.resolve() for p in files))  # a file named twice is read once
    result.files = len(files)

    # Row order carries no meaning here; not keeping it lets DuckDB parse and insert in parallel.
    con.execute("SET preserve_insertion_order = false")
    files, skipped = _unfinished_files(con, files)
    from tqdm.auto import tqdm

    with tqdm(desc="ingest", unit="call", unit_scale=True, delay=2, disable=not progress) as bar:
        for batch in _batches(files):
            _ingest_batch(con, batch, paths, strict, check_template, progress, renderer, result, bar)
    result.already_in_store = result.rows_read - result.new_trajectories + skipped
    result.seconds = time.perf_counter() - started
    con.execute(
        "INSERT INTO runs VALUES (?, 'ingest', ?, NULL, NULL, now() - to_seconds(?), now())",
        [
            uuid.uuid4().hex[:16],
            json.dumps(
                {
                    "paths": [str(p) for p in paths],
                    "strict": strict,
                    "new_trajectories": result.new_trajectories,
                    "bad_lines": len(result.bad_lines),
                }
            ),
            result.seconds,
        ],
    )
    return result


def check_template_drift(con, result: IngestResult, progress: bool = True, chunk: int = 512) -> None:
    """Re-render each trainable engine call not checked yet (template_drift NULL) through its
    checkpoint's chat template; template_drift = the ids differ from the recorded prompt_token_ids."""
    import pyarrow as pa
    from tqdm.auto import tqdm

    from astuner.chat import render_prompts_ids

    groups = con.execute(
        """SELECT t.checkpoint_path, count(*) FROM calls c JOIN trajectories t USING (trajectory_id)
           WHERE c.trainable AND c.prompt_token_ids IS NOT NULL AND c.template_drift IS NULL GROUP BY ALL"""
    ).fetchall()
    for checkpoint, count in groups:
        tokenizer, why = load_tokenizer(checkpoint)
        if tokenizer is None:
            if not result.drift_unchecked:
                result.drift_unchecked_why = why
            result.drift_unchecked += count
            continue
        query = con.execute(
            """SELECT c.trajectory_id, c.call_index, c.messages, c.tools, c.prompt_token_ids, c.template_kwargs
               FROM calls c JOIN trajectories t USING (trajectory_id)
               WHERE c.trainable AND c.prompt_token_ids IS NOT NULL AND c.template_drift IS NULL
                 AND t.checkpoint_path IS NOT DISTINCT FROM ?""",
            [checkpoint],
        )
        ids, indexes, drift = [], [], []
        with tqdm(total=count, desc="template drift", unit="call", disable=not progress) as bar:
            while rows := query.fetchmany(chunk):
                rendered = render_prompts_ids(
                    tokenizer,
                    [
                        (json.loads(r[2]), json.loads(r[3]) if r[3] else None, json.loads(r[5]) if r[5] else None)
                        for r in rows
                    ],
                )
                for row, again in zip(rows, rendered):
                    ids.append(row[0])
                    indexes.append(row[1])
                    drift.append(again != row[4])
                bar.update(len(rows))
        result.drift_checked += len(drift)
        result.drift_found += sum(drift)
        con.register("drift_rows", pa.table({"trajectory_id": ids, "call_index": indexes, "drift": drift}))
        con.execute(
            """UPDATE calls SET template_drift = d.drift FROM drift_rows d
               WHERE calls.trajectory_id = d.trajectory_id AND calls.call_index = d.call_index"""
        )
        con.unregister("drift_rows")
        crash_point("ingest.drift_written")


def measure_drift(con, result: IngestResult, progress: bool = True, chunk: int = 512) -> None:
    """The drift measures of astuner/drift.py for every engine call not measured yet (drift_measured NULL):
    extension against the same agent's (and role's) previous engine call of its trajectory, and the
    re-render drift through the checkpoint's tokenizer (NULL where it is not here).

    Rows come `chunk` at a time in trajectory order, so only one trajectory's previous calls and one chunk
    of conversations are held; each chunk's re-renders go through the tokenizer as one batch per checkpoint."""
    import pyarrow as pa
    from tqdm.auto import tqdm

    from astuner.chat import detect_family, special_tokens_of
    from astuner.drift import extension, rerender_drift_tokens_batch

    where = """c.prompt_token_ids IS NOT NULL AND c.completion_token_ids IS NOT NULL AND c.trajectory_id IN
               (SELECT trajectory_id FROM calls WHERE prompt_token_ids IS NOT NULL AND drift_measured IS NULL)"""
    total = con.execute(f"SELECT count(*) FROM calls c WHERE {where}").fetchall()[0][0]
    if not total:
        return
    query = con.execute(
        f"""SELECT c.trajectory_id, c.call_index, coalesce(c.agent_name, ''), c.role, c.messages, c.tools,
                   c.completion_text, c.prompt_token_ids, c.completion_token_ids, t.checkpoint_path, c.template_kwargs
            FROM calls c JOIN trajectories t USING (trajectory_id) WHERE {where}
            ORDER BY c.trajectory_id, c.call_index"""
    )
    # checkpoint -> (tokenizer, family, special tokens), or None where its tokenizer is not here
    tokenizers: dict = {}
    previous: dict = {}  # (agent, role) -> that agent's previous call, in the current trajectory only
    trajectory = None
    tables = []
    with tqdm(total=total, desc="drift measures", unit="call", disable=not progress) as bar:
        while rows := query.fetchmany(chunk):
            out = {k: [] for k in ("trajectory_id", "call_index", "extends", "at", "cause", "rerender")}
            by_checkpoint: dict = {}  # checkpoint -> positions in this chunk
            for row in rows:
                trajectory_id, index, agent, role, messages, tools, text, prompt, completion, checkpoint, kwargs = row
                call = {
                    "messages": json.loads(messages),
                    "tools": json.loads(tools) if tools else None,
                    "completion_text": text,
                    "prompt_token_ids": prompt,
                    "completion_token_ids": completion,
                    "template_kwargs": json.loads(kwargs) if kwargs else None,
                }
                if trajectory_id != trajectory:  # rows come in trajectory order: the last one's calls are done
                    trajectory, previous = trajectory_id, {}
                key = (agent, role)
                extends, at, cause = (None, None, None) if key not in previous else extension(previous[key], call)
                previous[key] = call
                if checkpoint not in tokenizers:
                    tokenizer = load_tokenizer(checkpoint)[0]
                    tokenizers[checkpoint] = (
                        None
                        if tokenizer is None
                        else (tokenizer, detect_family(tokenizer), special_tokens_of(tokenizer))
                    )
                if tokenizers[checkpoint] is not None:
                    by_checkpoint.setdefault(checkpoint, []).append((len(out["rerender"]), call))
                for name, value in zip(out, (trajectory_id, index, extends, at, cause, None)):
                    out[name].append(value)
                if extends is not None:
                    result.measured_pairs += 1
                    result.extending += extends
                    if cause:
                        result.causes[cause] = result.causes.get(cause, 0) + 1
            for checkpoint, positioned in by_checkpoint.items():
                tokenizer, family, specials = tokenizers[checkpoint]
                calls = [call for _, call in positioned]
                for (position, call), rerender in zip(
                    positioned, rerender_drift_tokens_batch(tokenizer, calls, family, specials)
                ):
                    out["rerender"][position] = rerender
                    result.rerender_tokens += len(call["prompt_token_ids"]) + len(call["completion_token_ids"])
                    result.rerender_changed += rerender
            tables.append(
                pa.table(
                    {
                        "trajectory_id": pa.array(out["trajectory_id"], pa.string()),
                        "call_index": pa.array(out["call_index"], pa.int32()),
                        "extends": pa.array(out["extends"], pa.bool_()),
                        "at": pa.array(out["at"], pa.int32()),
                        "cause": pa.array(out["cause"], pa.string()),
                        "rerender": pa.array(out["rerender"], pa.int32()),
                    }
                )
            )
            bar.update(len(rows))
    if not tables:
        return
    # Written once, after the read: a statement on `con` would end the query being fetched. The columnar
    # chunks hold ~30 bytes a call.
    con.register("drift_measures", pa.concat_tables(tables))
    con.execute(
        """UPDATE calls SET extends_previous = d.extends, divergence_at = d.at, divergence_cause = d.cause,
                  rerender_drift_tokens = d.rerender, drift_measured = true
           FROM drift_measures d WHERE calls.trajectory_id = d.trajectory_id AND calls.call_index = d.call_index"""
    )
    con.unregister("drift_measures")
