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
from typing import Any

import pandas as pd

from routecraft.strategies.answers import format_choices


def _missing(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def query_choices(v: Any) -> list[str] | None:
    """A query's options as a list of strings: a list/tuple/array (a Parquet list column reads back as an array),
    the JSON or Python-literal text of a list; None when it has none."""
    if _missing(v):
        return None
    if isinstance(v, str):
        s = v.strip()
        if not s:
            return None
        try:
            v = json.loads(s)
        except json.JSONDecodeError:
            try:
                v = ast.literal_eval(s)
            except (ValueError, SyntaxError):
                raise ValueError(f"choices {s[:80]!r} are not a list") from None
    if hasattr(v, "tolist"):
        v = v.tolist()
    if not isinstance(v, (list, tuple)):
        raise ValueError(f"choices must be a list of option texts, got {type(v).__name__}")
    return [str(c) for c in v] or None


def query_texts(queries: pd.DataFrame) -> list[str]:
    """Each query's routing text: ``text`` with its ``choices`` (when the table has them) appended as options.
    A row whose choices cannot be read raises ValueError naming its query_id."""
    if "text" not in queries.columns:
        raise ValueError("queries table has no 'text' column")
    texts = ["" if _missing(t) else str(t) for t in queries["text"]]
    if "choices" not in queries.columns:
        return texts
    has_ids = "query_id" in queries.columns
    ids = queries["query_id"].astype(str).tolist() if has_ids else [str(i) for i in range(len(texts))]
    out = []
    for qid, text, raw in zip(ids, texts, queries["choices"]):
        try:
            ch = query_choices(raw)
        except ValueError as exc:
            raise ValueError(f"query {qid!r}: {exc}") from None
        out.append(format_choices(text, ch) if ch else text)
    return out
