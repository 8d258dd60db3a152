"""Router-R1 (Zhang, Feng, You; NeurIPS'25): an LLM policy that routes by multi-round consultation — it thinks,
calls pool models with ``<search> Model: query </search>``, reads the replies in ``<information>`` and answers —
trained with RL on a format/outcome/cost reward. See docs/router_r1.md and seed-algorithms §3.

Modules: ``protocol`` (prompt, parser, format rules), ``reward``, ``backends`` (calling the pool), ``rollout``
(the batched turn loop), ``config``, ``training`` (train/evaluate/route), ``router`` (the RouterR1 class).
"""

from routecraft.routers.router_r1.router import RouterR1


def train_router_r1(config_path, out, resume=True, overrides=None):
    """See ``routecraft.routers.router_r1.training.train_router_r1``."""
    from routecraft.routers.router_r1.training import train_router_r1 as _train

    return _train(config_path, out, resume=resume, overrides=overrides)


def route_router_r1(artifact, question):
    """See ``routecraft.routers.router_r1.training.route_router_r1``."""
    from routecraft.routers.router_r1.training import route_router_r1 as _route

    return _route(artifact, question)


__all__ = ["RouterR1", "route_router_r1", "train_router_r1"]
