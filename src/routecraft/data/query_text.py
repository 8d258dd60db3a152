"""The text a router sees for a query: its question with its options, as a user's message would carry them.

A collected multiple-choice query keeps its options apart (``queries.choices``); the prompt every strategy sends
appends them ("(A) …" one per line, :func:`routecraft.strategies.answers.format_choices`), and a client of the
gateway sends them in its message. Routers are fit and replayed on :func:`query_texts`, so that what they learn
from is what the gateway routes on (the kind detected from the text, the embedding of the whole question).
"""

from __future__ import annotations

import ast
import json
import math
from typing import Any, Mapping

import pandas as pd

from routecraft.strategies.answers import format_choices, task_kind


def _missing(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def query_choices(v: Any) -> list[str] | None:
    """A query's options as a list of strings: a list/tuple/array (a Parquet list column reads back as an array),
    a dict with a ``text`` list (LLMRouter's ``{'label': [...], 'text': [...]}``), or the JSON or Python-literal
    text of either; None when it has none."""
    if _missing(v):
        return None
    if isinstance(v, str):
        s = v.strip()
        if not s:
            return None
        try:
            v = json.loads(s)
        except (json.JSONDecodeError, RecursionError):
            try:
                v = ast.literal_eval(s)
            except (ValueError, SyntaxError, RecursionError, MemoryError):  # nested too deep: not options
                raise ValueError(f"choices {s[:80]!r} are not a list") from None
    if isinstance(v, Mapping):
        if "text" not in v:
            raise ValueError(f"choices {str(v)[:80]!r}: a dict of options needs a 'text' list")
        v = v["text"]
    if hasattr(v, "tolist"):
        v = v.tolist()
    if not isinstance(v, (list, tuple)):
        raise ValueError(f"choices must be a list of option texts, got {type(v).__name__}")
    return [str(c) for c in v] or None


def takes_options(task: Any) -> bool:
    """Whether a query of ``task`` shows its ``choices`` as options: a multiple-choice task, or a task routecraft
    does not know (its options are all it says). Not a code task, whose ``choices`` may hold its tests (mbpp)."""
    try:
        return task_kind(task) == "choice"
    except (TypeError, ValueError):
        return True


def query_texts(queries: pd.DataFrame) -> list[str]:
    """Each query's routing text: ``text`` with its ``choices`` appended as options "(A) …" where the table has
    them and the query's task takes options (:func:`takes_options`). A row whose choices cannot be read raises
    ValueError naming its query_id."""
    if "text" not in queries.columns:
        raise ValueError("queries table has no 'text' column")
    texts = ["" if _missing(t) else str(t) for t in queries["text"]]
    if "choices" not in queries.columns:
        return texts
    has_ids = "query_id" in queries.columns
    ids = queries["query_id"].astype(str).tolist() if has_ids else [str(i) for i in range(len(texts))]
    tasks = queries["task"].tolist() if "task" in queries.columns else [None] * len(texts)
    out = []
    for qid, text, task, raw in zip(ids, texts, tasks, queries["choices"]):
        if not takes_options(task):
            out.append(text)
            continue
        try:
            ch = query_choices(raw)
            out.append(format_choices(text, ch) if ch else text)
        except ValueError as exc:
            raise ValueError(f"query {qid!r}: {exc}") from None
    return out
