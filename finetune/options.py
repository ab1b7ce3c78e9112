"""finetune's own options and names shared by main (parsing), data (selection) and train (training, manifest).

A module of its own so that main, data and train all import it and never each other."""

from __future__ import annotations

from dataclasses import dataclass, field

MANIFEST = "finetune.json"
METHODS = ("sft", "dpo")
PAIRINGS = ("best_worst", "all")
PAIR_BY = ("trajectory", "call")


@dataclass
class FinetuneConfig:
    """finetune's options (TrlParser parses them next to TRL's SFTConfig/DPOConfig and ModelConfig); also what
    data.build reads from the store. Values are checked here, once, whether they come from flags, a recipe or code."""

    db: str = field(
        default="runs/store.duckdb", metadata={"help": "The store written by `python -m judge` (opened read-only)."}
    )
    # no argparse choices: a bad --method gets the same one line from __post_init__ as a bad recipe `method:`
    method: str = field(default="sft", metadata={"help": "sft (rejection sampling) or dpo."})
    iterations: list[int] = field(
        default_factory=list,
        metadata={"action": "extend", "help": "Iterations to read (default: the latest in the store)."},
    )
    top_k: int = field(default=1, metadata={"help": "sft: trajectories per task and iteration, best first."})
    min_reward: float = field(
        default=1.0, metadata={"help": "sft: least combined reward (rewards view) of a trajectory used."}
    )
    min_margin: float = field(
        default=0.0,
        metadata={
            "help": "dpo: least chosen-minus-rejected reward; pairs always need a strictly higher chosen reward."
        },
    )
    pairing: str = field(
        default="best_worst",
        metadata={
            "help": "dpo: best_worst (the widest-margin pair per prompt) or all (every distinct pair).",
            "choices": list(PAIRINGS),
        },
    )
    min_call_reward: float | None = field(
        default=None,
        metadata={
            "help": "sft: train only the calls whose own call-level reward "
            "(a judger with level = 'call') is at least this; the others "
            "stay in their sequence as context, masked (default: every call)."
        },
    )
    pair_by: str = field(
        default="trajectory",
        metadata={
            "help": "dpo: rank a pair's calls by their trajectories' reward (trajectory) or by "
            "the calls' own call-level scores (call; needs a judger with level = 'call').",
            "choices": list(PAIR_BY),
        },
    )
    roles: list[str] = field(
        default_factory=list,
        metadata={"action": "extend", "help": "Only these trainable roles (default: every role trained at collect)."},
    )
    prefix_sharing: bool = field(
        default=True,
        metadata={
            "help": "Pack each batch's sequences into a prefix tree and forward every distinct token prefix once "
            "(a tree attention mask; the same loss as per-sequence training). false: one forward row per sequence."
        },
    )
    export: str | None = field(
        default=None, metadata={"help": "Write the dataset to this .parquet file and stop (no training)."}
    )

    def __post_init__(self):
        for option, value, allowed in (
            ("method", self.method, METHODS),
            ("pairing", self.pairing, PAIRINGS),
            ("pair_by", self.pair_by, PAIR_BY),
        ):
            if value not in allowed:
                raise ValueError(f"--{option} {value!r}: use one of {', '.join(allowed)}")
        if self.top_k < 1:
            raise ValueError(f"--top_k {self.top_k}: must be >= 1")
        if self.min_margin < 0:  # admits no more pairs than 0 does: refused rather than silently the same as 0
            raise ValueError(
                f"--min_margin {self.min_margin:g}: must be >= 0 (every pair's chosen reward is strictly higher); "
                "use 0 for every pair"
            )
