"""Write tasks.jsonl (train) and eval_tasks.jsonl (held out) for the tool-use example.

    python examples/learn_tool_use/make_tasks.py

Every task names a key digit; the table the `code` tool reads is not in the task but drawn per
run (workflow.run_table). Train and held-out tasks use disjoint phrasings: the held-out reward
measures whether the agent learned to call the tool with the question's key and to answer with
the result, whatever the phrasing and the table.
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tasks_lib import digit_tasks, write_tasks  # noqa: E402

# Every phrasing ends with the key, so it sits at the same distance from the reply in every prompt.
TRAIN_PHRASINGS = [
    "Code of box {k}",
    "Look up key {k}",
    "What is stored under {k}",
    "Find the code for {k}",
    "Which code is in box {k}",
    "Get me the code of {k}",
    "The code under key {k}",
    "Open box {k}",
]
EVAL_PHRASINGS = [
    "Tell me the code of {k}",
    "What code has key {k}",
    "Read box {k}",
    "Code for key {k}",
]


def rows(split: str, phrasings: list[str]):
    return digit_tasks(split, phrasings, "k", lambda p, k: {"key": k})


def main() -> None:
    write_tasks(HERE, rows("train", TRAIN_PHRASINGS), rows("eval", EVAL_PHRASINGS))


if __name__ == "__main__":
    main()
