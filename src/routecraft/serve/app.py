"""The OpenAI-compatible HTTP layer (FastAPI).

Endpoints: ``POST /v1/chat/completions`` (JSON or SSE stream), ``GET /v1/models``, ``GET /health``, ``GET /metrics``
(Prometheus), ``POST /v1/routecraft/route`` (the decision alone, nothing executed or billed) and
``GET /openapi.json`` (the OpenAPI document of these endpoints).

Every refusal is an OpenAI-style error body ``{"error": {"message", "type", "param", "code"}}``: 400 (malformed JSON,
wrong types, non-finite numbers, text that is not valid Unicode, empty messages, unknown task, too long for every
model — ``context_length_exceeded`` —, or a request a backend refused as invalid), 401 (missing/wrong key), 404
(unknown model), 413 (body over ``limits.max_body_bytes``), 429 (rate limit, budget used up, queue full, too many
failed authentications from one address), 502 (every candidate failed for backend reasons; ``error.failures`` lists
each candidate and its error). ``/health`` answers 200 when every served model has a working backend and 503
("degraded"/"down") otherwise; backend URLs, processes and errors are shown only to a key holder.

Billing: a non-streamed answer is billed from the backend's usage. A stream is billed for what was delivered: the
backend's usage when its last chunk arrives, else (the client went away, or the backend failed mid-way) the prompt's
estimated tokens and one output token per content chunk sent — the ledger row, the key's budget and the metrics all
see it.

Streaming (``"stream": true``) sends ``chat.completion.chunk`` events then ``data: [DONE]``:

* default strategy, ``direct`` and pool-model bypass: the chosen backend's stream is passed through chunk by chunk
  (the gateway waits for the first chunk before answering, so a backend that fails before it falls back to the next
  candidate; a failure after it ends the stream with an ``error`` event). For ``direct`` the streamed text is the
  model's ("The answer is …"); the extracted answer is in the last chunk's ``routecraft.answer``.
* every other strategy (cot, cod, pal, sc, …) is executed whole first (with fallback), then streamed as one
  ``reasoning_content`` chunk (only when reasoning is requested) and **one content chunk with the final answer**.

The decision goes into response headers (``x-routecraft-model``, ``-strategy``, ``-budget``,
``-predicted-score``, ``-predicted-cost``, ``-cost``, ``-input-tokens``, ``-output-tokens``, ``-router``,
``-request-id``, ``-decision-ms``, ``-backend-ms``, ``-overhead-ms``, ``-fallbacks``, ``-task``, ``-tradeoff``) and
into the body's extra ``routecraft`` field (streams: on the last chunks, since tokens and cost are known only at the
end; a stream's headers have no ``-cost``, token counts, ``-backend-ms`` or ``-overhead-ms``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from contextlib import asynccontextmanager
from typing import Any, Optional

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError

from routecraft.serve.conversation import (
    ChatRequest,
    RequestError,
    check_conversation,
    conversation_tokens,
    find_unencodable,
)
from routecraft.serve.gateway import AllCandidatesFailed, CandidateRefused, Gateway, Outcome, Plan, Target

log = logging.getLogger("routecraft.serve")


def error_response(exc: RequestError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def _loc(loc: tuple) -> str:
    out = ""
    for x in loc:
        if isinstance(x, int):
            out += f"[{x}]"
        elif x in ("str", "list[TextPart]", "int", "float", "bool", "none", "function-after[_stop(), union]"):
            continue  # union branch names
        else:
            out += ("." if out else "") + str(x)
    return out


def validation_error(exc: ValidationError) -> RequestError:
    errs = exc.errors()
    first = errs[0]
    param = _loc(tuple(first["loc"]))
    merged: dict[str, list[str]] = {}
    for e in errs:  # a union (e.g. content: string or list of parts) reports one error per branch: merge them
        where = _loc(tuple(e["loc"])) or "body"
        msg = e["msg"].removeprefix("Value error, ")
        if msg not in merged.setdefault(where, []):
            merged[where].append(msg)
    items = list(merged.items())
    msgs = [f"{where}: {' or '.join(m)}" for where, m in items[:3]]
    more = f" (and {len(items) - 3} more)" if len(items) > 3 else ""
    return RequestError(400, "invalid request: " + "; ".join(msgs) + more, param=param or None)


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


def _fmt(x: Optional[float]) -> str:
    return "" if x is None else f"{x:.6g}"


class Session:
    """One chat request as it goes through the gateway (for the response, headers, ledger and metrics)."""

    def __init__(self, gw: Gateway, key: str, req: ChatRequest, target: Target, client_id: Optional[str],
                 t_start: float) -> None:
        self.gw, self.key, self.req, self.target = gw, key, req, target
        self.client_id, self.t_start = client_id, t_start
        self.rid = gw.new_request_id()
        self.created = int(time.time())
        self.plan: Optional[Plan] = None

    @property
    def show_reasoning(self) -> bool:
        return bool(self.req.option("reasoning"))

    def predicted(self, cid: str) -> tuple[Optional[float], Optional[float]]:
        d = self.plan.decision if self.plan else None
        if d is None:
            return None, None
        for row in d.table:
            if row["candidate"] == cid:
                return row["predicted_score"], row["predicted_cost"]
        return d.predicted_score, d.predicted_cost

    def info(self, cand, out: Optional[Outcome], failures: list[dict], backend_s: float,
             answer: Optional[str] = None, method: Optional[str] = None) -> dict:
        plan = self.plan
        ps, pc = self.predicted(cand.id)
        total = time.perf_counter() - self.t_start
        d = plan.decision
        info: dict[str, Any] = {
            "request_id": self.rid,
            "router": self.target.label,
            "requested_model": self.target.requested,
            "tradeoff": self.target.tradeoff_name,
            "lam": plan.lam, "max_cost": plan.max_cost,
            "task": plan.task if d is not None else None,
            "model": cand.model, "strategy": cand.strategy, "budget": cand.budget, "candidate": cand.id,
            "decided": d.candidate.id if d is not None else None,
            "predicted_score": ps, "predicted_cost": pc,
            "sticky": plan.sticky,
            "fallbacks": failures,
            "skipped": plan.skipped,
            "decision_ms": round(plan.decision_ms, 3),
            "backend_ms": round(backend_s * 1e3, 3),
            "latency_ms": round(total * 1e3, 3),
            "overhead_ms": round((total - backend_s) * 1e3, 3),
        }
        if out is not None:
            info.update(answer=out.answer, answer_method=out.method, input_tokens=out.input_tokens,
                        output_tokens=out.output_tokens, cost_usd=out.cost_usd)
        elif answer is not None or method is not None:
            info.update(answer=answer, answer_method=method)
        if d is not None:
            info["candidates"] = d.table[:10]
        if self.show_reasoning and out is not None and out.candidate.strategy != "default":
            info["reasoning"] = {"text": out.text, **out.details}
        return info

    def headers(self, cand, cost: Optional[float], failures: list[dict], backend_s: Optional[float] = None,
                tokens: Optional[tuple[int, int]] = None) -> dict:
        plan = self.plan
        ps, pc = self.predicted(cand.id)
        h = {"x-routecraft-request-id": self.rid, "x-routecraft-router": self.target.label,
             "x-routecraft-model": cand.model, "x-routecraft-strategy": cand.strategy,
             "x-routecraft-budget": "default" if cand.budget is None else str(cand.budget),
             "x-routecraft-decision-ms": f"{plan.decision_ms:.3f}", "x-routecraft-fallbacks": str(len(failures))}
        if plan.decision is not None:
            h.update({"x-routecraft-predicted-score": _fmt(ps), "x-routecraft-predicted-cost": _fmt(pc),
                      "x-routecraft-task": plan.task, "x-routecraft-tradeoff": self.target.tradeoff_name or ""})
        if cost is not None:
            h["x-routecraft-cost"] = _fmt(cost)
        if tokens is not None:
            h["x-routecraft-input-tokens"], h["x-routecraft-output-tokens"] = str(tokens[0]), str(tokens[1])
        if backend_s is not None:
            total = time.perf_counter() - self.t_start
            h["x-routecraft-backend-ms"] = f"{backend_s * 1e3:.3f}"
            h["x-routecraft-overhead-ms"] = f"{(total - backend_s) * 1e3:.3f}"
        return h

    def ledger_row(self, cand, status: str, http_status: int, *, input_tokens=0, output_tokens=0, cost=0.0,
                   backend_s=None, failures=None, error=None, attempts=None) -> dict:
        plan = self.plan
        d = plan.decision if plan else None
        ps, pc = self.predicted(cand.id) if cand is not None else (None, None)
        return {"request_id": self.rid, "ts": time.time(), "key": self.key, "client_request_id": self.client_id,
                "requested_model": self.target.requested, "router": self.target.label,
                "tradeoff": self.target.tradeoff_name, "lam": plan.lam if plan else None,
                "max_cost": plan.max_cost if plan else None,
                "model": cand.model if cand else None, "strategy": cand.strategy if cand else None,
                "budget": cand.budget if cand else None, "task": plan.task if d is not None else None,
                "predicted_score": ps, "predicted_cost": pc, "input_tokens": input_tokens,
                "output_tokens": output_tokens, "cost_usd": cost,
                "latency_s": time.perf_counter() - self.t_start, "backend_s": backend_s,
                "decision_ms": plan.decision_ms if plan else None, "status": status, "http_status": http_status,
                "error": error, "attempts": attempts, "fallbacks": failures or [],
                "stream": int(bool(self.req.stream)), "sticky": int(bool(plan and plan.sticky)),
                "conversation_id": self.req.option("conversation_id")}

    def account(self, cand, status: str, http: int, tokens_in: int, tokens_out: int, cost: float,
                total_s: Optional[float] = None) -> None:
        m = self.gw.metrics
        model = cand.model if cand is not None else "none"
        m.requests.labels(self.target.requested, model, str(http)).inc()
        if status == "ok" and total_s is not None:
            m.latency.labels(model).observe(total_s)
        if tokens_in or tokens_out:
            m.tokens.labels(model, "input").inc(tokens_in)
            m.tokens.labels(model, "output").inc(tokens_out)
        if cost:
            m.cost.labels(model).inc(cost)
        self.gw.keys.charge(self.key, cost)


def chunk(s: Session, model: str, delta: dict, finish: Optional[str] = None, **extra: Any) -> str:
    obj = {"id": s.rid, "object": "chat.completion.chunk", "created": s.created, "model": model,
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra}
    return f"data: {json.dumps(obj)}\n\n"


def usage_dict(i: int, o: int) -> dict:
    return {"prompt_tokens": i, "completion_tokens": o, "total_tokens": i + o}


def create_app(gateway: Gateway) -> FastAPI:
    """The FastAPI app around a (not yet started) gateway; the app's lifespan starts and closes it."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if not gateway.started:
            await gateway.start()
        try:
            yield
        finally:
            await gateway.close()

    app = FastAPI(title="routecraft gateway", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json", version=_version(),
                  description="OpenAI-compatible routing gateway: POST /v1/chat/completions with model "
                              "'routecraft/<router>[:<trade-off>]' or a pool model name.")
    app.state.gateway = gateway
    gw = gateway
    chat_body, chat_defs = _chat_body()

    def openapi() -> dict:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            doc.setdefault("components", {}).setdefault("schemas", {}).update(chat_defs)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):  # a bug: say so in OpenAI form, log the traceback
        log.exception("unexpected error on %s", request.url.path)
        return JSONResponse({"error": {"message": f"internal error: {type(exc).__name__}: {exc}",
                                       "type": "server_error", "param": None, "code": None}}, status_code=500)

    @app.exception_handler(404)
    async def _not_found(request: Request, exc: Exception):
        return JSONResponse({"error": {"message": f"no route {request.method} {request.url.path}",
                                       "type": "invalid_request_error", "param": None, "code": "not_found"}},
                            status_code=404)

    @app.exception_handler(405)
    async def _bad_method(request: Request, exc: Exception):
        return JSONResponse({"error": {"message": f"method {request.method} is not allowed on {request.url.path}",
                                       "type": "invalid_request_error", "param": None, "code": "method_not_allowed"}},
                            status_code=405)

    def client_addr(request: Request) -> Optional[str]:
        return request.client.host if request.client is not None else None

    def authenticate(request: Request) -> str:
        """The key name, or RequestError 401/429; failed attempts count against the client's address."""
        addr = client_addr(request)
        gw.auth_throttle.check(addr)
        header = request.headers.get("authorization")
        try:
            return gw.keys.authenticate(header)
        except RequestError:
            if header:  # a guess (no header at all is not one)
                gw.auth_throttle.failed(addr)
            raise

    @app.get("/health", responses={503: {"description": "some (degraded) or all (down) served models have no "
                                              "working backend"}})
    async def health(request: Request):
        details = True
        if not gw.keys.open:
            try:
                authenticate(request)
            except RequestError:  # (a wrong key still counts as a guess)
                details = False  # states only: no URLs, processes or error texts for anonymous callers
        code, body = gw.health(details)
        return JSONResponse(body, status_code=code)

    @app.get("/metrics")
    async def metrics():
        m = gw.metrics
        m.inflight.set(gw.inflight)
        m.queued.set(gw.waiting)
        return Response(m.render(), media_type=m.content_type)

    @app.get("/v1/models")
    async def models(request: Request):
        try:
            authenticate(request)
        except RequestError as exc:
            return error_response(exc)
        return {"object": "list", "data": gw.offered()}

    async def admit(request: Request) -> tuple[str, ChatRequest, Target, list[dict]]:
        key = authenticate(request)
        gw.keys.check_rate(key)
        data = await read_json(request, gw.config.limits.max_body_bytes)
        try:
            req = ChatRequest.model_validate(data)
        except ValidationError as exc:
            raise validation_error(exc) from None
        target = gw.resolve(req.model)
        messages = req.plain_messages()
        check_conversation(messages, gw.config.limits.max_messages)
        cap = req.output_cap
        if cap is not None and cap > gw.config.limits.max_output_tokens:
            raise RequestError(400, f"max_tokens {cap} is over this gateway's limit of "
                               f"{gw.config.limits.max_output_tokens}", param="max_tokens")
        return key, req, target, messages

    def reject(exc: RequestError) -> JSONResponse:
        gw.metrics.rejected.labels(str(exc.status), exc.code or exc.type).inc()
        return error_response(exc)

    @app.post("/v1/routecraft/route", openapi_extra=chat_body)
    async def route_only(request: Request):
        try:
            key, req, target, messages = await admit(request)
            plan = await gw.route(target, req, messages, key)
        except RequestError as exc:
            return reject(exc)
        d = plan.decision
        return {"decision": d.to_dict() if d is not None else None,
                "order": [c.id for c in plan.order], "task": plan.task, "lam": plan.lam, "max_cost": plan.max_cost,
                "decision_ms": plan.decision_ms, "sticky": plan.sticky, "skipped": plan.skipped}

    async def acquire() -> None:
        await gw.slots.acquire()

    def release() -> None:
        gw.slots.release()

    @app.post("/v1/chat/completions", openapi_extra=chat_body)
    async def chat_completions(request: Request):
        t_start = time.perf_counter()
        try:
            key, req, target, messages = await admit(request)
            gw.keys.check_budget(key)
            await acquire()
        except RequestError as exc:
            return reject(exc)
        s = Session(gw, key, req, target, request.headers.get("x-request-id"), t_start)
        try:
            s.plan = await gw.route(target, req, messages, key)
        except RequestError as exc:
            release()
            return reject(exc)
        except BaseException:
            release()
            raise
        if req.stream:
            return await stream_response(s, messages)
        try:
            out, failures = await gw.execute(s.plan, messages, req)
        except AllCandidatesFailed as exc:
            return await failed_response(s, exc)
        except CandidateRefused as exc:
            return await refused_response(s, exc)
        finally:
            release()
        gw.remember(key, req, out.candidate)
        cand = out.candidate
        info = s.info(cand, out, failures, out.backend_s)
        msg: dict[str, Any] = {"role": "assistant", "content": out.content}
        if s.show_reasoning and cand.strategy != "default":
            msg["reasoning_content"] = out.text
        body = {"id": s.rid, "object": "chat.completion", "created": s.created, "model": cand.model,
                "choices": [{"index": 0, "message": msg, "finish_reason": out.finish_reason or "stop",
                             "logprobs": None}],
                "usage": usage_dict(out.input_tokens, out.output_tokens), "routecraft": info}
        try:
            await gw.record(s.ledger_row(cand, "ok", 200, input_tokens=out.input_tokens,
                                         output_tokens=out.output_tokens, cost=out.cost_usd,
                                         backend_s=out.backend_s, failures=failures, attempts=len(failures) + 1))
        except Exception:  # noqa: BLE001 - the answer exists and is paid for: log, count, and still deliver it
            log.exception("could not write the ledger row of %s", s.rid)
            gw.metrics.ledger_errors.inc()
        s.account(cand, "ok", 200, out.input_tokens, out.output_tokens, out.cost_usd,
                  time.perf_counter() - t_start)
        return JSONResponse(body, headers=s.headers(cand, out.cost_usd, failures, out.backend_s,
                                                            (out.input_tokens, out.output_tokens)))

    async def refused_response(s: Session, exc: CandidateRefused) -> JSONResponse:
        """The backends refused the request itself: recorded (it reached a backend), answered 400, no model blamed."""
        first = s.plan.order[0] if s.plan and s.plan.order else None
        await gw.record(s.ledger_row(first, "refused", 400, failures=exc.failures, error=exc.message[:2000],
                                     attempts=len(exc.failures)))
        s.account(first, "refused", 400, 0, 0, 0.0)
        gw.metrics.rejected.labels("400", exc.code or exc.type).inc()
        h = dict(exc.headers)
        h["x-routecraft-request-id"] = s.rid
        body = exc.body()
        body["error"]["request_id"] = s.rid
        return JSONResponse(body, status_code=400, headers=h)

    async def failed_response(s: Session, exc: AllCandidatesFailed) -> JSONResponse:
        first = s.plan.order[0] if s.plan and s.plan.order else None
        await gw.record(s.ledger_row(first, "failed", 502, failures=exc.failures, error=str(exc)[:2000],
                                     attempts=len(exc.failures)))
        s.account(first, "failed", 502, 0, 0, 0.0)
        return JSONResponse({"error": {"message": str(exc), "type": "backend_error", "param": None,
                                       "code": "all_backends_failed", "failures": exc.failures,
                                       "request_id": s.rid}}, status_code=502,
                            headers={"x-routecraft-request-id": s.rid})

    async def stream_response(s: Session, messages: list[dict]):
        req = s.req
        try:
            start, whole, failures = await gw.start_stream(s.plan, messages, req)
        except AllCandidatesFailed as exc:
            release()
            return await failed_response(s, exc)
        except CandidateRefused as exc:
            release()
            return await refused_response(s, exc)
        except BaseException:
            release()
            raise
        cand = start.candidate if start is not None else whole.candidate
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        headers = s.headers(cand, None, failures)
        headers["cache-control"] = "no-cache"
        guard = _StreamGuard(s, cand, failures, release, gw.models[cand.model])
        if whole is not None:  # executed and paid for already: billed even if the client never reads a byte
            guard.set_usage(whole.input_tokens, whole.output_tokens, whole.cost_usd)
            guard.backend_s = whole.backend_s
        else:  # billed for what is delivered until the backend's usage arrives
            guard.prompt_tokens = conversation_tokens(messages)

        async def events():
            status, http, err = "ok", 200, None
            try:
                yield chunk(s, cand.model, {"role": "assistant", "content": ""})
                if whole is not None:
                    if s.show_reasoning:
                        yield chunk(s, cand.model, {"reasoning_content": whole.text})
                    yield chunk(s, cand.model, {"content": whole.content})
                    backend_s = whole.backend_s
                    tin, tout, cost = guard.usage()
                    info = s.info(cand, whole, failures, backend_s)
                    finish = whole.finish_reason or "stop"
                else:
                    parts: list[str] = []
                    finish, result = None, None
                    async for ch in start.chunks():
                        guard.backend_s = time.perf_counter() - start.t0
                        if ch.done:
                            result = ch.result
                            finish = ch.finish_reason or finish
                            break
                        if ch.finish_reason:
                            finish = ch.finish_reason
                        if ch.text:
                            parts.append(ch.text)
                            guard.delivered += 1  # counted as it is handed out: what may have reached the client
                            yield chunk(s, cand.model, {"content": ch.text})
                    backend_s = guard.backend_s = time.perf_counter() - start.t0
                    text = "".join(parts)
                    if result is not None and not result.tokens_estimated:
                        guard.set_usage(int(result.input_tokens or 0), int(result.output_tokens or 0),
                                        float(result.cost_usd or 0.0))
                    tin, tout, cost = guard.usage()
                    answer = method = None
                    if cand.strategy != "default":
                        from routecraft.strategies import get_strategy

                        ex = get_strategy(cand.strategy).extract(text, s.plan.task)
                        answer, method = ex.answer, ex.method
                    out = Outcome(cand, text, answer, method or "plain", tin, tout, cost, finish, backend_s)
                    info = s.info(cand, out, failures, backend_s)
                    gw.mark_ok(cand.model)
                gw.remember(s.key, req, cand)
                yield chunk(s, cand.model, {}, finish or "stop", routecraft=info)
                if include_usage:
                    obj = {"id": s.rid, "object": "chat.completion.chunk", "created": s.created, "model": cand.model,
                           "choices": [], "usage": usage_dict(tin, tout), "routecraft": info}
                    yield f"data: {json.dumps(obj)}\n\n"
                yield "data: [DONE]\n\n"
            except (asyncio.CancelledError, GeneratorExit):
                status, http, err = "cancelled", 499, "client disconnected"
                raise
            except Exception as exc:  # noqa: BLE001 - the backend broke mid-stream: tell the client in-band
                from routecraft.serve.gateway import describe_failure, failure_kind

                status, http, err = "failed", 502, describe_failure(exc)
                if failure_kind(exc) == "backend":
                    gw.mark_failed(cand.model, err)
                event = {"error": {"message": f"backend failed mid-stream: {err}", "type": "backend_error",
                                   "param": None, "code": "backend_failed_mid_stream"}}
                yield f"data: {json.dumps(event)}\n\n"
            finally:
                if status != "ok":
                    err = f"{err} (after {guard.delivered} content chunks delivered)"
                guard.finish(status, http, err)
                if start is not None:
                    await _safe_close(start)

        gen = events()
        weakref.finalize(gen, guard.finish, "cancelled", 499, "client gone before the stream started")
        return StreamingResponse(gen, media_type="text/event-stream", headers=headers)

    return app


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("routecraft")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        return "0"


