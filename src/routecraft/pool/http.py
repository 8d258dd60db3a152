"""The HTTP transports of ``ChatClient``: JSON POSTs to an OpenAI-compatible endpoint, whole or as server-sent events.

* ``LeanTransport`` (plain ``http://`` endpoints with no proxy configured for them — local llama.cpp servers, vLLM,
  Ollama on the network): keep-alive HTTP/1.1 over asyncio streams, with no HTTP library in between. A call costs a
  few tens of microseconds of CPU instead of the ~0.7 ms of httpx or the ~1.4 ms of the openai SDK (measured against
  the instant stub of ``benchmarks/openai_stub.py``), which is what a gateway in front of fast backends spends its CPU
  on.
* ``HttpxTransport`` (everything else: ``https://``, or an ``HTTP(S)_PROXY``/``ALL_PROXY`` that applies to the host):
  ``httpx.AsyncClient`` with the environment's proxy settings, as the openai SDK did.

Both raise the same three errors, which ``ChatClient`` classifies (``TransportTimeout`` and ``TransportConnectError``
are transient, ``TransportStatusError`` by its status): a time-out is the same as httpx's (``timeout`` to connect,
and ``timeout`` for each read of the response: its head, its body, each line of a stream).

Connections are reused (at most ``MAX_IDLE`` kept idle) while the server keeps them open: a connection the server
closed (``Connection: close``, or end of file seen while idle) or idle for more than ``KEEPALIVE_S`` (less than the
5 s after which llama.cpp's and uvicorn's servers close one) is not reused, so a request is never sent on a
connection the server is about to drop.
"""

from __future__ import annotations

import asyncio
import sys
import time
import urllib.request
import zlib
from typing import AsyncIterator, Optional
from urllib.parse import urlsplit

KEEPALIVE_S = 4.0
DRAIN_S = 0.05  # how long the end of a stream's body (after data: [DONE]) is waited for to keep the connection
MAX_IDLE = 100
HEAD_LIMIT = 1 << 20  # the most header bytes read (the stream reader's buffer limit)


class TransportError(Exception):
    """A call that did not produce a response (or produced an error status)."""


class TransportTimeout(TransportError):
    def __init__(self) -> None:
        super().__init__("Request timed out.")


class TransportConnectError(TransportError):
    """Connecting, sending or reading failed (refused, reset, closed early, malformed response); ``cause`` is the
    underlying exception."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__("Connection error.")
        self.cause = cause


class TransportStatusError(TransportError):
    """An HTTP status >= 400, with the response body (text) read in full."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status}")
        self.status_code = status
        self.text = text


class ServerDisconnected(ConnectionError):
    """The server closed the connection before (or while) answering."""


async def _within(t: float, aw):
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(t):
            return await aw
    return await asyncio.wait_for(aw, t)  # pragma: no cover - Python 3.10


