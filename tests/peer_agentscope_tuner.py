"""Workflows and judges written for AgentScope 1.0's own `agentscope.tuner`, as its docs and
examples/tuner write them (workflow_func(task, model, auxiliary_models) -> WorkflowOutput,
judge_func(task, response, auxiliary_models) -> JudgeOutput). Nothing here knows astuner."""

from agentscope.agent import ReActAgent
from agentscope.formatter import OpenAIChatFormatter
from agentscope.message import Msg
from agentscope.model import ChatModelBase
from agentscope.tuner import JudgeOutput, TunerModelConfig, WorkflowOutput  # noqa: F401 (imported as users do)


async def solve_with_react(
    task: dict, model: ChatModelBase, auxiliary_models: dict[str, ChatModelBase] | None = None
) -> WorkflowOutput:
    """One ReAct agent on the tuned model; the reply Msg is the response its judge reads."""
    agent = ReActAgent(
        name="solver",
        sys_prompt="Solve the problem. Put the answer in \\boxed{}.",
        model=model,
        formatter=OpenAIChatFormatter(),
        max_iters=1,
    )
    agent.set_console_output_enabled(False)
    response = await agent.reply(msg=Msg("user", task["question"], role="user"))
    return WorkflowOutput(response=response)


async def answer_judge(
    task: dict, response: Msg, auxiliary_models: dict[str, ChatModelBase] | None = None
) -> JudgeOutput:
    """Reads the Msg the workflow returned (a repr string would fail here)."""
    assert isinstance(response, Msg), f"response is a {type(response).__name__}"
    text = response.get_text_content() or ""
    return JudgeOutput(reward=1.0 if str(task["answer"]) in text else 0.0, metrics={"chars": float(len(text))})


async def speaker_judge(task, response) -> JudgeOutput:
    """auxiliary_models is optional in JudgeType: this judge does not declare it."""
    return JudgeOutput(reward=1.0 if response.name == "solver" and response.role == "assistant" else 0.0)


async def play_against_participant(
    task: dict, model: ChatModelBase, auxiliary_models: dict[str, ChatModelBase]
) -> WorkflowOutput:
    """A two-player game: the tuned model against auxiliary_models["participant"] (not trained)."""
    player = ReActAgent(
        name="player", sys_prompt="You play the game.", model=model, formatter=OpenAIChatFormatter(), max_iters=1
    )
    opponent = ReActAgent(
        name="opponent",
        sys_prompt="You play against player.",
        model=auxiliary_models["participant"],
        formatter=OpenAIChatFormatter(),
        max_iters=1,
    )
    for agent in (player, opponent):
        agent.set_console_output_enabled(False)
    move = await player.reply(Msg("host", task["question"], role="user"))
    answer = await opponent.reply(move)
    return WorkflowOutput(reward=0.0, response=answer, metrics={"turns": 2.0})


async def ask_the_judge_model(
    task: dict, model: ChatModelBase, auxiliary_models: dict[str, ChatModelBase]
) -> WorkflowOutput:
    """LLM-as-a-judge inside the workflow: auxiliary_models["judge"] grades the tuned model's answer."""
    agent = ReActAgent(
        name="solver", sys_prompt="Answer briefly.", model=model, formatter=OpenAIChatFormatter(), max_iters=1
    )
    agent.set_console_output_enabled(False)
    answer = await agent.reply(Msg("user", task["question"], role="user"))
    verdict = await auxiliary_models["judge"](
        [{"role": "user", "content": f"Is this correct? {answer.get_text_content()}"}]
    )
    text = "".join(block.get("text", "") for block in verdict.content)
    return WorkflowOutput(reward=1.0 if "yes" in text.lower() else 0.0, response=answer)


async def judge_model_judge(task: dict, response: Msg, auxiliary_models: dict[str, ChatModelBase]) -> JudgeOutput:
    """A judge that asks auxiliary_models["judge"] (an endpoint or a checkpoint)."""
    verdict = await auxiliary_models["judge"]([{"role": "user", "content": f"Grade: {response.get_text_content()}"}])
    text = "".join(block.get("text", "") for block in verdict.content)
    return JudgeOutput(reward=1.0 if "yes" in text.lower() else 0.25, metrics={"verdict_chars": float(len(text))})
