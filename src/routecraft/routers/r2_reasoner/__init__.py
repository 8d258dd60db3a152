"""R2-Reasoner (Shao et al., "Route-and-Reason"): a decomposer splits a query into ordered subtasks, an allocator
gives each subtask a model on the pool's cost ladder, the subtasks run in order on the pool; trained on labels found
by a grouped search over allocations, with SFT then GRPO alternating between the two. See docs/r2_reasoner.md and
seed-algorithms §1.

Modules: ``protocol`` (ladder, prompts, parsers, execution messages), ``executor`` (cached pool execution),
``search`` (grouped label search), ``config``, ``training`` (train/evaluate/route), ``router`` (the R2Reasoner class).
"""

from routecraft.routers.r2_reasoner.router import R2Reasoner


def train_r2_reasoner(config_path, out, resume=True, overrides=None, base_urls=None):
    """See ``routecraft.routers.r2_reasoner.training.train_r2_reasoner``."""
    from routecraft.routers.r2_reasoner.training import train_r2_reasoner as _train

    return _train(config_path, out, resume=resume, overrides=overrides, base_urls=base_urls)


def route_r2_reasoner(artifact, question, stage="final"):
    """Load an artifact, run one question, return the executed plan (a JSON-ready dict)."""
    r = R2Reasoner.from_artifact(artifact, stage=stage)
    try:
        return r.run(question)
    finally:
        r.close()


__all__ = ["R2Reasoner", "route_r2_reasoner", "train_r2_reasoner"]
