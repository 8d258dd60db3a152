"""``GET /dashboard``: what the router chooses, what it costs and saves, where it falls back or fails — a page for
an operator's browser, server-rendered from the usage ledger (``routecraft.serve.ledger.usage_stats``: SQL aggregates
over indexes) and the gateway's live state. No CDN and no network at run time: the page's only assets are
``static/dashboard.css`` and ``static/dashboard.js`` inside the package, served at ``/dashboard/static/``.

Endpoints:

* ``GET /dashboard?window=24h&last=20&refresh=10``: the page. ``window`` is one of ``WINDOWS``; ``last`` the number of
  newest decisions listed (1–200); ``refresh`` the auto-refresh period in seconds (0: off), which the script does by
  fetching ``?part=content`` (the page's ``<main>`` only) and swapping it in.
* ``GET /dashboard/stats.json?window=…``: the same numbers as JSON.
* ``POST /dashboard/login`` (form fields ``key``, ``next``) and ``POST /dashboard/logout``.
* ``GET /dashboard/static/<name>``: the two assets (no key needed: they hold no data).

Access is the API's: open when the gateway has no keys (loopback only, unless ``allow_open``), else a valid key — as
``Authorization: Bearer <key>`` (scripts, ``curl``), or through the login form, which answers with a session
cookie. The cookie holds no secret: ``<key name>.<expiry>.<HMAC>``, signed with a key derived from that API key's
sha256 digest (and ``$ROUTECRAFT_DASHBOARD_SECRET`` when set), so every worker and replica sharing the config accepts
it, and it dies with the key; ``HttpOnly``, ``SameSite=Strict``, ``Path=/dashboard``, ``Secure`` behind https,
8 hours. A key in the URL (``?key=``) is refused, since URLs end up in access logs, browser history and
``Referer`` headers; a key is never echoed into a page or a log, only key names are shown. Wrong keys count against
the same per-address throttle as the API's. Pages are sent with a strict Content-Security-Policy (scripts and styles
from ``/dashboard/static`` only), ``no-store`` caching, and no framing; every value from the ledger is HTML-escaped.

The saving against the counterfactual "every request to the strongest served model" is an estimate: each request's
real input and output tokens priced at that model's prices (the strongest: the most parameters, ties and unknown
sizes by output price), summed over the window, minus the real cost.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import html
import logging
import math
import os
import re
import secrets
import threading
import time
from importlib import resources
from typing import Any, Optional
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from routecraft.data.schema import candidate_id
from routecraft.serve.auth import OPEN
from routecraft.serve.conversation import RequestError
from routecraft.serve.ledger import BYPASS, LedgerError, LedgerReader, Prices, usage_stats

WINDOWS: dict[str, Optional[float]] = {"15m": 900.0, "1h": 3600.0, "6h": 6 * 3600.0, "24h": 86400.0,
                                       "7d": 7 * 86400.0, "30d": 30 * 86400.0, "all": None}
DEFAULT_WINDOW = "24h"
REFRESH_CHOICES = (0, 5, 10, 30, 60)
DEFAULT_REFRESH_S = 10
DEFAULT_LAST = 20
MAX_LAST = 200
VIEW_PARAMS = ("window", "last", "refresh")
COOKIE = "routecraft_dashboard"
SESSION_S = 8 * 3600
SECRET_ENV = "ROUTECRAFT_DASHBOARD_SECRET"
MAX_FORM_BYTES = 4096
STATIC = {"dashboard.css": "text/css; charset=utf-8", "dashboard.js": "text/javascript; charset=utf-8"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {"content-security-policy": CSP, "x-content-type-options": "nosniff",
                    # same-origin, not no-referrer: with no-referrer a browser sends "Origin: null" on the login form's
                    # POST, and an opaque origin is refused (a sandboxed frame sends the same); other sites get nothing
                    "referrer-policy": "same-origin", "x-frame-options": "DENY", "cache-control": "no-store"}

api = APIRouter()


class RedactKeyParam(logging.Filter):
    """Rewrites ``key=<value>`` in a URL query to ``key=***`` in log records (uvicorn's access log writes the
    path with its query before the handler can refuse a key sent in the URL)."""

    PATTERN = re.compile(r"([?&](?:api_)?key=)[^&\s\"]*", re.IGNORECASE)

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, str) and "key=" in a.lower() for a in record.args):
            record.args = tuple(self.PATTERN.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str) and "key=" in record.msg.lower():
            record.msg = self.PATTERN.sub(r"\1***", record.msg)
        return True


def install_log_filter() -> None:
    """Put ``RedactKeyParam`` on uvicorn's access logger (once per process; ``create_app`` calls it)."""
    lg = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactKeyParam) for f in lg.filters):
        lg.addFilter(RedactKeyParam())


