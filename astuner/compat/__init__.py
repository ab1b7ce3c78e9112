"""Compatibility with astuner's peers: files written for AgentScope 1.0's `agentscope.tuner` and for
AgentJet (`ajet`, formerly ASTuner) run under collect and judge as they are (docs/compatibility.md).

    agentscope_tuner.py   the import without dspy; workflow functions; judge functions; the
                          `response` a workflow returned, through JSON and back
    agentjet.py           WorkflowOutput's is_success / log_metrics; BaseJudge and compute_reward judges
    tuner_config.py       model_tuner.config, AgentJet's settings tree
    dashscope.py          AgentJet's DashScope helpers: RobustDashScopeChatModel, create_external_llm_fn

The peers' import paths (ajet/, agentscope_tuner/, astuner/schema/, astuner/task_judge/,
astuner/task_rollout/) are thin
modules re-exporting astuner's classes. This file imports nothing at module level: astuner.workflow
imports agentscope_tuner.py, and agentjet.py imports astuner.workflow.
"""


def peer_judger(target, auxiliary_models: dict | None = None, judge_input: str = "auto"):
    """A --judger target written for a peer -> a batched judger returning Scores; None when it is not one.
    `judge_input` (auto, response, select_model): what an agentscope.tuner judge gets as its response."""
    from astuner.compat import agentjet, agentscope_tuner

    if agentjet.is_judge_class(target):
        return agentjet.compute_reward_judger(target, auxiliary_models)
    if agentscope_tuner.is_judge_func(target):
        return agentscope_tuner.judge_func_judger(target, auxiliary_models, judge_input)
    return None
