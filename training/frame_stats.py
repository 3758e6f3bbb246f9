"""Crops normalised as their whole frames are (distillation's ``frame_stats``).

Every normalisation layer of the network measures the statistics of the picture it is
given. A user's 1280 px frame is normalised as a whole, while training shows 192 px
crops, each normalised on its own: a crop of a flat sky inside a busy frame is then
painted as if the sky were the whole picture. Woman with a Hat's teacher paints about
half of such a crop strongly red, against 2 % of the same sky within the frame
(docs/distillation-notes.md, stop 41), so a copy trained on crops learns a regime the
user never sees. Here each crop is painted with the statistics of its whole frame,
enlarged as the crop shows it, measured in one pass of the teacher and of the student
(as tiled inference fixes them); the student's are renormalised
(``NormStats.renormalise``), so its gradient still sees that a shift of a whole map is
normalised away.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

import numpy as np
import torch

from stylecore.io.imageops import to_tensor
from stylecore.nets.transformer import NormStats, StyleTransformer

from .pairs import whole_frame


@torch.no_grad()
def frame_stats(
    net: StyleTransformer,
    frames: Sequence[tuple[np.ndarray, float]],
    weights: torch.Tensor,
    autocast: Callable[[], AbstractContextManager[object]],
    *,
    renormalise: bool = False,
    repeat: int = 1,
) -> NormStats:
    """The statistics of ``net``'s normalisation layers on each whole frame, at its scale
    and its style weight (``weights``: one per frame), for a batch that holds the frames'
    crops ``repeat`` times in a row (2: the pairs' previous frames, then their current)."""
    measured: list[NormStats] = []
    for (frame, scale), weight in zip(frames, weights, strict=True):
        stats = NormStats(record=True)
        with autocast():
            net(to_tensor(whole_frame(frame, scale), weights.device), weight.reshape(1), stats)
        measured.append(stats)
    out = NormStats(renormalise=renormalise)
    for layer in measured[0].mean:
        out.mean[layer] = torch.cat([s.mean[layer] for s in measured] * repeat)
        out.var[layer] = torch.cat([s.var[layer] for s in measured] * repeat)
    return out
