"""R2-Reasoner (Shao et al., "Route-and-Reason", arXiv 2506.05901): a decomposer splits a query into ordered subtasks,
an allocator gives each subtask a model on the pool's cost ladder, the subtasks run in order on the pool; trained on
labels found by a grouped search over allocations, with SFT then GRPO alternating between the two. See
docs/r2_reasoner.md.

Modules: ``protocol`` (ladder, prompts, parsers, execution messages), ``executor`` (cached pool execution),
``search`` (grouped label search), ``config``, ``runtime`` (ladder, text policies, the pipeline, the pool executor,
formatting: what routing and training share), ``training`` (search, SFT, GRPO; evaluation), ``router`` (the
R2Reasoner class, ``train_r2_reasoner``, ``route_r2_reasoner``, ``load_r2_reasoner``).
"""

from routecraft.routers.r2_reasoner.router import R2Reasoner, load_r2_reasoner, route_r2_reasoner, train_r2_reasoner

__all__ = ["R2Reasoner", "load_r2_reasoner", "route_r2_reasoner", "train_r2_reasoner"]