# ---- access ----------------------------------------------------------------------------------------------------------
def _gateway(request: Request):
    return request.app.state.gateway


def _addr(request: Request) -> Optional[str]:
    return request.client.host if request.client is not None else None


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).decode().rstrip("=")


def _unb64(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


#: this process's session secret when ``ROUTECRAFT_DASHBOARD_SECRET`` is not set (drawn on first use): a session
#: then holds for this gateway process only; set the variable to share sessions between workers and replicas
_PROCESS_SECRET: list[bytes] = []


def _secret() -> bytes:
    env = os.environ.get(SECRET_ENV, "")
    if env:
        return env.encode()
    if not _PROCESS_SECRET:
        _PROCESS_SECRET.append(secrets.token_bytes(32))
    return _PROCESS_SECRET[0]


def _signing_key(digest_hex: str) -> bytes:
    # the key's digest binds a session to the key's current secret; the secret above makes a session impossible to
    # forge from the config alone (which holds the digests)
    return hmac.new(bytes.fromhex(digest_hex) + _secret(), b"routecraft-dashboard-session-v1",
                    hashlib.sha256).digest()


def make_session(keys, name: str, now: Optional[float] = None) -> str:
    """A session token for key ``name`` of a ``KeyStore``: ``b64(name).expiry.HMAC`` (no secret in it)."""
    exp = int((time.time() if now is None else now) + SESSION_S)
    body = f"{_b64(name.encode())}.{exp}"
    sig = hmac.new(_signing_key(keys.keys[name].spec.sha256), body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(sig)}"


def check_session(keys, token: str, now: Optional[float] = None) -> Optional[str]:
    """The key name a session token was made for, or None (malformed, expired, forged, or its key is gone or has a
    new secret)."""
    try:
        n64, exp_s, sig64 = token.split(".")
        name, exp, sig = _unb64(n64).decode(), int(exp_s), _unb64(sig64)
    except (ValueError, UnicodeDecodeError):
        return None
    st = keys.keys.get(name)
    t = time.time() if now is None else now
    if st is None or exp < t or exp > t + SESSION_S + 60:  # expired, or an expiry no session of ours carries
        return None
    want = hmac.new(_signing_key(st.spec.sha256), f"{n64}.{exp_s}".encode(), hashlib.sha256).digest()
    return name if hmac.compare_digest(sig, want) else None


def viewer(request: Request) -> Optional[str]:
    """Who is looking: the key name (``open`` without keys), None when no credential came; RequestError 401/429 for
    a wrong bearer key (counted by the failed-authentication throttle), 403 for a key that is not one of the
    config's ``dashboard_viewers``."""
    gw = _gateway(request)
    if gw.keys.open:
        return OPEN
    header = request.headers.get("authorization")
    if header:
        who = gw.admit_key(header, _addr(request), rate=False)
    else:
        token = request.cookies.get(COOKIE)
        who = check_session(gw.keys, token) if token else None
    allowed = gw.config.dashboard_viewers
    if who is not None and allowed is not None and who not in allowed:
        raise RequestError(403, f"key {who!r} may not open the dashboard (it shows every key's spend): the "
                                "gateway's dashboard_viewers lists who may", code="forbidden")
    return who


def _same_origin(request: Request) -> bool:
    """A form post from this gateway's own pages: no Origin (old browsers, scripts) or one naming this host. An
    opaque origin ("null": sandboxed frames, some redirects) is refused."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return origin != "null" and origin.split("://", 1)[-1] == request.headers.get("host", "")


def _https(request: Request) -> bool:
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto", "").lower() == "https"


def _safe_next(value: Optional[str]) -> str:
    """Where to go after logging in: a /dashboard URL of this gateway only (never another site)."""
    if not value or not value.startswith("/dashboard") or "//" in value or "\\" in value or "\n" in value:
        return "/dashboard"
    return value


# ---- the handlers ----------------------------------------------------------------------------------------------------
def _html(body: str, status: int = 200, extra: Optional[dict] = None) -> Response:
    return Response(body, status_code=status, media_type="text/html; charset=utf-8",
                    headers={**SECURITY_HEADERS, **(extra or {})})


@api.get("/dashboard", include_in_schema=False)
async def dashboard(request: Request):
    qp = request.query_params
    keep = {k: qp[k] for k in VIEW_PARAMS if k in qp}  # only the view's own parameters (never a "key")
    nxt = _safe_next("/dashboard" + ("?" + urlencode(keep) if keep else ""))
    if "key" in qp:
        return _html(login_page(nxt, "Keys are not accepted in the URL: it would be kept in access logs, browser "
                                "history and Referer headers. Use the form below (or an Authorization header)."),
                     400)
    try:
        who = viewer(request)
    except RequestError as exc:
        return _html(login_page(nxt, exc.message if exc.status in (403, 429) else "Incorrect key."), exc.status,
                     exc.headers)
    if who is None:
        if qp.get("part") == "content":  # the script's refresh after the session ended: it reloads the page
            return _html('<p id="login-needed">The session ended: <a href="/dashboard">log in</a>.</p>', 401)
        return _html(login_page(nxt), 401)
    opts = view_options(qp)
    t0 = time.perf_counter()
    try:
        stats = await asyncio.to_thread(read_stats, request.app, opts["window"], opts["last"])
    except LedgerError as exc:  # the ledger is unreachable (a PostgreSQL server down, a file gone): say so
        return _html(f"<p id=\"ledger-error\">The usage ledger cannot be read: {html.escape(str(exc))}</p>", 503)
    t1 = time.perf_counter()
    live = live_state(_gateway(request))
    main = render_main(stats, live, opts)
    body = main if qp.get("part") == "content" else render_page(main, opts, live, who)
    t2 = time.perf_counter()
    return _html(body, 200, {"server-timing": f"ledger;dur={(t1 - t0) * 1e3:.1f}, render;dur={(t2 - t1) * 1e3:.1f}"})


@api.get("/dashboard/stats.json", include_in_schema=False)
async def dashboard_json(request: Request):
    try:
        who = viewer(request)
    except RequestError as exc:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)
    if who is None:
        return JSONResponse(RequestError(401, "missing API key: send 'Authorization: Bearer <key>' or log in at "
                                         "/dashboard", code="invalid_api_key").body(), status_code=401)
    opts = view_options(request.query_params)
    try:
        stats = await asyncio.to_thread(read_stats, request.app, opts["window"], opts["last"])
    except LedgerError as exc:
        return JSONResponse(RequestError(503, f"the usage ledger cannot be read: {exc}", type="server_error",
                                         code="ledger_unavailable").body(), status_code=503)
    stats["window"] = opts["window"]
    stats["live"] = live_state(_gateway(request))
    return JSONResponse(stats, headers={"cache-control": "no-store"})


@api.post("/dashboard/login", include_in_schema=False)
async def login(request: Request):
    gw = _gateway(request)
    if not _same_origin(request):
        return _html(login_page("/dashboard", "Cross-site login refused."), 403)
    try:
        form = await _read_form(request)
    except RequestError as exc:
        return _html(login_page("/dashboard", exc.message), exc.status)
    nxt = _safe_next(form.get("next"))
    if gw.keys.open:
        return RedirectResponse(nxt, status_code=303)
    secret = (form.get("key") or "").strip()
    if not secret:
        return _html(login_page(nxt, "Enter an API key."), 401)
    try:
        name = gw.admit_key(f"Bearer {secret}", _addr(request), rate=False)
    except RequestError as exc:
        return _html(login_page(nxt, exc.message if exc.status == 429 else "Incorrect key."), exc.status,
                     exc.headers)
    allowed = gw.config.dashboard_viewers
    if allowed is not None and name not in allowed:
        return _html(login_page(nxt, f"Key {name!r} may not open the dashboard (the gateway's dashboard_viewers "
                                     "lists who may)."), 403)
    resp = RedirectResponse(nxt, status_code=303, headers={"cache-control": "no-store"})
    resp.set_cookie(COOKIE, make_session(gw.keys, name), max_age=SESSION_S, path="/dashboard", httponly=True,
                    samesite="strict", secure=_https(request))
    return resp


@api.post("/dashboard/logout", include_in_schema=False)
async def logout(request: Request):
    if not _same_origin(request):
        return _html(login_page("/dashboard", "Cross-site logout refused."), 403)
    resp = RedirectResponse("/dashboard", status_code=303, headers={"cache-control": "no-store"})
    resp.delete_cookie(COOKIE, path="/dashboard", httponly=True, samesite="strict", secure=_https(request))
    return resp


@api.get("/dashboard/static/{name}", include_in_schema=False)
async def static(name: str):
    if name not in STATIC:
        return JSONResponse({"error": {"message": f"no dashboard asset {name!r}", "type": "invalid_request_error",
                                       "param": None, "code": "not_found"}}, status_code=404)
    return Response(_asset(name), media_type=STATIC[name],
                    headers={"cache-control": "public, max-age=300", "x-content-type-options": "nosniff"})


_ASSETS: dict[str, bytes] = {}


def _asset(name: str) -> bytes:
    if name not in _ASSETS:
        _ASSETS[name] = (resources.files("routecraft.serve") / "static" / name).read_bytes()
    return _ASSETS[name]


async def _read_form(request: Request) -> dict[str, str]:
    cl = request.headers.get("content-length")
    if cl is not None and (not cl.isdigit() or int(cl) > MAX_FORM_BYTES):
        raise RequestError(413, "the login form is too large")
    chunks, total = [], 0
    async for part in request.stream():
        total += len(part)
        if total > MAX_FORM_BYTES:
            raise RequestError(413, "the login form is too large")
        chunks.append(part)
    try:
        parsed = parse_qs(b"".join(chunks).decode("utf-8"), keep_blank_values=True, max_num_fields=8)
    except (UnicodeDecodeError, ValueError):
        raise RequestError(400, "could not read the login form") from None
    return {k: v[0] for k, v in parsed.items()}


# ---- the numbers -----------------------------------------------------------------------------------------------------
def view_options(qp) -> dict:
    window = qp.get("window", DEFAULT_WINDOW)
    if window not in WINDOWS:
        window = DEFAULT_WINDOW
    try:
        last = min(MAX_LAST, max(1, int(qp.get("last", DEFAULT_LAST))))
    except ValueError:
        last = DEFAULT_LAST
    try:
        refresh = int(qp.get("refresh", DEFAULT_REFRESH_S))
    except ValueError:
        refresh = DEFAULT_REFRESH_S
    return {"window": window, "last": last, "refresh": refresh if refresh in REFRESH_CHOICES else DEFAULT_REFRESH_S}


def strongest_model(models) -> Any:
    """The served model every request is compared against: the most parameters (``size_b``; ties by output, then
    input price), or — where some model has no size — the dearest output price."""
    ms = sorted(models, key=lambda m: m.name)
    if not ms:
        return None
    if all(m.size_b for m in ms):
        return max(ms, key=lambda m: (m.size_b, m.price_out_per_m, m.price_in_per_m))
    return max(ms, key=lambda m: (m.price_out_per_m, m.price_in_per_m))


_READER_LOCK = threading.Lock()


def _reader(app) -> LedgerReader:
    with _READER_LOCK:
        r = getattr(app.state, "dashboard_reader", None)
        if r is None:
            r = app.state.dashboard_reader = LedgerReader(app.state.gateway.ledger).open()
        return r


def read_stats(app, window: str, last: int) -> dict:
    """``usage_stats`` over ``window`` (a key of WINDOWS) with the strongest served model as the counterfactual
    (runs in a worker thread: the queries never hold the event loop)."""
    gw = app.state.gateway
    span = WINDOWS[window]
    since = None if span is None else time.time() - span
    s = strongest_model(gw.models.values())
    cf = Prices(s.name, s.price_in_per_m, s.price_out_per_m) if s is not None else None
    return usage_stats(_reader(app), since, last=last, counterfactual=cf)


def close(app) -> None:
    """Close the dashboard's ledger connection (the app's shutdown)."""
    with _READER_LOCK:
        r = getattr(app.state, "dashboard_reader", None)
        app.state.dashboard_reader = None
    if r is not None:
        r.close()


def live_state(gw) -> dict:
    """What the gateway knows now and the ledger does not: backends' health, load, keys' budgets, the served models'
    prices, and the requests refused before routing (this process, since it started)."""
    _, health = gw.health(details=False)
    rejected = {}
    for metric in gw.metrics.rejected.collect():
        for smp in metric.samples:
            if smp.name.endswith("_total") and smp.value:
                k = f"{smp.labels.get('status')} {smp.labels.get('code')}"
                rejected[k] = rejected.get(k, 0) + int(smp.value)
    return {"status": health["status"], "healthy": {n: m["healthy"] for n, m in health["models"].items()},
            "inflight": gw.inflight, "queued": gw.waiting, "uptime_s": time.time() - gw.t0,
            "open": gw.keys.open, "keys": gw.keys.describe(), "ledger": gw.ledger.url,
            "models": {n: {"size_b": m.size_b, "price_in_per_m": m.price_in_per_m,
                           "price_out_per_m": m.price_out_per_m} for n, m in gw.models.items()},
            "routers": {n: e.kind for n, e in gw.routers.items()}, "rejected": rejected}


# ---- rendering -------------------------------------------------------------------------------------------------------
def e(x: Any) -> str:
    """HTML-escaped text of a value (None: an em dash)."""
    return "—" if x is None else html.escape(str(x), quote=True)


def usd(x: Optional[float]) -> str:
    """Dollars: 4 decimals from a cent up, else 3 significant digits; amounts under 10⁻¹² (float noise of a
    difference) are $0."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    if abs(x) < 1e-12:
        return "$0"
    sign, a = ("−" if x < 0 else ""), abs(x)
    return f"{sign}${a:,.4f}" if a >= 0.01 else f"{sign}${a:.3g}"


