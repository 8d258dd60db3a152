"""The usage ledger: one row per request that reached a backend, committed before the response.

Two backends behind one interface (``open_ledger(url)``), chosen by the config's ``ledger`` URL:

* SQLite (the embedded default, ``~/.cache/routecraft/usage.sqlite``): a plain path, ``sqlite:///abs/path``,
  ``sqlite:relative/path`` or ``sqlite::memory:``. WAL mode with a 30 s busy timeout, so several gateway processes on
  one machine can write the same file at once.
* PostgreSQL: ``postgresql://user:pass@host:port/db`` (or ``postgres://``; any libpq URI parameter may follow, e.g.
  ``?sslmode=require``; the password may also come from ``PGPASSWORD`` or ``~/.pgpass``). Several gateways on
  several machines share one ledger and so one budget per key. Needs the ``postgres`` extra (psycopg 3).

Both hold the same table ``requests`` (created if missing; columns added when a ledger from an older routecraft
lacks them; the indexes of ``INDEXES``: key, ts, and those of the dashboard's aggregates). Columns: request_id
(primary key), ts (unix time), key (API key name, "open" without keys), client_request_id (the client's
``x-request-id`` header), requested_model (what the client asked for), router, tradeoff, lam, max_cost, model,
strategy, budget, task, predicted_score, predicted_cost, input_tokens, output_tokens, cost_usd (all attempts, failed
ones included), latency_s (whole request), backend_s, decision_ms, status ("ok", "failed" — every candidate
failed, 502 —, "cancelled" — the client went away mid-stream), http_status, error, attempts (candidates tried),
fallbacks (JSON list of {candidate, model, error, kind}), stream, sticky, conversation_id, candidates (the
decision's candidate table, best first, at most 10 rows of JSON ``[candidate, predicted score, predicted cost]``;
NULL for a bypass and for rows of an older routecraft).

Next to it a table ``key_spend`` (key primary key, spent_usd, requests) holds each key's running total. A trigger on
``requests`` keeps it in the same transaction as every insert (and delete or update of key/cost_usd), whoever writes
the row, so ``Ledger.spent(key)`` — what budgets are checked against across replicas — is one primary-key lookup
however long the ledger is. A ledger created before ``key_spend`` existed is backfilled from ``requests`` on open.

``summarise(source, by=...)`` gives the totals that ``routecraft usage`` prints; ``read_rows(source)`` the rows;
``usage_stats(LedgerReader(source).open(), since)`` what the gateway's dashboard shows (SQL aggregates, each query
served by an index, so a page stays fast on a ledger of 100,000 requests).
Passwords never appear in errors, logs or ``Ledger.url`` (they read ``***``).
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

DEFAULT_LEDGER = "~/.cache/routecraft/usage.sqlite"

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
    "candidates": "TEXT",
}

GROUPS = {"key": "key", "model": "model", "router": "router", "strategy": "strategy", "status": "status",
          "day": "date(ts, 'unixepoch')", "requested_model": "requested_model"}

POSTGRES_EXTRA = "pip install 'routecraft[postgres]' (psycopg[binary]>=3.1)"

#: the indexes of ``requests`` (name, columns, partial-index condition), the same on both backends. Beyond key and
#: ts, they serve the dashboard's aggregates (``usage_stats``) without reading the table: the grouped sums scan
#: ``requests_groups`` in group order (no sort), each latency / decision-time quantile walks ``requests_latency`` /
#: ``requests_decision`` to its rank, the failures and fallbacks lists read only the rows they show.
INDEXES: tuple[tuple[str, str, Optional[str]], ...] = (
    ("requests_key", "key", None),
    ("requests_ts", "ts", None),
    ("requests_groups", "router, tradeoff, model, strategy, budget, key, status, ts, cost_usd, input_tokens, "
                        "output_tokens", None),
    ("requests_latency", "latency_s, ts", "status = 'ok'"),
    ("requests_decision", "decision_ms, ts", "router <> 'bypass'"),
    ("requests_fallbacks", "ts", "fallbacks <> '[]'"),
    ("requests_failures", "ts", "status <> 'ok'"),
)


def _index_sql(name: str, cols: str, where: Optional[str], if_not_exists: bool) -> str:
    return (f"CREATE INDEX {'IF NOT EXISTS ' if if_not_exists else ''}{name} ON requests({cols})"
            + (f" WHERE {where}" if where else ""))


class LedgerError(RuntimeError):
    """The ledger cannot be opened, read or written (the message never holds a password)."""


class LedgerURLError(LedgerError, ValueError):
    """An invalid ``ledger`` URL (a ValueError too, so config validation reports it against the field)."""


# ================================================================ URLs
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
HINT = "use a file path, sqlite:///abs/path, sqlite:relative/path or postgresql://user:pass@host:port/db"


@dataclass(frozen=True)
class LedgerURL:
    """A parsed ``ledger`` URL. ``display`` is safe to show (password replaced by ``***``)."""

    backend: str  # "sqlite" or "postgresql"
    display: str
    path: Optional[Path] = None  # sqlite
    dsn: Optional[str] = None  # postgresql: the libpq URI, password included — never show it
    secrets: tuple[str, ...] = ()  # strings to scrub from driver messages

    def scrub(self, text: str) -> str:
        for s in self.secrets:
            if len(s) >= 4:  # shorter ones would blank out ordinary letters (and say little)
                text = text.replace(s, "***")
        return text


def redact_url(url: str) -> str:
    """``url`` with any password (``user:PASS@`` or ``?password=``) replaced by ``***``; other text unchanged."""
    s = str(url)
    m = _SCHEME.match(s)
    if not m or m.group(1).lower() == "sqlite" or len(m.group(1)) == 1:
        return s
    if not s[m.end():].startswith("//"):  # malformed ("postgresql:user:pw@host"): hide what could be a password
        return s[:m.end()] + re.sub(r"^([^:@/]*):.*@", r"\1:***@", s[m.end():])
    try:
        u = urlsplit(s)
    except ValueError:
        return re.sub(r"(//[^/@]*?:)[^/@]*@", r"\1***@", s)
    netloc = u.netloc
    if "@" in netloc:
        userinfo, _, hosts = netloc.rpartition("@")
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{hosts}"
    query = u.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k.lower() == "password" for k, _ in pairs):
            query = urlencode([(k, "***" if k.lower() == "password" else v) for k, v in pairs], safe="*/")
    return urlunsplit((u.scheme, netloc, u.path, query, u.fragment))


def parse_ledger_url(url: str | Path) -> LedgerURL:
    """Parse a ``ledger`` setting; LedgerURLError (a ValueError) names the problem and shows the URL without its
    password."""
    import os

    if isinstance(url, Path):
        return LedgerURL("sqlite", str(url), path=url.expanduser())
    raw = str(url).strip()
    if not raw:
        raise LedgerURLError(f"ledger: empty; {HINT}")
    m = _SCHEME.match(raw)
    scheme = m.group(1).lower() if m else None
    if scheme is None or len(scheme) == 1:  # a plain path (a one-letter "scheme" is a Windows drive)
        return LedgerURL("sqlite", raw, path=Path(os.path.expanduser(raw)))
    rest = raw[m.end():]
    if scheme == "sqlite":
        if rest.startswith("///"):  # sqlite:///abs/path (and SQLAlchemy's sqlite:////abs/path): absolute
            p = "/" + rest.lstrip("/")
        elif rest.startswith("//"):
            raise LedgerURLError(f"ledger {redact_url(raw)!r}: a sqlite URL has no host; write sqlite:///abs/path "
                                 "(absolute) or sqlite:relative/path")
        else:
            p = rest
        if not p:
            raise LedgerURLError(f"ledger {raw!r}: no file path; {HINT}")
        return LedgerURL("sqlite", raw, path=Path(os.path.expanduser(p)))
    if scheme in ("postgresql", "postgres"):
        return _parse_pg(raw)
    if "//" in rest[:2] or scheme in ("mysql", "mariadb", "redis", "mongodb", "http", "https", "file"):
        raise LedgerURLError(f"ledger {redact_url(raw)!r}: unsupported scheme {scheme!r}; {HINT}")
    return LedgerURL("sqlite", raw, path=Path(os.path.expanduser(raw)))  # e.g. a file named "usage:2024.sqlite"


def _parse_pg(raw: str) -> LedgerURL:
    display = redact_url(raw)
    if not raw.split(":", 1)[1].startswith("//"):
        raise LedgerURLError(f"ledger {display!r}: write postgresql://user:pass@host:port/db")
    try:
        u = urlsplit(raw)
    except ValueError as exc:
        raise LedgerURLError(f"ledger {display!r}: not a valid URL ({_scrub_exc(exc, raw)})") from None
    secrets: list[str] = []
    netloc = u.netloc
    userinfo, _, hosts = netloc.rpartition("@")
    if ":" in userinfo:
        pw = userinfo.split(":", 1)[1]
        secrets += [pw, unquote(pw)]
    for k, v in parse_qsl(u.query, keep_blank_values=True):
        if k.lower() == "password":
            secrets += [v]
    for hp in filter(None, hosts.split(",")):
        host, sep, port = hp.rpartition(":") if not hp.endswith("]") else (hp, "", "")
        if sep and (not port.isdigit() or not 0 < int(port) < 65536):
            raise LedgerURLError(f"ledger {display!r}: bad port {port!r}")
    db = unquote(u.path.lstrip("/"))
    if "/" in db:
        raise LedgerURLError(f"ledger {display!r}: the path must be one database name, got {db!r}")
    secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
    return LedgerURL("postgresql", display, dsn=raw, secrets=tuple(secrets))


def _scrub_exc(exc: BaseException, raw: str) -> str:
    text = str(exc)
    return text.replace(raw, redact_url(raw))


def _prepare(row: dict[str, Any]) -> dict[str, Any]:
    unknown = set(row) - set(COLUMNS)
    if unknown:
        raise LedgerError(f"unknown ledger column(s): {', '.join(sorted(unknown))}")
    row = dict(row)
    if row.get("ts") is None:
        row["ts"] = time.time()
    if isinstance(row.get("fallbacks"), (list, dict)):
        row["fallbacks"] = json.dumps(row["fallbacks"], default=str)
    if isinstance(row.get("candidates"), (list, dict)):
        row["candidates"] = json.dumps(row["candidates"], default=str, separators=(",", ":"))
    for c in ("stream", "sticky"):
        if isinstance(row.get(c), bool):
            row[c] = int(row[c])
    return row


def _added_column(decl: str) -> str:
    """A column declaration fit for ALTER TABLE ADD COLUMN on a table that may hold rows."""
    return decl.replace("PRIMARY KEY", "").replace("NOT NULL", "").strip()


# ================================================================ the backends
class BaseLedger:
    """What the gateway uses: ``open()``, ``record(row)``, ``spent(key)``, ``spent_by_key()``, ``rows()``,
    ``close()``. ``remote`` is True where a call may wait on the network (run it off the event loop)."""

    backend = "?"
    remote = False
    url = ""

    def open(self) -> "BaseLedger":  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def record(self, row: dict[str, Any]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def spent(self, key: str) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def spent_by_key(self) -> dict[str, float]:  # pragma: no cover - abstract
        raise NotImplementedError

    def rows(self, where: str = "", params: tuple = ()) -> list[dict]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __enter__(self) -> "BaseLedger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"


def _wal(conn: sqlite3.Connection, timeout_s: float) -> None:
    """WAL mode, waiting out another process doing the same: on a new file SQLite answers "database is locked" at once
    (no busy handler) to the second of two processes switching the journal mode together (workers starting)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


