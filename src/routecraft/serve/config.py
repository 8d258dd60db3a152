"""Gateway configuration: a YAML file validated by pydantic.

Everything has a default (``routecraft/configs/serve.yaml`` is the documented default file), so ``routecraft serve``
with no arguments serves the built-in local pool's instruct models behind the built-in heuristic router on
127.0.0.1:8000. Errors name the file and the field.

API keys are never stored in clear: ``keys`` holds ``sha256`` hex digests of the secrets (``printf %s SECRET |
sha256sum``); the environment variable named by ``keys_env`` (default ``ROUTECRAFT_API_KEYS``) may add keys as
``name=secret`` entries separated by commas (a bare ``secret`` gets the name ``env-<i>``). No key at all means the
gateway is open, which is allowed on a loopback address only (unless ``allow_open`` is set).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from routecraft.serve.ledger import parse_ledger_url
from routecraft.strategies import get_strategy, task_kind

HEURISTIC = "heuristic"
#: the default of ``routers.auto``: the learned router shipped inside the package when its held-out comparison
#: selected it over the heuristic (``builtin_router``), else the heuristic
BUILTIN = "builtin"
PREFIX = "routecraft/"


class ServeConfigError(ValueError):
    """An invalid gateway config; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Tradeoff(_Strict):
    """One trade-off: maximise predicted score − λ·cost (λ in score per USD), or the best score within a cost cap."""

    lam: float = Field(0.0, ge=0, description="λ: score points given up per USD saved.")
    max_cost: Optional[float] = Field(None, gt=0, description="Cost cap per request in USD (replaces λ).")
    description: Optional[str] = None


class KeySpec(_Strict):
    """One API key: its sha256 hex digest, never the secret."""

    name: str = Field(min_length=1)
    sha256: str
    budget_usd: Optional[float] = Field(None, ge=0, description="Total spend allowed (USD, from the ledger).")
    rpm: Optional[int] = Field(None, gt=0, description="Requests per minute allowed.")

    @field_validator("sha256")
    @classmethod
    def _hex(cls, v: str) -> str:
        v = v.strip().lower()
        if not re.fullmatch(r"[0-9a-f]{64}", v):
            raise ValueError("must be the 64-hex-digit sha256 of the key (printf %s SECRET | sha256sum), "
                             "not the key itself")
        return v


class Servers(_Strict):
    """How local pool models (``local:`` entries) get a llama.cpp server."""

    start: bool = Field(True, description="Start servers for local models that are not running.")
    reuse_running: bool = Field(True, description="Use servers already started by `routecraft pool up`.")
    parallel: int = Field(2, ge=1, description="Parallel slots per server started here.")
    threads: int = Field(0, ge=0, description="Threads per server started here (0: the pool default).")
    ctx: Optional[int] = Field(None, gt=0, description="Context per server (default: the model's context).")
    start_timeout_s: float = Field(300.0, gt=0)


class Limits(_Strict):
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Larger request bodies get 413.")
    max_messages: int = Field(512, ge=1)
    max_concurrency: int = Field(16, ge=1, description="Requests executing on backends at once.")
    max_queue: int = Field(256, ge=0, description="Requests waiting for a slot; more get 429.")
    queue_timeout_s: float = Field(60.0, gt=0, description="Longest wait for a slot before 429.")
    backend_timeout_s: float = Field(120.0, gt=0, description="Per backend call; then the next candidate.")
    backend_retries: int = Field(0, ge=0, description="Retries of a transient backend error before falling back.")
    unhealthy_cooldown_s: float = Field(10.0, ge=0, description="A model that failed is tried last for this long.")
    default_max_tokens: int = Field(1024, ge=1, description="Output cap for plain chat when the request sets none.")
    max_output_tokens: int = Field(8192, ge=1, description="Largest max_tokens a request may ask for.")
    key_budget_usd: Optional[float] = Field(None, ge=0, description="Budget of keys from the environment.")
    key_rpm: Optional[int] = Field(None, gt=0, description="Rate limit of keys from the environment.")
    shutdown_grace_s: float = Field(30.0, ge=0, description="How long shutdown waits for in-flight requests.")
    auth_failures_per_min: int = Field(20, ge=0, description="Failed authentications allowed per client address "
                                       "in a rolling minute; more get 429 (0: no throttling).")


class Supervision(_Strict):
    """Watching the backends: probes, restarts of private llama.cpp servers, and pool-state changes."""

    enabled: bool = Field(True, description="Probe backends and restart dead private servers.")
    interval_s: float = Field(2.0, gt=0, description="Seconds between two rounds of probes.")
    probe_timeout_s: float = Field(2.0, gt=0)
    restart_backoff_s: float = Field(1.0, gt=0, description="First wait before restarting a dead private server.")
    max_backoff_s: float = Field(60.0, gt=0, description="Longest wait between two restarts of one server.")