def num(x: Optional[float]) -> str:
    return "—" if x is None else f"{int(x):,}"


def pct(x: Optional[float]) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{100 * x:.1f}%"


def ms(x: Optional[float], unit_s: bool = False) -> str:
    if x is None:
        return "—"
    v = x * 1e3 if unit_s else x
    return f"{v:,.0f} ms" if v >= 100 else f"{v:.3g} ms"


def when(ts: Optional[float]) -> str:
    return "—" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + "Z"


def _bar(share: float) -> str:
    s = 0.0 if share is None or not math.isfinite(share) else max(0.0, min(1.0, share))
    return f'<meter min="0" max="1" value="{s:.4f}" title="{pct(s)}"></meter> {pct(s)}'


def _table(tid: str, head: list[str], rows: list[str], empty: str, numeric_from: int = 1) -> str:
    ths = "".join(f'<th{" class=num" if i >= numeric_from else ""}>{h}</th>' for i, h in enumerate(head))
    body = "".join(rows) if rows else f'<tr class="empty"><td colspan="{len(head)}">{e(empty)}</td></tr>'
    return f'<div class="scroll"><table id="{tid}"><thead><tr>{ths}</tr></thead><tbody>{body}</tbody></table></div>'


def _cells(values: list[str], numeric_from: int = 1) -> str:
    return "".join(f'<td{" class=num" if i >= numeric_from else ""}>{v}</td>' for i, v in enumerate(values))


