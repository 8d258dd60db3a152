"""The storage of a collection folder: queries, appended shards, compaction into a routecraft data folder.

* ``queries.parquet`` — the queries being collected;
* ``shards/part-*.parquet`` — appended rows; each shard is written to a temporary name and renamed, so a kill
  never leaves a half-written shard;
* ``outcomes.parquet`` + ``meta.json`` — written by :meth:`CollectionStore.compact` (after each run), making the
  folder a routecraft data folder that ``RoutingData.load`` and ``routecraft bench --data`` read. Compaction folds
  the shards into ``outcomes.parquet`` and then deletes them, so the folder stays compact enough to commit.

The key of a cell is (query_id, model, strategy, budget); :meth:`CollectionStore.done_keys` are the cells already
collected (in ``outcomes.parquet`` or the shards), which a run skips.
"""

from __future__ import annotations

import json
import os
import platform
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from routecraft.data.schema import DEFAULT, RoutingData, validate_outcomes, validate_queries

ROW_COLUMNS = ["query_id", "model", "strategy", "budget", "score", "input_tokens", "output_tokens",
               "tokens_estimated", "cost_usd", "latency_s", "response", "prediction", "finish_reason", "error",
               "program_ok", "logprob_mean", "logprob_min", "hardware", "collected_at"]


@dataclass(frozen=True)
class Cell:
    query_id: str
    model: str
    strategy: str
    budget: int | None

    @property
    def key(self) -> tuple:
        return (self.query_id, self.model, self.strategy, -1 if self.budget is None else int(self.budget))


def row_key(r: dict | pd.Series) -> tuple:
    b = r["budget"]
    return (r["query_id"], r["model"], r["strategy"] or DEFAULT, -1 if b is None or pd.isna(b) else int(b))


def hardware_tag() -> str:
    """What the rows were produced on, e.g. 'cpu:2:x86_64' or 'gpu:NVIDIA H100' (ROUTECRAFT_HARDWARE overrides)."""
    if os.environ.get("ROUTECRAFT_HARDWARE"):
        return os.environ["ROUTECRAFT_HARDWARE"]
    return f"cpu:{os.cpu_count()}:{platform.machine()}"


class CollectionStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.shards = self.root / "shards"

    # -- queries ----------------------------------------------------------------------------------------------
    def init_queries(self, queries: pd.DataFrame) -> pd.DataFrame:
        """Merge ``queries`` into the stored ones (a later run may add queries; existing ones must not change)."""
        queries = validate_queries(queries, file="<collection queries>")
        self.root.mkdir(parents=True, exist_ok=True)
        f = self.root / "queries.parquet"
        if f.exists():
            old = validate_queries(pd.read_parquet(f), file=str(f))
            merged = old.merge(queries, on="query_id", how="inner", suffixes=("", "_new"))
            changed = merged[merged["text"] != merged["text_new"]]
            if len(changed):
                raise ValueError(f"{f}: query {changed['query_id'].iloc[0]!r} already collected with another text; "
                                 "use a new --out folder for a different query set")
            queries = pd.concat([old, queries[~queries["query_id"].isin(old["query_id"])]], ignore_index=True)
        tmp = f.with_suffix(".tmp")
        queries.to_parquet(tmp, index=False)
        os.replace(tmp, f)
        return queries

    def queries(self) -> pd.DataFrame:
        return pd.read_parquet(self.root / "queries.parquet")

    # -- rows -------------------------------------------------------------------------------------------------
    def shard_files(self) -> list[Path]:
        return sorted(self.shards.glob("part-*.parquet")) if self.shards.exists() else []

    def rows(self) -> pd.DataFrame:
        """Every collected row: the compacted table first, then the shards, each key once."""
        parts = []
        base = self.root / "outcomes.parquet"
        if base.exists():
            parts.append(pd.read_parquet(base))
        parts += [pd.read_parquet(f) for f in self.shard_files()]
        if not parts:
            return pd.DataFrame(columns=ROW_COLUMNS)
        df = pd.concat(parts, ignore_index=True)
        keys = pd.Series([row_key(r) for r in df[["query_id", "model", "strategy", "budget"]].to_dict("records")])
        return df[~keys.duplicated().to_numpy()].reset_index(drop=True)

    def done_keys(self) -> set[tuple]:
        df = self.rows()
        return {row_key(r) for r in df[["query_id", "model", "strategy", "budget"]].to_dict("records")}

    def append(self, rows: list[dict]) -> Path | None:
        if not rows:
            return None
        self.shards.mkdir(parents=True, exist_ok=True)
        df = pd.DataFrame(rows, columns=ROW_COLUMNS)
        df["budget"] = df["budget"].astype("Int64")
        name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        tmp = self.shards / (name + ".tmp")
        df.to_parquet(tmp, index=False)
        os.replace(tmp, self.shards / name)
        return self.shards / name

    def compact(self, meta: dict | None = None) -> RoutingData:
        """Fold the shards into outcomes.parquet (+ meta.json), then delete the folded shards."""
        q = validate_queries(self.queries(), file=str(self.root / "queries.parquet"))
        folded = self.shard_files()
        o = self.rows()
        o = validate_outcomes(o, file=str(self.shards), query_ids=set(q["query_id"]))
        o = o.sort_values(["query_id", "model", "strategy", "budget"], na_position="first").reset_index(drop=True)
        o.to_parquet(self.root / "outcomes.parquet.tmp", index=False, compression="zstd")
        os.replace(self.root / "outcomes.parquet.tmp", self.root / "outcomes.parquet")
        for f in folded:
            f.unlink(missing_ok=True)
        old = json.loads((self.root / "meta.json").read_text()) if (self.root / "meta.json").exists() else {}
        old.update(meta or {})
        old["n_outcomes"] = int(len(o))
        (self.root / "meta.json").write_text(json.dumps(old, indent=2, default=str))
        return RoutingData(q, o, old)
