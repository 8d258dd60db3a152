"""LLMRouter's multi-task queries (14 tasks) as a queries table for ``routecraft collect``.

``llmrouter_queries("train" | "test", per_task=None, seed=0)`` reads ``query_data/default_query_<split>.jsonl`` (the
packaged copy under ``routecraft/datasets/llmrouter/``, byte-identical to LLMRouter's file, or ``root``) and returns
one row per query:

* ``query_id`` = ``llmrouter-<split>-<task>-<i>``, ``i`` the row's position among its task's rows in the file (0-based):
  stable under sampling, under the exclusion below and across runs;
* ``text``: what the model is asked (``llmrouter_text``: the query; mbpp: plus its asserts);
* ``task``: LLMRouter's ``task_name``; ``gold`` and ``choices`` from ``llmrouter_gold`` (letters, boxed answers,
  "####" numbers, code-test JSON, concept lists; ``choices`` a list of option texts or None); ``metric``:
  LLMRouter's metric name (``grade(..., metric=...)`` takes it); ``source_task_id`` (mbpp's and HumanEval's ids,
  commongen's), ``source_split``, ``source_row`` (the line in the file).

**Held-out questions**: 121 train rows repeat one of 120 test questions verbatim (all 50 test gpqa questions, all 50
test human_eval problems, 19 mbpp problems (one of them twice), 1 openbook_qa question). The train table leaves them
out by default (``exclude_test=True``), so that the test file stays held out; the other ids keep their positions.

**Sampling** (``per_task=N``): N rows per task (all of a smaller task), drawn with ``numpy.random.RandomState``
seeded by ``seed`` and the task name (a permutation of the task's rows, the first N taken): the draw of a task does
not depend on the other tasks, and N rows are the first N of N' > N rows with the same seed, so a collection can
grow. The sampled rows are interleaved: the first draw of every task, then the second, and so on, so that the first
``k * 14`` rows (``--limit``) cover every task k times. Without sampling the rows are in file order.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from routecraft.data.importers.common import find, read_jsonl, source_root
from routecraft.data.schema import DataValidationError, validate_queries
from routecraft.strategies.llmrouter_tasks import llmrouter_gold, llmrouter_text

SPLITS = ("train", "test")


def _read(split: str, root: str | Path | None) -> tuple[list[dict], Path]:
    src = source_root("llmrouter", root)
    f = find(src, f"query_data/default_query_{split}.jsonl", f"example_data/query_data/default_query_{split}.jsonl")
    return read_jsonl(f), f


def _task_seed(seed: int, task: str) -> int:
    return (int(seed) * 1_000_003 + zlib.crc32(task.encode("utf-8"))) % (2 ** 32)


def llmrouter_queries(split: str = "train", per_task: int | None = None, seed: int = 0,
                      tasks: Sequence[str] | None = None, exclude_test: bool = True,
                      root: str | Path | None = None) -> pd.DataFrame:
    """The queries table of LLMRouter's ``split`` file (see the module docstring)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if per_task is not None and (isinstance(per_task, bool) or int(per_task) != per_task or per_task <= 0):
        raise ValueError(f"per_task must be a positive integer, got {per_task!r}")
    rows, f = _read(split, root)
    held_out: set[str] = set()
    if split == "train" and exclude_test:
        held_out = {r.get("query") for r in _read("test", root)[0]}
    out: list[dict] = []
    position: dict[str, int] = {}
    for line, r in enumerate(rows):
        task = r.get("task_name")
        if not isinstance(task, str) or not isinstance(r.get("query"), str):
            raise DataValidationError("expected task_name and query strings", file=str(f), row=line,
                                      field="task_name")
        i = position.get(task, 0)
        position[task] = i + 1
        if r["query"] in held_out:
            continue
        try:
            gold, choices = llmrouter_gold(r)
            text = llmrouter_text(r)
        except ValueError as exc:
            raise DataValidationError(str(exc), file=str(f), row=line, field="ground_truth") from None
        tid = r.get("task_id")
        out.append({"query_id": f"llmrouter-{split}-{task}-{i}", "text": text, "task": task, "gold": gold,
                    "choices": choices, "metric": r.get("metric"),
                    "source_task_id": None if tid is None or (isinstance(tid, float) and np.isnan(tid)) else str(tid),
                    "source_split": split, "source_row": line})
    df = pd.DataFrame(out)
    if tasks is not None:
        wanted = list(dict.fromkeys(tasks))
        unknown = sorted(set(wanted) - set(df["task"]))
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}: the {split} file has {', '.join(sorted(set(df['task'])))}")
        df = df[df["task"].isin(wanted)].reset_index(drop=True)
    if per_task is not None:
        order = list(dict.fromkeys(df["task"]))
        parts = []
        for t in order:
            g = df[df["task"] == t]
            perm = np.random.RandomState(_task_seed(seed, t)).permutation(len(g))[: int(per_task)]
            parts.append(g.iloc[perm].assign(_rank=range(len(perm)), _task_order=order.index(t)))
        df = (pd.concat(parts).sort_values(["_rank", "_task_order"], kind="stable")
              .drop(columns=["_rank", "_task_order"]).reset_index(drop=True))
    return validate_queries(df, file=str(f))


def parse_llmrouter_spec(spec: str) -> tuple[str, int | None] | None:
    """("train" | "test", per_task or None) for ``llmrouter-train``, ``llmrouter-test:50``; None for other specs."""
    name, _, n = spec.partition(":")
    if name not in ("llmrouter-train", "llmrouter-test"):
        return None
    split = name.split("-", 1)[1]
    if not n:
        return split, None
    try:
        k = int(n)
    except ValueError:
        raise ValueError(f"--data {spec!r}: the part after ':' is the number of queries per task, got {n!r}") from None
    if k <= 0:
        raise ValueError(f"--data {spec!r}: the number of queries per task must be positive")
    return split, k
