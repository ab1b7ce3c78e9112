"""Per-role rewards for the speaker-listener example: a call-level judger.

    python -m judge score --db runs/two/speaker/store.duckdb --judger workflow --judger examples/learn_two_roles/judger.py:role_reward

Each call gets its own role's score from the trajectory's metadata, whichever role was trained,
so `SELECT role, avg(value) ... WHERE call_index IS NOT NULL` is the per-role reward (table.py).
"""


def role_reward(calls, **task_columns):
    scores = []
    for call in calls:
        role_scores = (call.get("metadata") or {}).get("role_scores")
        scores.append(None if call.get("status") != "ok" or not role_scores else role_scores.get(call["role"]))
    return scores


role_reward.level = "call"
