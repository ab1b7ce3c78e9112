"""Checkpoint identity: a content hash of the folder, cached by file stats so that a 15 GB
checkpoint is read once, not on every collect."""

from __future__ import annotations

import hashlib
import json
import os
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
