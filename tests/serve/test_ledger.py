"""The usage ledger on both backends (SQLite and a real PostgreSQL server, see tests/pg_fixture.py) with the same
assertions: URLs, the record/spent/summarise round trip, budgets shared by two replicas, several processes writing
at once, and `routecraft usage` (both backends, a narrow terminal). PostgreSQL-only checks: test_ledger_postgres.py."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import pg_fixture
from pg_fixture import PG_PASSWORD
from routecraft.serve.auth import KeyStore
from routecraft.serve.config import KeySpec, ServeConfigError, config_from_dict, hash_key
from routecraft.serve.conversation import RequestError
from routecraft.serve.ledger import (
    COLUMNS,
    DEFAULT_LEDGER,
    Ledger,
    LedgerError,
    LedgerURLError,
    PostgresLedger,
    open_ledger,
    parse_ledger_url,
    read_rows,
    redact_url,
    summarise,
)

postgres_server, pg_url = pg_fixture.postgres_server, pg_fixture.pg_url  # the fixtures

HEADERS = ("requests", "ok", "failed", "cancelled", "in tok", "out tok", "cost $", "p50 s", "p99 s", "decide ms",
           "fallbacks")


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request, tmp_path):
    """A fresh, empty ledger URL on each backend."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'usage.sqlite'}"  # sqlite:///tmp/...
    return request.getfixturevalue("pg_url")


def _row(i: int, key: str = "a", cost: float = 0.1, **kw) -> dict:
    return {"request_id": f"r{i}", "key": key, "model": "m1", "status": "ok", "cost_usd": cost, "input_tokens": 10,
            "output_tokens": 5, "latency_s": 0.1, "decision_ms": 0.5, "stream": True, "sticky": False, **kw}


# ---- URLs --------------------------------------------------------------------------------------------------------
def test_ledger_urls(tmp_path):
    home = Path(os.path.expanduser("~"))
    for url, path in [("usage.sqlite", Path("usage.sqlite")),
                      (DEFAULT_LEDGER, home / ".cache/routecraft/usage.sqlite"),
                      ("sqlite:///abs/dir/u.sqlite", Path("/abs/dir/u.sqlite")),
                      ("sqlite:////abs/u.sqlite", Path("/abs/u.sqlite")),
                      ("sqlite:rel/u.sqlite", Path("rel/u.sqlite")),
                      ("sqlite:~/u.sqlite", home / "u.sqlite"),
                      (":memory:", Path(":memory:")),
                      ("sqlite::memory:", Path(":memory:")),
                      ("usage:2024.sqlite", Path("usage:2024.sqlite")),
                      (str(tmp_path / "x.db"), tmp_path / "x.db")]:
        u = parse_ledger_url(url)
        assert (u.backend, u.path) == ("sqlite", path), url
    for url in ["postgresql://u:pw@db.example:5432/usage", "postgres://u@h/usage?sslmode=require",
                "postgresql://u:pw@h1:5432,h2:5433/usage", "postgresql:///usage?host=/var/run/postgresql"]:
        u = parse_ledger_url(url)
        assert u.backend == "postgresql" and u.dsn == url and "pw@" not in u.display
    assert isinstance(open_ledger(":memory:"), Ledger)


@pytest.mark.parametrize("url, match", [
    ("", "empty"),
    ("   ", "empty"),
    ("mysql://bob:Hunter2-secret@h/db", "unsupported scheme 'mysql'"),
    ("sqlite://host/x.sqlite", "no host"),
    ("sqlite:", "no file path"),
    ("postgresql://bob:Hunter2-secret@h:notaport/db", "bad port"),
    ("postgresql://bob:Hunter2-secret@h:99999/db", "bad port"),
    ("postgresql://bob:Hunter2-secret@h/a/b", "one database name"),
    ("postgresql:bob:Hunter2-secret@h/db", "postgresql://user:pass@host:port/db"),
])
def test_bad_ledger_urls_are_clear_and_hide_the_password(url, match):
    with pytest.raises(LedgerURLError, match=match) as ei:
        parse_ledger_url(url)
    assert isinstance(ei.value, ValueError) and isinstance(ei.value, LedgerError)
    assert "Hunter2-secret" not in str(ei.value) and str(ei.value).startswith("ledger")
    with pytest.raises(ServeConfigError) as ei:  # the config names the field
        config_from_dict({"ledger": url})
    assert "field 'ledger'" in str(ei.value) and "Hunter2-secret" not in str(ei.value)


