"""Admission and intake, in-process: execution slots with a queue bound, failed-auth throttling, request-body
parsing (non-finite numbers, huge integers, lone surrogates), the token estimate, and whose fault a failed call is."""

from __future__ import annotations

import asyncio

import pytest

from routecraft.pool.client import BackendError
from routecraft.serve.admission import AuthThrottle, Slots
from routecraft.serve.app import parse_body
from routecraft.serve.conversation import RequestError, conversation_tokens, text_tokens
from routecraft.serve.gateway import failure_kind


def test_slots_bound_a_simultaneous_burst_and_serve_waiters_in_order():
    async def main():
        slots = Slots(limit=2, max_queue=3, timeout_s=5)
        order: list[int] = []
        gate = asyncio.Event()

        async def job(i: int):
            try:
                await slots.acquire()
            except RequestError as exc:
                return exc.code
            try:
                order.append(i)
                await gate.wait()
                return "ran"
            finally:
                slots.release()

        tasks = [asyncio.create_task(job(i)) for i in range(8)]  # all created before any runs: a true burst
        await asyncio.sleep(0.05)
        assert slots.running == 2 and slots.waiting == 3
        gate.set()
        res = await asyncio.gather(*tasks)
        assert res.count("ran") == 5 and res.count("queue_full") == 3
        assert order == [0, 1, 2, 3, 4]  # first come, first served
        assert slots.running == 0 and slots.waiting == 0

    asyncio.run(main())


def test_a_waiter_that_times_out_or_is_cancelled_gives_no_slot_away():
    async def main():
        slots = Slots(limit=1, max_queue=2, timeout_s=0.1)
        await slots.acquire()
        with pytest.raises(RequestError) as e:
            await slots.acquire()
        assert e.value.status == 429 and e.value.code == "queue_timeout"
        t = asyncio.create_task(slots.acquire())
        await asyncio.sleep(0.01)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        assert slots.waiting == 0 and slots.running == 1
        slots.release()
        assert slots.running == 0
        await slots.acquire()  # the slot is free again
        assert slots.running == 1

    asyncio.run(main())


def test_auth_throttle_per_address_with_a_rolling_window():
    th = AuthThrottle(max_failures=3, window_s=60)
    for t in (0, 1, 2):
        th.check("1.2.3.4", now=t)
        th.failed("1.2.3.4", now=t)
    with pytest.raises(RequestError) as e:
        th.check("1.2.3.4", now=3)
    assert e.value.status == 429 and e.value.code == "auth_throttled" and int(e.value.headers["retry-after"]) >= 57
    th.check("5.6.7.8", now=3)  # another address is not affected
    th.check("1.2.3.4", now=60.5)  # the first failure left the window
    assert AuthThrottle(max_failures=0).check("x") is None  # 0 turns it off


@pytest.mark.parametrize("body,needle", [
    (b'{"lambda": 1e999}', "out of range"), (b'{"max_cost": -1e400}', "out of range"),
    (b'{"x": [1, {"y": 2e308}]}', "out of range"), (b'{"max_tokens": ' + b"9" * 65 + b"}", "65 digits"),
    (b'{"max_tokens": ' + b"9" * 5000 + b"}", "digits"), (b'{"a": NaN}', "NaN is not a valid JSON number"),
    (b'{"messages": [{"content": "ok"}, {"content": "a\\udfff"}]}', "messages[1].content"),
    (b'{"stop": ["\\ud83d"]}', "stop[0]"), (b'{"\\ud800": 1}', "a key"),
])
def test_parse_body_refuses_what_a_backend_could_not_take(body, needle):
    with pytest.raises(RequestError) as e:
        parse_body(body)
    assert e.value.status == 400 and needle in e.value.message


def test_parse_body_keeps_valid_input_exactly():
    assert parse_body(b'{"lambda": 1e300, "t": 0.5, "n": 12, "s": "\\ud83d\\ude00 caf\\u00e9"}') == \
        {"lambda": 1e300, "t": 0.5, "n": 12, "s": "\U0001F600 café"}


