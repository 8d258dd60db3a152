"""The one data model every part of routecraft uses.

Two tables:

* **queries** — one row per query: ``query_id`` (str, unique), ``text`` (str), ``task`` (str),
  ``gold`` (str or null).
* **outcomes** — one row per (query, candidate). A candidate is (``model``, ``strategy``, ``budget``):
  ``strategy`` is a strategy name or ``"default"``; ``budget`` is an output-token budget (int) or null,
  meaning "default" (no length instruction). Measures: ``score`` in [0, 1], ``input_tokens``,
  ``output_tokens``, ``tokens_estimated`` (True where the tokens are a stated proxy rather than a
  real count), ``cost_usd`` (>= 0), ``latency_s`` (null if unknown), ``response`` (null if not available).
  Extra columns are kept as they are (e.g. ``prediction``, ``hardware``, ``source``).

Both are stored as Parquet in a folder (``queries.parquet`` + ``outcomes.parquet`` + ``meta.json``) and
validated on load; a validation error names the file, the row and the field.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

DEFAULT = "default"

QUERY_COLUMNS: dict[str, str] = {
    "query_id": "string",
    "text": "string",
    "task": "string",
    "gold": "string",
}
QUERY_REQUIRED = ("query_id", "text", "task")

OUTCOME_COLUMNS: dict[str, str] = {
    "query_id": "string",
    "model": "string",
    "strategy": "string",
    "budget": "Int64",
    "score": "float64",
    "input_tokens": "Int64",
    "output_tokens": "Int64",
    "tokens_estimated": "boolean",
    "cost_usd": "float64",
    "latency_s": "float64",
    "response": "string",
}
OUTCOME_REQUIRED = ("query_id", "model", "score", "cost_usd")
KEY = ("query_id", "model", "strategy", "budget")


class DataValidationError(ValueError):
    """Bad input data. The message names the file, the row and the field."""

    def __init__(self, message: str, *, file: str | None = None, row: int | None = None,
                 field: str | None = None):
        where = []
        if file is not None:
            where.append(f"file {file}")
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field '{field}'")
        prefix = (", ".join(where) + ": ") if where else ""
        super().__init__(prefix + message)
        self.file, self.row, self.field = file, row, field


@dataclass(frozen=True, order=True)
class Candidate:
    """One routing option: a model, run with a strategy, under an output-length budget."""

    model: str
    strategy: str = DEFAULT
    budget: int | None = None

    @property
    def id(self) -> str:
        return candidate_id(self.model, self.strategy, self.budget)

    @classmethod
    def parse(cls, cid: str) -> "Candidate":
        parts = cid.split("|")
        if len(parts) == 1:
            return cls(parts[0])
        if len(parts) != 3:
            raise ValueError(f"candidate id {cid!r} is not 'model|strategy|budget'")
        b = parts[2]
        return cls(parts[0], parts[1] or DEFAULT, None if b in ("", DEFAULT) else int(b))

    def __str__(self) -> str:  # pragma: no cover - cosmetic
        return self.id


def candidate_id(model: str, strategy: str | None = DEFAULT, budget: int | None = None) -> str:
    strategy = strategy or DEFAULT
    b = (DEFAULT if budget is None or (isinstance(budget, float) and math.isnan(budget)) or budget is pd.NA
         else str(int(budget)))
    if strategy == DEFAULT and b == DEFAULT:
        return model
    return f"{model}|{strategy}|{b}"


def candidate_ids(outcomes: pd.DataFrame) -> pd.Series:
    """Vectorised :func:`candidate_id` for every row of an outcomes table."""
    strat = outcomes["strategy"].astype("string").fillna(DEFAULT)
    budget = outcomes["budget"].astype("Int64").astype("string").fillna(DEFAULT)
    plain = (strat == DEFAULT) & (budget == DEFAULT)
    model = outcomes["model"].astype("string")
    full = model + "|" + strat + "|" + budget
    return full.where(~plain, model).astype(object)


def _coerce(df: pd.DataFrame, columns: dict[str, str], required: Iterable[str], file: str) -> pd.DataFrame:
    df = df.copy()
    for col in required:
        if col not in df.columns:
            raise DataValidationError(f"missing required column (has: {', '.join(map(str, df.columns))})",
                                      file=file, field=col)
    for col, dtype in columns.items():
        if col not in df.columns:
            fill = np.nan if dtype == "float64" else pd.NA
            df[col] = pd.Series([fill] * len(df), index=df.index, dtype=dtype)
            continue
        try:
            if dtype in ("float64",):
                df[col] = pd.to_numeric(df[col], errors="raise").astype("float64")
            elif dtype == "Int64":
                s = pd.to_numeric(df[col], errors="raise")
                if s.dropna().map(lambda v: float(v) != int(v)).any():
                    raise ValueError("non-integer value")
                df[col] = s.astype("Int64")
            elif dtype == "boolean":
                df[col] = df[col].astype("boolean")
            else:
                df[col] = df[col].astype("string")
        except (ValueError, TypeError) as exc:
            bad = _first_bad_row(df[col], dtype)
            raise DataValidationError(f"cannot read as {dtype}: {exc}", file=file, row=bad, field=col) from None
    return df


def _first_bad_row(s: pd.Series, dtype: str) -> int | None:
    for i, v in enumerate(s.tolist()):
        if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
            continue
        try:
            f = float(v)
            if dtype == "Int64" and f != int(f):
                return i
        except (ValueError, TypeError):
            return i
    return None


def validate_queries(df: pd.DataFrame, file: str = "<queries>") -> pd.DataFrame:
    df = _coerce(df, QUERY_COLUMNS, QUERY_REQUIRED, file)
    for col in QUERY_REQUIRED:
        na = df[col].isna()
        if na.any():
            raise DataValidationError("empty value", file=file, row=int(np.flatnonzero(na.to_numpy())[0]), field=col)
    dup = df["query_id"].duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise DataValidationError(f"duplicate query_id {df['query_id'].iloc[i]!r}", file=file, row=i, field="query_id")
    return df.reset_index(drop=True)


def validate_outcomes(df: pd.DataFrame, file: str = "<outcomes>", query_ids: set[str] | None = None) -> pd.DataFrame:
    df = _coerce(df, OUTCOME_COLUMNS, OUTCOME_REQUIRED, file)
    df["strategy"] = df["strategy"].fillna(DEFAULT)
    df["tokens_estimated"] = df["tokens_estimated"].fillna(False)
    for col in ("query_id", "model", "score", "cost_usd"):
        na = df[col].isna()
        if na.any():
            raise DataValidationError("empty value", file=file, row=int(np.flatnonzero(na.to_numpy())[0]), field=col)
    checks = [
        ("score", (df["score"] < 0) | (df["score"] > 1), "score must be in [0, 1]"),
        ("cost_usd", df["cost_usd"] < 0, "cost must be >= 0"),
        ("input_tokens", df["input_tokens"].fillna(0) < 0, "tokens must be >= 0"),
        ("output_tokens", df["output_tokens"].fillna(0) < 0, "tokens must be >= 0"),
        ("budget", df["budget"].fillna(1) <= 0, "budget must be a positive token count or empty (default)"),
    ]
    for col, mask, msg in checks:
        m = mask.fillna(False).to_numpy(dtype=bool)
        if m.any():
            i = int(np.flatnonzero(m)[0])
            raise DataValidationError(f"{msg} (got {df[col].iloc[i]!r})", file=file, row=i, field=col)
    dup = df.duplicated(list(KEY))
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise DataValidationError("duplicate (query_id, model, strategy, budget)", file=file, row=i, field="query_id")
    if query_ids is not None:
        unknown = ~df["query_id"].isin(query_ids)
        if unknown.any():
            i = int(np.flatnonzero(unknown.to_numpy())[0])
            raise DataValidationError(f"query_id {df['query_id'].iloc[i]!r} is not in the queries table",
                                      file=file, row=i, field="query_id")
    return df.reset_index(drop=True)


@dataclass
class RoutingData:
    """A queries table plus its outcomes table (validated)."""

    queries: pd.DataFrame
    outcomes: pd.DataFrame
    meta: dict = field(default_factory=dict)

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_frames(cls, queries: pd.DataFrame, outcomes: pd.DataFrame, meta: dict | None = None,
                    source: str = "<memory>") -> "RoutingData":
        q = validate_queries(queries, file=f"{source}/queries")
        o = validate_outcomes(outcomes, file=f"{source}/outcomes", query_ids=set(q["query_id"]))
        return cls(q, o, dict(meta or {}))

    @classmethod
    def load(cls, path: str | Path) -> "RoutingData":
        path = Path(path)
        if not path.is_dir():
            raise DataValidationError("not a routecraft data folder (expected queries.parquet and outcomes.parquet)",
                                      file=str(path))
        qf, of = path / "queries.parquet", path / "outcomes.parquet"
        for f in (qf, of):
            if not f.exists():
                raise DataValidationError("file not found", file=str(f))
        meta = json.loads((path / "meta.json").read_text()) if (path / "meta.json").exists() else {}
        q = validate_queries(pd.read_parquet(qf), file=str(qf))
        o = validate_outcomes(pd.read_parquet(of), file=str(of), query_ids=set(q["query_id"]))
        return cls(q, o, meta)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.queries.to_parquet(path / "queries.parquet", index=False, compression="zstd")
        self.outcomes.to_parquet(path / "outcomes.parquet", index=False, compression="zstd")
        (path / "meta.json").write_text(json.dumps(self.meta, indent=2, default=str))
        return path

    # ---- views --------------------------------------------------------------------------------
    @property
    def candidates(self) -> list[Candidate]:
        keys = self.outcomes[["model", "strategy", "budget"]].drop_duplicates()
        cands = [Candidate(m, s, None if pd.isna(b) else int(b)) for m, s, b in keys.itertuples(index=False)]
        return sorted(cands, key=lambda c: (c.model, c.strategy, -1 if c.budget is None else c.budget))

    @property
    def candidate_ids(self) -> list[str]:
        return [c.id for c in self.candidates]

    def matrices(self, query_ids: list[str] | None = None, candidates: list[Candidate] | None = None,
                 require_complete: bool = True) -> "OutcomeMatrices":
        """Wide (n_queries × n_candidates) arrays of score, cost, and tokens."""
        cands = candidates or self.candidates
        qids = list(query_ids) if query_ids is not None else self.queries["query_id"].tolist()
        o = self.outcomes.assign(_cid=candidate_ids(self.outcomes))
        o = o[o["_cid"].isin([c.id for c in cands]) & o["query_id"].isin(qids)]
        cols = [c.id for c in cands]

        def wide(col: str) -> np.ndarray:
            w = o.pivot(index="query_id", columns="_cid", values=col).reindex(index=qids, columns=cols)
            return w.to_numpy(dtype="float64", na_value=np.nan)

        score, cost = wide("score"), wide("cost_usd")
        out_tok = wide("output_tokens")
        in_tok = wide("input_tokens")
        if require_complete and (np.isnan(score).any() or np.isnan(cost).any()):
            miss = np.argwhere(np.isnan(score) | np.isnan(cost))[0]
            raise DataValidationError(
                f"no outcome for query {qids[miss[0]]!r} × candidate {cols[miss[1]]!r}; every query needs every "
                "candidate (drop incomplete queries with RoutingData.complete())", field="query_id")
        return OutcomeMatrices(qids, cands, score, cost, out_tok, in_tok)

    def complete(self, candidates: list[Candidate] | None = None) -> "RoutingData":
        """Keep only queries that have an outcome for every candidate."""
        cands = candidates or self.candidates
        ids = {c.id for c in cands}
        o = self.outcomes
        cid = candidate_ids(o)
        o = o[cid.isin(ids)]
        counts = o.groupby("query_id").size()
        keep = set(counts[counts == len(ids)].index)
        return self.subset(keep, outcomes=o)

    def fill_inapplicable(self) -> tuple["RoutingData", int]:
        """The data with a cell for every (query, candidate) that is missing *because the candidate's strategy does
        not apply to the query's task*: not in the task's plan (``strategies.strategies_for``: PAL on a
        multiple-choice question, CoD on a trivia question) and collected on no question of that task. A router
        needs every candidate's value on every query, so the cell is filled conservatively: score 0 at the query's
        dearest collected cost, tokens and latency (``tokens_estimated``: they are a stand-in). Picking one is
        scored as the worst call that could have been made, so a fill never raises a router's score; a
        single-candidate baseline that is such a strategy scores 0 on the other tasks (as one candidate for every
        request would). Only models with a collected cell on the query are filled; filled rows have ``filled =
        True`` (collected rows ``False``) and no response or answer. A missing cell whose strategy was collected
        on the task (in progress, or named on purpose: self-consistency) stays missing (``complete()`` drops its
        query), and queries of a task the strategies do not know are left as they are. Returns (data, rows
        filled)."""
        from routecraft.strategies.per_task import strategies_for

        o = self.outcomes
        cands = self.candidates
        if not len(o) or not cands:
            return self, 0
        cid = candidate_ids(o)
        have = set(zip(o["query_id"], cid))
        ran = set(zip(o["query_id"], o["model"]))
        task_of = dict(zip(self.queries["query_id"], self.queries["task"]))
        seen: dict[str, set[str]] = {}
        for qid, strat in zip(o["query_id"], o["strategy"]):
            seen.setdefault(task_of.get(qid), set()).add(strat)
        agg = {"cost_usd": ("cost_usd", "max"), "input_tokens": ("input_tokens", "max"),
               "output_tokens": ("output_tokens", "max")}
        if "latency_s" in o:
            agg["latency_s"] = ("latency_s", "max")
        dear = o.groupby("query_id").agg(**agg)
        planned: dict[str, set[str] | None] = {}
        rows = []
        for qid, task in task_of.items():
            if qid not in dear.index:
                continue
            if task not in planned:
                try:
                    planned[task] = set(strategies_for(task)) | seen.get(task, set())
                except (ValueError, TypeError):
                    planned[task] = None
            ok = planned[task]
            if ok is None:
                continue
            d = dear.loc[qid]
            for c in cands:
                if c.strategy in ok or (qid, c.id) in have or (qid, c.model) not in ran:
                    continue
                rows.append({"query_id": qid, "model": c.model, "strategy": c.strategy, "budget": c.budget,
                             "score": 0.0, "input_tokens": d["input_tokens"], "output_tokens": d["output_tokens"],
                             "tokens_estimated": True, "cost_usd": float(d["cost_usd"]),
                             "latency_s": d.get("latency_s", np.nan), "filled": True})
        if not rows:
            return self, 0
        fill = pd.DataFrame(rows)
        base = o.assign(filled=o["filled"].fillna(False).astype(bool) if "filled" in o else False)
        out = validate_outcomes(pd.concat([base, fill], ignore_index=True), file="<filled outcomes>")
        return RoutingData(self.queries, out, dict(self.meta)), len(rows)

    def drop_sparse_candidates(self, min_coverage: float = 0.9) -> tuple["RoutingData", list[str]]:
        """Drop candidates that have outcomes for fewer than ``min_coverage`` of the queries; returns the dropped
        ids."""
        o = self.outcomes
        cid = candidate_ids(o)
        cover = cid.groupby(cid).size() / max(1, len(self.queries))
        dropped = sorted(cover[cover < min_coverage].index)
        if not dropped:
            return self, []
        return RoutingData(self.queries, o[~cid.isin(dropped)].reset_index(drop=True), dict(self.meta)), dropped

    def densest(self, min_coverage: float = 0.9) -> tuple["RoutingData", list[str]]:
        """The candidates and queries that leave the most complete (query, candidate) cells, and the candidates
        dropped. The usual rule drops candidates with outcomes for fewer than ``min_coverage`` of the queries; a
        collection in progress (every model on the first N questions, the smallest on more) is the opposite case —
        dropping the models not yet on every question would route between one model's strategies. So each
        candidate set ``{coverage >= t}`` (``t``: ``min_coverage`` and every candidate coverage below it) is tried,
        the queries complete over it kept, and the one with the most cells wins (ties: ``min_coverage``'s, then
        more candidates): it never drops a candidate the usual rule keeps."""
        if not isinstance(min_coverage, (int, float)) or not 0 < min_coverage <= 1:
            raise ValueError(f"min_coverage (--min-coverage) must be in (0, 1], got {min_coverage!r}")
        o = self.outcomes
        cid = candidate_ids(o)
        cover = cid.groupby(cid).size() / max(1, len(self.queries))
        by_query = pd.crosstab(o["query_id"], cid).astype(bool)
        best: tuple | None = None
        for t in sorted({float(min_coverage), *(c for c in cover.tolist() if c <= min_coverage)}, reverse=True):
            keep = cover[cover >= t].index
            if not len(keep):
                continue
            n_q = int(by_query[keep].all(axis=1).sum())
            rank = (n_q * len(keep), t == float(min_coverage), len(keep))
            if best is None or rank > best[0]:
                best = (rank, set(keep))
        if best is None:
            return self.complete(), []
        dropped = sorted(set(cover.index) - best[1])
        kept = RoutingData(self.queries, o[~cid.isin(dropped)].reset_index(drop=True), dict(self.meta)) \
            if dropped else self
        return kept.complete(), dropped

    def for_routers(self, min_coverage: float = 0.9) -> tuple["RoutingData", int, list[str]]:
        """What a router is fit on (the bench, ``routecraft train``, ``routecraft calibrate``): inapplicable cells
        filled (``fill_inapplicable``), then the densest complete candidate set (``densest``). Returns (data, cells
        filled, candidates dropped)."""
        data, filled = self.fill_inapplicable()
        data, dropped = data.densest(min_coverage)
        return data, filled, dropped

    def subset(self, query_ids: Iterable[str], outcomes: pd.DataFrame | None = None) -> "RoutingData":
        keep = set(query_ids)
        o = self.outcomes if outcomes is None else outcomes
        q = self.queries[self.queries["query_id"].isin(keep)].reset_index(drop=True)
        o = o[o["query_id"].isin(keep)].reset_index(drop=True)
        return RoutingData(q, o, dict(self.meta))

    def filter_candidates(self, candidates: Iterable[Candidate | str]) -> "RoutingData":
        ids = {c.id if isinstance(c, Candidate) else c for c in candidates}
        o = self.outcomes
        cid = candidate_ids(o)
        return RoutingData(self.queries, o[cid.isin(ids)].reset_index(drop=True), dict(self.meta))

    def split(self, seed: int = 0, fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)) -> "Splits":
        """Seeded split by query into train / validation (calibration) / test."""
        if abs(sum(fractions) - 1.0) > 1e-9 or min(fractions) < 0:
            raise ValueError(f"split fractions must be >= 0 and sum to 1, got {fractions}")
        ids = np.array(sorted(self.queries["query_id"].tolist()))
        rng = np.random.default_rng(seed)
        rng.shuffle(ids)
        n = len(ids)
        n_tr = int(round(fractions[0] * n))
        n_va = int(round(fractions[1] * n))
        tr, va, te = ids[:n_tr], ids[n_tr:n_tr + n_va], ids[n_tr + n_va:]
        return Splits(self.subset(tr), self.subset(va), self.subset(te), seed)


@dataclass
class Splits:
    train: RoutingData
    val: RoutingData
    test: RoutingData
    seed: int


@dataclass
class OutcomeMatrices:
    query_ids: list[str]
    candidates: list[Candidate]
    score: np.ndarray          # (n, C)
    cost: np.ndarray           # (n, C) USD
    output_tokens: np.ndarray  # (n, C), NaN where unknown
    input_tokens: np.ndarray   # (n, C), NaN where unknown

    @property
    def candidate_ids(self) -> list[str]:
        return [c.id for c in self.candidates]