_SQLITE_TRIGGERS = """
CREATE TRIGGER IF NOT EXISTS requests_key_spend_ins AFTER INSERT ON requests WHEN NEW.key IS NOT NULL BEGIN
  INSERT INTO key_spend(key, spent_usd, requests) VALUES (NEW.key, COALESCE(NEW.cost_usd, 0), 1)
  ON CONFLICT(key) DO UPDATE SET spent_usd = spent_usd + excluded.spent_usd, requests = requests + 1;
END;
CREATE TRIGGER IF NOT EXISTS requests_key_spend_del AFTER DELETE ON requests WHEN OLD.key IS NOT NULL BEGIN
  UPDATE key_spend SET spent_usd = spent_usd - COALESCE(OLD.cost_usd, 0), requests = requests - 1
  WHERE key = OLD.key;
END;
CREATE TRIGGER IF NOT EXISTS requests_key_spend_upd AFTER UPDATE OF key, cost_usd ON requests BEGIN
  UPDATE key_spend SET spent_usd = spent_usd - COALESCE(OLD.cost_usd, 0), requests = requests - 1
  WHERE OLD.key IS NOT NULL AND key = OLD.key;
  INSERT INTO key_spend(key, spent_usd, requests) SELECT NEW.key, COALESCE(NEW.cost_usd, 0), 1
  WHERE NEW.key IS NOT NULL
  ON CONFLICT(key) DO UPDATE SET spent_usd = spent_usd + excluded.spent_usd, requests = requests + 1;
END;
"""


