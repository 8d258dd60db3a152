"""The usage ledger: one SQLite row per request that reached a backend (WAL mode, committed before the response).

Columns: request_id (primary key), ts (unix time), key (API key name, "open" without keys), client_request_id (the
client's ``x-request-id`` header), requested_model (what the client asked for), router, tradeoff, lam, max_cost,
model, strategy, budget, task, predicted_score, predicted_cost, input_tokens, output_tokens, cost_usd (all
attempts, failed ones included), latency_s (whole request), backend_s, decision_ms, status ("ok", "failed" — every
candidate failed, 502 —, "cancelled" — the client went away mid-stream), http_status, error, attempts (candidates
tried), fallbacks (JSON list of {candidate, error}), stream, sticky, conversation_id.

``summarise(path, by=...)`` gives the totals that ``routecraft usage`` prints.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Optional

COLUMNS: dict[str, str] = {
    "request_id": "TEXT PRIMARY KEY",
    "ts": "REAL NOT NULL",
    "key": "TEXT",
    "client_request_id": "TEXT",
    "requested_model": "TEXT",
    "router": "TEXT",
    "tradeoff": "TEXT",
    "lam": "REAL",
    "max_cost": "REAL",
    "model": "TEXT",
    "strategy": "TEXT",
    "budget": "INTEGER",
    "task": "TEXT",
    "predicted_score": "REAL",
    "predicted_cost": "REAL",
    "input_tokens": "INTEGER",
    "output_tokens": "INTEGER",
    "cost_usd": "REAL",
    "latency_s": "REAL",
    "backend_s": "REAL",
    "decision_ms": "REAL",
    "status": "TEXT NOT NULL",
    "http_status": "INTEGER",
    "error": "TEXT",
    "attempts": "INTEGER",
    "fallbacks": "TEXT",
    "stream": "INTEGER",
    "sticky": "INTEGER",
    "conversation_id": "TEXT",
}

GROUPS = {"key": "key", "model": "model", "router": "router", "strategy": "strategy", "status": "status",
          "day": "date(ts, 'unixepoch')", "requested_model": "requested_model"}


class LedgerError(RuntimeError):
    pass


class Ledger:
    """Append-only request ledger. ``open()`` creates the file and table; ``record(row)`` inserts and commits."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn: Optional[sqlite3.Connection] = None
        self._lock = threading.Lock()

    def open(self) -> "Ledger":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            cols = ", ".join(f"{k} {v}" for k, v in COLUMNS.items())
            conn.execute(f"CREATE TABLE IF NOT EXISTS requests ({cols})")
            have = {r[1] for r in conn.execute("PRAGMA table_info(requests)")}
            missing = [c for c in COLUMNS if c not in have]
            for c in missing:  # a ledger from an older routecraft: add the new columns
                conn.execute(f"ALTER TABLE requests ADD COLUMN {c} {COLUMNS[c].replace('PRIMARY KEY', '')}")
            conn.execute("CREATE INDEX IF NOT EXISTS requests_key ON requests(key)")
            conn.execute("CREATE INDEX IF NOT EXISTS requests_ts ON requests(ts)")
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot open usage ledger {self.path}: {exc}") from None
        self._conn = conn
        return self

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def record(self, row: dict[str, Any]) -> None:
        """Insert one row (unknown keys are an error; missing ones are NULL) and commit."""
        if self._conn is None:
            raise LedgerError("ledger is not open")
        unknown = set(row) - set(COLUMNS)
        if unknown:
            raise LedgerError(f"unknown ledger column(s): {', '.join(sorted(unknown))}")
        row = dict(row)
        row.setdefault("ts", time.time())
        if isinstance(row.get("fallbacks"), (list, dict)):
            row["fallbacks"] = json.dumps(row["fallbacks"], default=str)
        cols = list(row)
        sql = f"INSERT INTO requests ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})"
        with self._lock:
            self._conn.execute(sql, [row[c] for c in cols])

    def spent_by_key(self) -> dict[str, float]:
        if self._conn is None:
            raise LedgerError("ledger is not open")
        with self._lock:
            rows = self._conn.execute("SELECT key, COALESCE(SUM(cost_usd), 0) FROM requests GROUP BY key").fetchall()
        return {k: float(v) for k, v in rows if k is not None}


def read_rows(path: str | Path, where: str = "", params: tuple = ()) -> list[dict]:
    """All ledger rows (as dicts) matching an optional SQL ``where`` clause."""
    p = Path(path)
    if not p.exists():
        raise LedgerError(f"no usage ledger at {p}")
    conn = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
    try:
        conn.row_factory = sqlite3.Row
        sql = "SELECT * FROM requests" + (f" WHERE {where}" if where else "") + " ORDER BY ts"
        return [dict(r) for r in conn.execute(sql, params)]
    except sqlite3.Error as exc:
        raise LedgerError(f"{p}: not a routecraft usage ledger ({exc})") from None
    finally:
        conn.close()


def _pct(values: list[float], q: float) -> Optional[float]:
    if not values:
        return None
    values = sorted(values)
    i = min(len(values) - 1, max(0, int(round(q * (len(values) - 1)))))
    return values[i]


def summarise(path: str | Path, by: Optional[str] = None, since: Optional[float] = None) -> list[dict]:
    """Totals per group (``by``: key, model, router, strategy, status, day, requested_model; None = one total row):
    requests, ok, failed, cancelled, input/output tokens, cost_usd, latency p50/p99 (s), mean decision ms."""
    if by is not None and by not in GROUPS:
        raise ValueError(f"--by must be one of {', '.join(GROUPS)}, got {by!r}")
    rows = read_rows(path, "ts >= ?" if since is not None else "", (since,) if since is not None else ())
    groups: dict[Any, list[dict]] = {}
    for r in rows:
        if by is None:
            g = "all"
        elif by == "day":
            g = time.strftime("%Y-%m-%d", time.gmtime(r["ts"]))
        else:
            g = r.get(by)
        groups.setdefault(g, []).append(r)
    out = []
    for g, rs in sorted(groups.items(), key=lambda kv: str(kv[0])):
        lat = [r["latency_s"] for r in rs if r["latency_s"] is not None and r["status"] == "ok"]
        dms = [r["decision_ms"] for r in rs if r["decision_ms"] is not None]
        out.append({
            by or "group": g if g is not None else "-",
            "requests": len(rs),
            "ok": sum(r["status"] == "ok" for r in rs),
            "failed": sum(r["status"] == "failed" for r in rs),
            "cancelled": sum(r["status"] == "cancelled" for r in rs),
            "input_tokens": int(sum(r["input_tokens"] or 0 for r in rs)),
            "output_tokens": int(sum(r["output_tokens"] or 0 for r in rs)),
            "cost_usd": float(sum(r["cost_usd"] or 0.0 for r in rs)),
            "latency_p50_s": _pct(lat, 0.5),
            "latency_p99_s": _pct(lat, 0.99),
            "decision_ms_mean": (sum(dms) / len(dms)) if dms else None,
            "fallbacks": sum(1 for r in rs if r["fallbacks"] not in (None, "[]")),
        })
    return out
