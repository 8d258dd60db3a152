"""What every importer shares: the token-estimation rule, finding and reading the source files (a packaged copy or
a raw checkout, plain or gzipped), and pricing rows from a price table."""

from __future__ import annotations

import gzip
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from routecraft.data.prices import ZERO_PRICE, OnMissing, PriceEntry, PriceTable, describe_prices
from routecraft.data.schema import DataValidationError

CHARS_PER_TOKEN = 4
TOKEN_RULE = ("tokens = ceil(characters / 4), OpenAI's rule of thumb 'one token ~ 4 characters of English text' "
              "(https://help.openai.com/en/articles/4936856-what-are-tokens-and-how-to-count-them)")


def estimate_tokens(chars) -> Any:
    """``ceil(chars / 4)`` for a character count, a string, or an array/Series of either."""
    if isinstance(chars, str):
        return int(math.ceil(len(chars) / CHARS_PER_TOKEN))
    if np.isscalar(chars):
        return int(math.ceil(float(chars) / CHARS_PER_TOKEN))
    s = pd.Series(chars)
    if s.dtype == object or pd.api.types.is_string_dtype(s):
        s = s.fillna("").astype(str).str.len()
    return np.ceil(s.to_numpy(dtype="float64") / CHARS_PER_TOKEN).astype("int64")


# ------------------------------------------------------------------------------------------------------------
# file access: packaged copies or a raw checkout, plain or gzipped
# ------------------------------------------------------------------------------------------------------------
def dataset_root(source: str) -> Path:
    """Folder of the packaged copy of a source ("zeroeval", "llmrouter", "routellm")."""
    from importlib.resources import files

    return Path(str(files("routecraft") / "datasets" / source))


def source_root(source: str, root: str | Path | None) -> Path:
    if root is None:
        return dataset_root(source)
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{source} data folder {root} does not exist")
    # accept the parent folder too (e.g. .../shared/data holding zeroeval/, llmrouter/, routellm/)
    if (root / source).is_dir():
        return root / source
    return root


def find(root: Path, *candidates: str) -> Path:
    tried = []
    for rel in candidates:
        for p in (root / rel, root / (rel + ".gz")):
            tried.append(str(p))
            if p.is_file():
                return p
    raise FileNotFoundError("none of these files exists: " + ", ".join(tried))


def open_text(path: Path) -> io.TextIOBase:
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def read_json(path: Path):
    with open_text(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as exc:
            raise DataValidationError(f"not valid JSON: {exc.msg} (line {exc.lineno})", file=str(path)) from None


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open_text(path) as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataValidationError(f"not valid JSON: {exc.msg}", file=str(path), row=i) from None
    return rows


def read_csv(path: Path, **kw) -> pd.DataFrame:
    try:
        return pd.read_csv(path, compression="infer" if not is_gz(path) else "gzip", **kw)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DataValidationError(f"cannot read CSV: {exc}", file=str(path)) from None


def is_gz(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def require_columns(df: pd.DataFrame, cols, file: Path) -> None:
    for c in cols:
        if c not in df.columns:
            raise DataValidationError(f"missing column (has: {', '.join(map(str, df.columns))})",
                                      file=str(file), field=c)


def prices_for(models, prices, on_missing: OnMissing, dataset: str) -> tuple[PriceTable, dict[str, PriceEntry]]:
    """The price table (``prices``: None for the packaged one, a path, several paths merged later-wins, or a table)
    and the entry of every model; a missing one raises MissingPriceError naming the model and the file(s)."""
    table = PriceTable.coerce(prices)
    where = f"{describe_prices(prices)} (prices for {dataset})"
    return table, table.require(sorted(models), on_missing=on_missing, where=where)


def price_meta(entries: dict[str, PriceEntry]) -> dict[str, dict]:
    return {m: {"input_per_1m": e.input_per_1m, "output_per_1m": e.output_per_1m, "source": e.source,
                "date": e.date, **({"note": e.note} if e.note else {})} for m, e in entries.items()}


def unpriced_meta(entries: dict[str, PriceEntry]) -> dict:
    """``{"unpriced": {...}}`` for the meta of an import where some models had no price and were priced at 0
    (``on_missing="zero"``); empty where every model had a price."""
    zero = sorted(m for m, e in entries.items() if e is ZERO_PRICE)
    if not zero:
        return {}
    return {"unpriced": {"models": zero, "cost": 0.0,
                         "rule": "on_missing_price='zero': these models have no entry in the price table; their "
                                 "cost_usd is 0, so cost-aware results treat them as free"}}


def add_cost(o: pd.DataFrame, entries: dict[str, PriceEntry]) -> pd.DataFrame:
    pin = o["model"].map({m: e.input_per_1m for m, e in entries.items()}).astype("float64")
    pout = o["model"].map({m: e.output_per_1m for m, e in entries.items()}).astype("float64")
    o["cost_usd"] = (o["input_tokens"].astype("float64") * pin + o["output_tokens"].astype("float64") * pout) / 1e6
    return o
