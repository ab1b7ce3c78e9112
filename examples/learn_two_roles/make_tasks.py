"""Write tasks.jsonl (train) and eval_tasks.jsonl (held out) for the speaker-listener example.

    python examples/learn_two_roles/make_tasks.py

A task is a digit, the speaker's question and the listener's question (with {word}, the
speaker's reply). Held-out tasks use other phrasings for both roles. Every phrasing ends with
the digit or the word, at a fixed distance from the reply (what the 2-layer tiny model needs).
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tasks_lib import digit_tasks, write_tasks  # noqa: E402

SPEAKER_TRAIN = [
    "Write as a word: {d}",
    "Spell out: {d}",
    "In words, {d}",
    "The word for {d}",
    "Say the number {d}",
    "Name this digit: {d}",
    "Digit to word: {d}",
    "Write the digit {d}",
]
SPEAKER_EVAL = ["Spell the digit {d}", "What is the word for {d}", "Number to word: {d}", "Write in letters: {d}"]
LISTENER_TRAIN = ["Write as a digit: {word}", "The digit for {word}", "Word to digit: {word}", "As a number: {word}"]
LISTENER_EVAL = ["Which digit is {word}", "In digits, {word}"]


def rows(split: str, speaker: list[str], listener: list[str]):
    return digit_tasks(
        split, speaker, "d", lambda p, d: {"digit": d, "listener_prompt": listener[(p + d) % len(listener)]}
    )


def main() -> None:
    write_tasks(HERE, rows("train", SPEAKER_TRAIN, LISTENER_TRAIN), rows("eval", SPEAKER_EVAL, LISTENER_EVAL))


if __name__ == "__main__":
    main()
