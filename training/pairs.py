"""Training frame pairs and their batching: random crops, flips, tensors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import cv2
import numpy as np
import torch
from torch import Tensor

from stylecore.io.imageops import resize


@dataclass(frozen=True)
class TrainPair:
    """Two consecutive frames and the flow that brings ``prev`` into ``cur``'s coordinates.

    ``prev``/``cur``: ``H x W x 3`` uint8 or float in [0, 1]; ``flow_bw``: ``H x W x 2``
    (cur -> prev, any float dtype); ``mask``: ``H x W`` (1 = the flow is reliable there).
    ``frame``: the whole picture a crop was cut from, as stored, and ``frame_scale`` how
    much larger the crop shows it (None for a pair that is not a crop of one picture).
    """

    prev: np.ndarray
    cur: np.ndarray
    flow_bw: np.ndarray
    mask: np.ndarray
    frame: np.ndarray | None = None
    frame_scale: float = 1.0

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.cur.shape[0]), int(self.cur.shape[1])

    def compact(self) -> TrainPair:
        """The same pair stored small (uint8 frames and mask, float16 flow) for memory."""
        return replace(
            self,
            prev=to_uint8(self.prev),
            cur=to_uint8(self.cur),
            flow_bw=np.asarray(self.flow_bw, dtype=np.float16),
            mask=(np.asarray(self.mask) > 0.5).astype(np.uint8),
        )

    def crop(self, top: int, left: int, size: int) -> TrainPair:
        """A ``size x size`` window. Flow vectors are translation invariant, so they stay;
        pixels whose flow now points outside the window lose their reliability."""
        win = (slice(top, top + size), slice(left, left + size))
        flow = self.flow_bw[win]
        ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
        tx, ty = xs + flow[..., 0].astype(np.float32), ys + flow[..., 1].astype(np.float32)
        inside = (tx >= 0) & (tx <= size - 1) & (ty >= 0) & (ty <= size - 1)
        mask = (np.asarray(self.mask[win]) > 0.5) & inside
        return replace(self, prev=self.prev[win], cur=self.cur[win], flow_bw=flow,
                       mask=mask.astype(np.asarray(self.mask).dtype))

    def enlarged(self, size: int) -> TrainPair:
        """The pair resampled to ``size x size`` (a crop shown larger, as footage of a higher
        resolution shows the same content): flow vectors grow by the same factor."""
        h, w = self.shape
        if (h, w) == (size, size):
            return self
        factor = size / w
        frames = [to_uint8(resize(to_float(img), (size, size))) for img in (self.prev, self.cur)]
        flow = cv2.resize(np.asarray(self.flow_bw, dtype=np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
        mask = cv2.resize(np.asarray(self.mask, dtype=np.float32), (size, size), interpolation=cv2.INTER_NEAREST)
        return replace(self, prev=frames[0], cur=frames[1], flow_bw=flow * factor, mask=mask,
                       frame_scale=self.frame_scale * factor)

    def flipped(self) -> TrainPair:
        """Mirror left-right: the horizontal flow component changes sign."""
        flow = np.asarray(self.flow_bw[:, ::-1], dtype=np.float32).copy()
        flow[..., 0] *= -1.0
        # The whole frame stays as it is: normalisation statistics do not see a mirror.
        return replace(self, prev=self.prev[:, ::-1], cur=self.cur[:, ::-1], flow_bw=flow, mask=self.mask[:, ::-1])


@dataclass(frozen=True)
class PairBatch:
    """``prev``, ``cur``: ``N x 3 x S x S``; ``flow_bw``: ``N x 2 x S x S``; ``mask``: ``N x 1 x S x S``;
    ``frames``: each pair's whole frame and its scale (``TrainPair.frame``), or empty
    when a pair has none."""

    prev: Tensor
    cur: Tensor
    flow_bw: Tensor
    mask: Tensor
    frames: tuple[tuple[np.ndarray, float], ...] = ()

    def to(self, device: torch.device) -> PairBatch:
        return replace(self, prev=self.prev.to(device), cur=self.cur.to(device), flow_bw=self.flow_bw.to(device),
                       mask=self.mask.to(device))


def whole_frame(frame: np.ndarray, scale: float) -> np.ndarray:
    """A stored whole frame (``TrainPair.frame``) as float32, enlarged ``scale`` times, as
    its crops show it."""
    h, w = frame.shape[:2]
    return resize(to_float(frame), (max(1, round(w * scale)), max(1, round(h * scale))))


def to_uint8(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    return np.clip(np.asarray(img, dtype=np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def to_float(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    return np.asarray(img, dtype=np.float32)


def random_window(pair: TrainPair, size: int, rng: np.random.Generator) -> TrainPair:
    """A random ``size x size`` crop, mirrored half of the time."""
    h, w = pair.shape
    top = int(rng.integers(0, h - size + 1))
    left = int(rng.integers(0, w - size + 1))
    out = pair.crop(top, left, size)
    return out.flipped() if rng.random() < 0.5 else out


def collate(pairs: Sequence[TrainPair]) -> PairBatch:
    """Stack equally sized pairs into float32 NCHW tensors."""

    def images(get: str) -> Tensor:
        arr = np.stack([to_float(getattr(p, get)) for p in pairs])
        return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()

    flow = np.stack([np.asarray(p.flow_bw, dtype=np.float32) for p in pairs])
    mask = np.stack([np.asarray(p.mask, dtype=np.float32) for p in pairs])
    return PairBatch(
        prev=images("prev"),
        cur=images("cur"),
        flow_bw=torch.from_numpy(flow).permute(0, 3, 1, 2).contiguous(),
        mask=torch.from_numpy(mask).unsqueeze(1).contiguous(),
        frames=() if any(p.frame is None for p in pairs) else tuple((p.frame, p.frame_scale) for p in pairs),
    )
