"""finetune's own options and names shared by main (parsing) and train (training, manifest).

A module of its own so that main and train both import it and never each other."""

from __future__ import annotations

from dataclasses import dataclass, field

from finetune.data import METHODS, PAIR_BY, PAIRINGS

MANIFEST = "finetune.json"


@dataclass
class FinetuneArguments:
    db: str = field(default="runs/store.duckdb", metadata={"help": "The store written by `python -m judge` (opened read-only)."})
    method: str = field(default="sft", metadata={"help": "sft (rejection sampling) or dpo.", "choices": list(METHODS)})
    iterations: list[int] = field(default_factory=list, metadata={"action": "extend", "help": "Iterations to read (default: the latest in the store)."})
    top_k: int = field(default=1, metadata={"help": "sft: trajectories per task and iteration, best first."})
    min_reward: float = field(default=1.0, metadata={"help": "sft: least combined reward (rewards view) of a trajectory used."})
    min_margin: float = field(default=0.0, metadata={"help": "dpo: least chosen-minus-rejected reward; pairs always need a strictly higher chosen reward."})
    pairing: str = field(default="best_worst", metadata={"help": "dpo: best_worst (the widest-margin pair per prompt) or all (every distinct pair).",
                                                         "choices": list(PAIRINGS)})
    min_call_reward: float | None = field(default=None, metadata={"help": "sft: train only the calls whose own call-level reward "
                                                                  "(a judger with level = 'call') is at least this; the others "
                                                                  "stay in their sequence as context, masked (default: every call)."})
    pair_by: str = field(default="trajectory", metadata={"help": "dpo: rank a pair's calls by their trajectories' reward (trajectory) or by "
                                                         "the calls' own call-level scores (call; needs a judger with level = 'call').",
                                                         "choices": list(PAIR_BY)})
    roles: list[str] = field(default_factory=list, metadata={"action": "extend", "help": "Only these trainable roles (default: every role trained at collect)."})
    export: str | None = field(default=None, metadata={"help": "Write the dataset to this .parquet file and stop (no training)."})
