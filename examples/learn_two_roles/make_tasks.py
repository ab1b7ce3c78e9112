"""Write tasks.jsonl (train) and eval_tasks.jsonl (held out) for the speaker-listener example.

    python examples/learn_two_roles/make_tasks.py

A task is a digit, the speaker's question and the listener's question (with {word}, the
speaker's reply). Held-out tasks use other phrasings for both roles. Every phrasing ends with
the digit or the word, at a fixed distance from the reply (what the 2-layer tiny model needs).
"""

import json
from pathlib import Path

SPEAKER_TRAIN = ["Write as a word: {d}", "Spell out: {d}", "In words, {d}", "The word for {d}",
                 "Say the number {d}", "Name this digit: {d}", "Digit to word: {d}", "Write the digit {d}"]
SPEAKER_EVAL = ["Spell the digit {d}", "What is the word for {d}", "Number to word: {d}", "Write in letters: {d}"]
LISTENER_TRAIN = ["Write as a digit: {word}", "The digit for {word}", "Word to digit: {word}", "As a number: {word}"]
LISTENER_EVAL = ["Which digit is {word}", "In digits, {word}"]


def main() -> None:
    here = Path(__file__).parent
    for name, split, speaker, listener in (("tasks.jsonl", "train", SPEAKER_TRAIN, LISTENER_TRAIN),
                                           ("eval_tasks.jsonl", "eval", SPEAKER_EVAL, LISTENER_EVAL)):
        with open(here / name, "w") as f:
            for p, phrasing in enumerate(speaker):
                for d in range(10):
                    f.write(json.dumps({"task_id": f"{split}-p{p}-d{d}", "question": phrasing.format(d=d), "digit": d,
                                        "listener_prompt": listener[(p + d) % len(listener)]}) + "\n")


if __name__ == "__main__":
    main()
