"""Checkpoint identity: a content hash of the folder, cached by file stats so that a 15 GB
checkpoint is read once, not on every collect."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path


def _listing(path: Path) -> list[tuple[str, int, int]]:
    files = []
    for file in sorted(path.rglob("*")):
        rel = file.relative_to(path).as_posix()
        if file.is_file() and not any(part.startswith(".") for part in rel.split("/")):
            st = file.stat()
            files.append((rel, st.st_size, st.st_mtime_ns))
    return files


def checkpoint_sha256(path: str | os.PathLike) -> str:
    path = Path(path).resolve()
    listing = _listing(path)
    home = Path(os.environ.get("ASTUNER_HOME", Path.home() / ".cache" / "astuner"))
    cache_file = home / "checkpoint-hashes.json"
    key = hashlib.sha256(json.dumps([str(path), listing]).encode()).hexdigest()
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, json.JSONDecodeError):
        cache = {}
    if key in cache:
        return cache[key]
    digest = hashlib.sha256()
    for rel, _, _ in listing:
        digest.update(rel.encode() + b"\0")
        with open(path / rel, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    value = digest.hexdigest()
    cache[key] = value
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache))
        os.replace(tmp, cache_file)
    except OSError:
        pass  # a read-only home only costs a re-hash next time
    return value


def check_safetensors(path: str | os.PathLike, option: str = "--model") -> None:
    """Every *.safetensors file of checkpoint folder `path` whole: its header parses and its tensors end
    within the file. A truncated or corrupted file raises ValueError naming it, before any weight is read
    (the loaders' own errors name neither the file nor the cause). Reads only the headers."""
    for file in sorted(Path(path).glob("*.safetensors")):
        problem = _safetensors_problem(file)
        if problem:
            raise ValueError(f"{option} {path}: {file}: {problem}; copy or save the checkpoint again")


def _safetensors_problem(file: Path) -> str | None:
    """What is wrong with a safetensors file (8-byte little-endian header length, JSON header, data), or None."""
    try:
        with open(file, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            head = fh.read(8)
            if len(head) < 8:
                return f"truncated ({size} bytes: no header)"
            length = struct.unpack("<Q", head)[0]
            if 8 + length > size:
                return f"truncated or corrupted ({size} bytes; its header alone would need {8 + length})"
            header = json.loads(fh.read(length))
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    except ValueError:  # not UTF-8 or not JSON
        return "corrupted (its header is not JSON)"
    try:
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    except (AttributeError, KeyError, TypeError, IndexError):
        return "corrupted (its header does not describe tensors)"
    if 8 + length + end > size:
        return f"truncated ({size} bytes; its tensors end at byte {8 + length + end})"
    return None
