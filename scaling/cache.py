"""The cache directory: the built embedded corpus and inductor's compile cache live under it, and small JSON
caches of measurements (the CPU's matmul peak, the MFU measured per GPU and shape). Standard library only."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """$SCALING_CACHE, else ~/.cache/scaling (a data config's `cache_dir` overrides it for the corpus)."""
    return Path(os.environ.get("SCALING_CACHE") or Path.home() / ".cache" / "scaling")


def read_json(name: str) -> dict:
    """The cache folder's JSON object `name` ({} when it is missing, unreadable or not an object: a cache is only
    ever a shortcut)."""
    import json

    try:
        known = json.loads((default_cache_dir() / name).read_text())
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) else {}


def write_json(name: str, data: dict) -> bool:
    """Write `data` as the cache folder's JSON object `name`, atomically; False when the folder cannot be written
    (a read-only cache costs a measurement, nothing else)."""
    import json

    from scaling.store import atomic_write_text

    path = default_cache_dir() / name
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True))
    except OSError:
        return False
    return True
