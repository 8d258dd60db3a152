"""One async client for any OpenAI-compatible endpoint (llama.cpp server, vLLM, Ollama, OpenAI, ...).

Speaks the OpenAI HTTP API itself (JSON POSTs to ``{base_url}/chat/completions`` and ``/completions``, server-sent
events for streams) over ``routecraft.pool.http``: a lean keep-alive HTTP/1.1 transport for plain-http endpoints
without a proxy, httpx for https and proxies. The requests, results and errors are those the official ``openai``
SDK gave (it was used here before, and cost 20-40 times more CPU per call): the body holds the call's fields and
every extra one (llama.cpp's top_k, min_p, ...), ``Authorization: Bearer <key>`` ("none" for keyless servers), and
an error status is ``Error code: <status> - <the body's error.message>``.

Retries with exponential backoff on transient errors only (connection errors and timeouts, HTTP 408/409/429, 5xx);
anything else, and a transient error that outlives the retries, raises ``BackendError`` naming the model and the
endpoint. Token counts come from the response's ``usage``; cost from the pool's price table (``PoolModel.cost``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Optional, Sequence

from routecraft.pool.config import PoolModel
from routecraft.pool.http import (
    TransportConnectError,
    TransportError,
    TransportStatusError,
    TransportTimeout,
    make_transport,
)

TRANSIENT_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})

_USER_AGENT = "routecraft"

log = logging.getLogger("routecraft.pool")

#: the request fields that ask for token log-probabilities (chat: ``logprobs``/``top_logprobs``; completions: a count)
LOGPROB_FIELDS = ("logprobs", "top_logprobs")


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


#: phrases with which OpenAI-compatible servers say that a prompt does not fit the context
CONTEXT_PHRASES = ("context size", "context length", "context_length", "maximum context", "context window",
                   "exceed_context", "too many tokens", "prompt is too long", "input is too long")


def failure_kind(exc: BaseException) -> str:
    """Whose fault a failed call was: "context" (the prompt does not fit), "client" (the request itself) or
    "backend" (the gateway tries the next candidate on "backend", only larger contexts on "context", and answers a
    400 on "client")."""
    if isinstance(exc, BackendError):
        st = exc.status
        if st in (400, 413, 422):
            text = f"{exc.detail} {exc}".lower()
            return "context" if any(p in text for p in CONTEXT_PHRASES) else "client"
        return "backend"
    if isinstance(exc, UnicodeError):  # text the backend protocol cannot carry (refused at intake; a safety net)
        return "client"
    return "backend"


def describe_failure(exc: BaseException) -> str:
    if isinstance(exc, BackendError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"[:500]


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

    @property
    def logprobs(self) -> Optional[list[float]]:
        """The first choice's token log-probabilities, when the call asked for them (``logprobs=True``) and the
        backend returned them; else None."""
        return token_logprobs(self.raw)

    @property
    def logprob_summary(self) -> tuple[Optional[float], Optional[float]]:
        """(mean, min) of the token log-probabilities, or (None, None) when there are none."""
        return summarize_logprobs(self.logprobs)


def token_logprobs(raw: Any) -> Optional[list[float]]:
    """The token log-probabilities of an OpenAI-style chat/completion response's first choice (``choices[0].logprobs
    .content[].logprob``, or a completion's ``logprobs.token_logprobs``); None when absent."""
    try:
        lp = raw["choices"][0]["logprobs"]
    except (KeyError, IndexError, TypeError):
        return None
    if not isinstance(lp, dict):
        return None
    if isinstance(lp.get("content"), list):
        vals = [t.get("logprob") for t in lp["content"] if isinstance(t, dict)]
    elif isinstance(lp.get("token_logprobs"), list):
        vals = lp["token_logprobs"]
    else:
        return None
    out = [float(v) for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v]
    return out or None


def summarize_logprobs(lps: Optional[Sequence[float]]) -> tuple[Optional[float], Optional[float]]:
    """(mean, min) of token log-probabilities; (None, None) for none."""
    if not lps:
        return None, None
    return float(sum(lps) / len(lps)), float(min(lps))


