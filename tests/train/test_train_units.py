"""Shared RL training code without a model: settings, masks, demonstration batches, checkpoint discovery, the
metrics log (resume truncation) and curve plotting, policy-name errors."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from routecraft.train.config import RLConfig
from routecraft.train.curves import plot_curves, read_metrics, series
from routecraft.train.grpo import RolloutSample, checkpoint_step, last_checkpoint, truncate_jsonl
from routecraft.train.masking import flatten, masked_spans
from routecraft.train.policy import PolicyLoadError, resolve_policy
from routecraft.train.sft import Demo, batch_tensors


def test_rl_config_batches():
    c = RLConfig(questions_per_step=2, num_generations=4, micro_batch=4)
    assert (c.generation_batch, c.accumulation_steps) == (8, 2)
    with pytest.raises(ValidationError, match="micro_batch"):
        RLConfig(questions_per_step=1, num_generations=3, micro_batch=2)
    with pytest.raises(ValidationError):
        RLConfig(num_generations=1)
    with pytest.raises(ValidationError):
        RLConfig(unknown_field=1)


def test_flatten_and_spans():
    ids, mask = flatten([([5, 6], False), ([1, 2, 3], True), ([9], False), ([4], True)])
    assert ids == [5, 6, 1, 2, 3, 9, 4] and mask == [0, 0, 1, 1, 1, 0, 1]
    assert masked_spans(mask) == [(0, 2), (5, 6)]
    assert masked_spans([1, 1]) == [] and masked_spans([0]) == [(0, 1)]
    assert flatten([]) == ([], [])


def test_rollout_sample_checks_lengths():
    RolloutSample([1], [2, 3], [1, 0])
    with pytest.raises(ValueError, match="2 completion ids but 1 mask"):
        RolloutSample([1], [2, 3], [1])


def test_demo_batch_labels_only_unmasked_completion_tokens():
    import torch

    d1 = Demo([10, 11], [1, 2, 3], [1, 0, 1])
    d2 = Demo([10], [4], [1])
    ids, att, labels = batch_tensors([d1, d2], pad_id=0)
    assert ids.tolist() == [[10, 11, 1, 2, 3], [10, 4, 0, 0, 0]]
    assert att.tolist() == [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    assert labels.tolist() == [[-100, -100, 1, -100, 3], [-100, 4, -100, -100, -100]]
    assert labels.dtype == torch.long
    with pytest.raises(ValueError, match="mask trains on no token"):
        Demo([1], [2], [0])
    with pytest.raises(ValueError, match="2 completion ids but 1 mask"):
        Demo([1], [2, 3], [1])


def test_last_checkpoint_needs_trainer_state(tmp_path):
    assert last_checkpoint(tmp_path / "nothing") is None
    for step, complete in ((5, True), (10, True), (15, False)):
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        if complete:
            (d / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (tmp_path / "checkpoint-x").mkdir()
    ck = last_checkpoint(tmp_path)
    assert ck.name == "checkpoint-10" and checkpoint_step(ck) == 10  # 15 was interrupted mid-save


def write_log(path, recs):
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))


def test_metrics_log_truncation_and_reading(tmp_path):
    p = tmp_path / "m.jsonl"
    write_log(p, [{"stage": "warm_start", "step": 1, "loss": 2.0}, {"step": 1, "reward": -1.0},
                  {"step": 2, "reward": -0.5}, {"step": 3, "reward": 0.0}, {"step": 3, "train_runtime": 9.0}])
    assert truncate_jsonl(p, 2) == 3  # warm-start record kept, steps 1-2 kept
    write_log(p, [json.loads(x) for x in p.read_text().splitlines()] + [{"step": 3, "reward": 0.25}])
    recs = read_metrics(p)
    assert [r["step"] for r in recs] == [1, 2, 3]
    assert series(recs, "reward") == ([1, 2, 3], [-1.0, -0.5, 0.25])
    assert series(recs, "missing") == ([], [])
    assert [r["loss"] for r in read_metrics(p, stage="warm_start")] == [2.0]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"step": 1}\nnot json\n')
    with pytest.raises(ValueError, match="line 2 is not JSON"):
        read_metrics(bad)
    with pytest.raises(FileNotFoundError):
        read_metrics(tmp_path / "none.jsonl")


def test_plot_curves_writes_a_png(tmp_path):
    p = tmp_path / "m.jsonl"
    write_log(p, [{"step": i, "reward": -1 + i / 10, "x/y": i % 3} for i in range(1, 12)])
    out = plot_curves(p, tmp_path / "c.png", [("reward", "reward"), ("x/y", "xy"), ("absent", "absent")],
                      title="t")
    assert out.read_bytes()[:4] == b"\x89PNG" and out.stat().st_size > 5000
    # several runs overlaid (an α sweep): one legend entry per run; a missing log names its file
    q = tmp_path / "m2.jsonl"
    write_log(q, [{"step": i, "reward": 1 - i / 10} for i in range(1, 6)])
    both = plot_curves({"α=0": p, "α=0.9": q}, tmp_path / "both.png", [("reward", "reward")])
    assert both.read_bytes()[:4] == b"\x89PNG" and both.stat().st_size > out.stat().st_size // 4
    with pytest.raises(FileNotFoundError, match="none.jsonl"):
        plot_curves({"a": p, "b": tmp_path / "none.jsonl"}, tmp_path / "x.png", [("reward", "reward")])


def test_policy_name_errors(tmp_path):
    with pytest.raises(PolicyLoadError, match="neither a model folder nor a local model"):
        resolve_policy("no-such-model")
    (tmp_path / "folder").mkdir()
    with pytest.raises(PolicyLoadError, match="not a Hugging Face model folder"):
        resolve_policy(tmp_path / "folder")
    (tmp_path / "folder" / "config.json").write_text("{}")
    assert resolve_policy(tmp_path / "folder") == tmp_path / "folder"


def test_last_checkpoint_respects_max_step(tmp_path):
    from routecraft.train.grpo import last_checkpoint

    assert last_checkpoint(tmp_path / "none") is None
    for step, complete in ((5, True), (10, True), (15, False)):  # 15: interrupted while saving
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        if complete:
            (d / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    assert last_checkpoint(tmp_path).name == "checkpoint-10"
    assert last_checkpoint(tmp_path, 20).name == "checkpoint-10"
    assert last_checkpoint(tmp_path, 7).name == "checkpoint-5"
    with pytest.raises(ValueError, match="below the first checkpoint"):
        last_checkpoint(tmp_path, 3)
