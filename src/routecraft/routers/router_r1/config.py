"""Router-R1 configuration (YAML, validated by pydantic). Defaults are the paper's and its code's
(ulab-uiuc/Router-R1 @ 801a240: ``train.sh``, ``ppo_trainer.yaml``, ``route_service``);
``routecraft/configs/router_r1.yaml`` is the CPU-sized configuration shipped with routecraft."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from routecraft.data.schema import Candidate
from routecraft.routers.multistep import check_models, pool_models, read_config_mapping
from routecraft.strategies import list_strategies
from routecraft.train.config import RLConfig

#: the strategies every model is offered with when ``call.targets: candidates`` lists no candidates
DEFAULT_TARGET_STRATEGIES = ("cot", "pal")


def parse_target(spec: str) -> Candidate:
    """A consultation target ``model/strategy[/budget]`` (or a candidate id ``model|strategy|budget``). The model
    name may itself hold ``/`` (``openai/gpt-4o-mini/cot``): the strategy (and a budget) are read from the end."""
    s = str(spec).strip()
    if "|" in s:
        try:
            return Candidate.parse(s)
        except ValueError as exc:
            raise ValueError(f"candidate {spec!r}: {exc}") from None
    parts = [x.strip() for x in s.split("/")]
    budget = None
    if len(parts) >= 3 and (parts[-1].isdigit() or parts[-1] in ("default", "none")):
        b = parts.pop()
        budget = None if b in ("default", "none") else int(b)
        if budget is not None and budget <= 0:
            raise ValueError(f"candidate {spec!r}: budget must be positive")
    if len(parts) < 2 or not all(parts):
        raise ValueError(f"candidate {spec!r} is not 'model/strategy' or 'model/strategy/budget'")
    model, strategy = "/".join(parts[:-1]), parts[-1]
    known = list_strategies()  # includes "default", the plain call
    if strategy not in known:
        raise ValueError(f"candidate {spec!r}: unknown strategy {strategy!r} (known: {', '.join(sorted(known))})")
    return Candidate(model, strategy, budget)


class ProtocolConfig(BaseModel):
    """The rollout loop: turns, token caps, sampling of the policy."""

    model_config = ConfigDict(extra="forbid")

    max_turns: int = Field(4, ge=1, description="Routed turns; one final turn without routing follows (paper: 4).")
    max_turn_tokens: int = Field(1024, ge=1, description="Policy tokens per turn (paper: 1024).")
    max_obs_tokens: int = Field(600, ge=16, description="Tokens of one <information> block (paper: 600).")
    obs_keep: Literal["head", "tail"] = Field(
        "head", description="Which end of an over-long reply survives the max_obs_tokens cut: head (paper) or tail "
                            "(ours: with CPU-sized caps a worked solution's final result is at its end).")
    max_response_tokens: int = Field(4096, ge=1, description="Total response tokens (turns + information).")
    max_context_tokens: int = Field(4096, ge=64, description="The policy sees at most this many last tokens "
                                                             "(paper: max_prompt_length 4096).")
    temperature: float = Field(1.0, ge=0, description="Policy sampling temperature in training (paper: 1.0).")
    top_p: float = Field(1.0, gt=0, le=1)
    eval_temperature: float = Field(0.0, ge=0, description="Temperature when routing and evaluating (0 = greedy).")
    answer_example: str = Field("Beijing", description="The example answer shown in the prompt.")
    prompt: Literal["full", "compact"] = Field("full", description="full: the paper's prompt with the pool's model "
                                                                   "descriptions; compact: a short one (CPU runs).")
    response_prefix: str = Field("", description="Text forced at the start of every response (e.g. '<think>'); "
                                                 "not sampled, so masked out of the loss. The paper: none.")


class CallConfig(BaseModel):
    """How the pool's models are called (paper: route_service)."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: int = Field(512, ge=1, description="Output tokens per call (paper: 512).")
    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: Optional[int] = 42
    max_concurrency: int = Field(10, ge=1, description="Calls in flight (paper: 10 threads).")
    timeout: float = Field(300.0, gt=0)
    max_retries: int = Field(2, ge=0)
    targets: Literal["models", "candidates"] = Field(
        "models", description="What a consultation names: models (the paper: a pool model answers the policy's "
                              "sub-query under the called-model prompt) or candidates (ours: model × strategy × "
                              "budget, run by the strategy on the sub-query through routecraft's consultation "
                              "executor, with the extracted answer in the reply; the same observation form as the "
                              "sequential router's).")
    candidates: list[str] = Field(
        default_factory=list, description="With targets: candidates, the candidates the policy may consult, as "
                                          "'model/strategy' or 'model/strategy/budget' (default: every model × "
                                          "cot and pal).")

    @field_validator("candidates")
    @classmethod
    def _known_strategies(cls, v: list[str]) -> list[str]:
        for spec in v:
            parse_target(spec)
        return v


class RewardConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alpha: float = Field(0.0, ge=0, le=1, description="Cost coefficient α (paper: cost_coe, default 0).")
    outcome: Literal["em", "f1", "grader"] = Field("em", description="em, f1, or the task's grader.")
    cost_window: int = Field(1000, ge=1)
    cost_lo_pct: float = Field(5.0, ge=0, lt=100)
    cost_hi_pct: float = Field(95.0, gt=0, le=100)


class DataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: Literal["gsm8k"] = Field("gsm8k", description="Training questions (GSM8K train split).")
    train_limit: Optional[int] = Field(None, ge=1, description="Use a random subset of this many training questions.")
    eval_limit: int = Field(100, ge=1, description="Held-out test questions for evaluation.")
    eval_select: Literal["first", "sample"] = Field(
        "first", description="first: the first eval_limit questions of the test file (the ones `routecraft collect "
                             "--data gsm8k-test --limit N` covers, so pool models and routers are compared on the "
                             "same questions); sample: a seeded random sample.")
    seed: int = 42


class WarmupConfig(BaseModel):
    """An optional supervised warm start on protocol demonstrations before GRPO (our addition; the paper's 3B
    policies follow the format from the prompt alone, a 135M policy does not). 0 steps = none."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(0, ge=0)
    demos: int = Field(64, ge=1, description="Demonstrations built from training questions.")
    batch_size: int = Field(4, ge=1)
    learning_rate: float = Field(1e-4, gt=0)


class BackendConfig(BaseModel):
    """Where the pool's local models are served during training/routing."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["auto", "running", "private"] = Field(
        "auto", description="running: servers from `routecraft pool up`; private: start own servers; "
                            "auto: running where up, private otherwise.")
    threads: int = Field(1, ge=0, description="llama.cpp threads per private server (0: pool default).")
    parallel: int = Field(2, ge=1, description="Parallel slots per private server.")
    ctx: int = Field(4096, ge=256, description="Context per private server (split across its slots).")


class RouterR1Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pool: str = Field("local", description="Pool name or YAML file.")
    models: Optional[list[str]] = Field(None, description="Pool models the policy may call (default: all instruct "
                                                           "models of the pool).")
    protocol: ProtocolConfig = ProtocolConfig()
    call: CallConfig = CallConfig()
    reward: RewardConfig = RewardConfig()
    data: DataConfig = DataConfig()
    backends: BackendConfig = BackendConfig()
    warmup: WarmupConfig = WarmupConfig()
    train: RLConfig = RLConfig()

    @field_validator("models")
    @classmethod
    def _nonempty(cls, v: Optional[list[str]]) -> Optional[list[str]]:
        return check_models(v)

    def call_targets(self) -> Optional[list[Candidate]]:
        """The candidates a consultation may name (``call.targets: candidates``), or None (pool models). Every
        candidate's model must be one of the pool models the policy may call."""
        if self.call.targets == "models":
            return None
        names = self.resolve_pool().names
        cands = ([parse_target(c) for c in self.call.candidates] if self.call.candidates
                 else [Candidate(m, s) for m in names for s in DEFAULT_TARGET_STRATEGIES])
        bad = [c.id for c in cands if c.model not in names]
        if bad:
            raise ValueError(f"router-r1 call.candidates: {', '.join(bad)} name models outside the policy's pool "
                             f"models ({', '.join(names)})")
        return cands

    def resolve_pool(self):
        """The pool restricted to ``models`` (default: its instruct models); errors name the missing model."""
        pool, names = pool_models(self.pool, self.models, "router-r1")
        return pool.subset(names)


class ConfigError(ValueError):
    """A Router-R1 config file is invalid; the message names the file and the field."""


def builtin_config_path() -> Path:
    return Path(str(resources.files("routecraft") / "configs" / "router_r1.yaml"))


def load_config(path: str | os.PathLike | None = None, overrides: Optional[dict] = None) -> RouterR1Config:
    """Read a config YAML (None: the built-in one), apply nested ``overrides`` ({"train": {"max_steps": 2}})."""
    p = Path(path) if path is not None else builtin_config_path()
    data = read_config_mapping(p, "router-r1", ConfigError, overrides)
    try:
        return RouterR1Config.model_validate(data)
    except ValidationError as exc:
        lines = [f"{p}: field '{'.'.join(str(x) for x in e['loc'])}': {e['msg'].removeprefix('Value error, ')}"
                 for e in exc.errors()]
        raise ConfigError("\n".join(lines)) from None
