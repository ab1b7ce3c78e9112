"""Simple mode, as in the reference: one ReActAgent on `model_tuner`, a Python tool, and a
structured final answer compared with the task's reference answer.

    python -m collect --workflow examples/math_agent/workflow.py:MathAgentWorkflow \
        --tasks examples/math_agent/tasks.jsonl --samples-per-task 2 --out runs/math
"""

from agentscope.message import Msg
from pydantic import BaseModel, Field

from astuner import ModelTuner, Workflow, WorkflowOutput, WorkflowTask

system_prompt = (
    "You are a careful math agent. Work the problem out, use execute_python_code to check "
    "arithmetic, then call generate_response with the final answer as a number."
)


class FinalResult(BaseModel):
    result: str = Field(description="The final answer: a number only, no units.")


def extract_final_answer(result: Msg) -> str | None:
    # reply(..., structured_model=FinalResult) puts the parsed tool arguments in metadata
    return (result.metadata or {}).get("result")


def answers_match(predicted: str | None, reference) -> bool:
    if predicted is None or reference is None:
        return False
    try:
        return abs(float(str(predicted).replace(",", "")) - float(reference)) < 1e-6
    except ValueError:
        return str(predicted).strip() == str(reference).strip()


class MathAgentWorkflow(Workflow):
    name: str = "math_agent_workflow"

    async def execute(self, task: WorkflowTask, model_tuner: ModelTuner) -> WorkflowOutput:
        from agentscope.agent import ReActAgent
        from agentscope.formatter import DashScopeChatFormatter
        from agentscope.memory import InMemoryMemory
        from agentscope.tool import Toolkit

        from astuner.sandbox import execute_python_code

        self.toolkit = Toolkit()
        self.toolkit.register_tool_function(execute_python_code)
        self.agent = ReActAgent(
            name="math_react_agent",
            sys_prompt=system_prompt,
            model=model_tuner,  # ← Key change!
            formatter=DashScopeChatFormatter(),
            toolkit=self.toolkit,
            memory=InMemoryMemory(),
            max_iters=4,
        )

        query = task.task.main_query
        msg = Msg("user", query, role="user")
        result = await self.agent.reply(msg, structured_model=FinalResult)
        final_answer = extract_final_answer(result)
        reward = 1.0 if answers_match(final_answer, task.task.metadata.get("answer")) else 0.0
        return WorkflowOutput(reward=reward, metadata={"final_answer": final_answer})
