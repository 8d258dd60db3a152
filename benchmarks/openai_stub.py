"""A minimal OpenAI-compatible backend on loopback that answers at once: the tool to measure the gateway's own
ceiling (``benchmarks/gateway_load.py --stub``) and to produce backend faults a real llama.cpp server cannot
(an HTTP 500) in tests.

A raw asyncio protocol (HTTP/1.1 with keep-alive, no framework), so that it costs far less CPU per request than the
gateway it is measured against:

* ``POST /v1/chat/completions``: a fixed small completion (``"Paris."``, finish_reason ``stop``) with ``usage``
  (prompt_tokens = characters of the request's messages / 4, at least 1; completion_tokens = 2); with
  ``"stream": true`` the same answer as SSE chunks ("Par", "is."), a finish chunk, a usage chunk when
  ``stream_options.include_usage`` is set, then ``data: [DONE]``.
* ``POST /v1/completions``: the same answer as a text completion (`` Paris.``).
* ``GET /v1/models``: one model, ``stub``; ``GET /health``: ``{"status": "ok"}``.
* Faults on request, by the request's ``model`` field: ``status-<code>`` answers that HTTP status with an
  OpenAI-style error body (``"stub error <code>"``), ``context`` answers llama.cpp's 400 for a prompt over the
  context, ``hang`` never answers, ``close`` closes the connection without answering, ``slow-<ms>`` answers after
  that many milliseconds, ``stream-error`` streams one content chunk and then an ``error`` event, ``no-logprobs``
  answers a request that asks for token log-probabilities (``logprobs``) with a 400, as backends without them do.
  ``CALLS`` counts the chat requests per ``model`` field (tests read it).

    python benchmarks/openai_stub.py [--port 0] [--ready-file F]   # prints "port N" and writes {"port": N} to F

Importable too: ``start_stub()`` runs it in a thread of the calling process (tests), ``Stub`` in any event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import threading
import time

ANSWER = "Paris."
CALLS: dict[str, int] = {}
_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 500: b"Internal Server Error",
            503: b"Service Unavailable"}


def _response(status: int, body: bytes, ctype: bytes = b"application/json", close: bool = False) -> bytes:
    return (b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n%s\r\n"
            % (status, _REASONS.get(status, b"Status"), ctype, len(body),
               b"connection: close\r\n" if close else b"")) + body


def _error(status: int, message: str, etype: str = "server_error") -> bytes:
    return _response(status, json.dumps({"error": {"code": status, "message": message, "type": etype}}).encode())


_MODELS = _response(200, json.dumps({"object": "list", "data": [{"id": "stub", "object": "model",
                                                                 "owned_by": "stub"}]}).encode())
_HEALTH = _response(200, b'{"status":"ok"}')
_NOT_FOUND = _error(404, "File Not Found", "not_found_error")


def completion(req: dict) -> bytes:
    chars = sum(len(m.get("content") or "") if isinstance(m.get("content"), str) else 0
                for m in req.get("messages") or [])
    pt = max(1, chars // 4)
    body = (b'{"id":"chatcmpl-stub","object":"chat.completion","created":%d,"model":%s,"choices":[{"index":0,'
            b'"message":{"role":"assistant","content":"%s"},"finish_reason":"stop"}],'
            b'"usage":{"prompt_tokens":%d,"completion_tokens":2,"total_tokens":%d}}'
            % (int(time.time()), json.dumps(str(req.get("model", "stub"))).encode(), ANSWER.encode(), pt, pt + 2))
    return _response(200, body)


def stream(req: dict) -> bytes:
    chars = sum(len(m.get("content") or "") if isinstance(m.get("content"), str) else 0
                for m in req.get("messages") or [])
    pt = max(1, chars // 4)
    model = str(req.get("model", "stub"))

    def ev(obj) -> bytes:
        return b"data: " + json.dumps(obj).encode() + b"\n\n"

    base = {"id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
    first = {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
    out = [ev({**base, "choices": [first]})]
    for piece in ("Par", "is."):
        out.append(ev({**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}))
    out.append(ev({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    if (req.get("stream_options") or {}).get("include_usage"):
        out.append(ev({**base, "choices": [], "usage": {"prompt_tokens": pt, "completion_tokens": 2,
                                                        "total_tokens": pt + 2}}))
    out.append(b"data: [DONE]\n\n")
    body = b"".join(out)
    return _response(200, body, b"text/event-stream")


def stream_error(req: dict) -> bytes:
    base = {"id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": str(req.get("model", "stub"))}
    first = {**base, "choices": [{"index": 0, "delta": {"content": "Par"}, "finish_reason": None}]}
    err = {"error": {"code": 500, "message": "stub failed mid-stream", "type": "server_error"}}
    return b"data: " + json.dumps(first).encode() + b"\n\ndata: " + json.dumps(err).encode() + b"\n\n"


class _Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf = b""
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end]
            length = 0
            i = head.lower().find(b"\r\ncontent-length:")
            if i >= 0:
                j = head.find(b"\r\n", i + 2)
                length = int(head[i + 17:j if j >= 0 else len(head)].strip())
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4:end + 4 + length]
            self.buf = self.buf[end + 4 + length:]
            line = head[:head.find(b"\r\n")] if b"\r\n" in head else head
            try:
                method, path, _ = line.split(b" ", 2)
            except ValueError:
                self.transport.write(_error(400, "bad request line", "invalid_request_error"))
                self.transport.close()
                return
            if not self.answer(method, path.split(b"?", 1)[0], body):
                return

    def _later(self, data: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(data)

    def answer(self, method: bytes, path: bytes, body: bytes) -> bool:
        w = self.transport.write
        if path == b"/v1/chat/completions" and method == b"POST":
            try:
                req = json.loads(body)
            except ValueError:
                w(_error(400, "invalid JSON", "invalid_request_error"))
                return True
            model = str(req.get("model", ""))
            CALLS[model] = CALLS.get(model, 0) + 1
            if model == "no-logprobs" and req.get("logprobs"):
                w(_error(400, "logprobs is not supported by this backend", "invalid_request_error"))
            elif model.startswith("status-"):
                code = int(model[7:])
                w(_error(code, f"stub error {code}", "invalid_request_error" if code < 500 else "server_error"))
            elif model == "context":
                w(_error(400, "the request exceeds the available context size, try increasing it",
                         "exceed_context_size_error"))
            elif model == "hang":
                return True
            elif model == "close":
                self.transport.close()
                return False
            elif model.startswith("slow-"):
                data = stream(req) if req.get("stream") else completion(req)
                asyncio.get_running_loop().call_later(int(model[5:]) / 1e3, self._later, data)
            elif model == "stream-error":
                w(_response(200, stream_error(req), b"text/event-stream"))
            elif req.get("stream"):
                w(stream(req))
            else:
                w(completion(req))
        elif path == b"/v1/completions" and method == b"POST":
            try:
                req = json.loads(body)
            except ValueError:
                w(_error(400, "invalid JSON", "invalid_request_error"))
                return True
            pt = max(1, len(str(req.get("prompt", ""))) // 4)
            w(_response(200, json.dumps({"id": "cmpl-stub", "object": "text_completion", "created": int(time.time()),
                                         "model": str(req.get("model", "stub")), "choices": [
                                             {"index": 0, "text": " " + ANSWER, "finish_reason": "stop"}],
                                         "usage": {"prompt_tokens": pt, "completion_tokens": 2,
                                                   "total_tokens": pt + 2}}).encode()))
        elif path in (b"/v1/models", b"/models") and method == b"GET":
            w(_MODELS)
        elif path == b"/health" and method == b"GET":
            w(_HEALTH)
        else:
            w(_NOT_FOUND)
        return True


class Stub:
    """The stub on ``host:port`` (0: a free port) in the running event loop: ``await start()``, ``.port``,
    ``close()``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self.server = None

    async def start(self) -> "Stub":
        self.server = await asyncio.get_running_loop().create_server(_Conn, self.host, self.port, backlog=1024)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


def start_stub(host: str = "127.0.0.1") -> tuple[Stub, threading.Thread, asyncio.AbstractEventLoop]:
    """The stub in a daemon thread of this process (for tests): (stub, thread, loop); stop with
    ``loop.call_soon_threadsafe(loop.stop)``."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stub = Stub(host)

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(stub.start())
        ready.set()
        loop.run_forever()

    t = threading.Thread(target=run, daemon=True, name="openai-stub")
    t.start()
    ready.wait(10)
    return stub, t, loop


def run_fast(coro):
    """``asyncio.run`` on uvloop where it is installed (the cheapest event loop), else on asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--ready-file", default=None)
    args = ap.parse_args()
    async def serve() -> None:
        stub = await Stub(args.host, args.port).start()
        print(f"port {stub.port}", flush=True)
        if args.ready_file:
            tmp = args.ready_file + ".tmp"
            with open(tmp, "w") as f:
                json.dump({"port": stub.port, "pid": os.getpid()}, f)
            os.replace(tmp, args.ready_file)
        await asyncio.Event().wait()

    try:
        run_fast(serve())
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