class Ledger(BaseLedger):
    """The SQLite ledger (``Ledger(path)``; ``open()`` creates the file and tables; ``record(row)`` inserts and
    commits). Safe for several processes writing one file at once (WAL, 30 s busy timeout)."""

    backend = "sqlite"
    remote = False

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.url = str(path)
        self.busy_timeout_s = busy_timeout_s
        self._conn: Optional[sqlite3.Connection] = None
        self._lock = threading.Lock()

    def open(self) -> "Ledger":
        conn = None
        try:
            if str(self.path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=self.busy_timeout_s,
                                   isolation_level=None)
            _wal(conn, self.busy_timeout_s)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("BEGIN IMMEDIATE")  # one process at a time sets the schema up (and backfills key_spend)
            try:
                cols = ", ".join(f"{k} {v}" for k, v in COLUMNS.items())
                conn.execute(f"CREATE TABLE IF NOT EXISTS requests ({cols})")
                have = {r[1] for r in conn.execute("PRAGMA table_info(requests)")}
                for c in [c for c in COLUMNS if c not in have]:  # a ledger from an older routecraft
                    conn.execute(f"ALTER TABLE requests ADD COLUMN {c} {_added_column(COLUMNS[c])}")
                for name, cols, where in INDEXES:
                    conn.execute(_index_sql(name, cols, where, True))
                has_spend = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='key_spend'"
                                         ).fetchone()
                if not has_spend:
                    conn.execute("CREATE TABLE key_spend (key TEXT PRIMARY KEY, spent_usd REAL NOT NULL DEFAULT 0, "
                                 "requests INTEGER NOT NULL DEFAULT 0)")
                    conn.execute("INSERT INTO key_spend(key, spent_usd, requests) SELECT key, "
                                 "COALESCE(SUM(cost_usd), 0), COUNT(*) FROM requests WHERE key IS NOT NULL "
                                 "GROUP BY key")
                for stmt in _SQLITE_TRIGGERS.split("END;"):
                    if stmt.strip():
                        conn.execute(stmt + "END;")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            raise LedgerError(f"cannot open usage ledger {self.path}: {exc}") from None
        self._conn = conn
        return self

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _c(self) -> sqlite3.Connection:
        if self._conn is None:
            raise LedgerError("ledger is not open")
        return self._conn

    def record(self, row: dict[str, Any]) -> None:
        """Insert one row (unknown keys are an error; missing ones are NULL) and commit (with its key's total)."""
        conn = self._c()
        row = _prepare(row)
        cols = list(row)
        sql = f"INSERT INTO requests ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})"
        try:
            with self._lock:
                conn.execute(sql, [row[c] for c in cols])
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot write the usage ledger {self.path}: {exc}") from None

    def spent(self, key: str) -> float:
        """``key``'s total cost_usd over every writer of this file (one primary-key lookup)."""
        conn = self._c()
        try:
            with self._lock:
                r = conn.execute("SELECT spent_usd FROM key_spend WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot read the usage ledger {self.path}: {exc}") from None
        return float(r[0]) if r else 0.0

    def spent_by_key(self) -> dict[str, float]:
        conn = self._c()
        with self._lock:
            rows = conn.execute("SELECT key, spent_usd FROM key_spend").fetchall()
        return {k: float(v) for k, v in rows if k is not None}

    def rows(self, where: str = "", params: tuple = ()) -> list[dict]:
        conn = self._c()
        sql = "SELECT * FROM requests" + (f" WHERE {where}" if where else "") + " ORDER BY ts"
        with self._lock:
            cur = conn.execute(sql, params)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r)) for r in cur.fetchall()]


