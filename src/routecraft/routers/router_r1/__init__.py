"""Router-R1 (Zhang, Feng, You; NeurIPS'25, arXiv 2506.09033): an LLM policy that routes by multi-round
consultation — it thinks, calls pool models with ``<search> Model: query </search>``, reads the replies in
``<information>`` and answers — trained with RL on a format/outcome/cost reward. See docs/router_r1.md.

Modules: ``protocol`` (prompt, parser, format rules), ``reward``, ``backends`` (calling the pool), ``rollout``
(the batched turn loop), ``config``, ``runtime`` (caller, engine, policy loading, formatting: what routing and
training share), ``training`` (GRPO training, evaluation), ``router`` (the RouterR1 class, ``train_router_r1`` and
``route_router_r1``).
"""

from routecraft.routers.router_r1.router import RouterR1, route_router_r1, train_router_r1

__all__ = ["RouterR1", "route_router_r1", "train_router_r1"]