def test_redact_url_and_config_field():
    assert redact_url("postgresql://bob:s3cr3t@h:5432/db") == "postgresql://bob:***@h:5432/db"
    assert redact_url("postgresql://bob@h/db?password=s3cr3t&sslmode=require") == \
        "postgresql://bob@h/db?password=***&sslmode=require"
    assert redact_url("/var/lib/usage.sqlite") == "/var/lib/usage.sqlite"
    url = "postgresql://bob:s3cr3t-pw@db:5432/usage"
    assert config_from_dict({"ledger": url}).ledger == url
    assert config_from_dict({}).ledger == DEFAULT_LEDGER
    led = PostgresLedger(url)  # not opened: nothing to reach
    assert "s3cr3t-pw" not in led.url and "s3cr3t-pw" not in repr(led)


def test_missing_driver_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg -> ImportError
    with pytest.raises(LedgerError, match=r"routecraft\[postgres\]"):
        open_ledger("postgresql://u:pw@127.0.0.1:1/db")


# ---- both backends, the same assertions ---------------------------------------------------------------------------
def test_round_trip(ledger_url):
    led = open_ledger(ledger_url)
    rows = [("a", "m1", "ok", 0.5), ("a", "m2", "ok", 0.25), ("b", "m1", "failed", 0.0), ("c", "m1", "ok", None)]
    for i, (key, model, status, cost) in enumerate(rows):
        led.record({"request_id": f"r{i}", "key": key, "model": model, "status": status, "cost_usd": cost,
                    "input_tokens": 10, "output_tokens": 5, "latency_s": 0.1 * (i + 1), "decision_ms": 0.5,
                    "stream": i % 2 == 0, "fallbacks": [{"candidate": "x", "error": "down"}] if i == 1 else []})
    with pytest.raises(LedgerError):
        led.record({"request_id": "r0", "status": "ok"})  # request ids are unique
    with pytest.raises(LedgerError, match="unknown ledger column"):
        led.record({"request_id": "r9", "status": "ok", "colour": "red"})
    assert led.spent("a") == pytest.approx(0.75) and led.spent("b") == 0.0 and led.spent("nobody") == 0.0
    assert led.spent_by_key() == pytest.approx({"a": 0.75, "b": 0.0, "c": 0.0})
    led.close()
    again = open_ledger(ledger_url)  # reopening an existing ledger keeps everything
    assert again.spent("a") == pytest.approx(0.75)
    again.close()

    got = read_rows(ledger_url)
    assert [r["request_id"] for r in got] == ["r0", "r1", "r2", "r3"]
    assert set(got[0]) == set(COLUMNS) and got[0]["stream"] == 1 and got[1]["stream"] == 0
    assert got[1]["fallbacks"] == '[{"candidate": "x", "error": "down"}]'
    by_key = {r["key"]: r for r in summarise(ledger_url, by="key")}
    assert by_key["a"]["requests"] == 2 and by_key["a"]["cost_usd"] == pytest.approx(0.75)
    assert by_key["b"]["failed"] == 1 and by_key["a"]["fallbacks"] == 1
    total = summarise(ledger_url)[0]
    assert total["requests"] == 4 and total["input_tokens"] == 40 and total["ok"] == 3
    assert total["latency_p50_s"] == pytest.approx(0.2)
    assert summarise(ledger_url, since=time.time() + 3600) == []
    assert [r["day"] for r in summarise(ledger_url, by="day")] == [time.strftime("%Y-%m-%d", time.gmtime())]


def _keystore(led, budget=1.0, refresh_s=0.0, **kw):
    return KeyStore([KeySpec(name="team", sha256=hash_key("k"), budget_usd=budget)], spent_source=led.spent,
                    refresh_s=refresh_s, **kw)


def test_two_replicas_share_one_budget(ledger_url):
    """Replica A records $0.6, replica B $0.6 for a $1 key: both refuse the next request."""
    a, b = open_ledger(ledger_url), open_ledger(ledger_url)
    ka, kb = _keystore(a), _keystore(b)
    ka.load_spent(a.spent_by_key())
    kb.load_spent(b.spent_by_key())
    for i, (led, ks) in enumerate([(a, ka), (b, kb)]):
        ks.check_budget("team")  # each alone is under budget
        ks.charge("team", 0.6)
        led.record(_row(i, key="team", cost=0.6))
    for ks in (ka, kb):
        with pytest.raises(RequestError) as ei:
            ks.check_budget("team")
        assert ei.value.status == 429 and "budget" in str(ei.value)
    # without the shared source (the old behaviour) replica A would still let it through
    alone = KeyStore([KeySpec(name="team", sha256=hash_key("k"), budget_usd=1.0)])
    alone.charge("team", 0.6)
    alone.check_budget("team")
    # a third replica started later loads the shared total
    c = open_ledger(ledger_url)
    kc = KeyStore([KeySpec(name="team", sha256=hash_key("k"), budget_usd=1.0)])
    kc.load_spent(c.spent_by_key())
    with pytest.raises(RequestError):
        kc.check_budget("team")
    for led in (a, b, c):
        led.close()


def test_refresh_interval_bounds_the_reads(ledger_url):
    now = [100.0]
    a, b = open_ledger(ledger_url), open_ledger(ledger_url)
    calls = []

    def source(name):
        calls.append(name)
        return a.spent(name)
    ks = KeyStore([KeySpec(name="team", sha256=hash_key("k"), budget_usd=1.0)], spent_source=source,
                  refresh_s=0.5, clock=lambda: now[0])
    ks.check_budget("team")
    b.record(_row(1, key="team", cost=1.5))  # another replica spends it all
    ks.check_budget("team")  # within refresh_s: not re-read, allowed
    assert len(calls) == 1
    now[0] += 0.6
    with pytest.raises(RequestError):
        ks.check_budget("team")
    assert len(calls) == 2
    a.close()
    b.close()


def test_push_refresher_shares_the_budget_without_blocking(ledger_url):
    import asyncio

    a, b = open_ledger(ledger_url), open_ledger(ledger_url)
    ka = KeyStore([KeySpec(name="team", sha256=hash_key("k"), budget_usd=1.0)])
    kb = KeyStore([KeySpec(name="team", sha256=hash_key("k"), budget_usd=1.0)])

    async def main():
        tasks = [asyncio.create_task(ka.run_refresher(a.spent_by_key, 0.05)),
                 asyncio.create_task(kb.run_refresher(b.spent_by_key, 0.05))]
        for i, (led, ks) in enumerate([(a, ka), (b, kb)]):
            ks.check_budget("team")
            ks.charge("team", 0.6)
            await asyncio.to_thread(led.record, _row(i, key="team", cost=0.6))
        await asyncio.sleep(0.3)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    asyncio.run(main())
    for ks in (ka, kb):
        assert ks.keys["team"].spent_usd == pytest.approx(1.2)
        with pytest.raises(RequestError):
            ks.check_budget("team")
    assert asyncio.run(KeyStore([]).run_refresher(a.spent_by_key)) is None  # no budgets: nothing to do
    a.close()
    b.close()


WRITER = textwrap.dedent("""
    import os, sys, time
    from routecraft.serve.ledger import open_ledger
    url, wid, n, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    while not os.path.exists(go):
        time.sleep(0.002)
    led = open_ledger(url)  # the schema is created by whichever process comes first
    for i in range(n):
        led.record({"request_id": f"w{wid}-{i}", "key": f"k{wid % 2}", "status": "ok", "model": "m",
                    "cost_usd": 0.001 * (i % 7 + 1), "input_tokens": i})
    led.close()
""")


def test_processes_writing_at_once_lose_nothing(ledger_url, tmp_path):
    procs_n, rows_n = 4, int(os.environ.get("LEDGER_TEST_ROWS", "200"))
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, ledger_url, str(w), str(rows_n), str(go)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for w in range(procs_n)]
    time.sleep(1.0)  # let every interpreter start, then release them together
    go.touch()
    for p in procs:
        out, _ = p.communicate(timeout=240)
        assert p.returncode == 0, out
    rows = read_rows(ledger_url)
    assert len(rows) == procs_n * rows_n
    assert {r["request_id"] for r in rows} == {f"w{w}-{i}" for w in range(procs_n) for i in range(rows_n)}
    per_worker = sum(0.001 * (i % 7 + 1) for i in range(rows_n))
    led = open_ledger(ledger_url)
    for k in ("k0", "k1"):
        assert led.spent(k) == pytest.approx(2 * per_worker)
        assert sum(r["cost_usd"] for r in rows if r["key"] == k) == pytest.approx(2 * per_worker)
    assert led.spent_by_key() == pytest.approx({"k0": 2 * per_worker, "k1": 2 * per_worker})
    led.close()
    assert summarise(ledger_url)[0]["input_tokens"] == procs_n * sum(range(rows_n))


def test_usage_command_both_backends_narrow_terminal(ledger_url):
    led = open_ledger(ledger_url)
    led.record(_row(1, model="a-rather-long-model-name-for-the-table"))
    led.record(_row(2, key="b", status="failed", cost=0.0))
    led.close()
    env = {**os.environ, "COLUMNS": "80", "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("ROUTECRAFT_LEDGER", None)
    res = subprocess.run([sys.executable, "-m", "routecraft.serve", "usage", "--ledger", ledger_url, "--by", "model"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    for h in ("model",) + HEADERS:  # every header whole, nothing cut to "…"
        assert f" {h} " in res.stdout, (h, res.stdout)
    assert "a-rather-long-model-name-for-the-table" in res.stdout and "…" not in res.stdout
    assert PG_PASSWORD not in res.stdout + res.stderr
    res = subprocess.run([sys.executable, "-m", "routecraft.serve", "usage", "--json", "--by", "key"],
                         capture_output=True, text=True, env={**env, "ROUTECRAFT_LEDGER": ledger_url}, timeout=120)
    assert res.returncode == 0, res.stderr
    assert '"requests": 1' in res.stdout and '"failed": 1' in res.stdout


# ---- SQLite only ------------------------------------------------------------------------------------------------
def test_sqlite_ledger_from_an_older_routecraft(tmp_path):
    """A ledger without key_spend (and without newer columns) is migrated: columns added, totals backfilled, and rows
    an older writer still inserts keep the totals right (the trigger, not the writer, maintains them)."""
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE requests (request_id TEXT PRIMARY KEY, ts REAL NOT NULL, key TEXT, model TEXT, "
                 "cost_usd REAL, status TEXT NOT NULL)")
    conn.executemany("INSERT INTO requests VALUES (?, ?, ?, ?, ?, ?)",
                     [("o1", 1.0, "a", "m", 0.5, "ok"), ("o2", 2.0, "a", "m", 0.25, "ok"), ("o3", 3.0, "b", "m", None,
                                                                                             "ok")])
    conn.commit()
    conn.close()
    led = Ledger(path).open()
    assert led.spent("a") == pytest.approx(0.75) and led.spent_by_key() == pytest.approx({"a": 0.75, "b": 0.0})
    led.record(_row(9, key="a", cost=0.25, conversation_id="c1"))
    raw = sqlite3.connect(path)  # an old writer
    raw.execute("INSERT INTO requests (request_id, ts, key, cost_usd, status) VALUES ('o4', 4.0, 'a', 1.0, 'ok')")
    raw.commit()
    assert led.spent("a") == pytest.approx(2.0)
    raw.execute("DELETE FROM requests WHERE request_id = 'o4'")
    raw.commit()
    raw.close()
    assert led.spent("a") == pytest.approx(1.0)
    led.close()
    assert {r["request_id"] for r in read_rows(path)} == {"o1", "o2", "o3", "r9"}


def test_keystore_shared_spend_rules():
    now = [0.0]
    shared = {"v": 0.0, "fail": False}

    def source(name):
        if shared["fail"]:
            raise LedgerError("usage ledger postgresql://u:***@h/db is unreachable")
        return shared["v"]
    ks = KeyStore([KeySpec(name="a", sha256=hash_key("ka"), budget_usd=1.0)], spent_source=source, refresh_s=0.5,
                  clock=lambda: now[0])
    ks.check_budget("a")
    ks.charge("a", 0.7)  # the local charge counts at once...
    now[0] += 1
    ks.check_budget("a")  # ...and a source that has not got its row yet does not erase it
    assert ks.keys["a"].spent_usd == pytest.approx(0.7)
    ks.charge("a", 0.2)
    shared["v"] = 0.9  # both rows are in
    now[0] += 1
    ks.check_budget("a")
    assert ks.keys["a"].spent_usd == pytest.approx(0.9)
    shared["fail"] = True  # the ledger goes away: keep counting locally, do not fail the request
    ks.charge("a", 0.2)
    now[0] += 1
    with pytest.raises(RequestError):
        ks.check_budget("a")  # 1.1 locally
    shared.update(fail=False, v=0.0)  # an operator reset the key's rows: shows within two refreshes
    now[0] += 10
    ks.refresh("a", force=True)
    now[0] += 10
    ks.check_budget("a")
    assert ks.keys["a"].spent_usd == 0.0
    ks.set_spent_source(None)
    ks.charge("a", 2.0)
    with pytest.raises(RequestError):
        ks.check_budget("a")
    with pytest.raises(ValueError):
        KeyStore([], refresh_s=-1)
    assert KeyStore([]).refresh_s == 0.5


def _open_at(path: str, t0: float, q) -> None:
    while time.time() < t0:
        pass
    try:
        Ledger(path).open().close()
        q.put("ok")
    except Exception as exc:  # noqa: BLE001 - reported to the test
        q.put(f"{type(exc).__name__}: {exc}")


def test_processes_opening_a_new_ledger_together_all_open_it(tmp_path):
    """Gateway workers open one new SQLite ledger at the same moment: switching it to WAL, the second used to get
    "database is locked" at once (SQLite calls no busy handler there), and its worker died."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    for i in range(10):
        q = ctx.Queue()
        t0 = time.time() + 0.2
        procs = [ctx.Process(target=_open_at, args=(str(tmp_path / f"u{i}.sqlite"), t0, q)) for _ in range(3)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
        assert [q.get(timeout=5) for _ in procs] == ["ok"] * 3
