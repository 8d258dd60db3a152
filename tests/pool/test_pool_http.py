"""ChatClient's own HTTP transports (routecraft.pool.http): the lean keep-alive HTTP/1.1 transport for plain-http
endpoints and the httpx one (https, proxies) give the same results and the same errors as the openai SDK did.

Against the session's real SmolLM2 llama.cpp server where a real server can produce the case (answers, usage, cost,
streams, a 400 for a prompt over the context, a refused connection); against the instant stub backend of
``benchmarks/openai_stub.py`` (run in a thread here) where it cannot: an HTTP 500, a connection closed without an
answer, an error event in the middle of a stream, a backend that never answers.
"""

from __future__ import annotations

import asyncio
import socket

import openai
import pytest

from _benchmarks import load_benchmark
from routecraft.pool.client import BackendError, ChatClient
from routecraft.pool.config import PoolModel
from routecraft.pool.http import HttpxTransport, LeanTransport, make_transport
from routecraft.serve.gateway import failure_kind

Q = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
TRANSPORTS = ("lean", "httpx")


def _load_stub():
    return load_benchmark("openai_stub")


@pytest.fixture(scope="module")
def stub():
    stub, thread, loop = _load_stub().start_stub()
    yield stub
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stub_model(stub, model_id: str) -> PoolModel:
    return PoolModel(name="stubbed", endpoint=stub.base_url, model_id=model_id, price_in_per_m=1.0,
                     price_out_per_m=2.0, description="the stub backend")


def run(coro):
    return asyncio.run(coro)


# ---- against a real llama.cpp server -------------------------------------------------------------------------------
@pytest.mark.slow
def test_both_transports_give_what_the_openai_sdk_gives_on_a_real_server(pool):
    model = pool.models[0]

    async def go():
        out = {}
        for kind in TRANSPORTS:
            async with ChatClient(model, transport=kind) as c:
                out[kind] = (await c.chat(Q, max_tokens=16), [ch async for ch in c.stream(Q, max_tokens=16)],
                             type(c.transport))
        sdk = openai.AsyncOpenAI(base_url=model.endpoint, api_key="none", max_retries=0)
        ref = await sdk.chat.completions.create(model=model.api_model_id, messages=Q, max_tokens=16, temperature=0.0,
                                                n=1)
        await sdk.close()
        async with ChatClient(model) as c:
            auto = type(c.transport)
        return out, ref, auto

    out, ref, auto = run(go())
    assert auto is LeanTransport  # a loopback http endpoint without a proxy takes the lean path
    assert out["lean"][2] is LeanTransport and out["httpx"][2] is HttpxTransport
    for kind, (r, chunks, _) in out.items():
        assert r.text == ref.choices[0].message.content and r.finish_reason == ref.choices[0].finish_reason, kind
        assert (r.input_tokens, r.output_tokens) == (ref.usage.prompt_tokens, ref.usage.completion_tokens), kind
        assert r.cost_usd == pytest.approx(model.cost(r.input_tokens, r.output_tokens)) and not r.tokens_estimated
        assert r.raw["usage"]["completion_tokens"] == r.output_tokens
        done = chunks[-1]
        assert done.done and "".join(c.text for c in chunks[:-1]) == r.text == done.result.text
        assert (done.result.input_tokens, done.result.output_tokens) == (r.input_tokens, r.output_tokens)


@pytest.mark.slow
@pytest.mark.parametrize("kind", TRANSPORTS)
def test_a_prompt_over_the_context_is_a_400_context_error_on_a_real_server(pool, kind):
    model = pool.models[0]

    async def go():
        async with ChatClient(model, transport=kind, max_retries=3, backoff_s=1.0) as c:
            return await c.chat([{"role": "user", "content": "7 " * 3600}], max_tokens=8)

    with pytest.raises(BackendError) as err:
        run(go())
    e = err.value
    assert e.status == 400 and not e.transient and e.attempts == 1
    assert str(e).startswith(f"model {model.name!r} at {model.endpoint}: HTTP 400: Error code: 400 - ")
    assert "context" in e.detail and model.endpoint not in e.detail  # the backend's own words
    assert failure_kind(e) == "context"


@pytest.mark.slow
@pytest.mark.parametrize("kind", TRANSPORTS)
def test_a_refused_connection_is_transient_and_retried(pool, kind):
    model = pool.models[0].model_copy(update={"endpoint": f"http://127.0.0.1:{_closed_port()}/v1"})

    async def go():
        async with ChatClient(model, transport=kind, max_retries=2, backoff_s=0.01) as c:
            return await c.chat(Q, max_tokens=4)

    with pytest.raises(BackendError) as err:
        run(go())
    e = err.value
    assert e.status is None and e.transient and e.attempts == 3
    assert "connection failed" in str(e) and "gave up after 3 attempts" in str(e) and model.endpoint in str(e)
    assert failure_kind(e) == "backend"