def _card(stat: str, label: str, value: str, sub: str = "") -> str:
    return (f'<div class="card" data-stat="{stat}"><div class="label">{label}</div><div class="value">{value}</div>'
            f'<div class="sub">{sub}</div></div>')


def _candidate(model, strategy, budget) -> str:
    return f"{e(model)} · {e(strategy)} · {e('default' if budget is None else budget)}"


def render_main(s: dict, live: dict, opts: dict) -> str:
    """The page's ``<main>`` (also what the auto-refresh fetches)."""
    t, cf = s["totals"], s.get("counterfactual")
    n = t["requests"]
    lat, dec = s["latency_s"], s["decision_ms"]
    parts = [f'<p class="meta" id="window-note">Window <b>{e(opts["window"])}</b>'
             + (f' (since {when(s["since"])})' if s["since"] else " (every request in the ledger)")
             + f' · generated {when(s["now"])} · ledger {e(live["ledger"])}</p>']
    saving = "—"
    saving_sub = "no served model to compare with"
    if cf is not None:
        saving = usd(cf["saving_usd"])
        saving_sub = (f'{pct(cf["saving_share"])} of {usd(cf["counterfactual_usd"])} on {e(cf["model"])} '
                      f'<span class="est">estimate</span>')
    cards = [
        _card("requests", "requests", num(n), f'{num(t["ok"])} ok · {num(t["failed"])} failed · '
              f'{num(t["cancelled"])} cancelled · {num(t["refused"])} refused'),
        _card("spend", "spend", usd(t["cost_usd"]), f'{num(t["input_tokens"])} in / {num(t["output_tokens"])} out '
              f'tokens'),
        _card("saving", "saving vs strongest", saving, saving_sub),
        _card("fallbacks", "fallbacks", num(t["fallback_requests"]),
              f'requests that fell back · {num(t["fallbacks"])} candidates abandoned'),
        _card("latency", "latency p50 / p99", f'{ms(lat["p50"], True)} / {ms(lat["p99"], True)}',
              f'{num(lat["n"])} answered requests'),
        _card("decision", "decision p50 / p99", f'{ms(dec["p50"])} / {ms(dec["p99"])}',
              f'{num(dec["n"])} routed requests'),
        _card("live", "now", f'{e(live["status"])}', f'{live["inflight"]} in flight · {live["queued"]} queued · '
              f'up {live["uptime_s"] / 3600:.1f} h'),
    ]
    parts.append(f'<section id="summary" class="cards">{"".join(cards)}</section>')

    rows = []
    for d in s["by_router"]:
        rc = d.get("counterfactual_usd")
        rows.append(f'<tr data-router="{e(d["router"])}" data-tradeoff="{e(d["tradeoff"])}">' + _cells([
            e(d["router"]), e(d["tradeoff"]), num(d["requests"]), _bar(d["requests"] / n if n else 0),
            num(d["ok"]), num(d["failed"] + d["cancelled"] + d["refused"]), num(d["fallback_requests"]),
            usd(d["cost_usd"]), usd(rc), usd(None if rc is None else rc - d["cost_usd"])], 2) + "</tr>")
    parts.append('<section id="routers"><h2>Requests per router × trade-off</h2>'
                 + _table("routers-table", ["router", "trade-off", "requests", "share", "ok", "not ok", "fell back",
                                            "spend", "on strongest (est.)", "saving (est.)"], rows,
                          "no requests in this window", 2) + "</section>")

    rows = [f'<tr data-candidate="{e(_cid(d))}">'
            + _cells([_candidate(d["model"], d["strategy"], d["budget"]), num(d["requests"]), _bar(d["share"]),
                      usd(d["cost_usd"]), usd(d["cost_usd"] / d["requests"] if d["requests"] else None)]) + "</tr>"
            for d in s["by_candidate"]]
    parts.append(f'<section id="candidates"><h2>Chosen (model · strategy · budget)</h2><p class="meta">'
                 f'{num(s["routed_requests"])} routed requests (bypass requests, which named a model, are not '
                 f'counted here)</p>'
                 + _table("candidates-table", ["candidate", "requests", "share", "spend", "per request"], rows,
                          "no routed requests in this window") + "</section>")

    rows = []
    for d in s["by_model"]:
        m = live["models"].get(d["model"]) or {}
        healthy = live["healthy"].get(d["model"])
        state = "—" if healthy is None else ("up" if healthy else '<span class="bad">down</span>')
        rows.append(f'<tr data-model="{e(d["model"])}">' + _cells([
            e(d["model"]), num(d["requests"]), num(d["input_tokens"]), num(d["output_tokens"]), usd(d["cost_usd"]),
            _bar(d["cost_share"]), f'{usd(m.get("price_in_per_m"))} / {usd(m.get("price_out_per_m"))}', state])
            + "</tr>")
    parts.append('<section id="models"><h2>Spend per model</h2>'
                 + _table("models-table", ["model", "requests", "input tokens", "output tokens", "spend",
                                           "share of spend", "price in / out per 1M", "backend"], rows,
                          "no requests in this window") + "</section>")

    budgets = {k["name"]: k for k in live["keys"]}
    by_key = {d["key"]: d for d in s["by_key"]}
    rows = []
    for name in list(by_key) + [k for k in budgets if k not in by_key]:
        d = by_key.get(name, {"requests": 0, "cost_usd": 0.0, "input_tokens": 0, "output_tokens": 0})
        b = budgets.get(name) or {}
        all_time = s["key_spend"].get(name, d.get("all_time_usd"))
        left = None if b.get("budget_usd") is None else b["budget_usd"] - (b.get("spent_usd") or 0.0)
        rows.append(f'<tr data-key="{e(name)}">' + _cells([
            e(name), num(d["requests"]), usd(d["cost_usd"]), usd(all_time), usd(b.get("budget_usd")), usd(left),
            e(b.get("rpm"))]) + "</tr>")
    parts.append('<section id="keys"><h2>Spend per key</h2><p class="meta">Key names only; secrets are never '
                 'stored or shown.</p>'
                 + _table("keys-table", ["key", "requests", "spend", "spend, all time", "budget", "budget left",
                                         "rpm"], rows, "no keys") + "</section>")

    if cf is not None:
        parts.append(
            f'<section id="saving"><h2>Saving against “every request to the strongest served model” '
            f'<span class="est">estimate</span></h2><p>Counterfactual cost {usd(cf["counterfactual_usd"])} = '
            f'Σ over this window\'s {num(n)} requests of (real input tokens × {usd(cf["price_in_per_m"])} + real '
            f'output tokens × {usd(cf["price_out_per_m"])}) / 10⁶ — {num(cf["input_tokens"])} input and '
            f'{num(cf["output_tokens"])} output tokens at the prices of <b>{e(cf["model"])}</b>, the strongest '
            f'served model (the most parameters; ties and unknown sizes by output price). Real cost '
            f'{usd(cf["actual_usd"])}; saving <b>{usd(cf["saving_usd"])}</b> ({pct(cf["saving_share"])}).</p>'
            f'<p class="meta">An estimate, not a measurement: that model would have written its own number of '
            f'tokens, and a request answered with a reasoning strategy (or a plan of consultations) counts the '
            f'tokens of every call it made.</p></section>')

    rows = [f'<tr data-status="{e(d["status"])}">' + _cells([e(d["status"]), num(d["requests"]),
                                                              _bar(d["requests"] / n if n else 0),
                                                              usd(d["cost_usd"])]) + "</tr>"
            for d in s["by_status"]]
    fb_rows = [f'<tr data-model="{e(d["model"])}">' + _cells([e(d["model"]), e(d["kind"]), num(d["count"])], 2)
               + "</tr>" for d in s["fallbacks_by_model"]]
    fail_rows = [f'<tr data-request-id="{e(r["request_id"])}">' + _cells([
        when(r["ts"]), f'<code>{e(r["request_id"])}</code>', e(r["model"]), e(r["status"]), e(r["http_status"]),
        f'<span class="err">{e((r["error"] or "")[:300])}</span>'], 9) + "</tr>" for r in s["failures"]]
    rej = [f"<li>{e(k)}: {num(v)}</li>" for k, v in sorted(live["rejected"].items())]
    parts.append('<section id="failures"><h2>Fallbacks and failures</h2><div class="cols"><div><h3>By status</h3>'
                 + _table("status-table", ["status", "requests", "share", "spend"], rows, "no requests")
                 + '</div><div><h3>Candidates abandoned, by failed model</h3>'
                 + _table("fallbacks-table", ["failed model", "kind", "count"], fb_rows, "no fallbacks", 2)
                 + '</div></div><h3>Newest failed, cancelled or refused requests</h3>'
                 + _table("failures-table", ["time (UTC)", "request", "model", "status", "HTTP", "error"], fail_rows,
                          "none in this window", 9)
                 + '<p class="meta">Refused before routing (4xx, never in the ledger; this process since it '
                 f'started): {"<ul>" + "".join(rej) + "</ul>" if rej else "none"}</p></section>')

    parts.append(f'<section id="recent"><h2>Last {len(s["recent"])} decisions</h2>'
                 + '<p class="meta">Open a chosen candidate for the router\'s candidate table (as the ledger keeps '
                 'it: the best ten).</p>'
                 + _table("recent-table", ["time (UTC)", "request", "key", "router · trade-off", "chosen",
                                           "predicted score, cost", "tokens in / out", "cost", "latency",
                                           "decision", "status"],
                          [_recent_row(r) for r in s["recent"]], "no requests in this window", 5) + "</section>")
    return "".join(parts)


