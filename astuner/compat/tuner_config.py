"""`model_tuner.config`: the settings tree AgentJet workflows and judges read by attribute.

AgentJet hands every workflow its Hydra config, and its tutorials read
`tuner.config.ajet.rollout.multi_turn.max_steps` (ASTuner spelled it `config.astuner...`) and
sections of their own (`config.frozen_lake.is_slippery`). collect builds the same tree from
`--tuner-config` (an AgentJet-style YAML file, inline YAML/JSON, or a recipe mapping) on top of
the defaults below, with `--max-steps` last; `ajet` and `astuner` name the same section.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

DEFAULT_MAX_STEPS = 30  # AgentJet's ajet_default.yaml: rollout.multi_turn.max_steps
# ... and its task_judge section's helper LLM (what judges hand create_external_llm_fn); judge's config tree only,
# so that collect's recorded trees stay as they were
JUDGE_DEFAULTS = {"task_judge": {"alien_llm_model": "qwen3-235b-a22b-instruct-2507", "alien_llm_response_length": 512}}


class ConfigTree(dict):
    """A dict whose keys are also attributes, recursively (as OmegaConf's DictConfig reads).

    A missing key raises AttributeError, so `getattr(config.ajet.judge, "x", default)` works.
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"model_tuner.config has no key {name!r} (set it with --tuner-config)") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = _tree(value)

    def __deepcopy__(self, memo):
        return _tree(copy.deepcopy(dict(self), memo))


def _tree(value: Any) -> Any:
    if isinstance(value, dict) and not isinstance(value, ConfigTree):
        return ConfigTree({k: _tree(v) for k, v in value.items()})
    if isinstance(value, list):
        return [_tree(v) for v in value]
    return value


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(out.get(key), dict) and isinstance(value, dict) else value
    return out


def default_tree() -> dict:
    return {"ajet": {"rollout": {"multi_turn": {"max_steps": DEFAULT_MAX_STEPS}}, "task_judge": {}}}


def read_tuner_config(spec: str | dict | None) -> dict:
    """--tuner-config: a YAML file, inline YAML/JSON, or (from a recipe) a mapping -> a plain dict."""
    import yaml

    if spec is None:
        return {}
    if isinstance(spec, dict):
        return spec
    where = f"--tuner-config {spec!r}"
    path = Path(spec)
    try:
        is_file = path.is_file()
    except OSError:  # a long inline mapping is not a valid path
        is_file = False
    try:
        if is_file:
            where = f"--tuner-config {path}"
            value = yaml.safe_load(path.read_text())
        else:
            value = yaml.safe_load(spec)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ValueError(
            f"{where}: not valid YAML{at} ({getattr(exc, 'problem', None) or exc}); "
            "give a YAML file or a mapping such as '{ajet: {rollout: {multi_turn: {max_steps: 10}}}}'"
        ) from None
    except OSError as exc:
        raise ValueError(f"{where}: cannot read ({exc.strerror})") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        kind = "no such file, and not" if not is_file else "not"
        raise ValueError(
            f"{where}: {kind} a YAML mapping (got {type(value).__name__}); "
            "give a YAML file or a mapping such as '{ajet: {rollout: {multi_turn: {max_steps: 10}}}}'"
        )
    return value


def build_tuner_config(spec: str | dict | None = None, max_steps: int | None = None) -> dict:
    """The defaults, then --tuner-config (its `astuner:` section as `ajet:`), then --max-steps: a plain dict."""
    extra = read_tuner_config(spec)
    tree = default_tree()
    for section in ("astuner", "ajet"):  # the old name first: `ajet:` wins where both are given
        if isinstance(extra.get(section), dict):
            tree = _merge(tree, {"ajet": extra[section]})
    tree = _merge(tree, {k: v for k, v in extra.items() if k not in ("ajet", "astuner")})
    if max_steps is not None:
        tree = _merge(tree, {"ajet": {"rollout": {"multi_turn": {"max_steps": max_steps}}}})
    steps = tree["ajet"].get("rollout", {}).get("multi_turn", {}).get("max_steps")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"--tuner-config: ajet.rollout.multi_turn.max_steps must be a positive integer, got {steps!r}")
    return tree


def as_tree(plain: dict) -> ConfigTree:
    """A fresh attribute tree for one run (a run that edits its config does not change the others')."""
    tree = _tree(copy.deepcopy(plain))
    dict.__setitem__(tree, "astuner", tree["ajet"])  # ASTuner's name for the same section
    return tree
