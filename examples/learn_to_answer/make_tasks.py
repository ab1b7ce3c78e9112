"""Write tasks.jsonl (train) and eval_tasks.jsonl (held out) for the learn-to-answer demo.

    python examples/learn_to_answer/make_tasks.py

Every task asks for one digit as an English word. Train and held-out tasks cover the same ten
digits, with disjoint phrasings: the held-out reward measures whether the model learned the
digit -> word map itself, not the phrasings it was trained on.
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tasks_lib import digit_tasks, write_tasks  # noqa: E402

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
    return digit_tasks(split, phrasings, "d", lambda p, d: {"digit": d, "answer": WORDS[d]})


def main() -> None:
    write_tasks(HERE, rows("train", TRAIN_PHRASINGS), rows("eval", EVAL_PHRASINGS))


if __name__ == "__main__":
    main()
