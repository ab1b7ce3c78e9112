"""Auxiliary models: the `auxiliary_models` that agentscope.tuner workflows and judges take
(an opponent, a judge model), named on the command line by `--auxiliary-models`.

    --auxiliary-models '{"participant": "runs/iter-0/checkpoint"}'                     # a local checkpoint
    --auxiliary-models '{"judge": {"base_url": "http://127.0.0.1:8000/v1", "model": "qwen"}}'  # an endpoint
    --auxiliary-models aux.yaml                                                        # the same, from a file

JSON or YAML, a mapping of name -> spec (in a recipe, the mapping itself). A spec is

    PATH                                     a local checkpoint folder, served by an astuner engine
    {path: PATH, engine, device, temperature, top_p, max_tokens}
    {base_url: URL, model: NAME, api_key | api_key_env, temperature, top_p, max_tokens}
                                             an OpenAI-compatible endpoint (AgentScope's OpenAIChatModel)

Under collect, every call of an auxiliary model is recorded in the trajectory with `role` = its
name and `trainable: false` (a checkpoint's calls with token ids, an endpoint's as text); the
collected checkpoint is never trained on them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OPTION = "--auxiliary-models"
_SAMPLING_KEYS = ("temperature", "top_p", "max_tokens")
_KEYS = {
    "path": {"path", "engine", "device", *_SAMPLING_KEYS},
    "base_url": {"base_url", "model", "api_key", "api_key_env", *_SAMPLING_KEYS},
}
_EXAMPLE = '\'{"judge": "path/to/checkpoint"}\' or \'{"judge": {"base_url": "http://host:port/v1", "model": "NAME"}}\''


@dataclass
class AuxiliarySpec:
    name: str
    path: str | None = None  # a checkpoint folder ...
    engine: str = "transformers"
    device: str | None = None
    base_url: str | None = None  # ... or an endpoint
    model: str | None = None
    api_key: str | None = None
    api_key_env: str | None = None
    temperature: float | None = None  # None: the stage's own sampling
    top_p: float | None = None
    max_tokens: int | None = None

    def identity(self) -> dict:
        """What collect.json records (never the key itself)."""
        return {k: v for k, v in vars(self).items() if v is not None and k not in ("name", "api_key", "device")}


def parse_auxiliary_models(value: Any, option: str = OPTION) -> dict[str, AuxiliarySpec]:
    """The option's value (JSON or YAML text, a .json/.yaml file, or a mapping from a recipe) -> specs.
    Errors are one line naming `option`."""
    import yaml

    if value is None or value == "" or value == {}:
        return {}
    source = value
    if isinstance(value, str):
        path = Path(value)
        if value.strip()[:1] not in ("{", "[") and path.suffix in (".json", ".yaml", ".yml"):
            try:
                value = path.read_text()
            except OSError as exc:
                raise ValueError(f"{option} {source}: cannot read ({exc.strerror})") from None
        try:
            value = yaml.safe_load(value)  # JSON is YAML too
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ValueError(f"{option} {source!r}: neither JSON nor YAML ({problem}); e.g. {_EXAMPLE}") from None
    if not isinstance(value, dict) or not value:
        raise ValueError(f"{option} {source!r}: expected a mapping of name -> model spec, e.g. {_EXAMPLE}")
    return {str(name): _spec(str(name), spec, option) for name, spec in value.items()}


def _spec(name: str, raw: Any, option: str) -> AuxiliarySpec:
    where = f"{option}: {name!r}"
    if isinstance(raw, str) and raw:
        raw = {"path": raw}
    if not isinstance(raw, dict):
        raise ValueError(
            f"{where}: expected a checkpoint folder or a mapping with path or base_url, got {json.dumps(raw)}"
        )
    kinds = [k for k in _KEYS if k in raw]
    if len(kinds) != 1:
        raise ValueError(
            f"{where}: give exactly one of path (a local checkpoint) or base_url (an OpenAI-compatible endpoint)"
        )
    unknown = sorted(set(raw) - _KEYS[kinds[0]])
    if unknown:
        raise ValueError(
            f"{where}: unknown key(s) {', '.join(unknown)}; a {kinds[0]} spec takes {', '.join(sorted(_KEYS[kinds[0]]))}"
        )
    spec = AuxiliarySpec(name=name, **raw)
    if spec.base_url is not None:
        if not isinstance(spec.base_url, str) or not spec.base_url.startswith(("http://", "https://")):
            raise ValueError(f"{where}: base_url {spec.base_url!r} is not an http(s) URL")
        if not spec.model:
            raise ValueError(f"{where}: an endpoint needs model (the model name it serves)")
        if spec.api_key_env and spec.api_key_env not in os.environ:
            raise ValueError(f"{where}: api_key_env {spec.api_key_env} is not set in the environment")
    else:
        from astuner.engines import ENGINES, require_checkpoint

        if spec.engine not in ENGINES:
            raise ValueError(f"{where}: engine {spec.engine!r}; choose one of {', '.join(ENGINES)}")
        require_checkpoint(spec.path, f"{where}: path")
    for key in _SAMPLING_KEYS:
        number = getattr(spec, key)
        if number is not None and (isinstance(number, bool) or not isinstance(number, (int, float)) or number < 0):
            raise ValueError(f"{where}: {key} {number!r} must be a number >= 0")
    return spec


def endpoint_model(spec: AuxiliarySpec):
    """An endpoint spec -> AgentScope's OpenAIChatModel on it (not streaming)."""
    from agentscope.model import OpenAIChatModel

    key = (
        spec.api_key or (os.environ[spec.api_key_env] if spec.api_key_env else None) or "EMPTY"
    )  # local servers take any
    generate = {k: getattr(spec, k) for k in _SAMPLING_KEYS if getattr(spec, k) is not None}
    return OpenAIChatModel(
        model_name=spec.model,
        api_key=key,
        stream=False,
        client_kwargs={"base_url": spec.base_url},
        generate_kwargs=generate,
    )


