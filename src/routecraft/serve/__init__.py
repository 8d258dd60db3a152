"""The OpenAI-compatible routing gateway (``routecraft serve``) and its usage ledger (``routecraft usage``).

Submodules are imported lazily so that ``import routecraft.serve`` stays cheap:

* ``routecraft.serve.config``    — ServeConfig, load_config(), hash_key(), ServeConfigError
* ``routecraft.serve.gateway``   — Gateway (the request path: admission, routing, execution with fallback or a plan
  of consultations, answers, billing; health, stickiness)
* ``routecraft.serve.session``   — one request's response, headers, ledger row, metrics and charge (Session, Reply)
* ``routecraft.serve.consult``   — executing observe-then-decide plans (cascade, sequential)
* ``routecraft.serve.outcomes``  — Target, Plan, Outcome, the failure kinds
* ``routecraft.serve.app``       — create_app(gateway) -> FastAPI (the thin HTTP layer)
* ``routecraft.serve.server``    — run_server(config), pool_endpoints(config)
* ``routecraft.serve.ledger``    — Ledger, summarise(), read_rows(), usage_stats() (the dashboard's aggregates)
* ``routecraft.serve.dashboard`` — GET /dashboard: the operator's page (access, rendering; assets in static/)
* ``routecraft.serve.cli``       — serve_app (Typer), serve_cmd, usage_cmd
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ServeConfig": "config", "ServeConfigError": "config", "load_config": "config", "hash_key": "config",
    "config_from_dict": "config",
    "Gateway": "gateway", "AllCandidatesFailed": "gateway",
    "create_app": "app",
    "run_server": "server", "pool_endpoints": "server",
    "Ledger": "ledger", "summarise": "ledger", "read_rows": "ledger",
    "serve_app": "cli", "serve_cmd": "cli", "usage_cmd": "cli",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'routecraft.serve' has no attribute {name!r}")
    return getattr(importlib.import_module(f"routecraft.serve.{mod}"), name)