def _psycopg():
    try:
        import psycopg
    except ImportError:
        raise LedgerError(f"a postgresql:// ledger needs the psycopg driver: {POSTGRES_EXTRA}") from None
    return psycopg


_PG_TYPES = {"REAL": "DOUBLE PRECISION", "INTEGER": "BIGINT"}
_PG_LOCK = 0x726F75746563  # pg_advisory_xact_lock id: one process at a time sets the schema up
_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION routecraft_key_spend() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('DELETE', 'UPDATE') AND OLD.key IS NOT NULL THEN
    UPDATE key_spend SET spent_usd = spent_usd - COALESCE(OLD.cost_usd, 0), requests = requests - 1
    WHERE key = OLD.key;
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.key IS NOT NULL THEN
    INSERT INTO key_spend AS s (key, spent_usd, requests) VALUES (NEW.key, COALESCE(NEW.cost_usd, 0), 1)
    ON CONFLICT (key) DO UPDATE SET spent_usd = s.spent_usd + EXCLUDED.spent_usd, requests = s.requests + 1;
  END IF;
  RETURN NULL;
END $$
"""


def _pg_decl(decl: str) -> str:
    return " ".join(_PG_TYPES.get(w, w) for w in decl.split())


class PostgresLedger(BaseLedger):
    """The PostgreSQL ledger: the same tables as the SQLite one, shared by every gateway pointed at the database.
    One connection (autocommit: each insert with its key_spend update is one transaction) behind a lock; a broken
    connection is reopened once per call, and after a failed reconnect calls fail fast for ``retry_after_s``."""

    backend = "postgresql"
    remote = True

    def __init__(self, url: str | LedgerURL, *, readonly: bool = False, connect_timeout_s: float = 5.0,
                 retry_after_s: float = 2.0) -> None:
        self._u = url if isinstance(url, LedgerURL) else parse_ledger_url(url)
        if self._u.backend != "postgresql":
            raise LedgerURLError(f"ledger {self._u.display!r}: not a postgresql:// URL")
        self.url = self._u.display
        self.readonly = readonly
        self.connect_timeout_s = connect_timeout_s
        self.retry_after_s = retry_after_s
        self._conn = None
        self._down_until = 0.0
        self._lock = threading.Lock()
        cols = list(COLUMNS)
        self._insert = (f"INSERT INTO requests ({', '.join(cols)}) VALUES ({', '.join('%s' for _ in cols)})")

    # ---- connection
    def _err(self, what: str, exc: BaseException) -> LedgerError:
        msg = self._u.scrub(str(exc).strip())
        return LedgerError(f"{what} usage ledger {self.url}: {msg}")

    def _connect(self):
        psycopg = _psycopg()
        if time.monotonic() < self._down_until:
            raise LedgerError(f"usage ledger {self.url} is unreachable (retrying in "
                              f"{self._down_until - time.monotonic():.1f} s)")
        kw: dict[str, Any] = {"autocommit": True, "connect_timeout": max(1, int(round(self.connect_timeout_s)))}
        if "application_name" not in self._u.dsn:
            kw["application_name"] = "routecraft"
        try:
            conn = psycopg.connect(self._u.dsn, **kw)
        except psycopg.Error as exc:
            self._down_until = time.monotonic() + self.retry_after_s
            raise self._err("cannot connect to the", exc) from None
        if self.readonly:
            conn.execute("SET default_transaction_read_only = on")
        return conn

    def _run(self, what: str, fn, *, retry: bool = True):
        psycopg = _psycopg()
        with self._lock:
            for attempt in (0, 1):
                if self._conn is None or self._conn.closed:
                    self._conn = self._connect()
                conn = self._conn
                try:
                    return fn(conn, attempt)
                except psycopg.OperationalError as exc:
                    broken = conn.closed or conn.broken
                    if broken:
                        self._conn = None
                        try:
                            conn.close()
                        except Exception:  # noqa: BLE001
                            pass
                    if attempt or not broken or not retry:
                        raise self._err(what, exc) from None
                except psycopg.Error as exc:
                    raise self._err(what, exc) from None

    def open(self) -> "PostgresLedger":
        if self.readonly:
            def check(conn, _):
                if conn.execute("SELECT to_regclass('requests')").fetchone()[0] is None:
                    raise LedgerError(f"{self.url}: not a routecraft usage ledger (no table 'requests')")
            self._run("cannot read the", check)
        else:
            self._run("cannot open the", self._schema, retry=False)
        return self

    def _schema(self, conn, _attempt) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_LOCK,))
            if conn.execute("SELECT to_regclass('requests')").fetchone()[0] is None:
                cols = ", ".join(f"{k} {_pg_decl(v)}" for k, v in COLUMNS.items())
                conn.execute(f"CREATE TABLE requests ({cols})")
            have = {r[0] for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'requests' "
                "AND table_schema = current_schema()")}
            for c in [c for c in COLUMNS if c not in have]:
                conn.execute(f"ALTER TABLE requests ADD COLUMN {c} {_pg_decl(_added_column(COLUMNS[c]))}")
            for name, cols, where in INDEXES:
                if conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()[0] is None:
                    conn.execute(_index_sql(name, cols, where, False))
            if conn.execute("SELECT to_regclass('key_spend')").fetchone()[0] is None:
                conn.execute("CREATE TABLE key_spend (key TEXT PRIMARY KEY, "
                             "spent_usd DOUBLE PRECISION NOT NULL DEFAULT 0, requests BIGINT NOT NULL DEFAULT 0)")
                conn.execute("INSERT INTO key_spend(key, spent_usd, requests) SELECT key, COALESCE(SUM(cost_usd), 0), "
                             "COUNT(*) FROM requests WHERE key IS NOT NULL GROUP BY key")
            if conn.execute("SELECT 1 FROM pg_trigger WHERE tgname = 'requests_key_spend' "
                            "AND tgrelid = 'requests'::regclass").fetchone() is None:
                conn.execute(_PG_FUNCTION)
                conn.execute("CREATE TRIGGER requests_key_spend AFTER INSERT OR DELETE OR UPDATE OF key, cost_usd "
                             "ON requests FOR EACH ROW EXECUTE FUNCTION routecraft_key_spend()")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                finally:
                    self._conn = None

    # ---- the interface
    def record(self, row: dict[str, Any]) -> None:
        row = _prepare(row)
        values = [row.get(c) for c in COLUMNS]
        psycopg = _psycopg()

        def ins(conn, attempt):
            try:
                conn.execute(self._insert, values)
            except psycopg.errors.UniqueViolation:
                if attempt:  # the first try committed before its connection broke: the row is in
                    return
                raise
        self._run("cannot write the", ins)

    def spent(self, key: str) -> float:
        r = self._run("cannot read the", lambda conn, _: conn.execute(
            "SELECT spent_usd FROM key_spend WHERE key = %s", (key,)).fetchone())
        return float(r[0]) if r else 0.0

    def spent_by_key(self) -> dict[str, float]:
        rows = self._run("cannot read the", lambda conn, _: conn.execute(
            "SELECT key, spent_usd FROM key_spend").fetchall())
        return {k: float(v) for k, v in rows if k is not None}

    def rows(self, where: str = "", params: tuple = ()) -> list[dict]:
        sql = "SELECT * FROM requests" + (f" WHERE {where.replace('?', '%s')}" if where else "") + " ORDER BY ts"

        def q(conn, _):
            cur = conn.execute(sql, params)
            names = [d.name for d in cur.description]
            return [dict(zip(names, r)) for r in cur.fetchall()]
        return self._run("cannot read the", q)


def open_ledger(url: str | Path = DEFAULT_LEDGER, *, readonly: bool = False) -> BaseLedger:
    """Open (creating tables where missing, unless ``readonly``) the ledger a ``ledger`` URL names: a SQLite
    ``Ledger`` or a ``PostgresLedger``. LedgerURLError for a bad URL, LedgerError when it cannot be opened."""
    u = parse_ledger_url(url)
    if u.backend == "postgresql":
        return PostgresLedger(u, readonly=readonly).open()
    if readonly:
        raise LedgerError("open_ledger(readonly=True) is for PostgreSQL; read SQLite with read_rows()")
    return Ledger(u.path).open()


# ================================================================ reading (`routecraft usage`)
def read_rows(source: str | Path, where: str = "", params: tuple = ()) -> list[dict]:
    """All ledger rows (as dicts, oldest first) matching an optional SQL ``where`` clause (``?`` placeholders).
    ``source`` is a path or ledger URL; SQLite is opened read-only, PostgreSQL in a read-only session."""
    u = parse_ledger_url(source)
    if u.backend == "postgresql":
        led = PostgresLedger(u, readonly=True).open()
        try:
            return led.rows(where, params)
        finally:
            led.close()
    p = u.path
    if not p.exists():
        raise LedgerError(f"no usage ledger at {p}")
    conn = sqlite3.connect(p.resolve().as_uri() + "?mode=ro", uri=True)
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


def summarise(source: str | Path, by: Optional[str] = None, since: Optional[float] = None) -> list[dict]:
    """Totals per group (``by``: key, model, router, strategy, status, day, requested_model; None = one total row):
    requests, ok, failed, cancelled, input/output tokens, cost_usd, latency p50/p99 (s), mean decision ms.
    ``source``: a path or ledger URL (SQLite or PostgreSQL)."""
    if by is not None and by not in GROUPS:
        raise ValueError(f"--by must be one of {', '.join(GROUPS)}, got {by!r}")
    rows = read_rows(source, "ts >= ?" if since is not None else "", (since,) if since is not None else ())
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


# ================================================================ aggregates (the dashboard)
#: columns of the dashboard's "last decisions" and "failures" lists
RECENT_COLUMNS = ("request_id", "ts", "key", "client_request_id", "requested_model", "router", "tradeoff", "lam",
                  "max_cost", "model", "strategy", "budget", "task", "predicted_score", "predicted_cost",
                  "input_tokens", "output_tokens", "cost_usd", "latency_s", "backend_s", "decision_ms", "status",
                  "http_status", "error", "attempts", "fallbacks", "stream", "sticky", "candidates")
BYPASS = "bypass"  # the router label of requests that named a pool model (nothing was decided)


class LedgerReader:
    """A read-only connection to a ledger for aggregate queries, apart from the gateway's writing connection (so a
    dashboard query never holds the writer's lock, and SQLite's WAL lets it read while rows are being committed).
    ``read(fn)`` calls ``fn(q)`` inside one read transaction — every query of one page sees the same snapshot —
    where ``q(sql, params)`` runs a query written with ``?`` placeholders and returns its rows as tuples.

    Sources: a SQLite file (opened ``mode=ro``), a PostgreSQL URL (a read-only session), or — for a ledger only one
    connection can see, ``sqlite::memory:`` — the writer ``Ledger`` itself (read under its lock)."""

    def __init__(self, source: "str | Path | BaseLedger") -> None:
        self.source = source
        self._pg: Optional[PostgresLedger] = None
        self._conn: Optional[sqlite3.Connection] = None
        self._own = True
        self._lock = threading.Lock()
        self.dialect: Optional[str] = None
        self.url: Optional[str] = None

    def open(self) -> "LedgerReader":
        """Connect (read-only); LedgerError when the ledger cannot be read."""
        source = self.source
        if isinstance(source, Ledger):
            if str(source.path) == ":memory:":  # only the writer's own connection sees it
                self.dialect, self.url = "sqlite", source.url
                self._conn, self._lock, self._own = source._c(), source._lock, False
                return self
            source = source.path
        if isinstance(source, PostgresLedger):
            source = source._u
        u = source if isinstance(source, LedgerURL) else parse_ledger_url(source)
        self.url = u.display
        if u.backend == "postgresql":
            self.dialect = "postgresql"
            self._pg = PostgresLedger(u, readonly=True).open()
            return self
        self.dialect = "sqlite"
        if not u.path.exists():
            raise LedgerError(f"no usage ledger at {u.path}")
        try:
            self._conn = sqlite3.connect(u.path.resolve().as_uri() + "?mode=ro", uri=True, check_same_thread=False,
                                         timeout=30.0, isolation_level=None)
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot read the usage ledger {u.path}: {exc}") from None
        return self

    def read(self, fn):
        if self._pg is not None:
            def go(conn, _attempt):
                with conn.transaction():
                    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    return fn(lambda sql, params=(): conn.execute(sql.replace("?", "%s"), params).fetchall())
            return self._pg._run("cannot read the", go)
        with self._lock:
            conn = self._conn
            if conn is None:
                raise LedgerError("the ledger reader is closed")
            try:
                conn.execute("BEGIN")
                try:
                    return fn(lambda sql, params=(): conn.execute(sql, params).fetchall())
                finally:
                    conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise LedgerError(f"{self.url}: cannot read the usage ledger ({exc})") from None

    def close(self) -> None:
        if self._pg is not None:
            self._pg.close()
            self._pg = None
        with self._lock:
            if self._conn is not None and self._own:
                self._conn.close()
            self._conn = None

    def __enter__(self) -> "LedgerReader":
        return self if self.dialect is not None else self.open()

    def __exit__(self, *exc) -> None:
        self.close()


def rank_of(n: int, q: float) -> int:
    """The 0-based index of quantile ``q`` among ``n`` sorted values: the rule of ``routecraft usage`` (nearest rank,
    ``round(q·(n − 1))``)."""
    return min(n - 1, max(0, int(round(q * (n - 1)))))


@dataclass(frozen=True)
class Prices:
    """A model's prices, for the counterfactual "every request to this model" (USD per million tokens)."""

    model: str
    price_in_per_m: float
    price_out_per_m: float

    def cost(self, input_tokens: float, output_tokens: float) -> float:
        return (input_tokens * self.price_in_per_m + output_tokens * self.price_out_per_m) / 1e6


