"""The orchestrator-workers (handoffs) pattern of AgentScope's tutorial: the orchestrator's
tool creates a worker agent at run time; every agent runs on `model_tuner`, so every
worker's calls are recorded (with the worker's name) and trained.

    python -m collect --workflow examples/handoffs/workflow.py:HandoffsWorkflow \
        --tasks examples/handoffs/tasks.jsonl --out runs/handoffs
"""

from agentscope.agent import ReActAgent
from agentscope.formatter import DashScopeChatFormatter
from agentscope.memory import InMemoryMemory
from agentscope.message import Msg
from agentscope.tool import Toolkit, ToolResponse

from astuner import ModelTuner, Workflow, WorkflowOutput, WorkflowTask
from astuner.sandbox import execute_python_code

ORCHESTRATOR_PROMPT = (
    "You're an orchestrator agent. Your target is to finish the given task by decomposing it "
    "into smaller tasks and creating workers to finish them."
)
WORKER_PROMPT = "You're a worker agent. Your target is to finish the given task."


def make_create_worker(model_tuner: ModelTuner):
    async def create_worker(task_description: str) -> ToolResponse:
        """Create a worker to finish the given task. The worker is equipped with python execution tool.

        Args:
            task_description (``str``):
                The description of the task to be finished by the worker.
        """
        toolkit = Toolkit()
        toolkit.register_tool_function(execute_python_code)
        worker = ReActAgent(
            name="Worker",
            sys_prompt=WORKER_PROMPT,
            model=model_tuner,
            formatter=DashScopeChatFormatter(),
            toolkit=toolkit,
            max_iters=3,
        )
        res = await worker(Msg("user", task_description, "user"))
        return ToolResponse(content=res.get_content_blocks("text"))

    return create_worker


class HandoffsWorkflow(Workflow):
    name: str = "handoffs_workflow"

    async def execute(self, task: WorkflowTask, model_tuner: ModelTuner) -> WorkflowOutput:
        toolkit = Toolkit()
        toolkit.register_tool_function(make_create_worker(model_tuner))
        orchestrator = ReActAgent(
            name="Orchestrator",
            sys_prompt=ORCHESTRATOR_PROMPT,
            model=model_tuner,
            memory=InMemoryMemory(),
            formatter=DashScopeChatFormatter(),
            toolkit=toolkit,
            max_iters=4,
        )
        reply = await orchestrator(Msg("user", task.task.main_query, "user"))
        return WorkflowOutput(reward=None, metadata={"response": reply.get_text_content()})
