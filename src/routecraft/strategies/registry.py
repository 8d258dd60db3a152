"""Strategy registry: ``get_strategy("cot")``, ``get_strategy("sc-pal", k=3)``, ``strategy_from_config({...})``.

Strategies register themselves: ``@register_strategy("cot")`` above the class (the built-ins in ``builtin.py``, which
``routecraft.strategies`` imports, so they are registered whenever the package is). This module imports no strategy.
``sc-<base>`` is the strategy registered as ``sc`` (self-consistency) over the base strategy ``<base>``.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

from pydantic import ValidationError

from routecraft.strategies.base import Strategy

_REGISTRY: dict[str, type[Strategy]] = {}


def register_strategy(name: str, cls: type[Strategy] | None = None) -> Any:
    """Add a strategy class under ``name`` (it must subclass Strategy): ``register_strategy("mine", Mine)``, or as a
    decorator, ``@register_strategy("mine")`` above the class. Returns the class (the decorator, without ``cls``)."""
    if cls is None:
        return lambda c: register_strategy(name, c)
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise TypeError(f"strategy {name!r}: {cls!r} is not a Strategy subclass")
    if name in _REGISTRY or name.startswith("sc-"):
        raise ValueError(f"strategy name {name!r} is taken")
    _REGISTRY[name] = cls
    return cls


def list_strategies() -> list[str]:
    return sorted(_REGISTRY)


def get_strategy(name: str, **options: Any) -> Strategy:
    """The strategy called ``name`` with ``options`` overriding its defaults.

    Names: default (the plain call), direct, cot, cod, pal, sc (self-consistency over cot), and ``sc-<base>``
    (self-consistency over <base>).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"strategy name must be a non-empty string, got {name!r}")
    key = name.strip().lower()
    if key.startswith("sc-"):
        base = key[3:]
        if base not in _REGISTRY or base == "sc":
            raise ValueError(f"unknown strategy {name!r}: 'sc-<base>' needs a base among "
                             f"{', '.join(b for b in list_strategies() if b != 'sc')}")
        cls, options = _REGISTRY["sc"], {"name": key, "base": base, **options}
    elif key in _REGISTRY:
        cls = _REGISTRY[key]
    else:
        raise ValueError(f"unknown strategy {name!r}: known strategies are {', '.join(list_strategies())} "
                         f"(and sc-<base>)")
    try:
        return cls(**options)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or '?'}: {err['msg']}" for err in e.errors())
        raise ValueError(f"strategy {name!r}: invalid options: {problems}") from None


def strategy_from_config(cfg: Mapping[str, Any] | str) -> Strategy:
    """A strategy from a config entry: a name, or a mapping with ``name`` (or ``strategy``) plus options."""
    if isinstance(cfg, str):
        return get_strategy(cfg)
    if not isinstance(cfg, Mapping):
        raise ValueError(f"strategy config must be a name or a mapping, got {type(cfg).__name__}")
    cfg = dict(cfg)
    name = cfg.pop("strategy", None) or cfg.pop("name", None)
    if name is None:
        raise ValueError(f"strategy config {cfg!r} has no 'name'")
    return get_strategy(name, **cfg)


@functools.lru_cache(maxsize=1024)
def strategy_applies(strategy: str, task: str) -> bool:
    """Whether ``strategy`` can run on ``task`` (``default``, the conversation as it is, runs on everything; PAL
    does not run on a code, generation or chat task). Memoised: a server asks per candidate and request."""
    if strategy == "default":
        return True
    return get_strategy(strategy).applies_to(task)
