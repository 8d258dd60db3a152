"""Loss masks for multi-turn rollouts.

A rollout's completion is a sequence of segments: tokens the policy generated (trained on) and tokens the environment
inserted (a called model's reply, a tool result: conditioned on, never trained on). ``flatten`` turns the segments into
the completion ids and a 0/1 mask of the same length; TRL's GRPOTrainer multiplies its completion mask by it
(``env_mask`` from a ``rollout_func``), so masked tokens add nothing to the loss, the KL term or the token count.
"""

from __future__ import annotations

from typing import Iterable, Sequence


def flatten(segments: Iterable[tuple[Sequence[int], bool]]) -> tuple[list[int], list[int]]:
    """(ids, mask) from (ids, trainable) segments; mask is 1 on trainable tokens and 0 on inserted ones."""
    ids: list[int] = []
    mask: list[int] = []
    for seg, trainable in segments:
        seg = list(seg)
        ids.extend(seg)
        mask.extend([1 if trainable else 0] * len(seg))
    return ids, mask


def masked_spans(mask: Sequence[int]) -> list[tuple[int, int]]:
    """[start, end) index ranges where the mask is 0."""
    spans = []
    start = None
    for i, m in enumerate(mask):
        if m == 0 and start is None:
            start = i
        elif m != 0 and start is not None:
            spans.append((start, i))
            start = None
    if start is not None:
        spans.append((start, len(mask)))
    return spans