class Sandbox(_Strict):
    """How PAL programs (model-written code) run. The strong isolation is required unless ``allow_weak`` is set."""

    allow_weak: bool = Field(False, description="Run PAL with the audit-hook-only isolation where the strong "
                             "(kernel) isolation is unavailable. It does not stop a program from reading files.")


class Sticky(_Strict):
    enabled: bool = Field(True, description="Keep a conversation (conversation_id) on its first decision.")
    ttl_s: float = Field(3600.0, gt=0)
    max_conversations: int = Field(10_000, ge=1)


class HeuristicConfig(_Strict):
    strategies: list[str] = Field(default_factory=lambda: ["default", "cot", "pal"],
                                  description="Strategies the heuristic router offers on every pool model.")

    @field_validator("strategies")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("give at least one strategy")
        for s in v:
            if s != "default":
                get_strategy(s)  # ValueError names the known ones
        return v


class ServeConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1, le=64, description="Gateway processes sharing the listening socket (one ledger; "
                         "rate limits, stickiness, the queue bound and failed-auth throttling are per worker).")
    allow_open: bool = Field(False, description="Serve without API keys on a non-loopback address.")
    pool: Union[str, dict] = Field("local", description="Built-in pool name, pool YAML path, or an inline pool.")
    models: Optional[list[str]] = Field(None, description="Pool models to serve (default: the instruct models).")
    servers: Servers = Field(default_factory=Servers)
    routers: dict[str, str] = Field(default_factory=lambda: {"auto": BUILTIN},
                                    description="Offered as routecraft/<name>: 'heuristic', 'builtin' (the learned "
                                                "default shipped with routecraft where it was selected, else the "
                                                "heuristic) or a router artifact.")
    heuristic: HeuristicConfig = Field(default_factory=HeuristicConfig)
    tradeoffs: dict[str, Tradeoff] = Field(default_factory=lambda: {
        "quality": Tradeoff(lam=0.0, description="best predicted score, cost ignored"),
        "balanced": Tradeoff(lam=5000.0, description="λ = 5000 score/USD"),
        "cheap": Tradeoff(lam=100000.0, description="λ = 100000 score/USD"),
    }, description="Named trade-offs, offered as routecraft/<router>:<name>.")
    default_tradeoff: str = Field("quality", description="The trade-off used when the model name has none.")
    task: str = Field("auto", description="Answer kind for strategies: 'auto' (inferred per request) or a task.")
    sticky: Sticky = Field(default_factory=Sticky)
    keys: list[KeySpec] = Field(default_factory=list)
    keys_env: Optional[str] = "ROUTECRAFT_API_KEYS"
    dashboard_viewers: Optional[list[str]] = Field(
        None, description="Key names allowed to open /dashboard, which shows every key's name, spend and requests "
                          "(default: every key — a single-team gateway; list the operators' keys on a gateway shared "
                          "by tenants).")
    limits: Limits = Field(default_factory=Limits)
    supervision: Supervision = Field(default_factory=Supervision)
    sandbox: Sandbox = Field(default_factory=Sandbox)
    ledger: str = Field("~/.cache/routecraft/usage.sqlite",
                        description="Usage ledger: a SQLite path (sqlite:///abs/path, sqlite:rel/path; WAL) or "
                                    "postgresql://user:pass@host:port/db, shared by several gateways.")
    default_temperature: float = Field(0.7, ge=0, le=2, description="Plain chat temperature when none is sent.")
    log_level: str = "warning"

    @field_validator("routers")
    @classmethod
    def _routers(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
                raise ValueError(f"router name {name!r}: use letters, digits, '.', '_' or '-'")
        return v

    @field_validator("tradeoffs")
    @classmethod
    def _tradeoffs(cls, v: dict[str, Tradeoff]) -> dict[str, Tradeoff]:
        for name in v:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
                raise ValueError(f"trade-off name {name!r}: use letters, digits, '.', '_' or '-'")
        return v

    @field_validator("task")
    @classmethod
    def _task(cls, v: str) -> str:
        if v != "auto":
            task_kind(v)
        return v

    @field_validator("ledger")
    @classmethod
    def _ledger(cls, v: str) -> str:
        parse_ledger_url(v)  # a LedgerURLError (a ValueError) names the problem, never the password
        return v.strip()

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        v = v.lower()
        if v not in ("critical", "error", "warning", "info", "debug", "trace"):
            raise ValueError(f"unknown log level {v!r}")
        return v

    @model_validator(mode="after")
    def _check(self) -> "ServeConfig":
        if self.default_tradeoff not in self.tradeoffs:
            raise ValueError(f"default_tradeoff {self.default_tradeoff!r} is not in tradeoffs "
                             f"({', '.join(self.tradeoffs) or 'none'})")
        if "auto" not in self.routers:
            self.routers = {"auto": BUILTIN, **self.routers}
        names = [k.name for k in self.keys]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"duplicate key name(s): {', '.join(sorted(dup))}")
        return self

    # ---- helpers ----
    @property
    def ledger_path(self) -> Path:
        return Path(os.path.expanduser(self.ledger))

    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def router_dir(self, spec: str, base: Optional[Path] = None) -> Path:
        p = Path(os.path.expanduser(spec))
        if not p.is_absolute() and base is not None:
            p = base / p
        return p

    def with_overrides(self, **kw: Any) -> "ServeConfig":
        data = self.model_dump()
        data.update({k: v for k, v in kw.items() if v is not None})
        return config_from_dict(data, "command-line options")


