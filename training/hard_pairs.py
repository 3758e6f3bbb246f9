"""Clip pairs the copy paints least like its teacher, drawn more often (distillation's
``hard_pairs``).

A copy trained on pairs drawn evenly learns what most frames ask and may leave out what
only a few do. Woman with a Hat's teacher paints red dashes across the clip's flat
sunrise sky. That shot is one pair in a dozen, and the sky is a third of it. Its copy
paints that sky with faint streaks, and no change to the loss or the network brought the
dashes back. Showing the copy that shot more often brought some back
(docs/distillation-notes.md, stop 43).

Here the pairs are ranked by *detail gap*: the share of the teacher's fine detail that
the copy leaves out, measured on each whole frame, at the scale the crops typically show
it. The ranking is refreshed as the copy learns, and a share of the clip pairs is drawn
from the hardest tenth (``PairSampler.hard``). This is hard-example mining at the level
of frames. It leaves out the crops: the sky is found by drawing its frame more often.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from stylecore.io.imageops import to_tensor

from .pairs import whole_frame

# Fine detail is each pixel's distance from its 5x5 mean, averaged over 16 px blocks: a
# block is about a stroke's length at 720p.
_HIGH_PASS = 5
_BLOCK = 16
# Added to the teacher's detail so that a block the teacher paints flat adds nothing
# (a high-pass level near the noise of 8-bit frames).
_FLOOR = 0.01
HARD_SHARE = 0.1  # the hardest tenth of the pairs
HARD_REFRESH = 200  # steps between rankings
RANK_WEIGHT = 1.0  # the Style Weight the ranking paints at (the panel's default)

Painter = Callable[[Tensor, Tensor], Tensor]


def fine_detail_map(image: Tensor) -> Tensor:
    """Mean absolute high-pass of an NCHW image, per ``_BLOCK`` x ``_BLOCK`` block
    (N x 1 x H/16 x W/16)."""
    high = image - F.avg_pool2d(image, _HIGH_PASS, 1, _HIGH_PASS // 2, count_include_pad=False)
    return F.avg_pool2d(high.abs().mean(1, keepdim=True), _BLOCK, _BLOCK, ceil_mode=True)


def detail_gap(student: Tensor, teacher: Tensor) -> Tensor:
    """Per image, the mean over blocks of the teacher's detail the student leaves out,
    relative to the teacher's: ``mean(max(0, D_t - D_s) / (D_t + floor))``, 0 where the
    student keeps it all. Detail the student adds is not counted: a copy's failing is
    softness."""
    return _left_out(fine_detail_map(student.float()), fine_detail_map(teacher.float()))


def _left_out(kept: Tensor, wanted: Tensor) -> Tensor:
    return ((wanted - kept).clamp(min=0) / (wanted + _FLOOR)).flatten(1).mean(1)


class HardPairs:
    """Ranks a clip's frames by the copy's detail gap to its teacher. The teacher paints
    each frame once; every ``rank`` paints them again with the copy."""

    def __init__(self, frames: Sequence[np.ndarray], teacher: Painter, scale: float, device: torch.device,
                 autocast: Callable[[], AbstractContextManager[object]]) -> None:
        self._frames = list(frames)
        self._scale = scale
        self._device = device
        self._autocast = autocast
        # The teacher's detail maps only (a 2x frame's painting is 4 MB, its map 5 kB).
        self._wanted = [fine_detail_map(self._paint(teacher, frame)) for frame in self._frames]
        self.last_gaps = np.zeros(len(self._frames))  # the latest ranking's gaps

    @torch.no_grad()
    def _paint(self, net: Painter, frame: np.ndarray) -> Tensor:
        image = to_tensor(whole_frame(frame, self._scale), self._device)
        with self._autocast():
            return net(image, torch.tensor([RANK_WEIGHT], device=self._device)).float()

    def gaps(self, student: Painter) -> np.ndarray:
        """The copy's detail gap on every frame."""
        return np.array([float(_left_out(fine_detail_map(self._paint(student, frame)), wanted)[0])
                         for frame, wanted in zip(self._frames, self._wanted, strict=True)])

    def rank(self, student: Painter) -> np.ndarray:
        """Indices of the hardest ``HARD_SHARE`` of the frames (at least one), hardest first."""
        gaps = self.last_gaps = self.gaps(student)
        count = max(1, round(len(gaps) * HARD_SHARE))
        return np.argsort(-gaps, kind="stable")[:count]

    def summary(self, hardest: np.ndarray) -> str:
        chosen = self.last_gaps[hardest]
        return (f"detail left out: {self.last_gaps.mean():.3f} over all {len(self.last_gaps)} video pairs, "
                f"{chosen.min():.3f}-{chosen.max():.3f} in the {len(hardest)} drawn more often")
