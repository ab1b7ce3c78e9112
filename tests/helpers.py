from pathlib import Path

from astuner.chat import render_prompt_ids
from astuner.store import open_store
from astuner.trajectory import SCHEMA_VERSION, Trajectory, dump_line, read_trajectories, trajectory_id

TESTS = Path(__file__).resolve().parent


def workflow_ref(name: str) -> str:
    return f"{TESTS / 'workflows.py'}:{name}"


def write_tasks(path: Path, n: int, prefix: str = "t") -> Path:
    import json

    path.write_text(
        "".join(
            json.dumps({"task_id": f"{prefix}{i}", "question": f"What is {i} + {i}?", "answer": 2 * i}) + "\n"
            for i in range(n)
        )
    )
    return path


def load(out: Path):
    return sorted(read_trajectories(Path(out) / "traces"), key=lambda t: (t.task.task_id, t.sample_index))


def assert_token_exact(trajectories, tokenizer) -> int:
    """Every engine call: ids decode to the recorded text and the prompt re-renders exactly."""
    checked = 0
    for traj in trajectories:
        for call in traj.calls:
            if call.completion_token_ids is None:
                continue
            assert tokenizer.decode(call.completion_token_ids, skip_special_tokens=True) == call.completion.text
            assert render_prompt_ids(tokenizer, call.messages, call.tools) == call.prompt_token_ids
            assert len(call.completion_logprobs) == len(call.completion_token_ids)
            checked += 1
    return checked


def make_call(
    index,
    role="default",
    trainable=True,
    prompt=(1, 2, 3),
    completion=(4, 5),
    text="ok",
    messages=None,
    agent="agent",
    tools=None,
):
    return {
        "index": index,
        "role": role,
        "agent_name": agent,
        "trainable": trainable,
        "model": "m",
        "messages": messages or [{"role": "user", "content": "q"}],
        "tools": tools,
        "tool_choice": None,
        "completion": {"text": text, "tool_calls": []},
        "prompt_token_ids": list(prompt) if prompt is not None else None,
        "completion_token_ids": list(completion) if completion is not None else None,
        "completion_logprobs": [-0.5] * len(completion) if completion is not None else None,
        "finish_reason": "stop",
        "prompt_tokens": len(prompt or ()),
        "completion_tokens": len(completion or ()),
        "latency_s": 0.01,
    }


def make_traj(
    task_id,
    sample,
    *,
    reward=None,
    final=None,
    answer=4,
    status="ok",
    iteration=0,
    calls=None,
    run_id="run-a",
    checkpoint="/nonexistent/ckpt",
    extra_task=None,
):
    task_meta = {
        "task_id": task_id,
        "question": f"q {task_id}",
        **({"answer": answer} if answer is not None else {}),
        **(extra_task or {}),
    }
    metadata = {} if final is None else {"final_answer": final, "response": final}
    record = {
        "schema_version": SCHEMA_VERSION,
        "trajectory_id": trajectory_id(run_id, task_id, sample),
        "run_id": run_id,
        "workflow": "wf",
        "workflow_ref": "tests:wf",
        "task": {"task_id": task_id, "main_query": f"q {task_id}", "metadata": task_meta},
        "sample_index": sample,
        "iteration": iteration,
        "checkpoint": {"path": checkpoint, "sha256": "0" * 64},
        "engine": "transformers",
        "sampling": {"temperature": 1.0, "top_p": 1.0, "max_tokens": 8, "seed": 0},
        "trainable_targets": None,
        "status": status,
        "error": None if status == "ok" else "boom",
        "traceback": None,
        "reward": reward,
        "metadata": metadata,
        "started_at": 1.0e9,
        "finished_at": 1.0e9 + 1,
        "duration_s": 1.0,
        "calls": calls if calls is not None else [make_call(0)],
    }
    return Trajectory.model_validate(record)


def write(path: Path, trajectories) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(dump_line(t) for t in trajectories))
    return path


def rows(db, sql, params=()):
    con = open_store(db, read_only=True)
    try:
        return con.execute(sql, list(params)).fetchall()
    finally:
        con.close()
