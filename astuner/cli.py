"""Config parsing shared by every stage: a @dataclass of fields with help, filled from
`--config recipe.yaml` and then from flags (flags win), as TRL's TrlParser does."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib
import importlib.util
import sys
import traceback
from pathlib import Path


class ConfigError(ValueError):
    """A bad option; the message names the option, the value and the fix."""


def import_object(ref: str, option: str, kind: str = "function"):
    """'package.module:name' or 'path/to/file.py:name' -> the object; errors name `option`."""
    module_part, sep, attr = ref.rpartition(":")
    if not sep or not module_part or not attr:
        raise ValueError(f"{option} {ref!r}: expected module:{kind} or path/to/file.py:{kind}")
    if module_part.endswith(".py"):
        path = Path(module_part)
        if not path.is_file():
            raise FileNotFoundError(f"{option} {ref!r}: no file {path}")
        name = "astuner_user_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
        module = sys.modules.get(name)
        if module is None:
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            # the file's folder goes first on the path so its sibling modules import
            sys.path.insert(0, str(path.resolve().parent))
            try:
                spec.loader.exec_module(module)
            except Exception as exc:
                del sys.modules[name]
                # the line of the user's file that raised (a SyntaxError names its own line)
                lines = [
                    f.lineno
                    for f in traceback.extract_tb(exc.__traceback__)
                    if Path(f.filename).resolve() == path.resolve()
                ]
                at = f" at line {lines[-1]}" if lines else ""
                message = str(exc).splitlines()[0] if str(exc) else ""
                raise ImportError(
                    f"{option} {ref!r}: importing {path} failed{at}: {type(exc).__name__}: {message}"
                ) from exc
    else:
        try:
            module = importlib.import_module(module_part)
        except Exception as exc:
            raise ImportError(f"{option} {ref!r}: cannot import {module_part}: {type(exc).__name__}: {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ImportError(f"{option} {ref!r}: {module_part} has no attribute {attr!r}") from None


def read_recipe(path: str | Path) -> dict:
    """A --config YAML file as a mapping; errors name the file and what is wrong."""
    import yaml

    try:
        recipe = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"--config {path}: not valid YAML{where} ({problem or str(exc).splitlines()[0]})") from None
    if not isinstance(recipe, dict):
        raise ConfigError(f"--config {path}: expected a mapping of option: value, got {type(recipe).__name__}")
    return recipe


def one_line_errors(parser: argparse.ArgumentParser, help_flag: str = "--help") -> argparse.ArgumentParser:
    """A bad flag is one line naming it (argparse's default also prints the whole usage, dozens of lines for TRL)."""

    def error(message: str):
        parser.exit(2, f"{parser.prog}: error: {message} (all options: {parser.prog} {help_flag})\n")

    parser.error = error
    return parser


def _parser(config_cls, prog: str, description: str | None):
    from transformers import HfArgumentParser

    parser = HfArgumentParser(
        config_cls, prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    one_line_errors(parser)
    parser.add_argument(
        "--config", default=None, help="A YAML recipe whose keys are the options below; flags override it."
    )
    return parser


def _config(config_cls, namespace: argparse.Namespace):
    """The dataclass from parsed options: its __post_init__ checks their values."""
    return config_cls(**{f.name: getattr(namespace, f.name) for f in dataclasses.fields(config_cls)})


def config_from_options(config_cls, options: dict, prog: str):
    """`config_cls` from a mapping of option: value, parsed as a --config file with these keys is (a YAML string
    for a number is converted as a flag would be) and checked by the class, without running the stage; a bad value
    raises ConfigError or the class's ValueError, one line. For checking a recipe's section before any stage starts."""
    parser = _parser(config_cls, prog, None)

    def error(message: str):
        raise ConfigError(message)

    parser.error = error  # a bad value is the caller's to report, not a reason to exit
    parser.set_defaults(**options)
    return _config(config_cls, parser.parse_args([]))


def parse_config(config_cls, argv: list[str] | None, prog: str, description: str, positional: str | None = None):
    """`positional` names a field that may also be given without its flag (e.g. judge's TRACES)."""
    parser = _parser(config_cls, prog, description)
    if positional:
        field_type = str({f.name: f.type for f in dataclasses.fields(config_cls)}[positional])
        parser.add_argument(
            "positional_value",
            metavar=positional.upper(),
            nargs="*" if "list" in field_type else "?",
            help=f"Same as --{positional}.",
        )
    pre, _ = parser.parse_known_args(argv)
    if pre.config:
        path = Path(pre.config)
        recipe = read_recipe(path)
        known = {f.name for f in dataclasses.fields(config_cls)}
        recipe = {k.replace("-", "_"): v for k, v in recipe.items()}
        unknown = sorted(set(recipe) - known)
        if unknown:
            raise ConfigError(
                f"--config {path}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        parser.set_defaults(**recipe)
    namespace = parser.parse_args(argv)
    if positional and namespace.positional_value:
        setattr(namespace, positional, namespace.positional_value)
    return _config(config_cls, namespace)
