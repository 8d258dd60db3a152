"""GRPO through TRL with a custom multi-turn rollout, loss masking, checkpoint/resume and metric logging.

Why a ``rollout_func``: TRL's GRPOTrainer (≥ 0.24; here 1.16) accepts ``rollout_func(prompts, trainer) -> dict`` that
replaces its own generation. It must return ``prompt_ids``, ``completion_ids`` and ``logprobs`` (None is allowed: the
trainer recomputes log-probabilities itself), and may return ``env_mask``: per-completion 0/1 lists that the trainer
multiplies into its completion mask (internally its ``tool_mask``), so tokens with mask 0 are excluded from the policy
loss, the KL term and the token normaliser while still being attended to. Any other key is forwarded, one value per
completion, to the reward functions as a keyword argument. That is exactly what a multi-turn routing rollout needs:
the rollout owns the turn loop and the calls, and the inserted replies are masked. TRL's alternatives do not fit:
``tools=``/``environment_factory`` require the chat template's JSON tool-calling format (not the paper's tag protocol),
and subclassing the loss would duplicate what ``env_mask`` already does.

``run_grpo`` wires it up generically: ``rollout(prompts, model) -> list[RolloutSample]`` (one sample per prompt, in
order; prompts arrive already repeated ``num_generations`` times) and reward callables ``f(prompts, completions,
rollout=[...], <dataset columns>=[...], log_metric=..., **kw) -> list[float]``.

Checkpoints: ``<out>/checkpoints/checkpoint-<step>`` (model, optimiser, scheduler, RNG, trainer state, plus
``routecraft_state.json`` with the state of stateful reward parts such as Router-R1's cost window). ``resume=True``
continues from the newest checkpoint; the metrics log is cut back to that step so no step is logged twice.
Multi-GPU: the same code runs under ``accelerate launch`` (one rollout per process on its slice of the batch).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from routecraft.train.config import RLConfig

log = logging.getLogger("routecraft.train.grpo")

EXTRA_STATE = "routecraft_state.json"


@dataclass
class RolloutSample:
    """One finished rollout: the prompt ids, the completion ids (the policy's tokens and the inserted ones) and the
    loss mask over the completion (1 = the policy's token, trained on; 0 = inserted); ``info`` reaches the reward
    functions as ``rollout``."""

    prompt_ids: list[int]
    completion_ids: list[int]
    mask: list[int]
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.completion_ids) != len(self.mask):
            raise ValueError(f"rollout sample: {len(self.completion_ids)} completion ids but {len(self.mask)} "
                             f"mask values")


RolloutFn = Callable[[list, Any], list[RolloutSample]]


def make_rollout_func(rollout: RolloutFn, eos_id: Optional[int] = None) -> Callable:
    """Adapt ``rollout(prompts, model)`` to TRL's ``rollout_func(prompts, trainer)``."""

    def rollout_func(prompts: list, trainer: Any) -> dict:
        model = trainer.accelerator.unwrap_model(trainer.model)
        samples = rollout(list(prompts), model)
        if len(samples) != len(prompts):
            raise RuntimeError(f"rollout returned {len(samples)} samples for {len(prompts)} prompts")
        comp, masks = [], []
        for s in samples:
            ids, m = list(s.completion_ids), list(s.mask)
            if not ids:  # the policy stopped at once: an empty completion cannot be padded into a tensor
                fill = eos_id if eos_id is not None else trainer.processing_class.eos_token_id
                ids, m = [fill], [1]
            comp.append(ids)
            masks.append(m)
        return {"prompt_ids": [list(s.prompt_ids) for s in samples], "completion_ids": comp, "logprobs": None,
                "env_mask": masks, "rollout": [s.info for s in samples]}

    return rollout_func


# ---------------------------------------------------------------------------------------------------- callbacks

def _trainer_callback_base():
    from transformers import TrainerCallback

    return TrainerCallback


def jsonl_logger(path: str | Path):
    """A TrainerCallback appending every log record (with step and wall time) to a JSONL file."""
    base = _trainer_callback_base()
    path = Path(path)

    class JsonlLogger(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            self.t0 = time.time()

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: D401
            if not state.is_world_process_zero or not logs:
                return
            rec = {"step": state.global_step, "wall_s": round(time.time() - self.t0, 2)}
            for k, v in logs.items():
                if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)):
                    rec[k] = v
                elif v is None or isinstance(v, str):
                    rec[k] = v
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a") as f:
                f.write(json.dumps(rec) + "\n")

    return JsonlLogger()


def state_saver(objects: dict[str, Any]):
    """A TrainerCallback writing ``{name: obj.state_dict()}`` into each checkpoint folder."""
    base = _trainer_callback_base()

    class StateSaver(base):  # type: ignore[misc, valid-type]
        def on_save(self, args, state, control, **kwargs):
            if not state.is_world_process_zero:
                return
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if ckpt.is_dir():
                (ckpt / EXTRA_STATE).write_text(json.dumps({k: o.state_dict() for k, o in objects.items()}))

    return StateSaver()


def load_extra_state(checkpoint: str | Path, objects: dict[str, Any]) -> bool:
    f = Path(checkpoint) / EXTRA_STATE
    if not f.is_file():
        return False
    data = json.loads(f.read_text())
    for k, o in objects.items():
        if k in data:
            o.load_state_dict(data[k])
    return True


def truncate_jsonl(path: str | Path, max_step: int) -> int:
    """Drop records with ``step`` > max_step (after a resume); returns the records kept."""
    p = Path(path)
    if not p.is_file():
        return 0
    kept = []
    for line in p.read_text().splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        if rec.get("stage", "rl") != "rl" or int(rec.get("step", 0)) <= max_step:
            kept.append(line)
    p.write_text("".join(k + "\n" for k in kept))
    return len(kept)


def log_rollouts(path: str | Path, trainer_state: Any, records: Sequence[dict]) -> None:
    """Append rollout records to a JSONL log, each numbered by the step it trains (``global_step + 1``, as
    ``metrics.jsonl`` numbers it), so that ``run_grpo`` can cut the log back on resume."""
    gs = getattr(trainer_state, "global_step", None)
    step = 0 if gs is None else int(gs) + 1
    with open(path, "a") as f:
        for r in records:
            f.write(json.dumps({"step": step, **r}, default=str) + "\n")


def last_checkpoint(ckpt_dir: str | Path, max_step: Optional[int] = None) -> Optional[Path]:
    """The newest complete checkpoint (``trainer_state.json`` written), or the newest at or before ``max_step``;
    ``ValueError`` when checkpoints exist but all are beyond ``max_step``."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        return None
    found = []
    for c in d.glob("checkpoint-*"):
        try:
            step = int(c.name.split("-")[-1])
        except ValueError:
            continue
        if (c / "trainer_state.json").is_file():
            found.append((step, c))
    if not found:
        return None
    ok = [f for f in found if max_step is None or f[0] <= max_step]
    if not ok:
        raise ValueError(f"{d}: max_steps {max_step} is below the first checkpoint (step {min(found)[0]}); raise "
                         "max_steps, or train afresh (--no-resume)")
    return max(ok)[1]


def checkpoint_step(ckpt: str | Path) -> int:
    return int(json.loads((Path(ckpt) / "trainer_state.json").read_text())["global_step"])


# ---------------------------------------------------------------------------------------------------- the run

def grpo_args(cfg: RLConfig, output_dir: str | Path, **overrides: Any):
    from trl import GRPOConfig

    kw: dict[str, Any] = dict(
        output_dir=str(output_dir), max_steps=cfg.max_steps, per_device_train_batch_size=cfg.micro_batch,
        gradient_accumulation_steps=cfg.accumulation_steps, steps_per_generation=cfg.accumulation_steps,
        num_generations=cfg.num_generations, learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_steps, weight_decay=cfg.weight_decay, beta=cfg.beta, epsilon=cfg.epsilon,
        max_grad_norm=cfg.max_grad_norm, loss_type=cfg.loss_type, scale_rewards=cfg.scale_rewards,
        save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=cfg.save_total_limit,
        logging_steps=cfg.logging_steps, seed=cfg.seed, report_to="none", remove_unused_columns=False,
        gradient_checkpointing=cfg.gradient_checkpointing, bf16=cfg.dtype == "bfloat16",
        fp16=cfg.dtype == "float16", dataloader_num_workers=0, disable_tqdm=True, shuffle_dataset=True,
    )
    kw.update(overrides)
    return GRPOConfig(**kw)


def run_grpo(*, model: Any, tokenizer: Any, dataset: Sequence[dict], reward_funcs: Sequence[Callable],
             rollout: RolloutFn, cfg: RLConfig, out_dir: str | Path, resume: bool = True,
             state_objects: Optional[dict[str, Any]] = None, metrics_path: Optional[str | Path] = None,
             rollouts_path: Optional[str | Path] = None, callbacks: Sequence[Any] = (),
             args_overrides: Optional[dict] = None) -> Any:
    """Train ``model`` with GRPO; returns the trainer (its model is the trained policy). ``metrics_path`` and
    ``rollouts_path`` (written by ``log_rollouts``) are step-numbered JSONL logs: cut back to the checkpoint on resume
    (a step that was not checkpointed runs again), cleared of RL records on a fresh start.

    ``dataset`` rows need a ``prompt`` (what ``rollout`` receives); other columns reach the reward functions.
    """
    from datasets import Dataset
    from trl import GRPOTrainer

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    rows = list(dataset)
    if not rows:
        raise ValueError("GRPO: the training dataset is empty")
    for i, r in enumerate(rows):
        if "prompt" not in r:
            raise ValueError(f"GRPO: dataset row {i} has no 'prompt' field")
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    args = grpo_args(cfg, ckpt_dir, **(args_overrides or {}))
    objects = dict(state_objects or {})
    cbs = list(callbacks)
    if metrics_path is not None:
        cbs.append(jsonl_logger(metrics_path))
    if objects:
        cbs.append(state_saver(objects))
    trainer = GRPOTrainer(model=model, reward_funcs=list(reward_funcs), args=args,
                          train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                          rollout_func=make_rollout_func(rollout, tokenizer.eos_token_id), callbacks=cbs)
    ckpt = last_checkpoint(ckpt_dir, cfg.max_steps) if resume else None
    if ckpt is not None:
        step = checkpoint_step(ckpt)
        load_extra_state(ckpt, objects)
        if step >= cfg.max_steps:
            # already finished (a rerun of a completed command, or max_steps lowered to an existing checkpoint):
            # take the checkpoint's weights and train no further (transformers would run its loop again); the
            # logs are left whole
            load_weights(trainer.model, ckpt)
            log.info("%s is at max_steps %d: nothing to train", ckpt, cfg.max_steps)
            return trainer
        for path in (metrics_path, rollouts_path):
            if path is not None:
                truncate_jsonl(path, step)
        log.info("resuming from %s (step %d)", ckpt, step)
    else:  # a fresh run: no RL records from an earlier one (the metrics log may hold a warm start's)
        if metrics_path is not None:
            truncate_jsonl(metrics_path, 0)
        if rollouts_path is not None:
            Path(rollouts_path).unlink(missing_ok=True)
    trainer.train(resume_from_checkpoint=str(ckpt) if ckpt is not None else None)
    return trainer


def load_weights(model: Any, folder: str | Path) -> None:
    """Load a checkpoint folder's weights (``model.safetensors`` or ``pytorch_model.bin``) into ``model``; tied
    weights a checkpoint leaves out (``lm_head`` tied to the embeddings) are allowed to be missing."""
    folder = Path(folder)
    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file

        state = load_file(str(folder / "model.safetensors"))
    elif (folder / "pytorch_model.bin").is_file():
        import torch

        state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(f"{folder}: no model.safetensors or pytorch_model.bin")
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {k for k in missing if "lm_head" in k}
    if set(missing) - tied or unexpected:
        raise ValueError(f"{folder}: weights do not fit the model (missing {sorted(set(missing) - tied)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]})")
