"""Converting a format-1 router artifact (``state.joblib``, a pickle) to format 2 (``routers/artifact.py``).

This is the one place routecraft still unpickles, and only when asked to with ``trust=True`` (``routecraft artifact
convert SRC --trust``): unpickling runs whatever code the file carries, so convert only artifacts you made or whose
maker you trust. ``load_router`` never comes here.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from routecraft.data.schema import Candidate
from routecraft.routers.artifact import (
    ARRAYS_FILE,
    FORMAT_VERSION,
    LEGACY_FILE,
    META_FILE,
    ArtifactError,
    encode_state,
    read_meta,
    same_state,
)
from routecraft.routers.base import Router
from routecraft.routers.registry import get_router_class, load_router

TRUST_NOTE = ("converting unpickles its state.joblib, and unpickling runs any code the file carries: convert only an "
              "artifact you made or whose maker you trust (or train it again with `routecraft train`)")


def convert_artifact(src: str | Path, out: str | Path | None = None, *, trust: bool = False) -> Path:
    """Convert the format-1 artifact in folder ``src`` to format 2 in ``out`` (default: ``src`` itself; the
    ``state.joblib`` of the folder written is then removed). Refuses unless ``trust``. The converted artifact is
    loaded back and its state checked equal to the unpickled one before anything in ``out`` is written; other files
    in ``src`` (a multi-step router's policy folders) are neither copied nor touched. Returns the format-2 folder."""
    src = Path(src)
    if not trust:
        raise ArtifactError(f"{src}: {TRUST_NOTE}; pass --trust to go ahead")
    meta = read_meta(src)
    if meta.get("format_version") == FORMAT_VERSION:
        raise ArtifactError(f"{src} is already a format-{FORMAT_VERSION} artifact: nothing to convert")
    if meta.get("format_version") not in (1, None):
        raise ArtifactError(f"{src}: artifact format {meta.get('format_version')!r} is not format 1")
    legacy = src / LEGACY_FILE
    if not legacy.is_file():
        raise ArtifactError(f"{src}: no {LEGACY_FILE} to convert")
    name = meta.get("router")
    cls = get_router_class(name)
    router = cls(**(meta.get("params") or {}))
    router.candidates = [Candidate.parse(c) for c in meta.get("candidates") or []]
    router.encoder = meta.get("encoder")
    import joblib

    try:
        state = joblib.load(legacy)  # the pickle, unpickled on the caller's word (trust=True)
    except (ModuleNotFoundError, AttributeError, ImportError) as exc:  # classes moved or renamed since it was saved
        raise ArtifactError(f"{src}: this {name!r} artifact refers to code this routecraft no longer has "
                            f"({type(exc).__name__}: {exc}); train it again with `routecraft train --router {name} "
                            f"... --out {src}`") from None
    router.set_state(state)
    expected = encode_state(router.state(), Router)  # fails here, before anything is written, if it cannot be saved
    dst = Path(out) if out is not None else src
    with tempfile.TemporaryDirectory(prefix=".convert-", dir=dst.parent if dst.parent.exists() else None) as tmp:
        staged = Path(tmp) / "artifact"
        router.save(staged)
        back = load_router(staged)
        if type(back) is not type(router) or not same_state(expected, encode_state(back.state(), Router)):
            raise ArtifactError(f"{src}: the converted artifact does not load back to the same state; keeping "
                                "the original (please report this)")
        dst.mkdir(parents=True, exist_ok=True)
        for f in (ARRAYS_FILE, META_FILE):  # the arrays first: router.json names their checksum
            shutil.copyfile(staged / f, dst / f)
    if (dst / LEGACY_FILE).exists():  # converted in place (or a stale copy): the pickle is not needed any more
        (dst / LEGACY_FILE).unlink()
    return dst
