"""Settings of an RL run (GRPO through TRL), shared by Router-R1 and R2-Reasoner.

One optimisation step = ``questions_per_step`` prompts × ``num_generations`` rollouts each, generated together,
then the loss over them in micro-batches of ``micro_batch`` sequences (gradient accumulation), then one optimiser step.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator


class RLConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policy: str = Field("smollm2-135m", description="Local model name (GGUF converted once) or a HF model folder.")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    max_steps: int = Field(225, ge=1, description="Optimiser steps (the paper: 225).")
    questions_per_step: int = Field(8, ge=1, description="Distinct prompts per step.")
    num_generations: int = Field(4, ge=2, description="Rollouts per prompt (GRPO group size).")
    micro_batch: int = Field(4, ge=1, description="Sequences per forward/backward pass.")
    learning_rate: float = Field(1e-6, gt=0, description="The paper's actor lr: 1e-6.")
    lr_scheduler: str = Field("constant", description="transformers scheduler name; the paper: constant, no warmup.")
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    beta: float = Field(0.001, ge=0, description="KL coefficient against the initial policy (paper: 0.001).")
    epsilon: float = Field(0.2, gt=0, description="Clip ratio (paper: 0.2).")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clip (paper: 1.0).")
    loss_type: str = Field("dapo", description="TRL loss aggregation: dapo = token mean over the batch (veRL's).")
    scale_rewards: str = Field("group", description="GRPO advantage scaling: group, batch or none.")
    save_steps: int = Field(15, ge=1, description="Checkpoint every N steps (paper: 15).")
    save_total_limit: Optional[int] = Field(2, ge=1, description="Checkpoints kept (older ones are deleted).")
    logging_steps: int = Field(1, ge=1)
    seed: int = 42
    threads: int = Field(0, ge=0, description="torch threads; 0 = leave torch's default.")
    gradient_checkpointing: bool = False

    @model_validator(mode="after")
    def _batches(self) -> "RLConfig":
        total = self.questions_per_step * self.num_generations
        if total % self.micro_batch:
            raise ValueError(f"micro_batch ({self.micro_batch}) must divide questions_per_step × num_generations "
                             f"({self.questions_per_step} × {self.num_generations} = {total})")
        return self

    @property
    def generation_batch(self) -> int:
        return self.questions_per_step * self.num_generations

    @property
    def accumulation_steps(self) -> int:
        return self.generation_batch // self.micro_batch
