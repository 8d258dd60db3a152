"""Routers behind one interface (``routers/base.py``); the registry of names is ``routers/registry.py``."""

from __future__ import annotations

from routecraft.routers.base import Decision, Prediction, Router, choose
from routecraft.routers.registry import REGISTRY, get_router_class, load_router, make_router

__all__ = ["REGISTRY", "Decision", "Prediction", "Router", "choose", "get_router_class", "load_router",
           "make_router"]