def proxy_for(url: str) -> Optional[str]:
    """The proxy the environment sets for ``url`` (``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY``, honouring
    ``NO_PROXY``), or None."""
    u = urlsplit(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(u.scheme) or proxies.get("all")
    if not proxy:
        return None
    host = u.hostname or ""
    try:
        if urllib.request.proxy_bypass(host):
            return None
    except OSError:  # pragma: no cover - proxy_bypass on an unresolvable name
        pass
    return proxy


def make_transport(base_url: str, timeout: float, headers: dict[str, str], kind: str = "auto"):
    """``LeanTransport`` for plain-http endpoints without a proxy (``kind="auto"``), else ``HttpxTransport``;
    ``kind`` "lean" or "httpx" forces one."""
    if kind not in ("auto", "lean", "httpx"):
        raise ValueError(f"transport must be 'auto', 'lean' or 'httpx', got {kind!r}")
    scheme = urlsplit(base_url).scheme.lower()
    if kind == "lean" or (kind == "auto" and scheme == "http" and proxy_for(base_url) is None):
        if scheme != "http":
            raise ValueError(f"the lean transport speaks plain http only, not {base_url!r}")
        return LeanTransport(base_url, timeout, headers)
    return HttpxTransport(base_url, timeout, headers)


# ================================================================ lean: asyncio streams, HTTP/1.1 keep-alive
class _Conn:
    __slots__ = ("reader", "writer", "idle_since")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.idle_since = 0.0

    def usable(self, now: float) -> bool:
        return (not self.reader.at_eof() and not self.writer.is_closing() and now - self.idle_since < KEEPALIVE_S
                and not self.reader._buffer)  # noqa: SLF001 - bytes nobody asked for: the connection is out of step

    def close(self) -> None:
        try:
            self.writer.close()
        except Exception:  # noqa: BLE001 - a connection of a closed event loop
            pass


class _Head:
    __slots__ = ("status", "headers", "keep_alive", "chunked", "length")

    def __init__(self, raw: bytes) -> None:
        lines = raw.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
            raise ValueError(f"malformed response status line {lines[0][:100]!r}")
        self.status = int(parts[1])
        h: dict[str, str] = {}
        for ln in lines[1:]:
            if not ln:
                continue
            name, sep, value = ln.partition(b":")
            if sep:
                h[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        self.headers = h
        conn = h.get("connection", "").lower()
        self.keep_alive = ("close" not in conn) if parts[0] == b"HTTP/1.1" else ("keep-alive" in conn)
        self.chunked = "chunked" in h.get("transfer-encoding", "").lower()
        cl = h.get("content-length")
        self.length = None if cl is None or self.chunked else int(cl)
        if self.length is None and not self.chunked and self.status not in (204, 304):
            self.keep_alive = False  # the body ends when the server closes the connection


class LeanTransport:
    """Keep-alive HTTP/1.1 JSON POSTs over asyncio streams to one ``http://host:port/prefix``."""

    def __init__(self, base_url: str, timeout: float, headers: dict[str, str]) -> None:
        u = urlsplit(base_url)
        self.host = u.hostname or "localhost"
        self.port = u.port or 80
        self.prefix = u.path.rstrip("/")
        host_header = u.netloc.rpartition("@")[2]
        self.timeout = timeout
        fixed = {"Host": host_header, "Accept": "application/json", "Content-Type": "application/json", **headers}
        self._head = "".join(f"{k}: {v}\r\n" for k, v in fixed.items()).encode("latin-1")
        self._idle: list[_Conn] = []
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # connections belong to the loop that opened them (asyncio.run per call, say)
            self._drop_idle()
            self._loop = loop
        now = time.monotonic()
        while self._idle:
            c = self._idle.pop()
            if c.usable(now):
                return c
            c.close()
        try:
            reader, writer = await _within(self.timeout, asyncio.open_connection(self.host, self.port,
                                                                                 limit=HEAD_LIMIT))
        except (asyncio.TimeoutError, TimeoutError):
            raise TransportTimeout() from None
        except OSError as exc:
            raise TransportConnectError(exc) from exc
        return _Conn(reader, writer)

    def _release(self, c: _Conn, reusable: bool) -> None:
        if reusable and len(self._idle) < MAX_IDLE and asyncio.get_running_loop() is self._loop:
            c.idle_since = time.monotonic()
            self._idle.append(c)
        else:
            c.close()

    def _drop_idle(self) -> None:
        idle, self._idle = self._idle, []
        for c in idle:
            c.close()

    async def aclose(self) -> None:
        self._drop_idle()

    def _request_bytes(self, path: str, body: bytes) -> bytes:
        return b"POST %s HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n%s" % (
            (self.prefix + path).encode("latin-1"), self._head, len(body), body)

    async def _send(self, path: str, body: bytes) -> tuple[_Conn, _Head]:
        c = await self._connect()
        try:
            c.writer.write(self._request_bytes(path, body))
            head = _Head(await _within(self.timeout, c.reader.readuntil(b"\r\n\r\n")))
            while 100 <= head.status < 200:  # an interim answer (100 Continue): the real one follows
                head = _Head(await _within(self.timeout, c.reader.readuntil(b"\r\n\r\n")))
        except BaseException as exc:
            c.close()
            wrapped = self._wrap(exc)
            if wrapped is None:
                raise
            raise wrapped from exc
        return c, head

    @staticmethod
    def _wrap(exc: BaseException) -> Optional[BaseException]:
        if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
            return TransportTimeout()
        if isinstance(exc, asyncio.IncompleteReadError):
            return TransportConnectError(ServerDisconnected(
                "the server closed the connection without sending a response" if not exc.partial else
                "the server closed the connection in the middle of its response"))
        if isinstance(exc, asyncio.LimitOverrunError):
            return TransportConnectError(ValueError("response head over 1 MiB"))
        if isinstance(exc, (OSError, ValueError)):
            return TransportConnectError(exc)
        return None  # cancellation and the unexpected pass through unchanged

    async def _body(self, c: _Conn, head: _Head) -> bytes:
        r = c.reader
        if head.status in (204, 304):
            return b""
        if head.length is not None:
            return await r.readexactly(head.length)
        if head.chunked:
            parts = []
            async for piece in self._chunks(r):
                parts.append(piece)
            return b"".join(parts)
        return await r.read()

    @staticmethod
    async def _chunks(r: asyncio.StreamReader) -> AsyncIterator[bytes]:
        while True:
            line = await r.readuntil(b"\r\n")
            n = int(line.split(b";", 1)[0].strip(), 16)
            if n == 0:
                while (await r.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    pass
                return
            data = await r.readexactly(n + 2)
            yield data[:-2]

    async def _read_body(self, c, head) -> bytes:
        """The whole body of the answer on ``c`` (closed on any failure, which is wrapped as the transport's error);
        the connection goes back to the pool when it may be kept."""
        try:
            data = await _within(self.timeout, self._body(c, head))
        except BaseException as exc:
            c.close()
            wrapped = self._wrap(exc)
            if wrapped is None:
                raise
            raise wrapped from exc
        self._release(c, head.keep_alive)
        return data

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        """(status, body) of a 2xx/3xx answer; TransportStatusError for >= 400."""
        c, head = await self._send(path, body)
        data = await self._read_body(c, head)
        enc = head.headers.get("content-encoding", "").lower()
        if enc in ("gzip", "deflate"):  # never asked for, but decoded like httpx does when a server sends it
            try:
                data = zlib.decompress(data, 16 + zlib.MAX_WBITS if enc == "gzip" else zlib.MAX_WBITS)
            except zlib.error as exc:
                raise TransportConnectError(ValueError(f"undecodable {enc} body: {exc}")) from None
        if head.status >= 400:
            raise TransportStatusError(head.status, data.decode("utf-8", "replace"))
        return head.status, data

    async def stream(self, path: str, body: bytes) -> "LeanStream":
        """The open response of a streamed call (its status checked: TransportStatusError for >= 400)."""
        c, head = await self._send(path, body)
        if head.status >= 400:
            data = await self._read_body(c, head)
            raise TransportStatusError(head.status, data.decode("utf-8", "replace"))
        return LeanStream(self, c, head)


class LeanStream:
    """The body of a streamed response, line by line (``lines()``); ``aclose()`` frees the connection (kept for
    reuse only when the body was read to its end)."""

    def __init__(self, t: LeanTransport, c: _Conn, head: _Head) -> None:
        self.t, self.c, self.head = t, c, head
        self.done = False
        self.closed = False
        self._it = self._pieces().__aiter__()

    async def _pieces(self) -> AsyncIterator[bytes]:
        r, head = self.c.reader, self.head
        if head.chunked:
            async for piece in LeanTransport._chunks(r):
                yield piece
        elif head.length is not None:
            left = head.length
            while left > 0:
                piece = await r.read(min(left, 65536))
                if not piece:
                    raise asyncio.IncompleteReadError(b"", left)
                left -= len(piece)
                yield piece
        else:
            while True:
                piece = await r.read(65536)
                if not piece:
                    return
                yield piece

    async def lines(self) -> AsyncIterator[str]:
        """The body's lines (without their line ends), decoded as UTF-8."""
        buf = b""
        it = self._it
        t = self.t.timeout
        try:
            while True:
                try:
                    piece = await _within(t, it.__anext__())
                except StopAsyncIteration:
                    break
                buf += piece
                while True:
                    i = buf.find(b"\n")
                    if i < 0:
                        break
                    line, buf = buf[:i], buf[i + 1:]
                    yield line.rstrip(b"\r").decode("utf-8", "replace")
            if buf:
                yield buf.rstrip(b"\r").decode("utf-8", "replace")
            self.done = True
        except (GeneratorExit, asyncio.CancelledError):
            raise
        except BaseException as exc:
            self.c.close()
            self.closed = True
            wrapped = LeanTransport._wrap(exc)
            if wrapped is None:
                raise
            raise wrapped from exc

    async def aclose(self, drain: bool = False) -> None:
        """Free the connection. ``drain``: the caller has read the last event (``data: [DONE]``), so what is left of
        the body is its end; it is read (for at most ``DRAIN_S``) to keep the connection."""
        if self.closed:
            return
        self.closed = True
        if drain and not self.done:
            async def rest() -> None:
                async for _ in self._it:
                    pass
            try:
                await _within(DRAIN_S, rest())
                self.done = True
            except asyncio.CancelledError:
                self.c.close()
                raise
            except Exception:  # noqa: BLE001 - more than the end of the body, or none: not reused
                pass
        if self.done:
            self.t._release(self.c, self.head.keep_alive)
        else:
            self.c.close()


# ================================================================ httpx: TLS, proxies
class HttpxTransport:
    """The same interface over ``httpx.AsyncClient`` (TLS, the environment's proxies)."""

    def __init__(self, base_url: str, timeout: float, headers: dict[str, str]) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.headers = {"Accept": "application/json", "Content-Type": "application/json", **headers}
        self._client = None

    @property
    def client(self):
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(timeout=self.timeout, trust_env=True,
                                             limits=httpx.Limits(max_connections=1000,
                                                                 max_keepalive_connections=MAX_IDLE))
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @staticmethod
    def _wrap(exc: BaseException) -> Optional[BaseException]:
        import httpx

        if isinstance(exc, httpx.TimeoutException):
            return TransportTimeout()
        if isinstance(exc, (httpx.TransportError, OSError)):
            return TransportConnectError(exc)
        return None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        try:
            r = await self.client.post(self.base_url + path, content=body, headers=self.headers)
        except Exception as exc:  # noqa: BLE001 - classified by _wrap
            wrapped = self._wrap(exc)
            if wrapped is None:
                raise
            raise wrapped from exc
        if r.status_code >= 400:
            raise TransportStatusError(r.status_code, r.text)
        return r.status_code, r.content

    async def stream(self, path: str, body: bytes) -> "HttpxStream":
        c = self.client
        try:
            r = await c.send(c.build_request("POST", self.base_url + path, content=body, headers=self.headers),
                             stream=True)
        except Exception as exc:  # noqa: BLE001
            wrapped = self._wrap(exc)
            if wrapped is None:
                raise
            raise wrapped from exc
        if r.status_code >= 400:
            try:
                await r.aread()
            except Exception as exc:  # noqa: BLE001
                wrapped = self._wrap(exc)
                if wrapped is None:
                    raise
                raise wrapped from exc
            finally:
                await r.aclose()
            raise TransportStatusError(r.status_code, r.text)
        return HttpxStream(r)


class HttpxStream:
    def __init__(self, r) -> None:
        self.r = r

    async def lines(self) -> AsyncIterator[str]:
        try:
            async for line in self.r.aiter_lines():
                yield line
        except (GeneratorExit, asyncio.CancelledError):
            raise
        except Exception as exc:  # noqa: BLE001
            wrapped = HttpxTransport._wrap(exc)
            if wrapped is None:
                raise
            raise wrapped from exc

    async def aclose(self, drain: bool = False) -> None:
        await self.r.aclose()
