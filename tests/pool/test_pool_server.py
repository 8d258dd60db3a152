"""`pool up / status / down` with a real SmolLM2 server, across processes, with stale-pid detection."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time

import pytest

from routecraft.pool import server as S
from routecraft.pool.client import ChatClient
from routecraft.pool.config import load_pool


@pytest.fixture
def state_file(tmp_path, monkeypatch):
    path = tmp_path / "pool-state.json"
    monkeypatch.setenv(S.ENV_STATE, str(path))
    yield path
    S.down()  # never leave servers behind


def _cli(*args: str, env_state) -> subprocess.CompletedProcess:
    env = dict(os.environ, **{S.ENV_STATE: str(env_state)})
    return subprocess.run([sys.executable, "-m", "routecraft.pool", *args], capture_output=True, text=True,
                          env=env, timeout=240)


def test_stale_entries_are_detected_and_pruned(state_file):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    state_file.write_text(json.dumps({
        "ghost": {"name": "ghost", "local": "smollm2-135m", "model_path": "/x", "pid": dead.pid, "pgid": dead.pid,
                  "port": 1, "base_url": "http://127.0.0.1:1/v1"},
        # a live pid that is not a routecraft worker (this test process) must not count as running
        "impostor": {"name": "impostor", "local": "smollm2-135m", "model_path": "/x", "pid": os.getpid(),
                     "pgid": None, "port": 2, "base_url": "http://127.0.0.1:2/v1"},
    }))
    rows = {r["name"]: r for r in S.status()}
    assert rows["ghost"]["state"] == "stale" and rows["impostor"]["state"] == "stale"
    assert json.loads(state_file.read_text()) == {}
    assert S.status() == []
    assert S.down() == []
    with pytest.raises(S.ServerError, match="not running; start it with `routecraft pool up"):
        S.base_url_for(load_pool().get("smollm2-135m"))


@pytest.mark.slow
def test_up_status_down_round_trip_across_processes(state_file, smollm_path, caplog):
    pool = load_pool()
    # up in another process (the CLI), then use it from this one through the state file
    t0 = time.perf_counter()
    r = _cli("up", "--models", "smollm2-135m", "--ctx", "1024", "--threads", "1", env_state=state_file)
    start_s = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr
    name, url = r.stdout.split()
    assert name == "smollm2-135m" and url.startswith("http://127.0.0.1:") and url.endswith("/v1")
    assert start_s < 60

    rows = S.status()
    assert len(rows) == 1 and rows[0]["state"] == "ready" and rows[0]["base_url"] == url
    pid = rows[0]["pid"]
    assert S.pid_alive(pid)
    model = pool.get("smollm2-135m")
    assert S.base_url_for(model) == url

    async def go():
        async with ChatClient(model, S.base_url_for(model)) as c:
            return await c.chat([{"role": "user", "content": "Say hello."}], max_tokens=8)

    res = asyncio.run(go())
    assert res.output_tokens > 0 and res.cost_usd == pytest.approx(model.cost(res.input_tokens, res.output_tokens))

    # a second `up` reuses the running server, as it is: asking for more slots than it has says so
    with caplog.at_level(logging.WARNING, logger=S.log.name):
        assert S.up(pool, ["smollm2-135m"]) == {"smollm2-135m": url}
        assert not caplog.records
        assert S.up(pool, ["smollm2-135m"], parallel=4) == {"smollm2-135m": url}
    assert "with 1 slot(s), fewer than the 4 asked for" in caplog.text
    assert S.status()[0]["pid"] == pid

    st = _cli("status", "--json", env_state=state_file)
    assert st.returncode == 0 and json.loads(st.stdout)[0]["state"] == "ready"

    down = _cli("down", env_state=state_file)
    assert down.returncode == 0 and "stopped 1 server(s): smollm2-135m" in down.stderr
    assert not S.pid_alive(pid)
    assert not S.http_ok(url.removesuffix("/v1") + "/health", timeout=1)
    assert S.status() == []


@pytest.mark.slow
def test_up_unknown_model_and_cli_errors(state_file):
    with pytest.raises(KeyError, match="not in pool 'local'"):
        S.up(load_pool(), ["gpt-17"])
    r = _cli("up", "--pool", "/nonexistent/pool.yaml", env_state=state_file)
    assert r.returncode == 1 and "cannot read pool file /nonexistent/pool.yaml" in r.stderr
