"""Write tasks.jsonl (train) and eval_tasks.jsonl (held out) for the learn-to-answer demo.

    python examples/learn_to_answer/make_tasks.py

Every task asks for one digit as an English word. Train and held-out tasks cover the same ten
digits, with disjoint phrasings: the held-out reward measures whether the model learned the
digit -> word map itself, not the phrasings it was trained on.
"""

import json
from pathlib import Path

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

# Every phrasing ends with the digit, so it sits at the same distance from the reply in every
# prompt: the 2-layer tiny model finds it by position, whatever words come before it.
TRAIN_PHRASINGS = [
    "Write as a word: {d}",
    "Spell out: {d}",
    "In words, {d}",
    "The word for {d}",
    "Say the number {d}",
    "Name this digit: {d}",
    "Digit to word: {d}",
    "Write the digit {d}",
]
EVAL_PHRASINGS = [
    "Spell the digit {d}",
    "What is the word for {d}",
    "Number to word: {d}",
    "Write in letters: {d}",
]


def rows(split: str, phrasings: list[str]):
    for p, phrasing in enumerate(phrasings):
        for d, word in enumerate(WORDS):
            yield {"task_id": f"{split}-p{p}-d{d}", "question": phrasing.format(d=d), "digit": d, "answer": word}


def main() -> None:
    here = Path(__file__).parent
    for name, split, phrasings in (("tasks.jsonl", "train", TRAIN_PHRASINGS), ("eval_tasks.jsonl", "eval", EVAL_PHRASINGS)):
        with open(here / name, "w") as f:
            for row in rows(split, phrasings):
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
