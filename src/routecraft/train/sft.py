"""Supervised fine-tuning on masked demonstrations: ``warm_start`` (a small hand-rolled AdamW loop, Router-R1's
cold start) and ``sft_trl`` (TRL's ``SFTTrainer`` on the same ``Demo`` objects; R2-Reasoner's SFT stage).

A demonstration is (prompt ids, completion ids, mask) — the same shape a rollout produces — and only completion tokens
whose mask is 1 are trained on (inserted environment text stays context). Used when a policy is too small to ever
produce the protocol's format by sampling, which leaves GRPO with all-equal rewards and no gradient.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from routecraft.train.grpo import jsonl_logger

log = logging.getLogger("routecraft.train.sft")


@dataclass
class Demo:
    prompt_ids: list[int]
    completion_ids: list[int]
    mask: list[int]

    def __post_init__(self) -> None:
        if len(self.completion_ids) != len(self.mask):
            raise ValueError(f"demo: {len(self.completion_ids)} completion ids but {len(self.mask)} mask values")
        if not any(self.mask):
            raise ValueError("demo: the mask trains on no token")


def batch_tensors(demos: Sequence[Demo], pad_id: int):
    """Right-padded input ids, attention mask and labels (-100 on prompt, masked and padding tokens)."""
    import torch

    seqs = [d.prompt_ids + d.completion_ids for d in demos]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(demos), width), pad_id, dtype=torch.long)
    att = torch.zeros((len(demos), width), dtype=torch.long)
    labels = torch.full((len(demos), width), -100, dtype=torch.long)
    for i, (d, s) in enumerate(zip(demos, seqs)):
        ids[i, : len(s)] = torch.tensor(s)
        att[i, : len(s)] = 1
        p = len(d.prompt_ids)
        for j, (t, m) in enumerate(zip(d.completion_ids, d.mask)):
            if m:
                labels[i, p + j] = t
    return ids, att, labels


def warm_start(model: Any, tokenizer: Any, demos: Sequence[Demo], *, steps: int, batch_size: int = 4,
               learning_rate: float = 1e-4, seed: int = 0, max_grad_norm: float = 1.0,
               log_path: Optional[str | Path] = None,
               on_step: Optional[Callable[[int, float], None]] = None) -> list[float]:
    """``steps`` AdamW steps of masked cross-entropy over batches drawn from ``demos``; returns the losses.
    Each step's loss is appended to ``log_path`` (JSONL) when given."""
    import torch

    if not demos:
        raise ValueError("warm start: no demonstrations")
    if steps < 1:
        return []
    rng = random.Random(seed)
    order: list[int] = []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=learning_rate, weight_decay=0.0)
    model.train()
    device = next(model.parameters()).device
    losses = []
    for step in range(1, steps + 1):
        if len(order) < batch_size:
            more = list(range(len(demos)))
            rng.shuffle(more)
            order.extend(more)
        picked = [demos[order.pop()] for _ in range(min(batch_size, len(demos)))]
        ids, att, labels = batch_tensors(picked, pad)
        t0 = time.perf_counter()
        out = model(input_ids=ids.to(device), attention_mask=att.to(device), labels=labels.to(device))
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss = float(out.loss.detach())
        losses.append(loss)
        log.info("warm start step %d/%d: loss %.4f (%.1fs)", step, steps, loss, time.perf_counter() - t0)
        if log_path is not None:
            with open(log_path, "a") as f:
                f.write(json.dumps({"stage": "warm_start", "step": step, "loss": loss,
                                    "seconds": time.perf_counter() - t0}) + "\n")
        if on_step is not None:
            on_step(step, loss)
    model.eval()
    return losses


def sft_trl(model: Any, tokenizer: Any, demos: Sequence[Demo], *, out_dir: str | Path, steps: int,
            batch_size: int = 4, learning_rate: float = 1e-4, seed: int = 0, max_length: int = 1024,
            threads: int = 0, log_path: Optional[str | Path] = None) -> Any:
    """Supervised fine-tuning with TRL's ``SFTTrainer`` on masked demonstrations; returns the trainer (its model is
    trained in place).

    The demos go in pre-tokenised (``input_ids`` = prompt + completion, ``completion_mask`` = 0 on the prompt, the
    demo's mask on the completion) with ``completion_only_loss``, so TRL's collator trains exactly the tokens
    ``warm_start`` would (mask 1), and nothing is re-templated. ``steps`` optimiser steps (``max_steps``), constant
    learning rate, no checkpoints (a stage this short is redone rather than resumed); each logged step is appended
    to ``log_path`` as ``{"stage": "sft", ...}``.
    """
    import os

    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    if not demos:
        raise ValueError("SFT: no demonstrations")
    if steps < 1:
        raise ValueError(f"SFT: steps must be ≥ 1, got {steps}")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    if threads:
        import torch

        torch.set_num_threads(threads)
    rows = [{"input_ids": d.prompt_ids + d.completion_ids,
             "completion_mask": [0] * len(d.prompt_ids) + [int(m) for m in d.mask]} for d in demos]
    args = SFTConfig(output_dir=str(out_dir), max_steps=steps, per_device_train_batch_size=batch_size,
                     learning_rate=learning_rate, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
                     logging_steps=1, save_strategy="no", report_to="none", seed=seed, max_length=max_length,
                     completion_only_loss=True, packing=False, dataloader_num_workers=0, disable_tqdm=True,
                     bf16=False, fp16=False, gradient_checkpointing=False)
    callbacks = []
    if log_path is not None:
        callbacks.append(_staged(jsonl_logger(log_path), "sft"))
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                         callbacks=callbacks)
    trainer.train()
    model.eval()
    return trainer


def _staged(callback: Any, stage: str) -> Any:
    """Tag every record a ``jsonl_logger`` writes with ``stage`` (so RL curves skip it)."""
    orig = callback.on_log

    def on_log(args, state, control, logs=None, **kw):
        return orig(args, state, control, logs={**(logs or {}), "stage": stage}, **kw)

    callback.on_log = on_log
    return callback