# ---- against the stub: what a real server does not do on request --------------------------------------------------
@pytest.mark.parametrize("kind", TRANSPORTS)
def test_http_500_is_transient_and_keeps_the_backends_message(stub, kind):
    # a real llama.cpp server gives no 500 for a request a test can make on purpose: the stub does
    async def go(mid):
        async with ChatClient(_stub_model(stub, mid), transport=kind, max_retries=1, backoff_s=0.01) as c:
            try:
                await c.chat(Q)
            except BackendError as exc:
                chat_err = exc
            try:
                async for _ in c.stream(Q):
                    pass
            except BackendError as exc:
                return chat_err, exc

    for mid, status, transient in (("status-500", 500, True), ("status-503", 503, True),
                                   ("status-400", 400, False), ("status-404", 404, False)):
        for e in run(go(mid)):
            assert (e.status, e.transient, e.attempts) == (status, transient, 2 if transient else 1), mid
            assert e.detail == f"stub error {status}"
            assert f"HTTP {status}: Error code: {status} - stub error {status}" in str(e)
            assert failure_kind(e) == ("client" if status == 400 else "backend")


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_stub_answers_match_and_the_lean_transport_keeps_one_connection(stub, kind):
    async def go():
        async with ChatClient(_stub_model(stub, "ok"), transport=kind) as c:
            results = [await c.chat(Q, max_tokens=4, top_k=5) for _ in range(5)]
            chunks = [ch async for ch in c.stream(Q)]
            done = await c.complete("The capital of France is", max_tokens=3)
            idle = list(getattr(c.transport, "_idle", []))
            return results, chunks, done, idle

    results, chunks, done, idle = run(go())
    chars = len(Q[0]["content"])
    for r in results:
        assert (r.text, r.input_tokens, r.output_tokens, r.finish_reason) == ("Paris.", chars // 4, 2, "stop")
        assert r.cost_usd == pytest.approx((chars // 4 * 1.0 + 2 * 2.0) / 1e6)
    assert [c.text for c in chunks if not c.done] == ["Par", "is.", ""] and chunks[-1].result.text == "Paris."
    assert chunks[-1].result.output_tokens == 2 and not chunks[-1].result.tokens_estimated
    assert done.text == " Paris."
    if kind == "lean":  # the calls and the stream (read to its end after [DONE]) all went over one connection
        assert len(idle) == 1


def test_a_connection_closed_without_an_answer_is_transient_then_the_next_call_works(stub):
    async def go():
        async with ChatClient(_stub_model(stub, "close"), max_retries=0) as c:
            with pytest.raises(BackendError) as err:
                await c.chat(Q)
            c.model = _stub_model(stub, "ok")
            return err.value, await c.chat(Q)

    e, ok = run(go())
    assert e.transient and e.status is None and "connection failed (ServerDisconnected" in str(e)
    assert ok.text == "Paris."


def test_an_error_event_mid_stream_and_a_silent_backend(stub):
    async def go():
        got = []
        async with ChatClient(_stub_model(stub, "stream-error"), max_retries=3) as c:
            with pytest.raises(BackendError) as mid:
                async for ch in c.stream(Q):
                    got.append(ch.text)
        async with ChatClient(_stub_model(stub, "hang"), max_retries=0, timeout=0.5) as c:
            with pytest.raises(BackendError) as silent:
                await c.chat(Q)
        return got, mid.value, silent.value

    got, mid, silent = run(go())
    assert got == ["Par"]  # the chunk before the error was delivered
    assert mid.status is None and not mid.transient and "stub failed mid-stream" in str(mid)
    assert silent.transient and silent.status is None and "timed out" in str(silent)


def test_one_client_across_event_loops(stub):
    c = ChatClient(_stub_model(stub, "ok"))
    assert run(c.chat(Q)).text == "Paris."
    assert run(c.chat(Q)).text == "Paris."  # the first loop's connection is dropped, not reused
    run(c.aclose())


def test_the_transport_follows_the_url_and_the_proxy_settings(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy",
                "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    h = {"Authorization": "Bearer none"}
    assert isinstance(make_transport("http://127.0.0.1:8080/v1", 5, h), LeanTransport)
    assert isinstance(make_transport("https://api.example.com/v1", 5, h), HttpxTransport)
    assert isinstance(make_transport("http://127.0.0.1:8080/v1", 5, h, "httpx"), HttpxTransport)
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    assert isinstance(make_transport("http://10.0.0.5:8080/v1", 5, h), HttpxTransport)  # the proxy is honoured
    monkeypatch.setenv("NO_PROXY", "10.0.0.5")
    assert isinstance(make_transport("http://10.0.0.5:8080/v1", 5, h), LeanTransport)
    with pytest.raises(ValueError, match="plain http"):
        make_transport("https://api.example.com/v1", 5, h, "lean")
    with pytest.raises(ValueError, match="transport must be"):
        ChatClient(PoolModel(name="m", endpoint="http://x/v1", price_in_per_m=0, price_out_per_m=0,
                             description="d"), transport="quic")


def test_a_backend_that_refuses_logprobs_is_asked_again_without_them_once(stub):
    """llama.cpp always returns log-probabilities, so the refusal (a 400 to a request asking for them, as some
    OpenAI-compatible servers answer) comes from the stub. The call is answered, and the client stops asking; a 400
    for any other reason is still an error."""
    mod = _load_stub()  # its own module: CALLS counts this test's requests only
    stub2, thread, loop = mod.start_stub()
    try:
        async def go():
            async with ChatClient(_stub_model(stub2, "no-logprobs")) as c:
                first = await c.chat(Q, logprobs=True)
                refused = c.logprobs_refused
                second = await c.chat(Q, logprobs=True)
            async with ChatClient(_stub_model(stub2, "status-400")) as c:
                with pytest.raises(BackendError) as err:
                    await c.chat(Q, logprobs=True)
                return first, refused, second, err.value, c.logprobs_refused

        first, refused, second, err, other_refused = run(go())
        assert first.text == second.text == "Paris." and first.logprobs is None
        assert refused is True
        assert mod.CALLS["no-logprobs"] == 3  # refused + asked again; the next call asks without them at once
        assert err.status == 400 and other_refused is False  # the retry failed too: not a logprobs refusal
        assert mod.CALLS["status-400"] == 2
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