@dataclass
class StreamChunk:
    """A piece of a streamed answer. The last chunk has ``done=True`` and ``result`` (the totals)."""

    text: str
    finish_reason: Optional[str] = None
    done: bool = False
    result: Optional[ChatResult] = None
    raw: Optional[dict] = field(default=None, repr=False)


class StreamError(TransportError):
    """An ``error`` object sent inside a stream (after a 200): not transient, no status."""

    def __init__(self, message: str, body: Any = None) -> None:
        super().__init__(message)
        self.message, self.body = message, body


class MalformedResponse(TransportError):
    """A 2xx answer that is not the JSON the API promises: not transient, no status."""


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (TransportConnectError, TransportTimeout)):
        return True
    if isinstance(exc, TransportStatusError):
        return exc.status_code in TRANSIENT_STATUS or exc.status_code >= 500
    return False


def _error_body(exc: TransportStatusError) -> Any:
    """The error body as the openai SDK kept it: the JSON's ``error`` object (or the JSON, or the text)."""
    text = exc.text.strip()
    try:
        body = json.loads(text)
    except ValueError:
        return text
    return body.get("error", body) if isinstance(body, dict) else body


def _status_message(exc: TransportStatusError) -> str:
    """``Error code: <status>`` plus `` - <error.message>`` when the body has one (the openai SDK's wording)."""
    msg = f"Error code: {exc.status_code}"
    try:
        body = json.loads(exc.text.strip())
    except ValueError:
        return msg
    err = body.get("error", body) if isinstance(body, dict) else None
    m = err.get("message") if isinstance(err, dict) else None
    return f"{msg} - {m}" if isinstance(m, str) and m else msg


def _detail(exc: BaseException) -> str:
    """The backend's error message without the framing (for a client-facing error)."""
    if isinstance(exc, TransportStatusError):
        body = _error_body(exc)
        if isinstance(body, dict):
            err = body.get("error", body)
            msg = err.get("message") if isinstance(err, dict) else err
            if isinstance(msg, str) and msg:
                return msg[:1000]
        return _status_message(exc)[:1000]
    return (str(exc) or type(exc).__name__)[:1000]


def _loads(data: bytes) -> dict:
    try:
        obj = json.loads(data)
    except ValueError as exc:
        raise MalformedResponse(f"the backend's answer is not JSON ({exc}): {data[:200]!r}") from None
    if not isinstance(obj, dict):
        raise MalformedResponse(f"the backend's answer is not a JSON object: {data[:200]!r}")
    return obj


