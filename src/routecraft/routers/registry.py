"""Router registry: name -> "module:Class", imported on first use (a new router is one module plus one entry here),
and loading a saved router artifact by the name it records."""

from __future__ import annotations

import importlib
from pathlib import Path

from routecraft.routers.artifact import read_artifact
from routecraft.routers.base import Router

#: name -> "module:Class"
REGISTRY: dict[str, str] = {
    "random": "routecraft.routers.baselines:RandomRouter",
    "oracle": "routecraft.routers.baselines:OracleRouter",
    "best-single": "routecraft.routers.baselines:BestSingleRouter",
    "cheapest": "routecraft.routers.baselines:CheapestRouter",
    "fixed": "routecraft.routers.baselines:FixedRouter",
    "knn": "routecraft.routers.knn:KNNRouter",
    "mlp": "routecraft.routers.mlp:MLPRouter",
    "mf": "routecraft.routers.mf:MFRouter",
    "linear": "routecraft.routers.linear:LinearRouter",
    "ensemble": "routecraft.routers.ensemble:EnsembleRouter",
    # the built-in rule router: built from the pool's sizes and prices (fit_pool), no training data
    "heuristic": "routecraft.routers.heuristic:HeuristicRouter",
    # the best candidate per detected kind of query (choice, code, numeric, qa), learnt from outcomes
    "kind": "routecraft.routers.kind:KindRouter",
    # reasoning-aware routers: model × strategy (RTR), model × length budget (R2-Router), all three (joint)
    "rtr": "routecraft.routers.rtr:RTRRouter",
    "r2": "routecraft.routers.r2_router:R2Router",
    "joint": "routecraft.routers.joint:JointRouter",
    # observe-then-decide routers: consult candidates, look at their answers, accept or escalate
    "cascade": "routecraft.routers.cascade:CascadeRouter",
    "sequential": "routecraft.routers.sequential:SequentialRouter",
    # multi-step routers: their plans run on the pool
    "router-r1": "routecraft.routers.router_r1:RouterR1",
    "r2-reasoner": "routecraft.routers.r2_reasoner:R2Reasoner",
}


def get_router_class(name: str) -> type[Router]:
    if name not in REGISTRY:
        raise KeyError(f"unknown router {name!r}; known: {', '.join(sorted(REGISTRY))}")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)


def make_router(name: str, **params) -> Router:
    return get_router_class(name)(**params)


def load_router(path: str | Path) -> Router:
    """The router saved in artifact folder ``path`` (``router.json`` + ``state.safetensors``, format 2), of whichever
    registered class ``router.json`` names. Nothing is unpickled: a format-1 artifact (``state.joblib``) is refused
    with a message saying how to re-train or convert it (``routers/artifact.py``)."""
    return read_artifact(path, get_router_class)
