"""Inference engines behind one small interface.

Both engines take prompt *token ids* (rendered by `astuner.chat.render_prompt_ids`) and
return the sampled ids with their logprobs, so what collect records is exactly what the
model saw and produced.
"""

from __future__ import annotations

import json
from pathlib import Path

# the interface, imported from here by every stage (defined in base.py, which the engines import)
from astuner.engines.base import Engine, Generation, SamplingParams, derive_seed  # noqa: F401

ENGINES = ("transformers", "vllm")


# Any of these makes a folder's tokenizer loadable (fast, sentencepiece, BPE or WordPiece vocabularies).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")


def tokenizer_problem(path: str | Path) -> str | None:
    """What keeps checkpoint folder `path` from rendering prompts (no tokenizer, no chat template), or None.

    Read from the files, so it costs no tokenizer load; every stage renders prompts through the template."""
    path = Path(path)
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        return (
            f"no tokenizer files ({', '.join(TOKENIZER_FILES)}); save the model's tokenizer there with "
            f"tokenizer.save_pretrained('{path}')"
        )
    if (path / "chat_template.jinja").is_file() or (path / "chat_template.json").is_file():
        return None
    try:
        config = json.loads((path / "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        config = {}
    if isinstance(config, dict) and config.get("chat_template"):
        return None
    return (
        f"the tokenizer has no chat template (no chat_template.jinja, and tokenizer_config.json has no chat_template); "
        f"add the model's template as {path / 'chat_template.jinja'}"
    )


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
        raise ValueError(
            f"{option} {checkpoint}: config.json is not valid JSON ({exc}); re-save it with model.save_pretrained"
        ) from None
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
