"""Routers behind one contract (``routers/base.py``: ``Router`` and its kinds ``TabularRouter``, ``ObservingRouter``,
``MultiStepRouter``); the registry of names is ``routers/registry.py``."""

from __future__ import annotations

from routecraft.routers.base import (
    Decision,
    MultiStepRouter,
    ObservingRouter,
    Prediction,
    Router,
    TabularRouter,
    choose,
)
from routecraft.routers.registry import REGISTRY, get_router_class, load_router, make_router

__all__ = ["REGISTRY", "Decision", "MultiStepRouter", "ObservingRouter", "Prediction", "Router", "TabularRouter",
           "choose", "get_router_class", "load_router", "make_router"]