def _encode(body: dict) -> bytes:
    # what httpx sends for json=: compact, UTF-8 (a lone surrogate raises UnicodeEncodeError, a client error)
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


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
                 api_key: Optional[str] = None, native_n: bool = False, transport: str = "auto"):
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
        self.transport_kind = transport
        self._transport = None
        self.logprobs_refused = False  # set when the backend refused a call's token log-probabilities (a 400)
        if transport not in ("auto", "lean", "httpx"):
            raise ValueError(f"transport must be 'auto', 'lean' or 'httpx', got {transport!r}")

    # ---- plumbing ----
    @property
    def transport(self):
        """The HTTP transport (``routecraft.pool.http``), made on first use (the API key is read then)."""
        if self._transport is None:
            headers = {"Authorization": f"Bearer {self._api_key or self.model.api_key()}",
                       "User-Agent": _USER_AGENT}
            self._transport = make_transport(self.base_url, self.timeout, headers, self.transport_kind)
        return self._transport

    async def rebind(self, base_url: str) -> None:
        """Point this client at another base_url (a backend restarted on a new port); the old connections are
        closed."""
        base_url = base_url.rstrip("/")
        if base_url == self.base_url:
            return
        old, self._transport, self.base_url = self._transport, None, base_url
        if old is not None:
            try:
                await old.aclose()
            except Exception:  # noqa: BLE001 - closing best effort
                pass

    async def aclose(self) -> None:
        if self._transport is not None:
            old, self._transport = self._transport, None
            await old.aclose()

    async def __aenter__(self) -> "ChatClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def _error(self, exc: BaseException, attempts: int) -> BackendError:
        status = getattr(exc, "status_code", None)
        transient = _is_transient(exc)
        detail = str(exc) or type(exc).__name__
        if isinstance(exc, TransportStatusError):
            msg = f"HTTP {status}: {_status_message(exc)}"
        elif isinstance(exc, TransportTimeout):
            msg = f"timed out after {self.timeout:.0f}s"
        elif isinstance(exc, TransportConnectError):
            cause = exc.cause
            msg = f"connection failed ({type(cause).__name__}: {cause or detail})"
        elif isinstance(exc, StreamError):
            msg = f"error in the stream: {detail}"
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
            except TransportError as exc:
                if not _is_transient(exc) or attempt >= self.max_retries:
                    raise self._error(exc, attempt + 1) from exc
            await self._sleep_backoff(attempt)
            attempt += 1

    def _result(self, usage: Any, raw: dict, texts: list[str], finish: Optional[str], latency: float,
                attempts: int, prompt_chars: int) -> ChatResult:
        in_tok = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        out_tok = usage.get("completion_tokens") if isinstance(usage, dict) else None
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
    def _body(self, first: dict, max_tokens: Optional[int], stop: Any, seed: Optional[int], extra: dict) -> bytes:
        body = first
        self._add_optional(body, max_tokens=max_tokens, stop=stop, seed=seed)
        body.update(extra)  # every other field goes in the body as given (llama.cpp: top_k, min_p, ...)
        return _encode(body)

    async def chat(self, messages: Sequence[dict], max_tokens: Optional[int] = None, temperature: float = 0.0,
                   stop: Optional[str | list[str]] = None, seed: Optional[int] = None, n: int = 1,
                   **extra: Any) -> ChatResult:
        """One chat completion. ``extra`` fields (top_p, llama.cpp's top_k, ...) go in the request body."""
        if n > 1 and not self.native_n:
            return await self._fan_out(self.chat, n, seed, messages, max_tokens=max_tokens,
                                       temperature=temperature, stop=stop, **extra)
        t0 = time.perf_counter()
        resp, attempts = await self._call("/chat/completions", lambda ex: self._body(
            {"model": self.model.api_model_id, "messages": list(messages), "temperature": temperature, "n": n},
            max_tokens, stop, seed, ex), extra)
        latency = time.perf_counter() - t0
        choices = _choices(resp)
        texts = [_text((c.get("message") or {}).get("content")) for c in choices]
        finish = choices[0].get("finish_reason") if choices else None
        chars = sum(len(str(m.get("content", ""))) for m in messages)
        return self._result(resp.get("usage"), resp, texts, finish, latency, attempts, chars)

    async def complete(self, prompt: str, max_tokens: Optional[int] = None, temperature: float = 0.0,
                       stop: Optional[str | list[str]] = None, seed: Optional[int] = None, n: int = 1,
                       **extra: Any) -> ChatResult:
        """One raw text completion (no chat template): the way to call base models."""
        if n > 1 and not self.native_n:
            return await self._fan_out(self.complete, n, seed, prompt, max_tokens=max_tokens,
                                       temperature=temperature, stop=stop, **extra)
        t0 = time.perf_counter()
        resp, attempts = await self._call("/completions", lambda ex: self._body(
            {"model": self.model.api_model_id, "prompt": prompt, "temperature": temperature, "n": n},
            max_tokens, stop, seed, ex), extra)
        latency = time.perf_counter() - t0
        choices = _choices(resp)
        texts = [_text(c.get("text")) for c in choices]
        finish = choices[0].get("finish_reason") if choices else None
        return self._result(resp.get("usage"), resp, texts, finish, latency, attempts, len(prompt))

    async def _call(self, path: str, make_body: Callable[[dict], bytes], extra: dict) -> tuple[dict, int]:
        """POST the body ``make_body(extra)`` (with retries); (response, attempts). Token log-probabilities are
        optional: when a call that asks for them (``logprobs``) is refused as a bad request (400 or 422, not a
        context overflow), it is sent once more without them; when that one is answered, the backend is taken not
        to offer them and this client stops asking (``logprobs_refused``, logged as a warning). A backend that
        does not offer them is not a failed call, and costs one extra request, once."""
        wants = bool(extra.get("logprobs")) and not self.logprobs_refused
        plain = {k: v for k, v in extra.items() if k not in LOGPROB_FIELDS}
        body = make_body(dict(extra if wants else plain))
        try:
            return await self._with_retries(lambda: self._post(path, body))
        except BackendError as exc:
            if not wants or failure_kind(exc) != "client":
                raise
            first = exc
        body = make_body(dict(plain))
        resp, attempts = await self._with_retries(lambda: self._post(path, body))
        self.logprobs_refused = True
        log.warning("%s: the backend refused a request asking for token log-probabilities (%s) and answered it "
                    "without them; not asking again", self.model.name, first)
        return resp, attempts + first.attempts

    async def _post(self, path: str, body: bytes) -> dict:
        _, data = await self.transport.post(path, body)
        return _loads(data)

    async def stream(self, messages: Sequence[dict], max_tokens: Optional[int] = None, temperature: float = 0.0,
                     stop: Optional[str | list[str]] = None, seed: Optional[int] = None,
                     **extra: Any) -> AsyncIterator[StreamChunk]:
        """Stream a chat completion: text chunks as they come, then one ``done`` chunk with the totals.

        Connecting is retried like ``chat``; an error after the first chunk raises BackendError at once.
        """
        body = self._body({"model": self.model.api_model_id, "messages": list(messages), "temperature": temperature,
                           "stream": True, "stream_options": {"include_usage": True}}, max_tokens, stop, seed, extra)
        t0 = time.perf_counter()
        resp, attempts = await self._with_retries(lambda: self.transport.stream("/chat/completions", body))
        parts: list[str] = []
        finish: Optional[str] = None
        usage = None
        last = None
        complete = False
        try:
            try:
                async for chunk in _sse(resp.lines()):
                    if chunk is None:  # data: [DONE]
                        complete = True
                        break
                    last = chunk
                    if chunk.get("usage") is not None:
                        usage = chunk["usage"]
                    for c in _choices(chunk):
                        delta = _text((c.get("delta") or {}).get("content"))
                        fr = c.get("finish_reason")
                        if fr:
                            finish = fr
                        if delta or fr:
                            parts.append(delta)
                            yield StreamChunk(text=delta, finish_reason=fr, raw=chunk)
            except TransportError as exc:
                raise self._error(exc, attempts) from exc
            latency = time.perf_counter() - t0
            text = "".join(parts)
            chars = sum(len(str(m.get("content", ""))) for m in messages)
            result = self._result(usage, last if last is not None else {}, [text], finish, latency, attempts, chars)
            yield StreamChunk(text="", finish_reason=finish, done=True, result=result)
        finally:
            await resp.aclose(drain=complete)