def _recent_row(r: dict) -> str:
    fb = r.get("fallbacks") or []
    status = e(r["status"]) + (f' <span class="bad">{len(fb)} fell back</span>' if fb else "")
    cands = r.get("candidates") or []
    chosen, label = _cid(r), _candidate(r["model"], r["strategy"], r["budget"])
    if cands:
        trs = "".join(f'<tr{" class=chosen" if c[0] == chosen else ""}><td>{e(c[0])}</td>'
                      f'<td class=num>{_score(c[1])}</td><td class=num>{usd(c[2])}</td></tr>' for c in cands)
        label = (f'<details data-request-id="{e(r["request_id"])}"><summary>{label}</summary><table class="cands">'
                 f'<thead><tr><th>candidate ({len(cands)}, best first)</th><th class=num>score</th>'
                 f'<th class=num>cost</th></tr></thead><tbody>{trs}</tbody></table></details>')
    rt = e(r["router"]) + (f" · {e(r['tradeoff'])}" if r.get("tradeoff") else "")
    sub = [f"λ = {r['lam']:g}"] if r.get("lam") is not None else []
    sub += [f"cap {usd(r['max_cost'])}"] if r.get("max_cost") is not None else []
    sub += [e(r["requested_model"])] if r.get("requested_model") else []
    ts = "—" if r["ts"] is None else time.strftime("%m-%d %H:%M:%S", time.gmtime(r["ts"]))
    full = str(r["request_id"])
    short = full if len(full) <= 20 else full[:18] + "…"
    rid = f'<code title="{e(full)}">{e(short)}</code>' + (f'<div class="sub">{e(r["client_request_id"])}</div>'
                                                           if r["client_request_id"] else "")
    return (f'<tr data-request-id="{e(r["request_id"])}" data-client-request-id="{e(r["client_request_id"])}">'
            + _cells([f'<span class=nowrap>{ts}</span>', rid, e(r["key"]),
                      rt + "".join(f'<div class="sub">{x}</div>' for x in sub), label,
                      f'{_score(r["predicted_score"])}<div class="sub">{usd(r["predicted_cost"])}</div>',
                      f'{num(r["input_tokens"])} / {num(r["output_tokens"])}', usd(r["cost_usd"]),
                      ms(r["latency_s"], True), "—" if r["router"] == BYPASS else ms(r["decision_ms"]), status], 5)
            + "</tr>")


