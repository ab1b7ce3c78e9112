"""Inference engines behind one small interface.

Both engines take prompt *token ids* (rendered by `astuner.chat.render_prompt_ids`) and
return the sampled ids with their logprobs, so what collect records is exactly what the
model saw and produced.
"""

from __future__ import annotations

import abc
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

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

    def close(self) -> None:
        pass

    def decode(self, ids: list[int]) -> str:
        # The recorded completion text is exactly this decoding of the recorded ids.
        return self.tokenizer.decode(ids, skip_special_tokens=True)


# Any of these makes a folder's tokenizer loadable (fast, sentencepiece, BPE or WordPiece vocabularies).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")


def tokenizer_problem(path: str | Path) -> str | None:
    """What keeps checkpoint folder `path` from rendering prompts (no tokenizer, no chat template), or None.

    Read from the files, so it costs no tokenizer load; every stage renders prompts through the template."""
    path = Path(path)
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        return (f"no tokenizer files ({', '.join(TOKENIZER_FILES)}); save the model's tokenizer there with "
                f"tokenizer.save_pretrained('{path}')")
    if (path / "chat_template.jinja").is_file() or (path / "chat_template.json").is_file():
        return None
    try:
        config = json.loads((path / "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        config = {}
    if isinstance(config, dict) and config.get("chat_template"):
        return None
    return (f"the tokenizer has no chat template (no chat_template.jinja, and tokenizer_config.json has no chat_template); "
            f"add the model's template as {path / 'chat_template.jinja'}")


def require_checkpoint(checkpoint: str | Path, option: str = "--model") -> Path:
    """A local checkpoint folder that the engines and finetune can load; else one line naming `option` and the fix."""
    path = Path(checkpoint)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{option} {checkpoint}: not a checkpoint folder (no config.json). "
            "Pass a local folder written by save_pretrained or finetune; nothing is downloaded."
        )
    try:
        json.loads((path / "config.json").read_text())
    except ValueError as exc:
        raise ValueError(f"{option} {checkpoint}: config.json is not valid JSON ({exc}); re-save it with model.save_pretrained") from None
    problem = tokenizer_problem(path)
    if problem:
        raise ValueError(f"{option} {checkpoint}: {problem}")
    return path


def load_engine(name: str, checkpoint: str | Path, *, option: str = "--model", **kwargs) -> Engine:
    """Load `checkpoint` (a local folder) with engine `name`; vLLM is imported only here. `option` is the flag
    that named the checkpoint, for errors."""
    path = require_checkpoint(checkpoint, option)
    if name == "transformers":
        from astuner.engines.transformers_engine import TransformersEngine

        return TransformersEngine(str(path), **kwargs)
    if name == "vllm":
        from astuner.engines.vllm_engine import VLLMEngine

        return VLLMEngine(str(path), **kwargs)
    raise ValueError(f"--engine {name!r}: unknown engine; choose one of {', '.join(ENGINES)}")
