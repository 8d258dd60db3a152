"""Policy models for RL training: local GGUF models converted once into Hugging Face folders.

The local pool ships its models as GGUF files (``routecraft.pool.models``). Transformers can read a GGUF file
(``from_pretrained(dir, gguf_file=name)``; it de-quantises the weights to float), but a model loaded that way refuses
``save_pretrained``. ``convert_gguf`` therefore builds a fresh model from the loaded config, copies the state dict into
it and saves that, with the tokenizer, into ``~/.cache/routecraft/hf/<name>`` (or ``$ROUTECRAFT_HF_CACHE/<name>``).
``load_policy(name)`` converts on first use and afterwards loads the cached folder (seconds instead of a minute).

``name`` is a local registry name (``smollm2-135m``, ``qwen2.5-coder-0.5b``, ...) or the path of a Hugging Face model
folder (a converted model, a trained checkpoint). Everything runs offline (``HF_HUB_OFFLINE=1`` is set while loading).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

from routecraft.pool.models import REGISTRY, ModelInstallError, get_model, model_path

log = logging.getLogger("routecraft.train.policy")

ENV_HF_CACHE = "ROUTECRAFT_HF_CACHE"
CONVERTED_MARK = "routecraft-converted.json"
CONVERT_FORMAT = 2  # bump when the conversion changes; older folders are converted again


class PolicyLoadError(RuntimeError):
    """A policy could not be found, converted or loaded; the message names it."""


def hf_cache_dir() -> Path:
    env = os.environ.get(ENV_HF_CACHE)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "routecraft" / "hf"


@contextmanager
def _offline() -> Iterator[None]:
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    old = {k: os.environ.get(k) for k in keys}
    for k in keys:
        os.environ[k] = "1"
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def is_hf_folder(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "config.json").is_file()


def convert_gguf(name: str, dest: str | os.PathLike | None = None, *, force: bool = False) -> Path:
    """Convert the installed local model ``name`` (GGUF) into a Hugging Face folder; return the folder.

    Idempotent: an existing converted folder (with its ``routecraft-converted.json`` mark) is reused unless ``force``.
    The folder is written to a temporary sibling and renamed, so an interrupted conversion leaves nothing half-done.
    """
    try:
        entry = get_model(name)
        gguf = model_path(name)
    except (KeyError, ValueError, ModelInstallError) as exc:
        raise PolicyLoadError(f"policy {name!r}: {exc}") from None
    out = Path(dest) if dest is not None else hf_cache_dir() / name
    if not force and _converted_ok(out):
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s (%s) into %s", name, gguf.name, out)
    with _offline():
        try:
            tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                          dtype=torch.float32)
        except Exception as exc:  # transformers raises many types for unsupported GGUF layouts
            raise PolicyLoadError(f"policy {name!r}: transformers could not read {gguf}: "
                                  f"{type(exc).__name__}: {exc}") from exc
    # A GGUF-loaded model refuses save_pretrained: rebuild from its config and copy the weights.
    config = loaded.config
    config.architectures = [type(loaded).__name__]
    # the weights are de-quantised floats now: a leftover gguf quantization_config would make transformers treat
    # the saved folder as a (non-serialisable) quantised model
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    tied = set(getattr(fresh, "_tied_weights_keys", None) or [])
    missing = [k for k in missing if k not in tied and not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise PolicyLoadError(f"policy {name!r}: weights from {gguf.name} do not fit the model "
                              f"(missing {missing[:5]}, unexpected {list(unexpected)[:5]})")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=out.parent))
    try:
        fresh.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / CONVERTED_MARK).write_text(json.dumps({"format": CONVERT_FORMAT, "source": str(gguf),
                                                      "registry_name": entry.name,
                                                      "title": entry.title, "sha256": entry.sha256}, indent=2))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    del loaded
    return out


def _converted_ok(folder: Path) -> bool:
    mark = folder / CONVERTED_MARK
    if not (mark.is_file() and is_hf_folder(folder)):
        return False
    try:
        return json.loads(mark.read_text()).get("format") == CONVERT_FORMAT
    except (ValueError, OSError):
        return False


def resolve_policy(name: str | os.PathLike) -> Path:
    """The Hugging Face folder of a policy: a folder path as is; a local registry name converted (once)."""
    p = Path(name).expanduser()
    if is_hf_folder(p):
        return p
    if p.exists():
        raise PolicyLoadError(f"policy {str(name)!r} is a path but not a Hugging Face model folder (no config.json)")
    if str(name) not in REGISTRY:
        raise PolicyLoadError(f"policy {str(name)!r} is neither a model folder nor a local model "
                              f"(known: {', '.join(sorted(REGISTRY))})")
    return convert_gguf(str(name))


def load_tokenizer(name: str | os.PathLike) -> Any:
    """The tokenizer of a policy. For a local model that is not converted yet it is read from the GGUF file
    directly (seconds; the weights are not converted)."""
    from transformers import AutoTokenizer

    p = Path(name).expanduser()
    converted = hf_cache_dir() / str(name)
    if not is_hf_folder(p) and not _converted_ok(converted):
        if str(name) in REGISTRY:
            try:
                gguf = model_path(str(name))
            except ModelInstallError as exc:
                raise PolicyLoadError(f"policy {str(name)!r}: {exc}") from None
            with _offline():
                tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token
            return tok
    folder = resolve_policy(name)
    with _offline():
        tok = AutoTokenizer.from_pretrained(str(folder))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_policy(name: str | os.PathLike, *, dtype: str = "float32", threads: Optional[int] = None) -> tuple[Any, Any]:
    """(model, tokenizer) of a policy; see the module docstring for what ``name`` can be. ``threads`` sets torch's
    intra-op threads for this process: more threads than free cores stall every op of a small model (measured: a
    Router-R1 evaluation beside a training run had not finished 50 questions after 50 min with 2 threads on 2 busy
    cores; with 1 thread, 30 questions took 7–14 min beside the same load)."""
    import torch
    from transformers import AutoModelForCausalLM

    if threads:
        torch.set_num_threads(threads)

    folder = resolve_policy(name)
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise PolicyLoadError(f"unknown dtype {dtype!r} (use float32, bfloat16 or float16)")
    with _offline():
        try:
            model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch_dtype)
        except Exception as exc:
            raise PolicyLoadError(f"policy {str(name)!r}: cannot load {folder}: {type(exc).__name__}: {exc}") from exc
    tok = load_tokenizer(folder)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok
