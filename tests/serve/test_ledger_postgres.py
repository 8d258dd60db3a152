"""The PostgreSQL ledger against a real server (tests/pg_fixture.py starts one; CI sets ROUTECRAFT_REQUIRE_POSTGRES=1
so these fail rather than skip when it cannot): the schema it creates, migration of an older ledger, the password
never shown, read-only reads, reconnecting after the server drops the connection, and several processes creating the
schema at once. The tests shared with SQLite are in test_ledger.py."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

import pg_fixture
from pg_fixture import PG_PASSWORD, PG_USER, require_postgres, with_db

try:
    import psycopg
except ImportError:  # pragma: no cover - the dev extra installs it
    if require_postgres():
        raise
    pytest.skip("psycopg is not installed (pip install 'routecraft[postgres]')", allow_module_level=True)

from routecraft.serve.ledger import COLUMNS, LedgerError, PostgresLedger, open_ledger, read_rows, redact_url, summarise

postgres_server, pg_url = pg_fixture.postgres_server, pg_fixture.pg_url  # the fixtures


def _q(url, sql, params=()):
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []


def test_schema_is_created(pg_url):
    assert _q(pg_url, "SELECT to_regclass('requests')") == [(None,)]
    led = open_ledger(pg_url)
    assert isinstance(led, PostgresLedger) and led.remote and led.backend == "postgresql"
    cols = dict(_q(pg_url, "SELECT column_name, data_type FROM information_schema.columns "
                           "WHERE table_name = 'requests'"))
    assert set(cols) == set(COLUMNS)
    assert cols["cost_usd"] == cols["ts"] == "double precision" and cols["input_tokens"] == "bigint"
    assert cols["request_id"] == "text"
    idx = {r[0] for r in _q(pg_url, "SELECT indexname FROM pg_indexes WHERE tablename = 'requests'")}
    assert {"requests_key", "requests_ts", "requests_pkey"} <= idx
    assert _q(pg_url, "SELECT count(*) FROM pg_trigger WHERE tgname = 'requests_key_spend'") == [(1,)]
    assert _q(pg_url, "SELECT to_regclass('key_spend')::text") == [("key_spend",)]
    led.close()
    open_ledger(pg_url).close()  # opening again changes nothing
    assert len(_q(pg_url, "SELECT column_name FROM information_schema.columns WHERE table_name = 'requests'")) \
        == len(COLUMNS)


def test_older_ledger_is_migrated_and_totals_follow_any_writer(pg_url):
    _q(pg_url, "CREATE TABLE requests (request_id TEXT PRIMARY KEY, ts DOUBLE PRECISION NOT NULL, key TEXT, "
               "cost_usd DOUBLE PRECISION, status TEXT NOT NULL)")
    _q(pg_url, "INSERT INTO requests VALUES ('o1', 1, 'a', 0.5, 'ok'), ('o2', 2, 'a', 0.25, 'ok'), "
               "('o3', 3, 'b', NULL, 'failed')")
    led = open_ledger(pg_url)
    assert led.spent("a") == pytest.approx(0.75) and led.spent_by_key() == pytest.approx({"a": 0.75, "b": 0.0})
    assert {r[0] for r in _q(pg_url, "SELECT column_name FROM information_schema.columns "
                                     "WHERE table_name = 'requests'")} == set(COLUMNS)
    led.record({"request_id": "n1", "key": "a", "status": "ok", "cost_usd": 0.25, "model": "m"})
    _q(pg_url, "INSERT INTO requests (request_id, ts, key, cost_usd, status) VALUES ('x', 5, 'a', 1.0, 'ok')")
    assert led.spent("a") == pytest.approx(2.0)  # a writer that knows nothing of key_spend still counts
    _q(pg_url, "UPDATE requests SET key = 'b' WHERE request_id = 'x'")
    assert led.spent("a") == pytest.approx(1.0) and led.spent("b") == pytest.approx(1.0)
    _q(pg_url, "DELETE FROM requests WHERE request_id = 'x'")
    assert led.spent_by_key() == pytest.approx({"a": 1.0, "b": 0.0})
    led.close()


def test_password_is_never_shown(postgres_server, pg_url):
    wrong = pg_url.replace(PG_PASSWORD, "Wr0ng-Passw0rd-XYZ")
    with pytest.raises(LedgerError) as ei:
        open_ledger(wrong)
    msg = str(ei.value)
    assert "Wr0ng-Passw0rd-XYZ" not in msg and "***" in msg and "password authentication failed" in msg
    with pytest.raises(LedgerError) as ei:
        read_rows(wrong)
    assert "Wr0ng-Passw0rd-XYZ" not in str(ei.value)
    missing_db = with_db(postgres_server.url, "no_such_db")
    with pytest.raises(LedgerError) as ei:
        open_ledger(missing_db)
    assert PG_PASSWORD not in str(ei.value) and "no_such_db" in str(ei.value)
    led = open_ledger(pg_url)
    assert PG_PASSWORD not in led.url + repr(led) and led.url == redact_url(pg_url)
    with pytest.raises(LedgerError) as ei:
        led.record({"request_id": "r", "status": None})  # NOT NULL violated: the driver's message, scrubbed
    assert PG_PASSWORD not in str(ei.value)
    led.close()


def test_password_from_pgpassword(monkeypatch, pg_url):
    monkeypatch.setenv("PGPASSWORD", PG_PASSWORD)
    bare = pg_url.replace(f":{PG_PASSWORD}@", "@")
    assert PG_PASSWORD not in bare
    led = open_ledger(bare)
    led.record({"request_id": "r1", "key": "a", "status": "ok", "cost_usd": 0.5})
    assert led.spent("a") == 0.5
    led.close()


def test_reads_are_read_only(pg_url):
    with pytest.raises(LedgerError, match="not a routecraft usage ledger"):
        summarise(pg_url)
    assert _q(pg_url, "SELECT to_regclass('requests')") == [(None,)]  # reading created nothing
    open_ledger(pg_url).close()
    ro = PostgresLedger(pg_url, readonly=True).open()
    with pytest.raises(LedgerError, match="read-only"):
        ro.record({"request_id": "r1", "status": "ok"})
    ro.close()
    assert summarise(pg_url) == []


def test_reconnects_after_the_connection_drops(pg_url):
    led = open_ledger(pg_url)
    led.record({"request_id": "r1", "key": "a", "status": "ok", "cost_usd": 0.5})
    pid = led._conn.info.backend_pid
    _q(pg_url, "SELECT pg_terminate_backend(%s)", (pid,))
    time.sleep(0.2)
    led.record({"request_id": "r2", "key": "a", "status": "ok", "cost_usd": 0.5})  # one reconnect, no error
    assert led._conn.info.backend_pid != pid
    assert led.spent("a") == pytest.approx(1.0)
    led.close()


def test_unreachable_server_fails_fast_after_the_first_try():
    led = PostgresLedger(f"postgresql://{PG_USER}:{PG_PASSWORD}@127.0.0.1:1/db", retry_after_s=30)
    with pytest.raises(LedgerError, match="cannot connect") as ei:
        led.spent("a")
    assert PG_PASSWORD not in str(ei.value)
    t = time.perf_counter()
    with pytest.raises(LedgerError, match="unreachable"):
        led.spent("a")
    assert time.perf_counter() - t < 0.05


OPENER = textwrap.dedent("""
    import os, sys, time
    from routecraft.serve.ledger import open_ledger
    url, wid, go = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    while not os.path.exists(go):
        time.sleep(0.002)
    led = open_ledger(url)
    led.record({"request_id": f"p{wid}", "key": "a", "status": "ok", "cost_usd": 0.25})
    led.close()
""")


def test_several_gateways_create_the_schema_at_once(pg_url, tmp_path):
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [subprocess.Popen([sys.executable, "-c", OPENER, pg_url, str(w), str(go)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for w in range(6)]
    time.sleep(1.0)
    go.touch()
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0, out
    led = open_ledger(pg_url)
    assert led.spent("a") == pytest.approx(1.5) and len(read_rows(pg_url)) == 6
    led.close()