_GROUP_COLS = ("router", "tradeoff", "model", "strategy", "budget", "key", "status")
HAS_FALLBACKS = "fallbacks <> '[]'"  # the gateway writes "[]" for none (the condition of index requests_fallbacks)
ROUTED = "router <> 'bypass'"  # requests a router decided (the condition of index requests_decision)
NOT_OK = "status <> 'ok'"  # failed, cancelled, refused (the condition of index requests_failures)


def usage_stats(reader: LedgerReader, since: Optional[float] = None, *, last: int = 20, failures: int = 10,
                counterfactual: Optional[Prices] = None, quantiles: tuple[float, ...] = (0.5, 0.99)) -> dict:
    """What the dashboard shows, from SQL aggregates over the rows with ``ts >= since`` (None: every row), in one
    read transaction: counts and sums grouped by (router, trade-off, model, strategy, budget, key, status), folded
    into the totals and the per-router, per-candidate, per-model, per-key and per-status tables; latency quantiles
    (``ok`` rows) and decision-time quantiles (routed rows: not ``bypass``), each a walk along its index to the
    rank (:func:`rank_of`); fallbacks per router and trade-off and per failed model and kind; the ``last`` newest
    rows and the ``failures`` newest failed, cancelled or refused ones; every key's all-time spend (``key_spend``).
    Each query is served by one of ``INDEXES``, so none reads the whole table.

    ``counterfactual``: the prices of the model every request is compared against (the strongest served one): the
    rows' real input and output tokens priced at them, against their real cost — an estimate (that model would not
    have written the same number of tokens)."""
    where, params = ("ts >= ?", (float(since),)) if since is not None else ("ts IS NOT NULL", ())
    pg = reader.dialect == "postgresql"
    jlen = "json_array_length(fallbacks::json)" if pg else "json_array_length(fallbacks)"
    cols = ", ".join(RECENT_COLUMNS)

    def quantile(q, col: str, cond: str, src: str) -> tuple[int, dict]:
        base = f"FROM {src} WHERE {cond} AND {col} IS NOT NULL AND {where}"
        n = int(q(f"SELECT COUNT(*) {base}", params)[0][0])
        vals = {}
        for x in quantiles:
            r = q(f"SELECT {col} {base} ORDER BY {col} LIMIT 1 OFFSET ?", params + (rank_of(n, x),)) if n else []
            vals[x] = float(r[0][0]) if r else None
        return n, vals

    def go(q):
        # SQLite keeps no statistics on a ledger (no ANALYZE) and, left alone, walks the wide indexes whatever the
        # window: a window holding under 5% of the rows is read through the ts index instead (its rows looked up
        # and sorted: cheaper than a walk along every entry of the wide index up to that share, measured)
        src = "requests"
        if not pg and since is not None:
            n_window = int(q(f"SELECT COUNT(*) FROM requests WHERE {where}", params)[0][0])
            if n_window * 20 < int(q("SELECT COUNT(*) FROM requests")[0][0]):
                src = "requests INDEXED BY requests_ts"
        gcols = ", ".join(_GROUP_COLS)
        groups = q(f"SELECT {gcols}, COUNT(*), SUM(COALESCE(cost_usd, 0)), SUM(COALESCE(input_tokens, 0)), "
                   f"SUM(COALESCE(output_tokens, 0)) FROM {src} WHERE {where} GROUP BY {gcols}", params)
        lat = quantile(q, "latency_s", "status = 'ok'", src)
        dec = quantile(q, "decision_ms", ROUTED, src)
        # one row per request with fallbacks (few, read through the partial index; grouping them in SQL would
        # make the planner walk requests_groups instead and read the whole table)
        fb_router = q(f"SELECT router, tradeoff, {jlen} FROM requests WHERE {HAS_FALLBACKS} AND {where}", params)
        if pg:
            fb_model = q(f"SELECT f->>'model', f->>'kind', COUNT(*) FROM requests, "
                         f"json_array_elements(fallbacks::json) AS f WHERE {HAS_FALLBACKS} AND {where} "
                         f"GROUP BY 1, 2", params)
        else:
            fb_model = q(f"SELECT json_extract(f.value, '$.model'), json_extract(f.value, '$.kind'), COUNT(*) "
                         f"FROM requests, json_each(requests.fallbacks) AS f WHERE {HAS_FALLBACKS} AND {where} "
                         f"GROUP BY 1, 2", params)
        recent = q(f"SELECT {cols} FROM requests WHERE {where} ORDER BY ts DESC LIMIT ?", params + (int(last),))
        failed = q(f"SELECT {cols} FROM requests WHERE {NOT_OK} AND {where} ORDER BY ts DESC LIMIT ?",
                   params + (int(failures),))
        spend = q("SELECT key, spent_usd, requests FROM key_spend")
        return groups, lat, dec, fb_router, fb_model, recent, failed, spend

    groups, lat, dec, fb_router, fb_model, recent, failed, spend = reader.read(go)
    g = [dict(zip(_GROUP_COLS + ("requests", "cost_usd", "input_tokens", "output_tokens"), r)) for r in groups]
    return _fold(g, lat, dec, fb_router, fb_model, recent, failed, spend, since, counterfactual)


