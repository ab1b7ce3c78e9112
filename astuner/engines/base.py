"""The engine interface: what collect, judge and the tuner ask of an engine, and what it returns.

Here, not in astuner/engines/__init__.py, so that the engines can import it while
`load_engine` there imports the engines.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SamplingParams:
    """One request's sampling, as an engine takes it: the collect's recorded options
    (astuner.trajectory.Sampling) with this call's own seed, derived from the recorded base seed."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int | None = None
    # Benchmarks only: generate exactly max_tokens so runs compare equal work.
    ignore_eos: bool = False


def derive_seed(base: int | None, key: str) -> int | None:
    """A seed for one run or call, from the user's base seed: results then depend on what
    is sampled, never on how requests happened to be batched."""
    if base is None:
        return None
    return int.from_bytes(hashlib.sha256(f"{base}/{key}".encode()).digest()[:4], "little")


@dataclass
class Generation:
    prompt_token_ids: list[int]
    completion_token_ids: list[int]
    # Log-probability of each sampled id under the model's own distribution (before
    # temperature/top-p), which is what vLLM reports and a forward pass reproduces.
    completion_logprobs: list[float]
    text: str
    finish_reason: str  # "stop" | "length"
    extra: dict = field(default_factory=dict)


class Engine(abc.ABC):
    """A frozen checkpoint that samples completions for prompt ids."""

    name: str
    checkpoint: str
    tokenizer: object
    # Set by collect's worker pool: how many runs in flight could still send a request soon (their
    # worker is running them, not waiting on this engine). Requests from worker processes arrive
    # one pipe message at a time, not all within one pass of this process's event loop, so a
    # batching engine waits for them a little longer instead of cutting its batch short.
    expected_requests: Callable[[], int] | None = None

    @abc.abstractmethod
    async def generate(self, prompt_token_ids: list[int], sampling: SamplingParams) -> Generation:
        """One request; concurrent calls are batched by the engine."""

    @abc.abstractmethod
    def generate_batch(self, prompts: list[list[int]], sampling: list[SamplingParams]) -> list[Generation]:
        """The raw engine: all requests in one go (benchmarks compare collect against this)."""

    def close(self) -> None:  # noqa: B027 (optional: an engine that holds nothing needs no close)
        pass

    def decode(self, ids: list[int]) -> str:
        # The recorded completion text is exactly this decoding of the recorded ids.
        return self.tokenizer.decode(ids, skip_special_tokens=True)