def _choices(obj: dict) -> list[dict]:
    ch = obj.get("choices")
    return [c for c in ch if isinstance(c, dict)] if isinstance(ch, list) else []


def _text(v: Any) -> str:
    return v if isinstance(v, str) else ("" if v is None else str(v))


async def _sse(lines: AsyncIterator[str]) -> AsyncIterator[Optional[dict]]:
    """The JSON objects of a server-sent-events body (None for ``data: [DONE]``, the end); an object with an
    ``error`` raises StreamError, data that is not JSON MalformedResponse."""
    data: list[str] = []
    async for line in lines:
        if line:
            if line[0] == ":":
                continue
            name, _, value = line.partition(":")
            if name == "data":
                data.append(value[1:] if value[:1] == " " else value)
            continue
        if not data:
            continue
        text, data = "\n".join(data), []
        obj = _event(text)
        yield obj
        if obj is None:
            return
    if data:
        yield _event("\n".join(data))


def _event(text: str) -> Optional[dict]:
    if text.startswith("[DONE]"):
        return None
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise MalformedResponse(f"a stream event is not JSON ({exc}): {text[:200]!r}") from None
    if isinstance(obj, dict) and obj.get("error"):
        err = obj["error"]
        msg = err.get("message") if isinstance(err, dict) else None
        raise StreamError(msg if isinstance(msg, str) and msg else "An error occurred during streaming", err)
    if not isinstance(obj, dict):
        raise MalformedResponse(f"a stream event is not a JSON object: {text[:200]!r}")
    return obj
