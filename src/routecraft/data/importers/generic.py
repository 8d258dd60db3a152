"""The generic importer: your own CSV/Parquet (wide: one score column per model; long: one row per (query, model)),
mapped by a :class:`GenericImportConfig`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from routecraft.data.importers.common import add_cost, read_csv, unpriced_meta
from routecraft.data.prices import PriceTable, describe_prices, price_sources
from routecraft.data.schema import DataValidationError, RoutingData


class GenericImportConfig(BaseModel):
    """Column mapping for :func:`import_generic`. Values are column names in the file (``None``: absent).

    * ``format: long`` — one row per query x model (x strategy x budget): ``model`` and ``score`` columns, plus
      optional ``strategy``, ``budget``, ``input_tokens``, ``output_tokens``, ``cost``, ``latency``, ``response``.
    * ``format: wide`` — one row per query, one score column per model: ``model_columns`` lists them (a list,
      or a mapping column -> model name); left out, every column not mapped to something else is a model.
      ``input_tokens``, ``output_tokens``, ``cost`` may be templates with ``{model}`` (e.g. ``"{model}_cost"``,
      one column per model) or a plain column shared by all models.
    * Cost: the ``cost`` column if given, else ``tokens x prices`` (``prices``: a price-table YAML path, or
      ``"builtin"`` for the packaged table, or several of them — a list or one comma-separated string — merged,
      later tables overriding earlier ones for the same model) — which needs both token columns. A model without a
      price is an error naming it and the file(s), unless ``on_missing_price: zero`` (cost 0, listed in the
      meta's ``unpriced``).
    * ``score_range: [lo, hi]`` rescales scores linearly to [0, 1]; True/False scores read as 1/0.
    """

    model_config = ConfigDict(extra="forbid")

    format: Literal["wide", "long"]
    name: str | None = None
    query_id: str | None = "query_id"
    text: str = "text"
    task: str | None = None
    task_value: str = "default"
    gold: str | None = None
    # long format
    model: str = "model"
    score: str = "score"
    strategy: str | None = None
    budget: str | None = None
    latency: str | None = None
    response: str | None = None
    prediction: str | None = None
    """long format: the extracted answer of each call (what observing routers compare)."""
    extract_prediction: bool = False
    """long format, no ``prediction`` column: derive each call's answer from ``response`` with the extractor of the
    query's task (numeric for gsm8k, a letter for multiple choice, ...)."""
    # wide format
    model_columns: list[str] | dict[str, str] | None = None
    # measures (long: columns; wide: columns or '{model}' templates)
    input_tokens: str | None = None
    output_tokens: str | None = None
    cost: str | None = None
    tokens_estimated: bool = False
    prices: str | list[str] | None = None
    on_missing_price: Literal["error", "zero"] = "error"
    score_range: tuple[float, float] | None = None
    extra_query_columns: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> "GenericImportConfig":
        if self.score_range is not None and not self.score_range[1] > self.score_range[0]:
            raise ValueError(f"score_range must be [lo, hi] with hi > lo, got {list(self.score_range)}")
        if self.cost is None and self.prices is None:
            raise ValueError("give either a 'cost' column or 'prices' (a price-table YAML path, or 'builtin') "
                             "together with 'input_tokens' and 'output_tokens' columns")
        if self.cost is None and (self.input_tokens is None or self.output_tokens is None):
            raise ValueError("pricing from 'prices' needs both 'input_tokens' and 'output_tokens' columns")
        if self.format == "long" and self.model_columns is not None:
            raise ValueError("'model_columns' is for format: wide")
        if (self.prediction or self.extract_prediction) and self.format != "long":
            raise ValueError("'prediction' / 'extract_prediction' are for format: long (one row per call)")
        if self.extract_prediction and not self.response:
            raise ValueError("'extract_prediction' derives answers from the 'response' column: name it")
        if self.extract_prediction and self.prediction:
            raise ValueError("give either a 'prediction' column or 'extract_prediction', not both")
        return self

    @classmethod
    def from_yaml(cls, path: str | Path) -> "GenericImportConfig":
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"import config {path} not found") from None
        except yaml.YAMLError as exc:
            raise ValueError(f"import config {path}: not valid YAML: {exc}") from None
        if isinstance(raw, dict) and isinstance(raw.get("import"), dict):
            raw = raw["import"]
        try:
            cfg = cls.model_validate(raw or {})
        except ValidationError as exc:
            errs = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<config>'}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"import config {path}: {errs}") from None
        if cfg.prices is not None:
            # price files named in the config are relative to the config's folder
            srcs = [s if s == "builtin" or Path(s).is_absolute() else str((path.parent / s).resolve())
                    for s in price_sources(cfg.prices)]
            cfg = cfg.model_copy(update={"prices": srcs[0] if len(srcs) == 1 else srcs})
        return cfg