def builtin_router(root: Optional[Path] = None) -> tuple[Optional[Path], str]:
    """The learned default router shipped inside the package (``routecraft/configs/default_router``, or ``root``):
    (its artifact folder, why) when its ``selection.json`` says it beat the heuristic router on held-out questions
    (``{"selected": true, "rule": ..., "heldout": {...}}``), else (None, why the heuristic serves instead)."""
    d = Path(root) if root is not None else Path(str(resources.files("routecraft") / "configs" / "default_router"))
    sel = d / "selection.json"
    if not (d / "router.json").is_file() or not sel.is_file():
        return None, "no learned default router is shipped with this routecraft"
    try:
        info = json.loads(sel.read_text())
    except (OSError, ValueError) as exc:
        return None, f"{sel}: unreadable ({exc})"
    if not isinstance(info, dict) or info.get("selected") is not True:
        return None, not_selected_why(info, sel)
    return d, str(info.get("rule") or "selected")


def not_selected_why(info: object, sel: Path) -> str:
    """One line for the start-up log on why a shipped ``selection.json`` did not select its router: where the router
    trailed a heuristic (from ``margin_vs_heuristics``), or that it was a dry run; the file is named for the rule and
    the numbers (the rule is a paragraph, too long for a log line)."""
    if not isinstance(info, dict):
        return f"{sel}: not a JSON object, so no router is selected"
    router = info.get("router")
    what = "the shipped learned router" + (f" ({router})" if isinstance(router, str) and router else "")
    lost = []
    margins = info.get("margin_vs_heuristics")
    for ref, by in (margins.items() if isinstance(margins, dict) else ()):
        for trade_off, m in (by.items() if isinstance(by, dict) else ()):
            diff = m.get("diff") if isinstance(m, dict) else None
            if isinstance(diff, (int, float)) and not isinstance(diff, bool) and diff <= 0:
                lost.append(f"{ref} at {trade_off} ({diff:+.3f} utility)")
    if lost:
        detail = "it trails " + ", ".join(lost) + " on held-out questions"
    elif info.get("dry_run") is True:
        detail = "it was a dry run"
    else:
        detail = "selected is not true"
    return f"{what} was not selected over the heuristic: {detail}; the rule and the numbers are in {sel}"


def hash_key(secret: str) -> str:
    """The sha256 hex digest stored in the config for ``secret``."""
    return hashlib.sha256(secret.encode()).hexdigest()


def env_keys(cfg: ServeConfig, environ: Optional[dict] = None) -> list[KeySpec]:
    """Keys from ``cfg.keys_env`` (``name=secret,name2=secret2`` or bare secrets), hashed at once."""
    environ = os.environ if environ is None else environ
    if not cfg.keys_env:
        return []
    raw = environ.get(cfg.keys_env, "")
    out = []
    for i, entry in enumerate(e.strip() for e in raw.split(",")):
        if not entry:
            continue
        name, sep, secret = entry.partition("=")
        if not sep:
            name, secret = f"env-{i}", entry
        if not secret:
            raise ServeConfigError(f"${cfg.keys_env}: entry {i} ({name!r}) has an empty key")
        out.append(KeySpec(name=name.strip(), sha256=hash_key(secret.strip()), budget_usd=cfg.limits.key_budget_usd,
                           rpm=cfg.limits.key_rpm))
    return out


def default_config_path() -> Path:
    return Path(str(resources.files("routecraft") / "configs" / "serve.yaml"))


def _format(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        field = ".".join(str(x) for x in err["loc"]) or "config"
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: field '{field}': {msg}")
    return "\n".join(lines)


def config_from_dict(data: Any, source: str = "<dict>") -> ServeConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ServeConfigError(f"{source}: a gateway config must be a mapping, got {type(data).__name__}")
    try:
        cfg = ServeConfig.model_validate(data)
    except ValidationError as exc:
        raise ServeConfigError(_format(exc, source)) from None
    return cfg


def load_config(path: Optional[str | os.PathLike] = None) -> tuple[ServeConfig, Path]:
    """The config at ``path`` (default: the built-in serve.yaml) and the folder relative paths resolve against."""
    p = Path(path) if path is not None else default_config_path()
    try:
        text = p.read_text()
    except OSError as exc:
        raise ServeConfigError(f"cannot read gateway config {p}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ServeConfigError(f"{p}: invalid YAML: {exc}") from None
    return config_from_dict(data, str(p)), p.resolve().parent
