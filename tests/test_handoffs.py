"""Tool-call plumbing with a scripted engine: the handoffs example's orchestrator calls its
create_worker tool, which builds a worker agent at run time on the same model_tuner."""

import asyncio
import json
import re
from pathlib import Path

from helpers import assert_token_exact, load

from astuner.engines import Engine, Generation
from astuner.tasks import load_tasks
from astuner.trajectory import Checkpoint, Sampling
from astuner.workflow import load_workflow
from collect.runner import RunSpec, run_collect
from collect.writer import TraceWriter

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "handoffs"


class ScriptedEngine(Engine):
    """Replies by script, through the real tokenizer, so ids and text stay consistent."""

    name = "scripted"

    def __init__(self, tokenizer, checkpoint):
        self.tokenizer, self.checkpoint = tokenizer, checkpoint

    def reply(self, prompt: str) -> str:
        last_turn = prompt.rsplit("<|im_start|>", 2)[-2]
        if "orchestrator agent" in prompt:
            if "<tool_response>" not in last_turn:
                task = re.search(r"<\|im_start\|>user\n(.*?)<\|im_end\|>", prompt).group(1)
                args = json.dumps({"task_description": f"Do: {task}"})
                return f'I will hand this off.\n<tool_call>\n{{"name": "create_worker", "arguments": {args}}}\n</tool_call>'
            return "The worker finished the task."
        if "<tool_response>" not in last_turn:
            return '<tool_call>\n{"name": "execute_python_code", "arguments": {"code": "print(\'hello world\')"}}\n</tool_call>'
        return "hello world was printed."

    async def generate(self, prompt_token_ids, sampling):
        return self.generate_batch([prompt_token_ids], [sampling])[0]

    def generate_batch(self, prompts, sampling):
        out = []
        for ids in prompts:
            text = self.reply(self.tokenizer.decode(ids)) + "<|im_end|>"
            completion = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            out.append(Generation(list(ids), completion, [0.0] * len(completion), self.decode(completion), "stop"))
        return out


def test_handoffs_records_every_worker_call(tmp_path, tokenizer, tiny_model):
    ref = f"{EXAMPLE / 'workflow.py'}:HandoffsWorkflow"
    spec = RunSpec(
        run_id="handoffs-test",
        workflow_cls=load_workflow(ref),
        workflow_ref=ref,
        checkpoint=Checkpoint(path=str(tiny_model), sha256="0" * 64),
        sampling=Sampling(max_tokens=64),
        trainable_targets=None,
        timeout_s=120,
    )
    tasks = load_tasks(str(EXAMPLE / "tasks.jsonl"))
    writer = TraceWriter(tmp_path / "traces")
    stats = asyncio.run(
        run_collect(
            spec, ScriptedEngine(tokenizer, str(tiny_model)), [(t, 0) for t in tasks], writer, 2, progress=False
        )
    )
    assert stats.ok == len(tasks) == 4

    for traj in load(tmp_path):
        names = [c.agent_name for c in traj.calls]
        # orchestrator asks, the run-time worker calls python then answers, orchestrator wraps up
        assert names == ["Orchestrator", "Worker", "Worker", "Orchestrator"], names
        assert all(c.trainable for c in traj.calls)
        first = traj.calls[0].completion
        assert [tc.name for tc in first.tool_calls] == ["create_worker"]
        assert json.loads(first.tool_calls[0].arguments)["task_description"].startswith("Do: ")
        assert [tc.name for tc in traj.calls[1].completion.tool_calls] == ["execute_python_code"]
        # the tool really ran: its output is in the worker's next prompt
        assert "hello world" in json.dumps(traj.calls[2].messages)
        assert traj.metadata["response"] == "The worker finished the task."
    assert assert_token_exact(load(tmp_path), tokenizer) == 4 * len(tasks)  # 4 calls per run


def test_handoff_judger():
    from astuner.cli import import_object

    judge = import_object(f"{EXAMPLE / 'judger.py'}:handoff_reward", "--judger")
    worker = {"agent_name": "Worker"}
    trajectories = [
        {
            "status": "ok",
            "calls": [{"agent_name": "Orchestrator"}, worker],
            "metadata": {"response": "It printed 5050."},
        },
        {"status": "ok", "calls": [worker], "metadata": {"response": "done"}},
        {"status": "ok", "calls": [{"agent_name": "Orchestrator"}], "metadata": {"response": "5050"}},
        {"status": "error", "calls": [worker], "metadata": {"response": "5050"}},
    ]
    assert judge(trajectories, expected=["5050"] * 4) == [1.0, 0.5, 0.5, 0.0]
