"""Where traitlab keeps things: paths come from arguments first, then ``TRAITLAB_*`` variables."""

from __future__ import annotations

import os
from pathlib import Path


def store_path(path: str | Path | None = None) -> Path:
    """The run store file: the argument, else ``$TRAITLAB_STORE``, else ``./traitlab.duckdb``."""
    return Path(path or os.environ.get("TRAITLAB_STORE", "traitlab.duckdb"))


def cache_dir() -> Path:
    """Per-user cache (converted models, fetched data): ``$TRAITLAB_CACHE`` or ``~/.cache/traitlab``."""
    d = Path(os.environ.get("TRAITLAB_CACHE", Path.home() / ".cache" / "traitlab"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def data_dir(path: str | Path | None = None) -> Path:
    """The HAL data folder: the argument, else ``$TRAITLAB_DATA``, else the cache that ``data fetch`` fills."""
    return Path(path or os.environ.get("TRAITLAB_DATA", cache_dir() / "data" / "hal"))
