"""The async client against a real SmolLM2 llama.cpp server: text, usage, cost, stop/max_tokens, streaming,
retries on a real transient fault, and BackendError on non-transient faults and dead servers."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time

import pytest

from routecraft.pool.client import BackendError, ChatClient
from routecraft.pool.config import PoolModel
from routecraft.pool.server import LocalServer, serve_local

pytestmark = pytest.mark.slow

Q = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model_at(pool, url: str) -> PoolModel:
    return pool.models[0].model_copy(update={"endpoint": url})


def run(coro):
    return asyncio.run(coro)


def test_chat_returns_text_usage_and_cost(pool):
    model = pool.models[0]

    async def go():
        async with ChatClient(model) as c:
            return await c.chat(Q, max_tokens=32)

    r = run(go())
    assert "paris" in r.text.lower()
    assert r.input_tokens > 10 and 0 < r.output_tokens <= 32
    assert not r.tokens_estimated
    assert r.raw["usage"]["prompt_tokens"] == r.input_tokens
    assert r.cost_usd == pytest.approx(model.cost(r.input_tokens, r.output_tokens)) and r.cost_usd > 0
    assert r.finish_reason in ("stop", "length")
    assert r.latency_s > 0 and r.attempts == 1 and r.model == model.name


def test_max_tokens_and_stop_are_honoured(pool):
    model = pool.models[0]
    prompt = "1, 2, 3, 4, 5,"

    async def go():
        async with ChatClient(model) as c:
            short = await c.chat([{"role": "user", "content": "Write a long story about a dragon."}], max_tokens=5)
            free = await c.complete(prompt, max_tokens=24)
            stopped = await c.complete(prompt, max_tokens=24, stop=[" 8"])
            return short, free, stopped

    short, free, stopped = run(go())
    assert short.output_tokens == 5 and short.finish_reason == "length"
    assert " 8" in free.text  # greedy continuation does count on ...
    assert " 8" not in stopped.text and stopped.finish_reason == "stop"  # ... and the stop string cuts it
    assert free.text.startswith(stopped.text)
    assert stopped.output_tokens < free.output_tokens


def test_stream_matches_chat_and_reports_usage(pool):
    model = pool.models[0]

    async def go():
        async with ChatClient(model) as c:
            whole = await c.chat(Q, max_tokens=24)
            chunks = [ch async for ch in c.stream(Q, max_tokens=24)]
            return whole, chunks

    whole, chunks = run(go())
    assert chunks[-1].done and chunks[-1].result is not None
    body = [c for c in chunks if not c.done]
    assert len(body) >= 2
    text = "".join(c.text for c in body)
    assert text == whole.text == chunks[-1].result.text
    res = chunks[-1].result
    assert (res.input_tokens, res.output_tokens) == (whole.input_tokens, whole.output_tokens)
    assert res.cost_usd == pytest.approx(whole.cost_usd)


def test_parallel_requests(pool):
    model = pool.models[0]

    async def go():
        async with ChatClient(model) as c:
            return await asyncio.gather(*[c.chat([{"role": "user", "content": f"Say the number {i}."}],
                                                 max_tokens=8) for i in range(4)])

    results = run(go())
    assert len(results) == 4 and all(r.output_tokens > 0 for r in results)


def test_retry_until_the_server_comes_up(pool, smollm_path):
    """Connection refused at first (nothing listens), then a real server starts on that port: the call succeeds."""
    port = _free_port()
    model = _model_at(pool, f"http://127.0.0.1:{port}/v1")
    srv = LocalServer(name=model.name, local="smollm2-135m", model_path=str(smollm_path), ctx=1024,
                      threads=1, listen_port=port, private=True)

    async def go():
        async with ChatClient(model, max_retries=8, backoff_s=0.25, max_backoff_s=2.0) as c:
            task = asyncio.create_task(c.chat(Q, max_tokens=8))
            await asyncio.sleep(0.3)
            assert not task.done()
            await asyncio.to_thread(srv.start, 120)
            return await task

    try:
        r = run(go())
    finally:
        srv.stop()
    assert r.attempts > 1
    assert r.output_tokens > 0


def test_connection_refused_exhausts_retries_with_backend_error(pool):
    port = _free_port()
    model = _model_at(pool, f"http://127.0.0.1:{port}/v1")

    async def go():
        async with ChatClient(model, max_retries=2, backoff_s=0.05) as c:
            return await c.chat(Q, max_tokens=4)

    t0 = time.perf_counter()
    with pytest.raises(BackendError) as err:
        run(go())
    e = err.value
    assert e.transient and e.attempts == 3 and e.model == model.name
    assert f"127.0.0.1:{port}" in str(e) and "smollm2-135m" in str(e) and "gave up after 3 attempts" in str(e)
    assert time.perf_counter() - t0 < 10


def test_non_transient_error_is_not_retried(pool, smollm_server):
    model = _model_at(pool, smollm_server.root_url + "/no-such-prefix/v1")

    async def go():
        async with ChatClient(model, max_retries=5, backoff_s=1.0) as c:
            return await c.chat(Q, max_tokens=4)

    t0 = time.perf_counter()
    with pytest.raises(BackendError) as err:
        run(go())
    assert err.value.status == 404 and not err.value.transient and err.value.attempts == 1
    assert "HTTP 404" in str(err.value) and "no-such-prefix" in str(err.value)
    assert time.perf_counter() - t0 < 1.0  # no backoff sleeps


def test_killed_server_raises_backend_error(pool):
    with serve_local("smollm2-135m", ctx=1024, threads=1) as srv:
        model = _model_at(pool, srv.base_url)

        async def go():
            async with ChatClient(model, max_retries=1, backoff_s=0.05) as c:
                first = await c.chat(Q, max_tokens=4)
                os.killpg(srv.pgid, signal.SIGKILL)
                await asyncio.sleep(0.3)
                return first, await c.chat(Q, max_tokens=4)

        with pytest.raises(BackendError) as err:
            run(go())
    assert err.value.transient and "connection failed" in str(err.value)
    assert srv.base_url in str(err.value)


def test_n_samples_are_fanned_out_and_summed(pool):
    """llama.cpp rejects n>1; the client sends n seeded requests and sums usage and cost."""
    model = pool.models[0]
    msgs = [{"role": "user", "content": "Tell me a short fact about cats."}]

    async def go():
        async with ChatClient(model) as c:
            return await c.chat(msgs, max_tokens=12, temperature=1.0, seed=3, n=3)

    many = run(go())
    assert len(many.texts) == 3 and len(many.finish_reasons) == 3
    assert len(set(many.texts)) > 1  # different seeds, different samples
    assert many.output_tokens == sum(r["usage"]["completion_tokens"] for r in many.raw["responses"])
    assert many.input_tokens == sum(r["usage"]["prompt_tokens"] for r in many.raw["responses"])
    assert many.cost_usd == pytest.approx(model.cost(many.input_tokens, many.output_tokens))


def test_token_logprobs_from_a_real_server(pool):
    """llama.cpp returns token log-probabilities when asked (``logprobs=True``): one per output token, all ≤ 0, and
    their (mean, min) summary; without asking there are none."""
    import asyncio

    from routecraft.pool.client import ChatClient, summarize_logprobs, token_logprobs

    async def go():
        c = ChatClient(pool.models[0])
        try:
            with_lp = await c.chat([{"role": "user", "content": "Say hello."}], max_tokens=8, logprobs=True)
            without = await c.chat([{"role": "user", "content": "Say hello."}], max_tokens=8)
        finally:
            await c.aclose()
        return with_lp, without

    with_lp, without = asyncio.run(go())
    lps = with_lp.logprobs
    assert lps is not None and len(lps) == with_lp.output_tokens and all(x <= 0 for x in lps)
    mean, low = with_lp.logprob_summary
    assert low == min(lps) and low <= mean <= 0
    assert without.logprobs is None and without.logprob_summary == (None, None)
    assert token_logprobs({"choices": [{"logprobs": {"token_logprobs": [-0.5, None, -1.5]}}]}) == [-0.5, -1.5]
    assert summarize_logprobs([]) == (None, None)