def _fold(g, lat, dec, fb_router, fb_model, recent, failed, spend, since, cf: Optional[Prices]) -> dict:
    """The tables of ``usage_stats`` from its query results."""
    sums = ("requests", "cost_usd", "input_tokens", "output_tokens")
    statuses = ("ok", "failed", "cancelled", "refused")

    def fold(keys: tuple[str, ...], rows=None) -> list[dict]:
        out: dict[tuple, dict] = {}
        for x in (g if rows is None else rows):
            k = tuple(x[c] for c in keys)
            d = out.get(k)
            if d is None:
                d = out[k] = {**{c: x[c] for c in keys}, **{s: 0 for s in sums}, **{s: 0 for s in statuses}}
            for s in sums:
                d[s] += x[s] or 0
            if x["status"] in statuses:
                d[x["status"]] += int(x["requests"])
        for d in out.values():
            d["cost_usd"] = float(d["cost_usd"])
            for s in ("requests", "input_tokens", "output_tokens"):
                d[s] = int(d[s])
            if cf is not None:
                d["counterfactual_usd"] = cf.cost(d["input_tokens"], d["output_tokens"])
        return sorted(out.values(), key=lambda d: (-d["requests"], [str(d[c]) for c in keys]))

    totals = fold(())
    totals = totals[0] if totals else {**{s: 0 for s in sums}, "cost_usd": 0.0, **{s: 0 for s in statuses},
                                       **({"counterfactual_usd": 0.0} if cf is not None else {})}
    fb: dict[tuple, tuple[int, int]] = {}
    for r, t, k in fb_router:
        n0, k0 = fb.get((r, t), (0, 0))
        fb[(r, t)] = (n0 + 1, k0 + int(k or 0))
    totals["fallback_requests"] = sum(n for n, _ in fb.values())
    totals["fallbacks"] = sum(k for _, k in fb.values())
    by_router = fold(("router", "tradeoff"))
    for d in by_router:
        d["fallback_requests"], d["fallbacks"] = fb.get((d["router"], d["tradeoff"]), (0, 0))
    chosen = fold(("model", "strategy", "budget"), [x for x in g if x["router"] != BYPASS])
    n_routed = sum(d["requests"] for d in chosen)
    for d in chosen:
        d["share"] = d["requests"] / n_routed if n_routed else 0.0
    by_model = fold(("model",))
    for d in by_model:
        d["cost_share"] = d["cost_usd"] / totals["cost_usd"] if totals["cost_usd"] else 0.0
    all_time = {k: (float(v), int(n)) for k, v, n in spend if k is not None}
    by_key = fold(("key",))
    for d in by_key:
        d["all_time_usd"], d["all_time_requests"] = all_time.get(d["key"], (0.0, 0))
    out = {
        "since": since, "now": time.time(), "totals": totals, "routed_requests": n_routed,
        "by_router": by_router, "by_candidate": chosen, "by_model": by_model, "by_key": by_key,
        "by_status": fold(("status",)),
        "fallbacks_by_model": sorted(({"model": m, "kind": k, "count": int(c)} for m, k, c in fb_model),
                                     key=lambda d: (-d["count"], str(d["model"]), str(d["kind"]))),
        "latency_s": {"n": lat[0], **{f"p{round(x * 100):g}": v for x, v in lat[1].items()}},
        "decision_ms": {"n": dec[0], **{f"p{round(x * 100):g}": v for x, v in dec[1].items()}},
        "recent": [_decode(dict(zip(RECENT_COLUMNS, r))) for r in recent],
        "failures": [_decode(dict(zip(RECENT_COLUMNS, r))) for r in failed],
        "key_spend": {k: v for k, (v, _) in all_time.items()},
    }
    if cf is not None:
        actual, would = float(totals["cost_usd"]), float(totals["counterfactual_usd"])
        out["counterfactual"] = {"model": cf.model, "price_in_per_m": cf.price_in_per_m,
                                 "price_out_per_m": cf.price_out_per_m, "input_tokens": totals["input_tokens"],
                                 "output_tokens": totals["output_tokens"], "counterfactual_usd": would,
                                 "actual_usd": actual, "saving_usd": would - actual,
                                 "saving_share": (would - actual) / would if would > 0 else None}
    return out


def _decode(row: dict) -> dict:
    for c in ("fallbacks", "candidates"):
        v = row.get(c)
        if isinstance(v, str) and v:
            try:
                row[c] = json.loads(v)
            except ValueError:
                row[c] = None
    return row