def _cid(r: dict) -> Optional[str]:
    return None if r.get("model") is None else candidate_id(r["model"], r.get("strategy") or "default", r.get("budget"))


def _score(x: Optional[float]) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.3f}"


def render_page(main: str, opts: dict, live: dict, who: str) -> str:
    wopts = "".join(f'<option value="{w}"{" selected" if w == opts["window"] else ""}>{w}</option>'
                    for w in WINDOWS)
    ropts = "".join(f'<option value="{r}"{" selected" if r == opts["refresh"] else ""}>'
                    f'{"off" if r == 0 else f"every {r} s"}</option>' for r in REFRESH_CHOICES)
    logout = ("" if live["open"] else
              '<form method="post" action="/dashboard/logout" class="inline"><button type="submit">log out</button>'
              '</form>')
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
            f'content="width=device-width, initial-scale=1"><title>routecraft gateway — dashboard</title>'
            f'<link rel="icon" href="data:,">'
            f'<link rel="stylesheet" href="/dashboard/static/dashboard.css"><script src="/dashboard/static/'
            f'dashboard.js" defer></script></head><body data-refresh-s="{opts["refresh"]}">'
            f'<header><h1>routecraft gateway</h1><form method="get" action="/dashboard" id="controls">'
            f'<label>window <select name="window" id="window">{wopts}</select></label>'
            f'<label>refresh <select name="refresh" id="refresh">{ropts}</select></label>'
            f'<input type="hidden" name="last" value="{opts["last"]}"><noscript><button type="submit">show</button>'
            f'</noscript></form><span id="updated" class="meta"></span><span class="who">{e(who)}</span>{logout}'
            f'</header><main id="content">{main}</main><footer class="meta">routers: '
            f'{e(", ".join(f"{n} ({k})" for n, k in live["routers"].items()))} · JSON: '
            f'<a href="/dashboard/stats.json?window={e(opts["window"])}">stats.json</a></footer></body></html>')


def login_page(nxt: str, message: str = "") -> str:
    msg = f'<p class="error" id="login-error">{e(message)}</p>' if message else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
            f'content="width=device-width, initial-scale=1"><title>routecraft gateway — log in</title>'
            f'<link rel="icon" href="data:,">'
            f'<link rel="stylesheet" href="/dashboard/static/dashboard.css"></head><body class="login">'
            f'<main><h1>routecraft gateway</h1><p>This gateway has API keys: log in with one to see the '
            f'dashboard.</p>{msg}<form method="post" action="/dashboard/login" id="login">'
            f'<label>API key <input type="password" name="key" autocomplete="current-password" required autofocus>'
            f'</label><input type="hidden" name="next" value="{e(nxt)}"><button type="submit">log in</button></form>'
            f'<p class="meta">The key is checked by the gateway and never stored in the browser: it answers with a '
            f'session cookie valid for {SESSION_S // 3600} hours.</p></main></body></html>')
