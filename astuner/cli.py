"""Config parsing shared by every stage: a @dataclass of fields with help, filled from
`--config recipe.yaml` and then from flags (flags win), as TRL's TrlParser does."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path


class ConfigError(ValueError):
    """A bad option; the message names the option, the value and the fix."""


def parse_config(config_cls, argv: list[str] | None, prog: str, description: str):
    import yaml
    from transformers import HfArgumentParser

    parser = HfArgumentParser(config_cls, prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help="A YAML recipe whose keys are the options below; flags override it.")
    pre, _ = parser.parse_known_args(argv)
    if pre.config:
        path = Path(pre.config)
        try:
            recipe = yaml.safe_load(path.read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"--config {path}: cannot read ({exc.strerror})") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--config {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(recipe, dict):
            raise ConfigError(f"--config {path}: expected a mapping of option: value, got {type(recipe).__name__}")
        known = {f.name for f in dataclasses.fields(config_cls)}
        recipe = {k.replace("-", "_"): v for k, v in recipe.items()}
        unknown = sorted(set(recipe) - known)
        if unknown:
            raise ConfigError(f"--config {path}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        parser.set_defaults(**recipe)
    namespace = parser.parse_args(argv)
    values = {f.name: getattr(namespace, f.name) for f in dataclasses.fields(config_cls)}
    return config_cls(**values)