def extract_predictions(responses: pd.Series, tasks: pd.Series) -> pd.Series:
    """Each response's answer by the extractor of its task (``strategies.answers.extract_answer``); NA where none."""
    from routecraft.strategies.answers import extract_answer

    out = []
    for text, task in zip(responses.tolist(), tasks.tolist()):
        if text is None or text is pd.NA or (isinstance(text, float) and np.isnan(text)):
            out.append(None)
            continue
        try:
            out.append(extract_answer(str(text), str(task))[0])
        except ValueError:  # a task without an extractor of its own: open answers
            out.append(extract_answer(str(text), "qa")[0])
    return pd.Series(out, index=responses.index, dtype="string")


def _read_table(path: Path) -> pd.DataFrame:
    name = path.name.lower()
    if name.endswith(".parquet") or name.endswith(".pq"):
        try:
            return pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types
            raise DataValidationError(f"cannot read Parquet: {exc}", file=str(path)) from None
    if name.endswith((".csv", ".csv.gz", ".tsv", ".tsv.gz", ".txt", ".txt.gz")):
        sep = "\t" if ".tsv" in name else ","
        return read_csv(path, sep=sep, keep_default_na=True, na_values=[""], dtype=str)
    raise DataValidationError("unsupported file type (use .csv, .csv.gz, .tsv or .parquet)", file=str(path))


def _numeric(df: pd.DataFrame, col: str, file: Path, row_of: np.ndarray | None = None, *, allow_na: bool,
             integer: bool = False, nonneg: bool = True, what: str | None = None) -> pd.Series:
    """Column as float, with an error naming file, row and column for the first bad value."""
    s = df[col]
    if s.dtype == bool:
        return s.astype("float64")
    txt = s.astype("string").str.strip()
    low = txt.str.lower()
    txt = txt.mask((low == "true").fillna(False).astype(bool), "1").mask(
        (low == "false").fillna(False).astype(bool), "0")
    vals = pd.to_numeric(txt, errors="coerce").astype("float64")
    present = (txt.notna() & (txt != "")).fillna(False).astype(bool)
    bad = vals.isna() & present
    if not allow_na:
        bad |= ~present
    if integer:
        bad |= (vals.notna() & (vals != np.floor(vals.fillna(0)))).astype(bool)
    if nonneg:
        bad |= (vals < 0).fillna(False).astype(bool)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        row = int(row_of[i]) if row_of is not None else i
        kind = what or ("a non-negative integer" if integer else "a non-negative number" if nonneg else "a number")
        v = s.iloc[i]
        raise DataValidationError(f"expected {kind}, got {'an empty value' if pd.isna(v) or v == '' else repr(v)}",
                                  file=str(file), row=row, field=col)
    return vals


def import_generic(path: str | Path, config: GenericImportConfig | dict | str | Path) -> RoutingData:
    """Import a wide or long CSV/Parquet routing log using a :class:`GenericImportConfig` (or a dict, or the
    path of a YAML file holding one). Every error about the data names the file, the row (0-based data row,
    header excluded; for text files the 1-based record number after the header is added) and the column."""
    try:
        return _import_generic(Path(path), config)
    except DataValidationError as exc:
        p = Path(path)
        if exc.row is not None and not p.name.lower().endswith((".parquet", ".pq")) and "(record " not in str(exc):
            msg = str(exc).split(": ", 1)[-1] if exc.file else str(exc)
            raise DataValidationError(f"{msg} (record {exc.row + 1} after the header)", file=exc.file, row=exc.row,
                                      field=exc.field) from None
        raise


