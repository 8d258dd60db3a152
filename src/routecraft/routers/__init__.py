"""Router registry. A new router is one module plus one entry here (imported lazily)."""

from __future__ import annotations

import importlib

from routecraft.routers.base import Decision, Prediction, Router, choose, load_router

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
    # reasoning-aware routers (issue: RTR, R2-Router, joint)
    "rtr": "routecraft.routers.rtr:RTRRouter",
    "r2": "routecraft.routers.r2:R2Router",
    "joint": "routecraft.routers.joint:JointRouter",
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


__all__ = ["REGISTRY", "Decision", "Prediction", "Router", "choose", "get_router_class", "load_router",
           "make_router"]
