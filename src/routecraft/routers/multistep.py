"""What the multi-step routers (Router-R1, R2-Reasoner) share besides their router kind.

The kind itself — trained from its own config on the live pool, deciding by running on it — is
``routecraft.routers.base.MultiStepRouter``. This module holds what both routers' configs, data and evaluation share:
config validators and YAML reading with ``--set`` overrides (``read_config_mapping``, ``merge``, ``parse_sets``), the
GSM8K training and held-out questions (``gsm8k_rows``, ``heldout_rows``), and held-out evaluation in batches
(``evaluate_in_batches``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import yaml

from routecraft.data.importers import dataset_root, gsm8k_questions
from routecraft.data.importers.common import find, read_jsonl
from routecraft.pool.config import load_pool


# ---- config helpers both routers' configs use --------------------------------------------------------------------
def check_models(v: Optional[list[str]]) -> Optional[list[str]]:
    """Validator of a config's ``models`` list: None (the pool's instruct models) or distinct names."""
    if v is not None and not v:
        raise ValueError("models must name at least one pool model (or be left out)")
    if v is not None and len(set(v)) != len(v):
        raise ValueError(f"models has duplicates: {v}")
    return v


def pool_models(pool_name: str, models: Optional[list[str]], label: str):
    """(the pool, the model names to route to: ``models`` or the pool's instruct models); errors name what is
    missing."""
    pool = load_pool(pool_name)
    names = models or [m.name for m in pool.models if m.instruct]
    missing = [n for n in names if n not in pool]
    if missing:
        raise ValueError(f"{label} config: models {missing} are not in pool {pool.name!r} "
                         f"(models: {', '.join(pool.names)})")
    return pool, names


def read_config_mapping(p: Path, what: str, error: type[Exception], overrides: Optional[dict] = None) -> dict:
    """The mapping in config YAML ``p`` with nested ``overrides`` applied; ``error`` (naming the file) when the
    file cannot be read, is not YAML, or is not a mapping. Shared by the Router-R1 and R2-Reasoner configs."""
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except OSError as exc:
        raise error(f"cannot read {what} config {p}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise error(f"{p}: invalid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise error(f"{p}: the {what} config must be a mapping, got {type(data).__name__}")
    return merge(data, overrides) if overrides else data


def merge(base: dict, over: dict) -> dict:
    """``base`` with the nested mapping ``over`` applied: sub-mappings are merged, anything else replaced."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_sets(items: list[str]) -> dict:
    """``--set section.field=value`` items (values parsed as YAML) as one nested overrides mapping."""
    out: dict = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"--set needs section.field=value, got {item!r}")
        key, value = item.split("=", 1)
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(value)
    return out


# ---- GSM8K questions both routers train and are evaluated on -----------------------------------------------------
def gsm8k_rows(split: str) -> list[dict]:
    """GSM8K questions with gold number and the reference solution (for warm-start demonstrations)."""
    q = gsm8k_questions(split)
    raw = read_jsonl(find(dataset_root("routellm") / "gsm8k", f"{split}.jsonl"))
    if len(raw) != len(q):
        raise ValueError(f"GSM8K {split}: {len(raw)} raw rows but {len(q)} questions")
    return [{"query_id": r.query_id, "prompt": r.text, "gold": str(r.gold), "task": "gsm8k",
             "solution": str(raw[i]["answer"])} for i, r in enumerate(q.itertuples())]


def heldout_rows(limit: int, select: str = "first", seed: int = 42) -> list[dict]:
    """Held-out questions from the GSM8K *test* split (never used in training): the first ``limit`` in file order
    (``select="first"``, the questions the collected dataset covers) or a seeded sample (``"sample"``)."""
    rows = gsm8k_rows("test")
    n = min(limit, len(rows))
    if select == "first":
        return rows[:n]
    if select == "sample":
        return random.Random(seed + 1).sample(rows, n)
    raise ValueError(f"data.eval_select must be 'first' or 'sample', got {select!r}")


# ---- held-out evaluation both routers use --------------------------------------------------------------------------
def evaluate_in_batches(rows: Sequence[dict], run_chunk: Callable[[list[dict]], list[dict]], *, batch_size: int,
                        out_jsonl: Optional[str | Path], score: Callable[[dict], float], label: str,
                        log: logging.Logger) -> list[dict]:
    """The records ``run_chunk(chunk)`` returns (one per row, in order) for ``rows`` in batches of ``batch_size``.
    Each record is written to ``out_jsonl`` as it comes (a stopped evaluation keeps what it did), and each batch logs
    progress with the mean ``score`` so far."""
    recs: list[dict] = []
    t0 = time.time()
    with (open(out_jsonl, "w") if out_jsonl is not None else contextlib.nullcontext()) as f:
        for i in range(0, len(rows), batch_size):
            for rec in run_chunk(list(rows[i: i + batch_size])):
                recs.append(rec)
                if f is not None:
                    f.write(json.dumps(rec, default=str) + "\n")
                    f.flush()
            el = time.time() - t0
            log.info("eval: %d/%d questions, %s so far %.3f, %.0fs elapsed, eta %.0fs", len(recs), len(rows), label,
                     sum(score(r) for r in recs) / len(recs), el, el / len(recs) * (len(rows) - len(recs)))
    return recs