def test_token_estimate_counts_non_latin_text_per_character():
    assert text_tokens("abcdefgh") == 2 and text_tokens("龍" * 100) == 100 and text_tokens("ab龍龍") == 3
    assert conversation_tokens([{"role": "user", "content": "abcd"}, {"role": "system", "content": ""}]) == 9


def _be(status, detail="x"):
    return BackendError(detail, model="m", endpoint="http://h/v1", status=status, detail=detail)


@pytest.mark.parametrize("exc,kind", [
    (_be(400, "request (2031 tokens) exceeds the available context size (512 tokens), try increasing it"), "context"),
    (_be(400, "This model's maximum context length is 8192 tokens"), "context"),
    (_be(400, "'messages' must contain text"), "client"), (_be(422, "bad field"), "client"),
    (_be(500), "backend"), (_be(503), "backend"), (_be(429), "backend"), (_be(401), "backend"),
    (_be(404), "backend"), (_be(None, "connection failed"), "backend"), (RuntimeError("boom"), "backend"),
    (UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"), "client"),
])
def test_failure_kind_blames_the_request_only_for_its_own_errors(exc, kind):
    assert failure_kind(exc) == kind


# ---- PAL and the sandbox: a weaker isolation is never chosen silently ---------------------------------------------
def _no_strict_sandbox(monkeypatch):
    """Simulates a kernel without user namespaces (cannot be caused for real on this machine: the probe's cached
    answer is overridden, as tests/strategies/test_sandbox_escapes.py does)."""
    import sys

    from routecraft.strategies import sandbox

    monkeypatch.setitem(sandbox._probe_cache, sys.executable, (False, "simulated: user namespaces are disabled"))
    monkeypatch.setattr(sandbox, "_weak_allowed", False)
    monkeypatch.setattr(sandbox, "_announced", set())


def _pal_config(tmp_path, **over):
    from routecraft.serve.config import config_from_dict

    pool = {"name": "t", "models": [{"name": "m", "endpoint": "http://127.0.0.1:9/v1", "price_in_per_m": 0.1,
                                     "price_out_per_m": 0.2, "description": "m", "size_b": 1.0}]}
    return config_from_dict({"pool": pool, "ledger": str(tmp_path / "u.sqlite"),
                             "heuristic": {"strategies": ["default", "pal"]}, "supervision": {"enabled": False},
                             **over})


def test_pal_is_refused_without_the_strict_sandbox_unless_the_operator_opts_in(tmp_path, monkeypatch):
    from routecraft.serve.config import ServeConfigError
    from routecraft.serve.gateway import Gateway
    from routecraft.strategies import sandbox

    _no_strict_sandbox(monkeypatch)
    with pytest.raises(ServeConfigError, match="sandbox.allow_weak: true"):
        Gateway(_pal_config(tmp_path)).preflight()  # before any backend is started
    with pytest.raises(ServeConfigError, match="strong PAL sandbox is unavailable"):
        asyncio.run(Gateway(_pal_config(tmp_path)).start())
    # without PAL on offer the sandbox does not matter
    gw = Gateway(_pal_config(tmp_path, heuristic={"strategies": ["default", "cot"]}))

    async def start_close(g):
        await g.start()
        try:
            return g.health(True)[1]["sandbox"]
        finally:
            await g.close()

    assert asyncio.run(start_close(gw)) is None
    weak = Gateway(_pal_config(tmp_path, sandbox={"allow_weak": True}))
    weak.preflight()
    assert asyncio.run(start_close(weak)) == "audit" and sandbox.weak_isolation_allowed()


def test_pal_runs_in_the_strict_sandbox_where_it_is_available(tmp_path):
    from routecraft.serve.gateway import Gateway

    gw = Gateway(_pal_config(tmp_path))
    gw.preflight()

    async def start_close(g):
        await g.start()
        try:
            return g.health(True)[1]["sandbox"]
        finally:
            await g.close()

    assert asyncio.run(start_close(gw)) == "strict"
