"""Write tasks.jsonl (train) and eval_tasks.jsonl (held out) for the tool-use example.

    python examples/learn_tool_use/make_tasks.py

Every task names a key digit; the table the `code` tool reads is not in the task but drawn per
run (workflow.run_table). Train and held-out tasks use disjoint phrasings: the held-out reward
measures whether the agent learned to call the tool with the question's key and to answer with
the result, whatever the phrasing and the table.
"""

import json
from pathlib import Path

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
    for p, phrasing in enumerate(phrasings):
        for k in range(10):
            yield {"task_id": f"{split}-p{p}-k{k}", "question": phrasing.format(k=k), "key": k}


def main() -> None:
    here = Path(__file__).parent
    for name, split, phrasings in (("tasks.jsonl", "train", TRAIN_PHRASINGS), ("eval_tasks.jsonl", "eval", EVAL_PHRASINGS)):
        with open(here / name, "w") as f:
            for row in rows(split, phrasings):
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
