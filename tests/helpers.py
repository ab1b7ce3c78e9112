from pathlib import Path

from astuner.chat import render_prompt_ids
from astuner.trajectory import read_trajectories

TESTS = Path(__file__).resolve().parent


def workflow_ref(name: str) -> str:
    return f"{TESTS / 'workflows.py'}:{name}"


def write_tasks(path: Path, n: int, prefix: str = "t") -> Path:
    import json

    path.write_text("".join(json.dumps({"task_id": f"{prefix}{i}", "question": f"What is {i} + {i}?", "answer": 2 * i}) + "\n" for i in range(n)))
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
