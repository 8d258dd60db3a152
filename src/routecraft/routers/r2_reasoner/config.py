"""R2-Reasoner configuration (YAML, validated by pydantic).

The R2-Reasoner paper (Shao et al., "Route-and-Reason", arXiv 2506.05901) gives the structure (decomposer, allocator,
SFT then alternating GRPO) but not the prompts, models or hyperparameters. Defaults tagged [C] come from its
predecessor DoT's code (tsinghua-fib-lab/DoT @ 1d7c4fa); [D] marks our own choice where neither says. Every such
choice is a field here. The built-in ``routecraft/configs/r2_reasoner.yaml`` is the CPU-sized configuration shipped
with routecraft.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from routecraft.routers.multistep import check_models, pool_models, read_config_mapping
from routecraft.train.config import RLConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DecomposerConfig(_Strict):
    """The task decomposer: a few-shot prompt that yields numbered steps ([D])."""

    examples: int = Field(3, ge=0, description="In-context examples in the prompt (hand-written GSM8K-style ones; "
                                               "at most as many as routecraft ships: 3).")
    min_steps: int = Field(1, ge=1, description="Fewer parsed steps is a format error.")
    max_steps: int = Field(8, ge=1, description="More parsed steps is a format error ([D]: 2–8 expected).")
    max_tokens: int = Field(256, ge=8, description="Tokens the decomposer may write.")
    temperature: float = Field(1.0, ge=0, description="Sampling temperature of extra decompositions and training "
                                                      "rollouts (the first decomposition of a query is greedy).")
    eval_temperature: float = Field(0.0, ge=0, description="Temperature when routing/evaluating (0 = greedy).")
    fallback: Literal["whole_question", "error"] = Field(
        "whole_question", description="When routing and the output does not parse: one subtask = the question "
                                      "[D], or raise.")

    @model_validator(mode="after")
    def _range(self) -> "DecomposerConfig":
        if self.min_steps > self.max_steps:
            raise ValueError(f"min_steps ({self.min_steps}) > max_steps ({self.max_steps})")
        return self


class AllocatorConfig(_Strict):
    """The subtask allocator: one ladder index per subtask."""

    max_tokens: int = Field(32, ge=4, description="Tokens the allocator may write (a JSON list).")
    temperature: float = Field(1.0, ge=0, description="Sampling temperature of training rollouts.")
    eval_temperature: float = Field(0.0, ge=0)
    heuristic_thresholds: list[int] = Field(
        [2, 4], description="Untrained (heuristic) allocator [D]: a subtask with n numbers/operators goes to group "
                            "g = #thresholds ≤ n (0 = cheapest group); the group's top model is used.")
    fallback: Literal["heuristic", "top", "error"] = Field(
        "top", description="When routing and the allocator output does not parse: the heuristic allocation, "
                           "all subtasks on the top model [D], or raise.")


class ExecConfig(_Strict):
    """How subtasks are executed on the pool (DoT's code, [C])."""

    max_tokens: int = Field(500, ge=1, description="Output tokens per subtask answer (DoT: 500).")
    final_max_tokens: int = Field(300, ge=1, description="Output tokens of the final-answer turn (DoT: 300).")
    temperature: float = Field(0.0, ge=0, description="DoT samples at 1.0; greedy (0) makes executions "
                                                      "reproducible and cacheable [D].")
    seed: Optional[int] = 42
    final_answer: Literal["last", "strongest", "none"] = Field(
        "last", description="Who gives the final answer: the last subtask's model, one more turn on its "
                            "conversation ([D] default); the strongest allocated model [D]; none: the number in the "
                            "last subtask's answer.")
    subtask_prompt: Literal["concise", "worked"] = Field(
        "concise", description="The subtask system prompt: DoT's request for a concise, clear answer (concise), or "
                               "one or two lines of calculation before the number (worked [D]: small models answering "
                               "with a bare number get most arithmetic wrong).")
    logprobs: bool = Field(True, description="Ask for token log-probabilities (confidence of the search's probe).")
    max_concurrency: int = Field(4, ge=1, description="Calls in flight across questions.")
    timeout: float = Field(300.0, gt=0)
    max_retries: int = Field(2, ge=0)


class SearchConfig(_Strict):
    """The grouped allocation-label search ([D], guided by DoT's search)."""

    groups: int = Field(3, ge=1, description="Contiguous difficulty groups of the ladder ([D]: 3 = small/medium/"
                                             "large); capped at the ladder's length.")
    decompositions: int = Field(20, ge=1, description="Decompositions sampled per query (DoT: 20); the first greedy.")
    decomposer_model: Optional[str] = Field(None, description="Pool model that decomposes with the few-shot prompt "
                                                              "during the search (default: the top of the ladder).")
    confidence_alpha: float = Field(0.4, ge=0, le=1, description="Confidence of a subtask = this quantile of its "
                                                                 "probe answer's token probabilities (DoT: 0.4).")
    order: Literal["confidence", "position"] = Field(
        "confidence", description="Order of the downgrades: most confident subtask first (DoT), or from the first "
                                  "subtask on [D]. Without log-probabilities, position.")
    max_evaluations: int = Field(32, ge=1, description="Allocations executed per decomposition (the execution "
                                                       "budget; cached ones count too).")
    max_calls: Optional[int] = Field(None, ge=1, description="Stop the whole search after this many real (uncached) "
                                                             "calls; rerun to resume.")
    unsolved: Literal["drop", "all_top"] = Field(
        "drop", description="A decomposition wrong even with every subtask on the top model: dropped, or labelled "
                            "all-top ([D]: both are offered).")


class RewardConfig(_Strict):
    """GRPO rewards ([D] values; the paper trades accuracy against API cost)."""

    beta: float = Field(0.5, ge=0, description="Allocator: 1[correct] − β·cost/cost_all_top + format ([D]: 0.5).")
    format_penalty: float = Field(-1.0, le=0, description="Added when the output does not parse or has the wrong "
                                                          "length ([D]: −1).")
    cost_norm: Literal["all_top_run", "top_price"] = Field(
        "all_top_run", description="cost_all_top: execute the all-top allocation ([D]; cached), or price the "
                                   "rollout's own tokens at the top model's prices [D, no extra execution].")
    step_penalty: float = Field(0.0, ge=0, description="Decomposer: − this × number of steps ([D]: optional).")
    decomposer_beta: float = Field(0.0, ge=0, description="Decomposer: − this × normalised cost ([D]: optional).")


class DataConfig(_Strict):
    dataset: Literal["gsm8k"] = "gsm8k"
    train_file: Optional[str] = Field(None, description="Training questions from a JSONL file ({question, gold}, "
                                                        "numeric answers) instead of the GSM8K train split.")
    train_limit: Optional[int] = Field(None, ge=1, description="A seeded subset of the GSM8K train split.")
    eval_limit: int = Field(100, ge=1, description="Held-out GSM8K test questions for evaluation.")
    eval_select: Literal["first", "sample"] = Field(
        "first", description="first: the first eval_limit questions of the test file (those the collected dataset "
                             "covers first); sample: a seeded random sample. Same rule as Router-R1's.")
    seed: int = 42


class SFTConfig(_Strict):
    """Stage 0: supervised fine-tuning of decomposer and allocator on the searched labels (TRL SFTTrainer)."""

    steps: int = Field(100, ge=0, description="Optimiser steps per model (0 = skip SFT).")
    batch_size: int = Field(8, ge=1)
    learning_rate: float = Field(1e-4, gt=0)
    max_length: int = Field(1024, ge=32, description="Tokens of prompt + target (longer examples are truncated).")


class GRPOConfig(_Strict):
    """Stage 1: K rounds of (allocator GRPO, decomposer frozen) then (decomposer GRPO, allocator frozen)."""

    rounds: int = Field(2, ge=0, description="K ([D]: 2–3).")
    phases: list[Literal["allocator", "decomposer"]] = Field(["allocator", "decomposer"],
                                                            description="Phases of a round, in order.")
    rl: RLConfig = Field(RLConfig(num_generations=8, max_steps=20),
                         description="Settings of each phase (max_steps = steps per phase; [D]: G=8, clip 0.2, "
                                     "KL 1e-3).")


class BackendConfig(_Strict):
    mode: Literal["auto", "running", "private"] = Field(
        "auto", description="running: `routecraft pool up` servers; private: own servers; auto: running where up.")
    threads: int = Field(1, ge=0)
    parallel: int = Field(2, ge=1)
    ctx: int = Field(4096, ge=256)


class R2ReasonerConfig(_Strict):
    pool: str = Field("local", description="Pool name or YAML file.")
    models: Optional[list[str]] = Field(None, description="The ladder's models (default: the pool's instruct "
                                                           "models); sorted cheapest first by (output price, input "
                                                           "price, size_b).")
    policy: str = Field("smollm2-135m", description="Backbone of decomposer and allocator (local model name or HF "
                                                    "folder; [D] at full size: Qwen2.5-7B-Instruct).")
    decomposer: DecomposerConfig = DecomposerConfig()
    allocator: AllocatorConfig = AllocatorConfig()
    execution: ExecConfig = ExecConfig()
    search: SearchConfig = SearchConfig()
    reward: RewardConfig = RewardConfig()
    data: DataConfig = DataConfig()
    sft: SFTConfig = SFTConfig()
    grpo: GRPOConfig = GRPOConfig()
    backends: BackendConfig = BackendConfig()
    cache: Optional[str] = Field(None, description="Execution cache (SQLite); default <out>/executions.sqlite.")

    @field_validator("models")
    @classmethod
    def _nonempty(cls, v: Optional[list[str]]) -> Optional[list[str]]:
        return check_models(v)

    def resolve_pool(self):
        """The pool restricted to the ladder's models, cheapest first; errors name a missing model."""
        pool, names = pool_models(self.pool, self.models, "r2-reasoner")
        if self.search.decomposer_model is not None and self.search.decomposer_model not in pool:
            raise ValueError(f"r2-reasoner config: search.decomposer_model {self.search.decomposer_model!r} is not "
                             f"in pool {pool.name!r} (models: {', '.join(pool.names)})")
        extra = [self.search.decomposer_model] if self.search.decomposer_model not in (None, *names) else []
        return pool.subset(names + extra)


class ConfigError(ValueError):
    """An R2-Reasoner config file is invalid; the message names the file and the field."""


def builtin_config_path() -> Path:
    return Path(str(resources.files("routecraft") / "configs" / "r2_reasoner.yaml"))


def load_config(path: str | os.PathLike | None = None, overrides: Optional[dict] = None) -> R2ReasonerConfig:
    """Read a config YAML (None: the built-in one) and apply nested ``overrides`` ({"sft": {"steps": 2}})."""
    p = Path(path) if path is not None else builtin_config_path()
    return validate(read_config_mapping(p, "r2-reasoner", ConfigError, overrides), str(p))


def validate(data: dict, source: str = "<config>") -> R2ReasonerConfig:
    try:
        return R2ReasonerConfig.model_validate(data)
    except ValidationError as exc:
        lines = [f"{source}: field '{'.'.join(str(x) for x in e['loc'])}': {e['msg'].removeprefix('Value error, ')}"
                 for e in exc.errors()]
        raise ConfigError("\n".join(lines)) from None
