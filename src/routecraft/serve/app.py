"""The OpenAI-compatible HTTP layer (FastAPI).

Endpoints: ``POST /v1/chat/completions`` (JSON or SSE stream), ``GET /v1/models``, ``GET /health``, ``GET /metrics``
(Prometheus), ``POST /v1/routecraft/route`` (the decision alone, nothing executed or billed),
``GET /openapi.json`` (the OpenAPI document of these endpoints) and ``GET /dashboard`` (the operator's page,
``routecraft.serve.dashboard``).

Every refusal is an OpenAI-style error body ``{"error": {"message", "type", "param", "code"}}``: 400 (malformed JSON,
wrong types, non-finite numbers, text that is not valid Unicode, empty messages, unknown task, too long for every
model — ``context_length_exceeded`` —, or a request a backend refused as invalid), 401 (missing/wrong key), 404
(unknown model), 413 (body over ``limits.max_body_bytes``), 429 (rate limit, budget used up, queue full, too many
failed authentications from one address), 502 (every candidate failed for backend reasons; ``error.failures`` lists
each candidate and its error). ``/health`` answers 200 when every served model has a working backend and 503
("degraded"/"down") otherwise; backend URLs, processes and errors are shown only to a key holder.

This module is the HTTP layer only: reading the body, the handlers (small functions on an ``APIRouter``) and the
app. A chat request goes app → ``Gateway.chat`` (admission, routing, execution on the pool, billing, ledger, metrics;
``routecraft.serve.gateway``, ``routecraft.serve.session``) → a ``Reply`` the handler sends.

Billing: a non-streamed answer is billed from the backend's usage (a plan of consultations: the sum over every call).
A stream is billed for what was delivered: the backend's usage when its last chunk arrives, else (the client went
away, or the backend failed mid-way) the prompt's estimated tokens and one output token per content chunk sent — the
ledger row, the key's budget and the metrics all see it.

Streaming (``"stream": true``) sends ``chat.completion.chunk`` events then ``data: [DONE]``:

* default strategy, ``direct`` and pool-model bypass: the chosen backend's stream is passed through chunk by chunk
  (the gateway waits for the first chunk before answering, so a backend that fails before it falls back to the next
  candidate; a failure after it ends the stream with an ``error`` event). For ``direct`` the streamed text is the
  model's ("The answer is …"); the extracted answer is in the last chunk's ``routecraft.answer``.
* every other strategy (cot, cod, pal, sc, …), and a plan of consultations (``cascade``, ``sequential``), is
  executed whole first (with fallback), then streamed as one ``reasoning_content`` chunk (only when reasoning is
  requested) and **one content chunk with the final answer**.

The decision goes into response headers (``x-routecraft-model``, ``-strategy``, ``-budget``,
``-predicted-score``, ``-predicted-cost``, ``-cost``, ``-input-tokens``, ``-output-tokens``, ``-router``,
``-request-id``, ``-decision-ms``, ``-backend-ms``, ``-overhead-ms``, ``-fallbacks``, ``-task``, ``-tradeoff``) and
into the body's extra ``routecraft`` field (streams: on the last chunks, since tokens and cost are known only at the
end; a stream's headers have no ``-cost``, token counts, ``-backend-ms`` or ``-overhead-ms``). A plan of consultations
adds ``x-routecraft-consultations`` and, in the body, ``consultations``, ``escalated`` and ``answered_by``.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import asynccontextmanager
from typing import Any, Optional

from fastapi import APIRouter, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response, StreamingResponse

from routecraft.serve import dashboard
from routecraft.serve.conversation import ChatRequest, RequestError, find_unencodable
from routecraft.serve.gateway import Gateway
from routecraft.serve.session import Reply

log = logging.getLogger("routecraft.serve")


def error_response(exc: RequestError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def send(r: Reply) -> Response:
    """The HTTP response of a gateway ``Reply``."""
    if r.stream is not None:
        return StreamingResponse(r.stream, media_type="text/event-stream", headers=r.headers)
    return JSONResponse(jsonable_encoder(r.body) if r.encode else r.body, status_code=r.status, headers=r.headers)


async def read_json(request: Request, limit: int) -> dict:
    cl = request.headers.get("content-length")
    if cl is not None:
        try:
            n = int(cl)
        except ValueError:
            raise RequestError(400, "invalid Content-Length header") from None
        if n > limit:
            raise RequestError(413, f"request body of {n} bytes is over the limit of {limit} bytes",
                               code="request_too_large")
    chunks, total = [], 0
    async for part in request.stream():
        total += len(part)
        if total > limit:
            raise RequestError(413, f"request body is over the limit of {limit} bytes", code="request_too_large")
        chunks.append(part)
    body = b"".join(chunks)
    return parse_body(body)


def parse_body(body: bytes) -> dict:
    """The JSON object of a request body, or RequestError 400 naming what is wrong. Refused: invalid JSON, NaN and
    Infinity (also as numbers too large for a float, like ``1e999``), integers of more than 64 digits, and strings
    that are not valid Unicode (lone surrogates like ``"\\ud800"``)."""
    if not body.strip():
        raise RequestError(400, "the request body is empty: send a JSON object")
    try:
        data = json.loads(body, parse_constant=_no_constant, parse_float=_finite_float, parse_int=_bounded_int)
    except RequestError:
        raise
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"could not parse the JSON body: {exc}") from None
    except RecursionError:
        raise RequestError(400, "could not parse the JSON body: nested too deeply") from None
    except ValueError as exc:
        raise RequestError(400, f"could not parse the JSON body: {exc}") from None
    if not isinstance(data, dict):
        raise RequestError(400, f"the JSON body must be an object, got {type(data).__name__}")
    if b"\\u" in body or b"\\U" in body:  # only an escape can produce a lone surrogate in valid UTF-8 JSON
        where = find_unencodable(data)
        if where is not None:
            raise RequestError(400, f"{where}: the text contains a lone surrogate escape (not valid Unicode)",
                               param=where.split(" ")[0])
    return data


def _no_constant(name: str) -> Any:
    raise RequestError(400, f"could not parse the JSON body: {name} is not a valid JSON number")


def _finite_float(text: str) -> float:
    v = float(text)
    if v != v or v in (float("inf"), float("-inf")):
        raise RequestError(400, f"could not parse the JSON body: the number {text[:40]} is out of range "
                           f"(non-finite numbers are refused)")
    return v


def _bounded_int(text: str) -> int:
    if len(text) > 64:
        raise RequestError(400, f"could not parse the JSON body: an integer of {len(text)} digits is out of range")
    return int(text)


def _chat_body() -> tuple[dict, dict]:
    """The OpenAPI request body of the chat endpoints and the schemas it refers to (the handlers read the raw body
    themselves, to refuse bad input with OpenAI-style errors, so FastAPI cannot infer it)."""
    schema = ChatRequest.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs", {})
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}, defs


CHAT_BODY, CHAT_DEFS = _chat_body()


# ---- the handlers ----------------------------------------------------------------------------------------------------
api = APIRouter()


def _gateway(request: Request) -> Gateway:
    return request.app.state.gateway


def _client_addr(request: Request) -> Optional[str]:
    return request.client.host if request.client is not None else None


def _key(request: Request, rate: bool = True) -> str:
    return _gateway(request).admit_key(request.headers.get("authorization"), _client_addr(request), rate)


@api.get("/health", responses={503: {"description": "some (degraded) or all (down) served models have no working "
                                                   "backend"}})
async def health(request: Request):
    gw = _gateway(request)
    details = True
    if not gw.keys.open:
        try:
            _key(request, rate=False)
        except RequestError:  # (a wrong key still counts as a guess)
            details = False  # states only: no URLs, processes or error texts for anonymous callers
    code, body = gw.health(details)
    return JSONResponse(body, status_code=code)


@api.get("/metrics")
async def metrics(request: Request):
    gw = _gateway(request)
    m = gw.metrics
    m.inflight.set(gw.inflight)
    m.queued.set(gw.waiting)
    return Response(m.render(), media_type=m.content_type)


@api.get("/v1/models")
async def models(request: Request):
    try:
        _key(request, rate=False)
    except RequestError as exc:
        return error_response(exc)
    return {"object": "list", "data": _gateway(request).offered()}


@api.post("/v1/routecraft/route", openapi_extra=CHAT_BODY)
async def route_only(request: Request):
    gw = _gateway(request)
    try:
        key = _key(request)
        data = await read_json(request, gw.config.limits.max_body_bytes)
    except RequestError as exc:
        return send(gw.reject(exc))
    return send(await gw.decide_only(key, data))


@api.post("/v1/chat/completions", openapi_extra=CHAT_BODY)
async def chat_completions(request: Request):
    t_start = time.perf_counter()
    gw = _gateway(request)
    try:
        key = _key(request)
        data = await read_json(request, gw.config.limits.max_body_bytes)
    except RequestError as exc:
        return send(gw.reject(exc))
    return send(await gw.chat(key, data, request.headers.get("x-request-id"), t_start))


async def _unexpected(request: Request, exc: Exception):  # a bug: say so in OpenAI form, log the traceback
    log.exception("unexpected error on %s", request.url.path)
    return JSONResponse({"error": {"message": f"internal error: {type(exc).__name__}: {exc}",
                                   "type": "server_error", "param": None, "code": None}}, status_code=500)


async def _not_found(request: Request, exc: Exception):
    return JSONResponse({"error": {"message": f"no route {request.method} {request.url.path}",
                                   "type": "invalid_request_error", "param": None, "code": "not_found"}},
                        status_code=404)


async def _bad_method(request: Request, exc: Exception):
    return JSONResponse({"error": {"message": f"method {request.method} is not allowed on {request.url.path}",
                                   "type": "invalid_request_error", "param": None, "code": "method_not_allowed"}},
                        status_code=405)


# ---- the app ---------------------------------------------------------------------------------------------------------
def create_app(gateway: Gateway) -> FastAPI:
    """The FastAPI app around a (not yet started) gateway; the app's lifespan starts and closes it."""
    dashboard.install_log_filter()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if not gateway.started:
            await gateway.start()
        try:
            yield
        finally:
            dashboard.close(app)
            await gateway.close()

    app = FastAPI(title="routecraft gateway", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json", version=_version(),
                  description="OpenAI-compatible routing gateway: POST /v1/chat/completions with model "
                              "'routecraft/<router>[:<trade-off>]' or a pool model name.")
    app.state.gateway = gateway

    def openapi() -> dict:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            doc.setdefault("components", {}).setdefault("schemas", {}).update(CHAT_DEFS)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi
    app.add_exception_handler(Exception, _unexpected)
    app.add_exception_handler(404, _not_found)
    app.add_exception_handler(405, _bad_method)
    app.include_router(api)
    app.include_router(dashboard.api)
    return app


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("routecraft")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        return "0"
