"""Route-To-Reason (RTR; Pan et al. 2025, arXiv 2505.19435): route each query to a (model, reasoning strategy) pair.

For every candidate the router predicts P(correct) and the number of output tokens from

    [query embedding ⊕ frozen embedding of the model's description ⊕ frozen embedding of the strategy's description
     ⊕ learnable model embedding ⊕ learnable strategy embedding]

with two independent heads, as in the authors' code (goodmanpzh/Route-To-Reason @ c477deb, ``src/main.py``; the
network itself is ``routecraft.routers.networks``):

* performance: Linear(in → 768) → ReLU → Linear(768 → 2), cross-entropy on correct/incorrect (soft targets
  [1−s, s] where scores are fractional), P(correct) = softmax[:, 1];
* tokens: Linear(in → 768) → ReLU → Linear(768 → 1) → Softplus, MSE on the raw output-token count;
* each head owns its own learnable model/strategy tables (``nn.Embedding`` default init N(0, 1));
* two Adam optimisers, lr 1e-3, up to 100 epochs, validation every 3 epochs (performance head on accuracy, token
  head on MSE), early stopping after 5 validation rounds without improvement, separately per head, keeping each
  head's best checkpoint.

Deviation for CPU speed [D]: the code trains on mini-batches of 32 shuffled (query, model, strategy) rows. Each
step updates ~1.5M first-layer weights per head with Adam, so on one CPU thread batch 32 took 273 s of CPU time on
1,000 queries × 16 candidates (synthetic, see benchmarks/reasoning_routers.py), against 64 s with our default of
256 rows per step drawn as whole queries (``batching="queries"``: ~16 queries with all their candidates, so the
query part of the first layer is computed once per query), at the same quality on that table (held-out AUC of
P(correct) 0.842 vs 0.841, realised accuracy at λ = 0 0.925 vs 0.913 on 400 test queries). ``batch_size=32,
batching="rows"`` restores the code's setting.

Choices the paper/code leave open, each a config field (:class:`RTRConfig`) with our default:

* ``val_fraction=0.1``: the code validates on its test split; we carve a validation split of the training queries.
* ``emb_dim=None``: the learnable embeddings have the query encoder's dimension (the code: 768 with a 768-d encoder;
  384 with routecraft's MiniLM), hidden stays 768.
* Budgets: RTR has none. A candidate with a limited output budget is its own "strategy" unit (strategy, budget)
  whose description is the strategy's description plus the length instruction the strategy adds for that budget.
* Cost: the interface (and the bench) trade score against USD: predicted cost = predicted input tokens × input
  price + predicted output tokens × output price, prices fitted to the training outcomes (``prices="data"``) or
  read from the pool YAML (``prices="pool"``). ``cost_unit="tokens"`` gives the paper's objective instead:
  cost = predicted output tokens / ``token_scale``.
* Ablations (``features``): ``"combined"`` (default, the paper), ``"text"`` (description embeddings only, no
  learnable tables), ``"learnable"`` (learnable tables only, no descriptions).

Deciding: ``decide(queries, X, lam=...)`` maximises predicted accuracy − λ·predicted cost; ``max_cost=`` (USD) or
``max_tokens=`` (predicted output tokens ≤ cap) choose the best predicted accuracy under a hard cap.

Cold start (``add_candidates(new_data, X)``): a new model's (or strategy's) learnable embedding starts at the
*description projection*: a ridge regression (``cold_alpha``, with intercept) from the frozen description embeddings
of the known models (strategies) to their learned embeddings, applied to the new description; with few known
entities this is their mean plus a small description-driven correction. Only the new embedding rows are then
fine-tuned (Adam, ``cold_lr``, ``cold_steps`` full-batch steps) on the new candidates' labelled cells; every other
weight stays frozen.

Training runs in torch on one CPU thread; prediction runs in numpy from the stored weights (an artifact predicts
without torch).
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from routecraft.data.features import DEFAULT_ENCODER
from routecraft.routers.networks import CandidateNetRouter


class RTRConfig(BaseModel):
    """RTR settings; defaults are the paper's code unless marked [D] (our choice where the paper is silent)."""

    model_config = ConfigDict(extra="forbid")

    features: Literal["combined", "text", "learnable"] = "combined"
    hidden: int = Field(768, ge=1)
    emb_dim: Optional[int] = Field(None, ge=1, description="[D] None = the query encoder's dimension")
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(256, ge=1, description="[D] rows per step; the code: 32 (see the module docstring)")
    batching: Literal["rows", "queries"] = Field("queries", description="[D] the code: 'rows'")
    epochs: int = Field(100, ge=1)
    val_every: int = Field(3, ge=1)
    patience: int = Field(5, ge=1)
    val_fraction: float = Field(0.1, ge=0, lt=1, description="[D] the code validates on its test split")
    cls_val_metric: Literal["accuracy", "loss"] = "accuracy"
    token_target: Literal["raw", "log"] = "raw"
    weight_decay: float = Field(0.0, ge=0)
    text_encoder: str = DEFAULT_ENCODER
    pool: Optional[str] = Field("local", description="[D] pool YAML for model descriptions (and prices='pool')")
    prices: Literal["data", "pool"] = "data"
    budget_template: str = "paper"
    cost_unit: Literal["usd", "tokens"] = "usd"
    token_scale: float = Field(1000.0, gt=0)
    cold_steps: int = Field(200, ge=0)
    cold_lr: float = Field(1e-2, gt=0)
    cold_alpha: float = Field(1.0, gt=0)
    seed: int = 0


class RTRRouter(CandidateNetRouter):
    """Route-To-Reason: (model, strategy) routing from query, description and learnable embeddings; see the module
    docstring for the architecture, defaults and cold start."""

    name = "rtr"
    config_cls = RTRConfig
