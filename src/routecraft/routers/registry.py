"""Router registry: name -> "module:Class", imported on first use (a new router is one module plus one entry here),
and loading a saved router artifact by the name it records."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import joblib

from routecraft.data.schema import Candidate
from routecraft.routers.base import ARTIFACT_VERSION, Router

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
    """The router saved in artifact folder ``path`` (``router.json`` + ``state.joblib``), of whichever registered
    class ``router.json`` names."""
    path = Path(path)
    meta_file = path / "router.json"
    if not meta_file.exists():
        raise FileNotFoundError(f"{path} is not a router artifact (no router.json)")
    meta = json.loads(meta_file.read_text())
    if meta.get("format_version") != ARTIFACT_VERSION:
        raise ValueError(f"{meta_file}: artifact format {meta.get('format_version')} is not supported "
                         f"(this routecraft reads format {ARTIFACT_VERSION})")
    cls = get_router_class(meta["router"])
    router = cls(**meta.get("params", {}))
    router.candidates = [Candidate.parse(c) for c in meta["candidates"]]
    router.encoder = meta.get("encoder")
    try:
        state = joblib.load(path / "state.joblib")
    except (ModuleNotFoundError, AttributeError, ImportError) as exc:  # classes moved or renamed since it was saved
        raise ValueError(f"{path}: this {meta['router']!r} artifact was saved by another routecraft version and "
                         f"refers to code that no longer exists ({type(exc).__name__}: {exc}); train it again with "
                         f"`routecraft train --router {meta['router']} ... --out {path}`") from None
    router.set_state(state)
    return router