def _chat_body() -> tuple[dict, dict]:
    """The OpenAPI request body of the chat endpoints and the schemas it refers to (the handlers read the raw body
    themselves, to refuse bad input with OpenAI-style errors, so FastAPI cannot infer it)."""
    schema = ChatRequest.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs", {})
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}, defs


class _StreamGuard:
    """Ends a stream exactly once: frees the execution slot, writes the ledger row, counts the metrics, charges the
    key. Called from the stream's ``finally`` or, for a stream that never started (client gone before the first
    byte), when the generator is garbage-collected.

    Billing: ``set_usage`` (the backend's own counts, or a whole answer executed before streaming) wins; otherwise the
    prompt's estimate and ``delivered`` (content chunks sent; a llama.cpp/OpenAI stream sends one token a chunk)."""

    def __init__(self, s: Session, cand: Any, failures: list[dict], release: Any, model: Any) -> None:
        self.s, self.cand, self.failures, self.release, self.model = s, cand, failures, release, model
        self.done = False
        self.delivered = 0
        self.prompt_tokens = 0
        self.backend_s = 0.0
        self._usage: Optional[tuple[int, int, float]] = None

    def set_usage(self, tin: int, tout: int, cost: float) -> None:
        self._usage = (tin, tout, cost)

    def usage(self) -> tuple[int, int, float]:
        if self._usage is not None:
            return self._usage
        tin, tout = self.prompt_tokens, self.delivered
        return tin, tout, float(self.model.cost(tin, tout)) if (tin or tout) else 0.0

    def finish(self, status: str, http: int, err: Optional[str]) -> None:
        if self.done:
            return
        self.done = True
        s = self.s
        tin, tout, cost = self.usage()
        backend_s = self.backend_s
        self.release()
        try:  # synchronous on purpose: this also runs while the stream is being cancelled
            s.gw.record_soon(s.ledger_row(self.cand, status, http, input_tokens=tin, output_tokens=tout, cost=cost,
                                            backend_s=backend_s, failures=self.failures, error=err,
                                            attempts=len(self.failures) + 1))
        except Exception:  # noqa: BLE001
            log.exception("could not write the ledger row of %s", s.rid)
            s.gw.metrics.ledger_errors.inc()
        s.account(self.cand, status, http, tin, tout, cost, time.perf_counter() - s.t_start)


async def _safe_close(start: Any) -> None:
    try:
        await asyncio.shield(start.aclose())
    except BaseException:  # noqa: BLE001 - closing best effort, also during cancellation
        pass
