"""The learning demo's pieces: the format-only warm-up writes a checkpoint that collect serves,
with prompts token for token as the warm-up rendered them (the whole demo takes ~5 min: make learn)."""

import subprocess
import sys
from pathlib import Path

from helpers import assert_token_exact, load

from collect.main import main as collect_main

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "learn_to_answer"


def test_warmup_checkpoint_serves_the_workflow(tmp_path, tiny_model, tokenizer):
    out = tmp_path / "warmup"
    cmd = [sys.executable, str(EXAMPLE / "warmup.py"), "--out", str(out), "--model", str(tiny_model), "--steps", "30"]
    assert subprocess.run(cmd, capture_output=True, text=True).returncode == 0
    assert (out / "config.json").is_file() and not Path(f"{out}.partial").exists()
    rerun = subprocess.run(cmd, capture_output=True, text=True)
    assert "exists; nothing to do" in rerun.stdout

    assert (
        collect_main(
            [
                "--workflow",
                f"{EXAMPLE / 'workflow.py'}:LearnToAnswer",
                "--tasks",
                str(EXAMPLE / "eval_tasks.jsonl"),
                "--model",
                str(out),
                "--limit",
                "4",
                "--samples-per-task",
                "2",
                "--max-tokens",
                "8",
                "--seed",
                "0",
                "--out",
                str(tmp_path / "c"),
            ]
        )
        == 0
    )
    trajectories = load(tmp_path / "c")
    assert len(trajectories) == 8 and all(t.status == "ok" and t.reward in (0.0, 1.0) for t in trajectories)
    assert assert_token_exact(trajectories, tokenizer) == 8
    # the prompt is the bare question: no system prompt
    assert trajectories[0].calls[0].messages == [{"role": "user", "content": "Spell the digit 0"}]
