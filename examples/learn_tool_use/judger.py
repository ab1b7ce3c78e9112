"""Each call's own half of the reward: SFT trains the calls that earned theirs (sft.yaml:
`min_call_reward: 0.5`), DPO ranks a pair's two calls by them (dpo.yaml: `pair_by: call`).

    python -m judge score --db runs/tool/dpo/store.duckdb --judger workflow --judger examples/learn_tool_use/judger.py:call_reward

The episode's reward (workflow.score) has two halves: 0.5 for looking up the question's key, 0.5
for answering with a code the tool returned. Here each half goes to the call that earned it: the
call whose tool call names the question's key gets the first, the answer (a call with no tool
call, whose text is the final answer) the second; the calls' scores add up to the reward. With
the episode's reward, two episodes that part at call 1 (two wrong keys) pair there when only one
of them later copied its result: at iteration 0, 934 of 2,110 first-call pairs preferred one wrong
key to another; and SFT on an episode with the right key and a random answer trains that answer
(README).
"""

import json


def _keys(call: dict) -> list[str]:
    keys = []
    for tool_call in call.get("tool_calls") or []:
        arguments = tool_call.get("arguments")
        try:
            arguments = json.loads(arguments) if isinstance(arguments, str) else arguments
        except json.JSONDecodeError:
            continue
        if tool_call.get("name") == "code" and isinstance(arguments, dict):
            keys.append(str(arguments.get("key")))
    return keys


def call_reward(calls, **task_columns):
    scores, looked_up = [], set()  # looked_up: episodes whose key half went to an earlier call (it is paid once)
    for call in sorted(calls, key=lambda c: (c["trajectory_id"], c["call_index"])):
        if call.get("status") != "ok":
            scores.append((call, None))
            continue
        meta, key, episode = call.get("metadata") or {}, str(call["task"]["key"]), call["trajectory_id"]
        right_lookup = episode not in looked_up and key in _keys(call)
        if right_lookup:
            looked_up.add(episode)
        codes = [str(lookup["code"]) for lookup in meta.get("lookups") or [] if lookup.get("code") is not None]
        is_answer = not call.get("tool_calls") and (call.get("completion_text") or "").strip() == meta.get(
            "final_answer"
        )
        scores.append((call, 0.5 * right_lookup + 0.5 * (is_answer and meta.get("final_answer") in codes)))
    value = {id(call): v for call, v in scores}
    return [value[id(call)] for call in calls]


call_reward.level = "call"
