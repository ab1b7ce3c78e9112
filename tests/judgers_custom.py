"""Judgers that tests/test_judge.py loads by module:function, as users would."""

import math

from astuner.workflow import WorkflowOutput


def answer_length(trajectories, answer, **_):
    """Batched, TRL style: 1.0 when the final answer has as many characters as the reference."""
    out = []
    for traj, ref in zip(trajectories, answer):
        final = traj["metadata"].get("final_answer")
        out.append(None if final is None else float(len(str(final)) == len(str(ref))))
    return out


def picky(trajectories, **_):
    """Raises on one task: only that trajectory's score carries the error."""
    for traj in trajectories:
        if traj["task_id"] == "t1":
            raise RuntimeError("cannot judge t1")
    return [0.5 for _ in trajectories]


def not_a_number(trajectories, **_):
    return [math.nan for _ in trajectories]


async def agentscope_judge(task, response, auxiliary_models):
    """agentscope.tuner's judge signature; JudgeOutput is duck-typed (reward, metrics)."""

    class JudgeOutput:
        def __init__(self, reward, metrics):
            self.reward, self.metrics = reward, metrics

    correct = str(response).strip() == str(task["answer"])
    return JudgeOutput(reward=1.0 if correct else 0.0, metrics={"checked": True})


class AnswerJudge:
    """astuner BaseJudge style: compute_reward(workflow_task, workflow_output) -> (reward, success)."""

    def __init__(self, config):
        self.config = config

    def compute_reward(self, workflow_task, workflow_output: WorkflowOutput):
        ok = str(workflow_output.metadata.get("final_answer")) == str(workflow_task.task.metadata.get("answer"))
        return (1.0 if ok else 0.0), ok


def completion_chars(calls, **_):
    """A call-level judger: one value per model call."""
    return [float(len(call["completion_text"] or "")) for call in calls]


completion_chars.level = "call"