@dataclass
class AuxiliaryBackend:
    """What serves one auxiliary model during collect: an engine (+ sampling overrides) or a chat model."""

    name: str
    engine: Any = None
    sampling: Any = None  # SamplingParams overriding the run's temperature/top_p/max_tokens (not its seed)
    model: Any = None
    spec: Any = None  # the AuxiliarySpec it was built from (collect's worker processes rebuild endpoint models from it)


def load_backends(specs: dict[str, AuxiliarySpec], main_engine, main_path: Path, sampling, device: str | None) -> dict:
    """Specs -> backends; a checkpoint that is the collected one shares its engine, the others load once."""
    from astuner.engines import SamplingParams, load_engine

    backends, engines = {}, {str(main_path.resolve()): main_engine}
    for name, spec in specs.items():
        if spec.base_url is not None:
            backends[name] = AuxiliaryBackend(name, model=endpoint_model(spec), spec=spec)
            continue
        key = str(Path(spec.path).resolve())
        if key not in engines:
            kwargs = {"device": spec.device or device} if spec.engine == "transformers" else {}
            engines[key] = load_engine(spec.engine, spec.path, option=f"{OPTION}: {name!r}: path", **kwargs)
        params = SamplingParams(
            **{k: getattr(spec, k) if getattr(spec, k) is not None else getattr(sampling, k) for k in _SAMPLING_KEYS}
        )
        backends[name] = AuxiliaryBackend(name, engine=engines[key], sampling=params, spec=spec)
    return backends


def close_backends(backends: dict, main_engine) -> None:
    for engine in {
        id(b.engine): b.engine for b in backends.values() if b.engine is not None and b.engine is not main_engine
    }.values():
        engine.close()


def judge_models(specs: dict[str, AuxiliarySpec], device: str | None = None) -> dict:
    """For judge: name -> an AgentScope chat model; a checkpoint is served by an astuner engine, unrecorded."""
    from astuner.engines import SamplingParams, load_engine

    models, engines = {}, {}
    for name, spec in specs.items():
        if spec.base_url is not None:
            models[name] = endpoint_model(spec)
            continue
        key = str(Path(spec.path).resolve())
        if key not in engines:
            kwargs = {"device": spec.device or device} if spec.engine == "transformers" else {}
            engines[key] = load_engine(spec.engine, spec.path, option=f"{OPTION}: {name!r}: path", **kwargs)
        params = SamplingParams(**{k: getattr(spec, k) for k in _SAMPLING_KEYS if getattr(spec, k) is not None})
        models[name] = _engine_chat_model(engines[key], params)
    return models


def _engine_chat_model(engine, sampling):
    from agentscope.model import ChatModelBase

    from astuner.tuner import ModelTuner

    class EngineChatModel(ChatModelBase):
        """An engine as a plain AgentScope chat model: each call through a fresh ModelTuner, whose record is dropped."""

        def __init__(self):
            super().__init__(model_name=engine.checkpoint, stream=False)

        async def __call__(self, messages, tools=None, tool_choice=None, **kwargs):
            return await ModelTuner(engine, sampling)(messages, tools=tools, tool_choice=tool_choice, **kwargs)

    return EngineChatModel()
