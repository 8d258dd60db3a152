"""The static encoder: distilled offline from the shipped all-MiniLM-L6-v2 (model2vec), loaded without model2vec or
torch, checked against its manifest, used through the same names and embedding cache as any encoder.

The model built here keeps only MiniLM's 3,000 most frequent words (plus its characters and pieces, so any text
tokenizes) at 64 dimensions: the same distillation as the full build, in ~20 s instead of ~1-2 min. It is built once
per test session, through the CLI (`routecraft features build-static`), into a temporary cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("model2vec", reason="the static extra (model2vec, skeletoken) builds the static encoder")

from routecraft.cli import app  # noqa: E402
from routecraft.data import static_encoder as se  # noqa: E402
from routecraft.data.features import EmbeddingCache, canonical_encoder, load_encoder  # noqa: E402

DIM = 64
VOCAB = 3000

PARAPHRASES = [
    ("How many apples does John have left after he gives three away?",
     "After giving away three apples, how many apples remain with John?",
     "The stock market fell sharply during the financial crisis."),
    ("What is the capital city of France?",
     "Which city is the capital of France?",
     "Natalia sold clips to 48 of her friends in April."),
    ("A train travels 60 miles per hour for 3 hours. How far does it go?",
     "How far does a train go in 3 hours at 60 miles per hour?",
     "Write a short poem about the sea and the moon."),
]


@pytest.fixture(scope="session")
def small_static(tmp_path_factory) -> Path:
    """A small static model built offline from the shipped MiniLM by the CLI, in a session temp folder."""
    out = tmp_path_factory.mktemp("static") / f"minilm-{DIM}-v{VOCAB}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        r = CliRunner().invoke(app, ["features", "build-static", "--dim", str(DIM), "--vocab-size", str(VOCAB),
                                     "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["encoder"] == f"static:{out}"
    return out


@pytest.fixture()
def encoder(small_static):
    return se.load_static(f"static:{small_static}")


@pytest.mark.slow
def test_builds_offline_from_the_shipped_minilm(small_static):
    m = json.loads((small_static / "manifest.json").read_text())
    base = se.base_model_dir()
    assert m["base_model"] == "all-MiniLM-L6-v2" and Path(m["base_path"]) == base
    assert m["base_sha256"] == se._sha256(base / "model.safetensors")
    assert m["dim"] == DIM and m["vocabulary_limit"] == VOCAB
    assert VOCAB < m["vocab_size"] < VOCAB + 3000  # the words kept + characters, pieces and specials
    assert set(m["files"]) >= {"model.safetensors", "tokenizer.json", "config.json"}
    assert m["checksum"] == se.folder_checksum(small_static)[0]


@pytest.mark.slow
def test_dimension_norm_and_shapes(encoder):
    texts = [p for triple in PARAPHRASES for p in triple] + ["", "¿Qué hora es?"]
    v = encoder.encode(texts)
    assert v.shape == (len(texts), DIM) and v.dtype == np.float32
    assert encoder.get_sentence_embedding_dimension() == DIM
    norms = np.linalg.norm(v, axis=1)
    assert np.allclose(norms[:-2], 1.0, atol=1e-5) and np.allclose(norms[-1], 1.0, atol=1e-5)
    assert norms[-2] == 0.0  # an empty text has no tokens: the zero vector, not NaN
    one = encoder.encode(texts[0])
    assert one.shape == (DIM,)
    # the gateway's call: a (1, dim) row
    assert encoder.encode([texts[0]], convert_to_numpy=True, normalize_embeddings=True).shape == (1, DIM)


@pytest.mark.slow
def test_deterministic_and_equal_to_model2vec(encoder, small_static):
    from model2vec import StaticModel

    texts = [p for triple in PARAPHRASES for p in triple]
    a = encoder.encode(texts)
    b = se.load_static(f"static:{small_static}").encode(texts)  # a second load
    c = encoder.encode(list(reversed(texts)))[::-1]            # order and batch do not matter
    d = np.concatenate([encoder.encode(texts[:4], batch_size=2), encoder.encode(texts[4:], batch_size=1)])
    assert np.array_equal(a, b) and np.array_equal(a, c) and np.array_equal(a, d)
    ref = np.asarray(StaticModel.from_pretrained(str(small_static), normalize=True).encode(texts), dtype=np.float32)
    assert np.allclose(a, ref, atol=1e-6)


@pytest.mark.slow
def test_paraphrases_closer_than_unrelated(encoder):
    for p, q, unrelated in PARAPHRASES:
        v = encoder.encode([p, q, unrelated])
        assert v[0] @ v[1] > v[0] @ v[2] + 0.1, (p, q, unrelated, v[0] @ v[1], v[0] @ v[2])
        assert v[1] @ v[0] > v[1] @ v[2] + 0.1


@pytest.mark.slow
def test_names_and_the_embedding_cache(small_static, tmp_path, monkeypatch):
    monkeypatch.setenv("ROUTECRAFT_CACHE", str(tmp_path / "cache"))
    name = f"static:{small_static}"
    cache = EmbeddingCache(name)
    checksum = json.loads((small_static / "manifest.json").read_text())["checksum"]
    assert cache.file.name.endswith(f".{checksum[:12]}.npz") and ":" not in cache.file.name
    texts = [p for p, _, _ in PARAPHRASES]
    v = cache.embed(texts)
    assert cache.file.exists()
    assert np.allclose(v, load_encoder(name).encode(texts), atol=1e-7)
    assert np.array_equal(EmbeddingCache(name).embed(texts), v)  # read back from disk


@pytest.mark.slow
def test_tampered_model_is_an_error(small_static, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(small_static, copy)
    cfg = copy / "config.json"
    cfg.write_text(cfg.read_text().replace('"normalize": true', '"normalize": false'))
    with pytest.raises(se.StaticEncoderError, match="files differ from its manifest .*config.json"):
        se.load_static(f"static:{copy}")


@pytest.mark.slow
def test_built_on_first_use_once(tmp_path, monkeypatch):
    """`static:minilm-<dim>` not built yet: the first load builds it into the cache (here a small build)."""
    monkeypatch.setenv("ROUTECRAFT_CACHE", str(tmp_path / "cache"))
    calls = []
    real = se.build_static

    def small_build(dim, out=None, **kw):
        calls.append((dim, out))
        return real(dim, out, vocab_size=500, **kw)

    monkeypatch.setattr(se, "build_static", small_build)
    enc = se.load_static("static:minilm-16")
    assert calls == [(16, tmp_path / "cache" / "static" / "minilm-16")]
    assert enc.dim == 16 and (tmp_path / "cache" / "static" / "minilm-16" / "manifest.json").is_file()
    se.load_static("static:minilm-16")
    assert len(calls) == 1  # built once


def test_names():
    assert canonical_encoder("static") == "static:minilm-256" == se.DEFAULT_STATIC
    assert canonical_encoder(None) == "all-MiniLM-L6-v2"
    assert canonical_encoder("all-MiniLM-L6-v2") == "all-MiniLM-L6-v2"
    assert se.is_static("static:minilm-128") and not se.is_static("staticky") and not se.is_static(None)
    assert EmbeddingCache("static").encoder == "static:minilm-256"  # same cache and artifact name as the long form
    folder, dim = se.parse_name("static:minilm-128")
    assert dim == 128 and folder.name == "minilm-128"
    with pytest.raises(se.StaticEncoderError, match="1..384"):
        se.parse_name("static:minilm-999")
    with pytest.raises(se.StaticEncoderError, match="neither"):
        se.parse_name("static:/no/such/folder")


def test_not_built_and_not_allowed_to_build(tmp_path, monkeypatch):
    monkeypatch.setenv("ROUTECRAFT_CACHE", str(tmp_path))
    with pytest.raises(se.StaticEncoderError, match="build-static --dim 32"):
        se.load_static("static:minilm-32", build=False)
