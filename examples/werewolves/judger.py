"""Per-role rewards for the werewolves game: a call-level judger.

    python -m judge score --db runs/werewolves.duckdb \
        --judger workflow --judger examples/werewolves/judger.py:side_reward

judge calls it with one item per model call (the trajectory's fields plus the call's
`role`, `agent_name`, `trainable`, ...) and stores each score with its call_index, so every
role's calls carry its own side's result whichever roles were trained.
"""

# Kept in step with workflow.side_of; a judger file is imported on its own, by path.
WEREWOLF_ROLES = {"werewolf"}


def side_reward(calls, **task_columns):
    scores = []
    for call in calls:
        winner = (call.get("metadata") or {}).get("winner")
        if call.get("status") != "ok" or winner is None:
            scores.append(None)  # an unfinished game has no winner: not applicable
            continue
        side = "werewolves" if call["role"] in WEREWOLF_ROLES else "villagers"
        scores.append(1.0 if side == winner else 0.0)
    return scores


side_reward.level = "call"
