"""The cache directory: the built embedded corpus and inductor's compile cache live under it. Standard library
only."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """$SCALING_CACHE, else ~/.cache/scaling (a data config's `cache_dir` overrides it for the corpus)."""
    return Path(os.environ.get("SCALING_CACHE") or Path.home() / ".cache" / "scaling")
