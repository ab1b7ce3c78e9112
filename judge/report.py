"""Report: PNG plots and one static HTML page (no JavaScript, no network) over a store."""

from __future__ import annotations

import html
import json
import os
import time
from pathlib import Path

PLOTS = ("reward_by_iteration.png", "reward_by_role.png", "success_by_iteration.png")

_CSS = """body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}img{max-width:32%;border:1px solid #ddd;margin:4px}details{margin:4px 0;border:1px solid #ddd;padding:4px 8px}
summary{cursor:pointer}.ok{color:#17702b}.error,.timeout{color:#b00020}pre{white-space:pre-wrap;background:#f8f8f8;padding:6px;margin:4px 0}
.msg{margin:4px 0 4px 12px}.role{font-weight:bold}.call{border-left:3px solid #89a;padding-left:8px;margin:8px 0}
.trainable{color:#0050b3}.muted{color:#777}"""


def _esc(value) -> str:
    return html.escape("" if value is None else str(value))


def _table(headers: list[str], rows: list) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return _esc(value)


def _save(path: Path, write) -> None:
    """write(tmp) then rename onto `path`: a full or read-only disk leaves no half-written file behind."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _savefig(fig, path: Path) -> None:
    _save(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))


def _boxplot(plt, rows: list, path: Path, title: str, xlabel: str, ylabel: str) -> None:
    """One box per group of (group, value) rows."""
    groups: dict = {}
    for group, value in rows:
        groups.setdefault(group, []).append(value)
    fig, ax = plt.subplots(figsize=(6, 4))
    if groups:
        ax.boxplot(list(groups.values()), showmeans=True)
        ax.set_xticks(range(1, len(groups) + 1), [str(g) for g in groups], rotation=30 if len(groups) > 4 else 0)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    fig.tight_layout()
    _savefig(fig, path)
    plt.close(fig)


def _plots(con, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Before any judger ran, the workflow's own reward is all there is to plot.
    by_iteration = con.execute(
        "SELECT iteration, coalesce(reward, workflow_reward) AS r FROM rewards WHERE r IS NOT NULL ORDER BY 1"
    ).fetchall()
    _boxplot(plt, by_iteration, out / PLOTS[0], "Reward per iteration", "iteration", "reward (combined, else workflow)")
    # A role's reward in a trajectory: the mean of its calls' call-level scores where a call
    # judger ran (per-side rewards, say), else the trajectory's reward.
    by_role = con.execute(
        """SELECT c.role, coalesce(avg(s.value), any_value(coalesce(r.reward, r.workflow_reward))) AS v
           FROM calls c JOIN rewards r USING (trajectory_id)
           LEFT JOIN scores s ON s.trajectory_id = c.trajectory_id AND s.call_index = c.call_index AND s.value IS NOT NULL
           GROUP BY c.trajectory_id, c.role HAVING v IS NOT NULL ORDER BY 1"""
    ).fetchall()
    _boxplot(plt, by_role, out / PLOTS[1], "Reward per role", "role", "reward (call-level scores where present)")

    rows = con.execute(
        "SELECT iteration, sum(success_rate * n) / sum(n) FROM task_stats GROUP BY 1 ORDER BY 1"
    ).fetchall()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r[0] for r in rows], [r[1] for r in rows], marker="o")
    ax.set_xticks([r[0] for r in rows])
    ax.set(title="Success rate per iteration", xlabel="iteration", ylabel="share of trajectories", ylim=(-0.05, 1.05))
    fig.tight_layout()
    _savefig(fig, out / PLOTS[2])
    plt.close(fig)


def _message_html(msg: dict) -> str:
    content = msg.get("content")
    if isinstance(content, list):
        content = "\n".join(b.get("text", json.dumps(b)) if isinstance(b, dict) else str(b) for b in content)
    parts = [
        f"<div class='msg'><span class='role'>{_esc(msg.get('role'))}</span>"
        + (f" <span class='muted'>{_esc(msg.get('name'))}</span>" if msg.get("name") else "")
        + f"<pre>{_esc(content)}</pre>"
    ]
    for call in msg.get("tool_calls") or []:
        fn = call.get("function", {})
        parts.append(f"<pre>tool call {_esc(fn.get('name'))}({_esc(fn.get('arguments'))})</pre>")
    return "".join(parts) + "</div>"


def _trajectory_html(row, scores, calls, open_: bool = False) -> str:
    tid, task_id, iteration, sample, status, reward, workflow_reward, error, traceback, query = row
    reward_text = f"{reward:.3f}" if reward is not None else "-"
    out = [
        f"<details{' open' if open_ else ''}><summary><b>{_esc(task_id)}</b> · iteration {iteration} · sample {sample} · "
        f"<span class='{_esc(status)}'>{_esc(status)}</span> · reward {reward_text} "
        f"<span class='muted'>({_esc(tid)})</span></summary>",
        f"<p><b>Task:</b> {_esc(query)}</p><p>workflow reward: {_fmt(workflow_reward)}</p>",
    ]
    if scores:
        out.append(_table(["judger", "call", "weight", "value", "label", "error", "explanation"], scores))
    if error:
        out.append(f"<p class='error'>{_esc(error)}</p><pre>{_esc(traceback)}</pre>")
    for index, role, agent, trainable, drift, messages, text, tool_calls in calls:
        flag = "<span class='trainable'>trainable</span>" if trainable else "<span class='muted'>not trained</span>"
        drift_text = {True: " · <span class='error'>template drift</span>", False: "", None: ""}[drift]
        out.append(
            f"<div class='call'><b>call {index}</b> · role {_esc(role)} · agent {_esc(agent)} · {flag}{drift_text}"
            f"<details><summary>{len(json.loads(messages or '[]'))} prompt messages</summary>"
            + "".join(_message_html(m) for m in json.loads(messages or "[]"))
            + "</details>"
            f"<div class='msg'><span class='role'>completion</span><pre>{_esc(text)}</pre></div>"
        )
        for call in json.loads(tool_calls or "[]"):
            out.append(f"<pre>tool call {_esc(call.get('name'))}({_esc(call.get('arguments'))})</pre>")
        out.append("</div>")
    out.append("</details>")
    return "".join(out)


def _drift_rates(con) -> list:
    """Per (checkpoint, role): the drift measures of astuner/drift.py (a store from before them: none)."""
    have = {
        r[0]
        for r in con.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 'calls'").fetchall()
    }
    if "drift_measured" not in have:
        return []
    return con.execute(
        """SELECT t.checkpoint_path, c.role, any_value(c.tool_format), count(*), count(c.extends_previous),
                  avg(c.extends_previous::INTEGER), mode(c.divergence_cause),
                  sum(c.rerender_drift_tokens) / nullif(sum(len(c.prompt_token_ids) + len(c.completion_token_ids))
                      FILTER (c.rerender_drift_tokens IS NOT NULL), 0)
           FROM calls c JOIN trajectories t USING (trajectory_id)
           WHERE c.prompt_token_ids IS NOT NULL AND c.completion_token_ids IS NOT NULL
           GROUP BY ALL ORDER BY 1, 2"""
    ).fetchall()


def write_report(con, out: str | Path, *, db_name: str = "", max_trajectories: int = 200) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _plots(con, out)
    totals = con.execute(
        "SELECT count(*), count(*) FILTER (status = 'ok'), count(reward), avg(reward) FROM rewards"
    ).fetchall()[0]
    per_iter = con.execute(
        """SELECT r.iteration, count(*), count(*) FILTER (r.status = 'ok'), avg(r.reward), avg(r.workflow_reward),
                  (SELECT sum(success_rate * n) / sum(n) FROM task_stats s WHERE s.iteration = r.iteration)
           FROM rewards r GROUP BY 1 ORDER BY 1"""
    ).fetchall()
    judgers = con.execute(
        """SELECT judger, any_value(judger_version), any_value(weight), count(*), count(value), count(error), avg(value)
           FROM scores GROUP BY judger ORDER BY judger"""
    ).fetchall()
    tasks = con.execute("SELECT * FROM task_stats ORDER BY iteration, task_id LIMIT 500").fetchall()
    traj_rows = con.execute(
        """SELECT r.trajectory_id, r.task_id, r.iteration, r.sample_index, r.status, r.reward, r.workflow_reward,
                  t.error, t.traceback, t.task_query
           FROM rewards r JOIN trajectories t USING (trajectory_id)
           ORDER BY r.iteration, r.task_id, r.sample_index LIMIT ?""",
        [max_trajectories],
    ).fetchall()
    ids = [r[0] for r in traj_rows]
    scores: dict[str, list] = {}
    for tid, *rest in con.execute(
        """SELECT trajectory_id, judger, call_index, weight, value, label, error, explanation FROM scores
           WHERE trajectory_id IN (SELECT unnest(?::VARCHAR[])) ORDER BY judger, call_index""",
        [ids],
    ).fetchall():
        scores.setdefault(tid, []).append(rest)
    calls: dict[str, list] = {}
    for tid, *rest in con.execute(
        """SELECT trajectory_id, call_index, role, agent_name, trainable, template_drift, messages, completion_text, tool_calls
           FROM calls WHERE trajectory_id IN (SELECT unnest(?::VARCHAR[])) ORDER BY trajectory_id, call_index""",
        [ids],
    ).fetchall():
        calls.setdefault(tid, []).append(rest)

    drift = _drift_rates(con)
    shown = f"the first {len(traj_rows)} of {totals[0]}" if totals[0] > len(traj_rows) else f"all {totals[0]}"
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>astuner report: {_esc(db_name)}</title>"
        f"<style>{_CSS}</style></head><body>",
        f"<h1>astuner report</h1><p class='muted'>{_esc(db_name)} · written {time.strftime('%Y-%m-%d %H:%M:%S')}</p>",
        f"<p>{totals[0]} trajectories, {totals[1]} ok, {totals[2]} with a combined reward"
        + (f" (mean {totals[3]:.3f})" if totals[3] is not None else "")
        + ".</p>",
        "<h2>Per iteration</h2>",
        _table(["iteration", "trajectories", "ok", "mean reward", "mean workflow reward", "success rate"], per_iter),
        "".join(f"<img src='{name}' alt='{name}'>" for name in PLOTS),
        "<h2>Judgers</h2>",
        _table(["judger", "version", "weight", "scores", "applied", "errors", "mean value"], judgers),
        "<h2>Drift per checkpoint and role</h2><p class='muted'>extension: the call's prompt starts with its agent's "
        "previous prompt + sampled ids (calls can merge); re-render drift: share of prompt + sampled tokens a re-render "
        "from text would change (what a trainer that rebuilds the conversation trains on wrongly). docs/model-families.md</p>",
        _table(
            [
                "checkpoint",
                "role",
                "format",
                "engine calls",
                "with a previous call",
                "extension rate",
                "main cause",
                "re-render drift",
            ],
            drift,
        ),
        "<h2>Tasks</h2>",
        _table(["task", "iteration", "n", "scored", "mean reward", "max reward", "success rate"], tasks),
        f"<h2>Trajectories ({shown})</h2>",
        *(
            _trajectory_html(row, scores.get(row[0], []), calls.get(row[0], []), open_=i == 0)
            for i, row in enumerate(traj_rows)
        ),
        "</body></html>",
    ]
    page = out / "index.html"
    text = "\n".join(parts)
    _save(page, lambda tmp: tmp.write_text(text, encoding="utf-8", errors="backslashreplace"))
    return page
