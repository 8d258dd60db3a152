"""One async client for any OpenAI-compatible endpoint (llama.cpp server, vLLM, Ollama, OpenAI, ...).

Uses the official ``openai`` package (AsyncOpenAI with a base_url). Retries with exponential backoff on transient
errors only (connection errors and timeouts, HTTP 408/409/429, 5xx); anything else, and a transient error that
outlives the retries, raises ``BackendError`` naming the model and the endpoint. Token counts come from the
response's ``usage``; cost from the pool's price table (``PoolModel.cost``).
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Optional, Sequence

import openai

from routecraft.pool.config import PoolModel

TRANSIENT_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})

# Parameters AsyncOpenAI accepts by name; everything else goes in extra_body (llama.cpp: top_k, min_p, ...).
_CHAT_KW = frozenset({"top_p", "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs",
                      "response_format", "user", "tools", "tool_choice", "max_completion_tokens"})
_COMPLETION_KW = frozenset({"top_p", "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "echo",
                            "best_of", "suffix", "user"})


class BackendError(RuntimeError):
    """A call to a model endpoint failed. Names the model and the endpoint; ``transient`` tells whether retrying
    later might help (a transient error that outlived the retries)."""

    def __init__(self, message: str, *, model: str, endpoint: str, status: Optional[int] = None,
                 transient: bool = False, attempts: int = 1, detail: Optional[str] = None):
        super().__init__(f"model {model!r} at {endpoint}: {message}")
        self.detail = detail if detail is not None else message  # the backend's own words (no endpoint in them)
        self.model = model
        self.endpoint = endpoint
        self.status = status
        self.transient = transient
        self.attempts = attempts


@dataclass
class ChatResult:
    """One completed call."""

    text: str
    input_tokens: Optional[int]
    output_tokens: Optional[int]
    latency_s: float
    finish_reason: Optional[str]
    cost_usd: float
    model: str
    texts: list[str] = field(default_factory=list)  # all choices when n > 1
    finish_reasons: list[Optional[str]] = field(default_factory=list)
    tokens_estimated: bool = False  # True if the endpoint returned no usage and counts are a chars/4 proxy
    attempts: int = 1
    raw: dict = field(default_factory=dict, repr=False)


@dataclass
class StreamChunk:
    """A piece of a streamed answer. The last chunk has ``done=True`` and ``result`` (the totals)."""

    text: str
    finish_reason: Optional[str] = None
    done: bool = False
    result: Optional[ChatResult] = None
    raw: Optional[dict] = field(default=None, repr=False)


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (openai.APIConnectionError, openai.APITimeoutError)):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in TRANSIENT_STATUS or exc.status_code >= 500
    return False


def _detail(exc: BaseException) -> str:
    """The backend's error message without the SDK's framing (for a client-facing error)."""
    if isinstance(exc, openai.APIStatusError):
        body = exc.body
        if isinstance(body, dict):
            err = body.get("error", body)
            msg = err.get("message") if isinstance(err, dict) else err
            if isinstance(msg, str) and msg:
                return msg[:1000]
        return (exc.message or "")[:1000]
    return (str(exc) or type(exc).__name__)[:1000]


def _estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4) if text else 0


class ChatClient:
    """Async client for one pool model at one base_url.

    ``base_url`` defaults to the model's endpoint; local models need the running server's base_url
    (``routecraft.pool.server.base_url_for(model)``). Nothing is connected until the first call.

    ``n > 1`` samples: llama.cpp accepts only n=1, so by default they are sent as n concurrent requests (seeds
    seed, seed+1, ... when a seed is given) and merged, with usage and cost summed. ``native_n=True`` sends one
    request with ``n`` instead (OpenAI and vLLM support it, and bill the prompt once).
    """

    def __init__(self, model: PoolModel, base_url: Optional[str] = None, *, timeout: float = 120.0,
                 max_retries: int = 3, backoff_s: float = 0.5, max_backoff_s: float = 8.0,
                 api_key: Optional[str] = None, native_n: bool = False):
        self.model = model
        self.base_url = (base_url or model.endpoint or "").rstrip("/")
        if not self.base_url:
            raise ValueError(f"model {model.name!r} is local: pass the running server's base_url "
                             f"(routecraft.pool.server.base_url_for)")
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._api_key = api_key
        self.native_n = native_n
        self._client: Optional[openai.AsyncOpenAI] = None

    # ---- plumbing ----
    @property
    def client(self) -> openai.AsyncOpenAI:
        if self._client is None:
            self._client = openai.AsyncOpenAI(base_url=self.base_url, api_key=self._api_key or self.model.api_key(),
                                              timeout=self.timeout, max_retries=0)
        return self._client

    async def rebind(self, base_url: str) -> None:
        """Point this client at another base_url (a backend restarted on a new port); the old connection is closed."""
        base_url = base_url.rstrip("/")
        if base_url == self.base_url:
            return
        old, self._client, self.base_url = self._client, None, base_url
        if old is not None:
            try:
                await old.close()
            except Exception:  # noqa: BLE001 - closing best effort
                pass

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def __aenter__(self) -> "ChatClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def _error(self, exc: BaseException, attempts: int) -> BackendError:
        status = getattr(exc, "status_code", None)
        transient = _is_transient(exc)
        detail = str(exc) or type(exc).__name__
        if isinstance(exc, openai.APIStatusError):
            msg = f"HTTP {status}: {detail}"
        elif isinstance(exc, openai.APITimeoutError):
            msg = f"timed out after {self.timeout:.0f}s"
        elif isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc.__context__
            msg = f"connection failed ({type(cause).__name__ if cause else 'error'}: {cause or detail})"
        else:
            msg = f"{type(exc).__name__}: {detail}"
        if transient and attempts > 1:
            msg += f" (gave up after {attempts} attempts)"
        return BackendError(msg, model=self.model.name, endpoint=self.base_url, status=status,
                            transient=transient, attempts=attempts, detail=_detail(exc))

    async def _sleep_backoff(self, attempt: int) -> None:
        delay = min(self.max_backoff_s, self.backoff_s * (2 ** attempt))
        await asyncio.sleep(delay * (0.75 + 0.5 * random.random()))

    async def _with_retries(self, make_call):
        attempt = 0
        while True:
            try:
                return await make_call(), attempt + 1
            except openai.OpenAIError as exc:
                if not _is_transient(exc) or attempt >= self.max_retries:
                    raise self._error(exc, attempt + 1) from exc
            await self._sleep_backoff(attempt)
            attempt += 1

    @staticmethod
    def _split_extra(extra: dict, known: frozenset) -> tuple[dict, dict]:
        named = {k: v for k, v in extra.items() if k in known}
        body = {k: v for k, v in extra.items() if k not in known}
        return named, body

    def _result(self, usage: Any, raw: dict, texts: list[str], finish: Optional[str], latency: float,
                attempts: int, prompt_chars: int) -> ChatResult:
        in_tok = getattr(usage, "prompt_tokens", None) if usage is not None else None
        out_tok = getattr(usage, "completion_tokens", None) if usage is not None else None
        estimated = in_tok is None or out_tok is None
        if in_tok is None:
            in_tok = max(1, prompt_chars // 4)
        if out_tok is None:
            out_tok = sum(_estimate_tokens(t) for t in texts)
        return ChatResult(text=texts[0] if texts else "", texts=texts, finish_reasons=[finish],
                          input_tokens=in_tok, output_tokens=out_tok,
                          latency_s=latency, finish_reason=finish, cost_usd=self.model.cost(in_tok, out_tok),
                          model=self.model.name, tokens_estimated=estimated, attempts=attempts, raw=raw)

    async def _fan_out(self, fn, n: int, seed: Optional[int], first: Any, **kw: Any) -> ChatResult:
        t0 = time.perf_counter()
        parts = await asyncio.gather(*[fn(first, seed=None if seed is None else seed + i, n=1, **kw)
                                       for i in range(n)])
        return ChatResult(text=parts[0].text, texts=[p.text for p in parts],
                          input_tokens=sum(p.input_tokens or 0 for p in parts),
                          output_tokens=sum(p.output_tokens or 0 for p in parts),
                          latency_s=time.perf_counter() - t0, finish_reason=parts[0].finish_reason,
                          finish_reasons=[p.finish_reason for p in parts],
                          cost_usd=sum(p.cost_usd for p in parts), model=self.model.name,
                          tokens_estimated=any(p.tokens_estimated for p in parts),
                          attempts=max(p.attempts for p in parts), raw={"responses": [p.raw for p in parts]})

    @staticmethod
    def _add_optional(kwargs: dict[str, Any], **optional: Any) -> None:
        """Put the optional request fields that are set into ``kwargs`` (an unset one is left out of the request)."""
        kwargs.update({k: v for k, v in optional.items() if v is not None})

    # ---- public API ----
    async def chat(self, messages: Sequence[dict], max_tokens: Optional[int] = None, temperature: float = 0.0,
                   stop: Optional[str | list[str]] = None, seed: Optional[int] = None, n: int = 1,
                   **extra: Any) -> ChatResult:
        """One chat completion. ``extra`` keys the openai client does not know go in the request body."""
        if n > 1 and not self.native_n:
            return await self._fan_out(self.chat, n, seed, messages, max_tokens=max_tokens,
                                       temperature=temperature, stop=stop, **extra)
        named, body = self._split_extra(extra, _CHAT_KW)
        kwargs: dict[str, Any] = dict(model=self.model.api_model_id, messages=list(messages),
                                      temperature=temperature, n=n, **named)
        self._add_optional(kwargs, max_tokens=max_tokens, stop=stop, seed=seed, extra_body=body or None)
        t0 = time.perf_counter()
        resp, attempts = await self._with_retries(lambda: self.client.chat.completions.create(**kwargs))
        latency = time.perf_counter() - t0
        choices = resp.choices or []
        texts = [(c.message.content or "") if c.message else "" for c in choices]
        finish = choices[0].finish_reason if choices else None
        chars = sum(len(str(m.get("content", ""))) for m in messages)
        return self._result(resp.usage, resp.model_dump(), texts, finish, latency, attempts, chars)

    async def complete(self, prompt: str, max_tokens: Optional[int] = None, temperature: float = 0.0,
                       stop: Optional[str | list[str]] = None, seed: Optional[int] = None, n: int = 1,
                       **extra: Any) -> ChatResult:
        """One raw text completion (no chat template): the way to call base models."""
        if n > 1 and not self.native_n:
            return await self._fan_out(self.complete, n, seed, prompt, max_tokens=max_tokens,
                                       temperature=temperature, stop=stop, **extra)
        named, body = self._split_extra(extra, _COMPLETION_KW)
        kwargs: dict[str, Any] = dict(model=self.model.api_model_id, prompt=prompt, temperature=temperature, n=n,
                                      **named)
        self._add_optional(kwargs, max_tokens=max_tokens, stop=stop, seed=seed, extra_body=body or None)
        t0 = time.perf_counter()
        resp, attempts = await self._with_retries(lambda: self.client.completions.create(**kwargs))
        latency = time.perf_counter() - t0
        choices = resp.choices or []
        texts = [c.text or "" for c in choices]
        finish = choices[0].finish_reason if choices else None
        return self._result(resp.usage, resp.model_dump(), texts, finish, latency, attempts, len(prompt))

    async def stream(self, messages: Sequence[dict], max_tokens: Optional[int] = None, temperature: float = 0.0,
                     stop: Optional[str | list[str]] = None, seed: Optional[int] = None,
                     **extra: Any) -> AsyncIterator[StreamChunk]:
        """Stream a chat completion: text chunks as they come, then one ``done`` chunk with the totals.

        Connecting is retried like ``chat``; an error after the first chunk raises BackendError at once.
        """
        named, body = self._split_extra(extra, _CHAT_KW)
        kwargs: dict[str, Any] = dict(model=self.model.api_model_id, messages=list(messages),
                                      temperature=temperature, stream=True,
                                      stream_options={"include_usage": True}, **named)
        self._add_optional(kwargs, max_tokens=max_tokens, stop=stop, seed=seed, extra_body=body or None)
        t0 = time.perf_counter()
        stream, attempts = await self._with_retries(lambda: self.client.chat.completions.create(**kwargs))
        parts: list[str] = []
        finish: Optional[str] = None
        usage = None
        last = None
        try:
            async for chunk in stream:
                last = chunk
                if getattr(chunk, "usage", None) is not None:
                    usage = chunk.usage
                for c in chunk.choices or []:
                    delta = (c.delta.content or "") if c.delta else ""
                    if c.finish_reason:
                        finish = c.finish_reason
                    if delta or c.finish_reason:
                        parts.append(delta)
                        yield StreamChunk(text=delta, finish_reason=c.finish_reason, raw=chunk.model_dump())
        except openai.OpenAIError as exc:
            raise self._error(exc, attempts) from exc
        latency = time.perf_counter() - t0
        text = "".join(parts)
        chars = sum(len(str(m.get("content", ""))) for m in messages)
        raw = last.model_dump() if last is not None else {}
        result = self._result(usage, raw, [text], finish, latency, attempts, chars)
        yield StreamChunk(text="", finish_reason=finish, done=True, result=result)
