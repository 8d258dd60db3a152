"""`routecraft serve` and `routecraft usage` (a Typer app; also runnable as `python -m routecraft.serve ...`).

Wire into the main CLI with::

    from routecraft.serve.cli import serve_cmd, usage_cmd
    app.command("serve")(serve_cmd)
    app.command("usage")(usage_cmd)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

serve_app = typer.Typer(no_args_is_help=True, add_completion=False,
                        help="The OpenAI-compatible routing gateway and its usage ledger.")
_err = Console(stderr=True)
_out = Console()


def _fail(msg: str, code: int = 2) -> None:
    _err.print(f"[bold red]error:[/] {escape(msg)}")
    raise typer.Exit(code)


def serve_cmd(
    config: Optional[Path] = typer.Option(None, "--config", "-c",
                                          help="Gateway YAML (pool, routers, trade-offs, keys, limits). Default: the "
                                               "built-in serve.yaml (local instruct models, heuristic router)."),
    host: Optional[str] = typer.Option(None, help="Address to listen on (overrides the config)."),
    port: Optional[int] = typer.Option(None, help="Port (0: any free port; overrides the config)."),
    router: Optional[str] = typer.Option(None, help="Router artifact folder for routecraft/auto (overrides the "
                                                    "config's routers.auto)."),
    pool: Optional[str] = typer.Option(None, help="Built-in pool name or pool YAML (overrides the config)."),
    ledger: Optional[str] = typer.Option(None, help="Usage ledger: a SQLite path or a postgresql:// URL (overrides "
                                                    "the config)."),
    ready_file: Optional[str] = typer.Option(None, help="Write {host, port, pid, url} here once serving."),
    log_level: Optional[str] = typer.Option(None, help="uvicorn/gateway log level."),
) -> None:
    """Serve the pool behind routers on an OpenAI-compatible API (chat completions, streaming, models, metrics)."""
    from routecraft.serve.config import ServeConfigError, load_config
    from routecraft.serve.server import run_server

    try:
        cfg, base = load_config(config)
        over = {"host": host, "port": port, "pool": pool, "ledger": ledger, "log_level": log_level}
        if router is not None:
            over["routers"] = {**cfg.routers, "auto": str(Path(router).resolve())}
        cfg = cfg.with_overrides(**over)
        run_server(cfg, base if config is not None else None, ready_file=ready_file,
                   progress=lambda m: _err.print(m))
    except ServeConfigError as exc:
        _fail(str(exc))


def usage_cmd(
    ledger: str = typer.Option("~/.cache/routecraft/usage.sqlite", envvar="ROUTECRAFT_LEDGER",
                               help="The gateway's usage ledger: a SQLite path (sqlite:///abs/path) or "
                                    "postgresql://user:pass@host:port/db (or set $ROUTECRAFT_LEDGER; PGPASSWORD "
                                    "works)."),
    by: Optional[str] = typer.Option(None, help="Group by key, model, router, strategy, status, day or "
                                                "requested_model (default: one total)."),
    since_hours: Optional[float] = typer.Option(None, help="Only the last N hours."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Summarise the usage ledger: requests, failures, tokens, cost and latency per group (read-only)."""
    import time

    from routecraft.serve.ledger import LedgerError, parse_ledger_url, summarise

    try:
        src = parse_ledger_url(ledger)
        rows = summarise(ledger, by=by, since=None if since_hours is None else time.time() - since_hours * 3600)
    except (LedgerError, ValueError) as exc:
        _fail(str(exc))
    name = str(src.path) if src.backend == "sqlite" else src.display  # never the password
    if as_json:
        _out.print_json(json.dumps(rows))
        return
    if not rows:
        _out.print(f"{name}: no requests recorded", markup=False, highlight=False)
        return
    group = by or "group"
    t = Table(title=f"usage — {name}")
    for h in (group, "requests", "ok", "failed", "cancelled", "in tok", "out tok", "cost $", "p50 s", "p99 s",
              "decide ms", "fallbacks"):
        t.add_column(h, no_wrap=True, overflow="fold")
    for r in rows:
        t.add_row(str(r[group]), str(r["requests"]), str(r["ok"]), str(r["failed"]), str(r["cancelled"]),
                  str(r["input_tokens"]), str(r["output_tokens"]), f"{r['cost_usd']:.6g}",
                  "-" if r["latency_p50_s"] is None else f"{r['latency_p50_s']:.3f}",
                  "-" if r["latency_p99_s"] is None else f"{r['latency_p99_s']:.3f}",
                  "-" if r["decision_ms_mean"] is None else f"{r['decision_ms_mean']:.2f}", str(r["fallbacks"]))
    # never squeeze the table into the terminal (rich would cut headers and numbers to "…"): render it as wide as
    # it needs; a narrow terminal wraps the lines, a pipe or file gets them whole
    need = Measurement.get(_out, _out.options.update_width(100_000), t).maximum
    console = _out if need <= _out.width else Console(width=need, force_terminal=_out.is_terminal or None)
    console.print(t, crop=False)


serve_app.command("serve")(serve_cmd)
serve_app.command("usage")(usage_cmd)

if __name__ == "__main__":  # pragma: no cover
    serve_app()
