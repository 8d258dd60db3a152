"""Load a script of ``benchmarks/`` (not a package) as a module, for the tests that exercise one."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str, register: bool = False) -> ModuleType:
    """``benchmarks/<name>.py`` as a fresh module. ``register``: also put it in ``sys.modules`` under ``name``
    (a dataclass or pickle inside it looks its module up there)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    if register:
        sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod
