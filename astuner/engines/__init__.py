"""Inference engines behind one small interface.

Both engines take prompt *token ids* (rendered by `astuner.chat.render_prompt_ids`) and
return the sampled ids with their logprobs, so what collect records is exactly what the
model saw and produced.
"""

from __future__ import annotations

import abc
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

ENGINES = ("transformers", "vllm")


@dataclass(frozen=True)
class SamplingParams:
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

    @abc.abstractmethod
    async def generate(self, prompt_token_ids: list[int], sampling: SamplingParams) -> Generation:
        """One request; concurrent calls are batched by the engine."""

    @abc.abstractmethod
    def generate_batch(self, prompts: list[list[int]], sampling: list[SamplingParams]) -> list[Generation]:
        """The raw engine: all requests in one go (benchmarks compare collect against this)."""

    def close(self) -> None:
        pass

    def decode(self, ids: list[int]) -> str:
        # The recorded completion text is exactly this decoding of the recorded ids.
        return self.tokenizer.decode(ids, skip_special_tokens=True)


def require_checkpoint(checkpoint: str | Path, option: str = "--model") -> Path:
    path = Path(checkpoint)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{option} {checkpoint}: not a checkpoint folder (no config.json). "
            "Pass a local folder written by save_pretrained or finetune; nothing is downloaded."
        )
    return path


def load_engine(name: str, checkpoint: str | Path, **kwargs) -> Engine:
    """Load `checkpoint` (a local folder) with engine `name`; vLLM is imported only here."""
    path = require_checkpoint(checkpoint)
    if name == "transformers":
        from astuner.engines.transformers_engine import TransformersEngine

        return TransformersEngine(str(path), **kwargs)
    if name == "vllm":
        from astuner.engines.vllm_engine import VLLMEngine

        return VLLMEngine(str(path), **kwargs)
    raise ValueError(f"--engine {name!r}: unknown engine; choose one of {', '.join(ENGINES)}")
