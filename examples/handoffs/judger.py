"""A batched judger for the handoffs example (TRL reward-function style: one trajectory dict
per item, task fields as columns):

    python -m judge score --db runs/handoffs/store.duckdb --judger examples/handoffs/judger.py:handoff_reward

0.5 when the orchestrator handed work to a worker (a Worker agent made a model call), plus 0.5
when its final response contains the task's `expected` output. A run that failed scores 0.
"""


def handoff_reward(trajectories, expected=None, **_):
    expected = expected or [None] * len(trajectories)
    rewards = []
    for trajectory, wanted in zip(trajectories, expected):
        if trajectory["status"] != "ok":
            rewards.append(0.0)
            continue
        delegated = any(call["agent_name"] == "Worker" for call in trajectory["calls"])
        response = (trajectory["metadata"] or {}).get("response") or ""
        answered = wanted is not None and str(wanted).lower() in response.lower()
        rewards.append(0.5 * delegated + 0.5 * answered)
    return rewards