def _import_generic(path: Path, config: GenericImportConfig | dict | str | Path) -> RoutingData:
    if isinstance(config, (str, Path)):
        config = GenericImportConfig.from_yaml(config)
    elif isinstance(config, dict):
        try:
            config = GenericImportConfig.model_validate(config)
        except ValidationError as exc:
            errs = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<config>'}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"import config: {errs}") from None
    cfg = config
    if not path.is_file():
        raise FileNotFoundError(f"routing log {path} not found")
    df = _read_table(path).reset_index(drop=True)
    file = path

    def need(col: str | None) -> None:
        if col is not None and col not in df.columns:
            raise DataValidationError(f"column not found (has: {', '.join(map(str, df.columns))})", file=str(file),
                                      field=col)

    for c in (cfg.query_id, cfg.text, cfg.task, cfg.gold, *cfg.extra_query_columns):
        need(c)

    def strcol(col: str, allow_na: bool = False) -> pd.Series:
        s = df[col].astype("string")
        if not allow_na:
            na = s.isna() | (s.str.strip() == "")
            if na.any():
                raise DataValidationError("empty value", file=str(file), row=int(np.flatnonzero(na.to_numpy())[0]),
                                          field=col)
        return s

    qid = strcol(cfg.query_id) if cfg.query_id else pd.Series([f"q{i}" for i in range(len(df))], dtype="string")
    text = strcol(cfg.text)
    task = strcol(cfg.task) if cfg.task else pd.Series([cfg.task_value] * len(df), dtype="string")
    qcols = {"query_id": qid, "text": text, "task": task}
    if cfg.gold:
        qcols["gold"] = strcol(cfg.gold, allow_na=True)
    for c in cfg.extra_query_columns:
        qcols[c] = df[c]
    qframe = pd.DataFrame(qcols)

    def scale(v: pd.Series, col: str, rows: np.ndarray) -> pd.Series:
        if cfg.score_range is not None:
            lo, hi = cfg.score_range
            v = (v - lo) / (hi - lo)
        bad = (v < 0) | (v > 1)
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            rng = f"[{cfg.score_range[0]}, {cfg.score_range[1]}]" if cfg.score_range else "[0, 1]"
            raise DataValidationError(f"score must be in {rng} (set score_range to rescale), got "
                                      f"{df[col].iloc[rows[i]]!r}", file=str(file), row=int(rows[i]), field=col)
        return v

    if cfg.format == "long":
        for c in (cfg.model, cfg.score, cfg.strategy, cfg.budget, cfg.latency, cfg.response, cfg.prediction,
                  cfg.input_tokens, cfg.output_tokens, cfg.cost):
            need(c)
        rows = np.arange(len(df))
        # one queries row per query id; text/task/gold must agree across its outcome rows
        first = ~qframe["query_id"].duplicated()
        for c in ("text", "task", "gold"):
            if c in qframe.columns:
                ref = qframe.loc[first].set_index("query_id")[c]
                diff = (qframe[c].fillna("\x00") != qframe["query_id"].map(ref).fillna("\x00")).to_numpy()
                if diff.any():
                    i = int(np.flatnonzero(diff)[0])
                    col = {"text": cfg.text, "task": cfg.task, "gold": cfg.gold}[c]
                    raise DataValidationError(f"query {qframe['query_id'].iloc[i]!r} has a different {c} here than "
                                              "in its first row", file=str(file), row=i, field=col)
        queries = qframe.loc[first].reset_index(drop=True)
        o = pd.DataFrame({"query_id": qid, "model": strcol(cfg.model)})
        o["score"] = scale(_numeric(df, cfg.score, file, allow_na=False, nonneg=False, what="a number (score)"),
                           cfg.score, rows)
        if cfg.strategy:
            o["strategy"] = df[cfg.strategy].astype("string").fillna("default").replace("", "default")
        if cfg.budget:
            o["budget"] = _numeric(df, cfg.budget, file, allow_na=True, integer=True)
        if cfg.latency:
            o["latency_s"] = _numeric(df, cfg.latency, file, allow_na=True)
        if cfg.response:
            o["response"] = df[cfg.response].astype("string")
        if cfg.prediction:
            o["prediction"] = df[cfg.prediction].astype("string").replace("", pd.NA)
        elif cfg.extract_prediction:
            o["prediction"] = extract_predictions(o["response"], qframe["task"] if "task" in qframe.columns
                                                  else pd.Series(cfg.task_value, index=o.index))
        for fld, col in (("input_tokens", cfg.input_tokens), ("output_tokens", cfg.output_tokens)):
            if col:
                o[fld] = _numeric(df, col, file, allow_na=cfg.cost is not None, integer=True)
        if cfg.cost:
            o["cost_usd"] = _numeric(df, cfg.cost, file, allow_na=False)
        src_rows, src_cols = rows, None
    else:
        models = _wide_models(df, cfg)
        for mc in models:
            need(mc)
        queries = qframe
        frames, src_rows, src_cols = [], [], []
        rows = np.arange(len(df))
        for col, model in models.items():
            f = pd.DataFrame({"query_id": qid, "model": model})
            f["score"] = scale(_numeric(df, col, file, allow_na=False, nonneg=False, what="a number (score)"),
                               col, rows)
            for fld, spec in (("input_tokens", cfg.input_tokens), ("output_tokens", cfg.output_tokens),
                              ("cost_usd", cfg.cost)):
                if spec is None:
                    continue
                c = spec.replace("{model}", model) if "{model}" in spec else spec
                need(c)
                f[fld] = _numeric(df, c, file, allow_na=(fld != "cost_usd" and cfg.cost is not None),
                                  integer=(fld != "cost_usd"))
            frames.append(f)
            src_rows.append(rows)
            src_cols += [col] * len(df)
        o = pd.concat(frames, ignore_index=True)
        src_rows = np.concatenate(src_rows)

    if cfg.input_tokens or cfg.output_tokens:
        o["tokens_estimated"] = cfg.tokens_estimated
    meta = {"name": cfg.name or path.stem, "source": str(path), "format": cfg.format,
            "config": cfg.model_dump(exclude_none=True)}
    if cfg.cost is None:
        table = PriceTable.coerce(cfg.prices)
        where = describe_prices(cfg.prices)
        entries = table.require(sorted(o["model"].unique()), on_missing=cfg.on_missing_price, where=where)
        o = add_cost(o, entries)
        meta["cost"] = "tokens x prices from " + where + (" (merged; later files override earlier ones)"
                                                            if len(price_sources(cfg.prices)) > 1 else "")
        meta["prices"] = {m: {"input_per_1m": e.input_per_1m, "output_per_1m": e.output_per_1m,
                              "source": e.source, "date": e.date} for m, e in entries.items()}
        meta.update(unpriced_meta(entries))
    else:
        meta["cost"] = f"from column {cfg.cost!r}"
    try:
        return RoutingData.from_frames(queries, o, meta, source=str(path))
    except DataValidationError as exc:
        # re-point the error at the user's file: row and column as they are there
        internal = {"query_id": cfg.query_id, "text": cfg.text, "task": cfg.task, "gold": cfg.gold,
                    "model": cfg.model, "score": cfg.score, "strategy": cfg.strategy, "budget": cfg.budget}
        row, field = exc.row, exc.field
        if exc.file and exc.file.endswith("/outcomes") and row is not None:
            field = (src_cols[row] if (src_cols is not None and field in ("score",)) else
                     internal.get(field) or field)
            row = int(src_rows[row])
        elif field in internal:
            field = internal.get(field) or field
        msg = str(exc).split(": ", 1)[-1] if exc.file else str(exc)
        if "duplicate (query_id, model, strategy, budget)" in msg and cfg.format == "wide":
            msg = f"duplicate query id {o['query_id'].iloc[exc.row]!r}"
        raise DataValidationError(msg, file=str(path), row=row, field=field) from None


def _wide_models(df: pd.DataFrame, cfg: GenericImportConfig) -> dict[str, str]:
    if isinstance(cfg.model_columns, dict):
        return dict(cfg.model_columns)
    if isinstance(cfg.model_columns, list):
        return {c: c for c in cfg.model_columns}
    used = {c for c in (cfg.query_id, cfg.text, cfg.task, cfg.gold, *cfg.extra_query_columns) if c}
    templ = [t for t in (cfg.input_tokens, cfg.output_tokens, cfg.cost) if t]
    cols = [c for c in df.columns if c not in used and c not in templ]
    models = {}
    for c in cols:
        # a column that some '{model}' template produces from another column is not a model
        if any("{model}" in t and any(t.replace("{model}", m) == c for m in cols if m != c) for t in templ):
            continue
        models[c] = c
    if not models:
        raise DataValidationError("no model score columns found (set model_columns)", field="model_columns")
    return models
