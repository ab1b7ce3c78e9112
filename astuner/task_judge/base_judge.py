"""BaseJudge, as AgentJet's (ASTuner's) tutorial judges subclass it.

`python -m judge score --judger file.py:MyJudge` constructs the class with the judge's config
(the same tree as model_tuner.config) and calls `compute_reward(workflow_task, workflow_output)`
per trajectory; it returns `(raw_reward, is_success)` (or a bare reward). The reward is the
score's value, is_success its label (success / failure).
"""

from __future__ import annotations

from astuner.workflow import WorkflowOutput, WorkflowTask


class BaseJudge:
    def __init__(self, config=None):
        self.config = config

    def compute_reward(self, workflow_task: WorkflowTask, workflow_output: WorkflowOutput) -> tuple:
        raise NotImplementedError(f"{type(self).__name__}.compute_reward is not implemented")
