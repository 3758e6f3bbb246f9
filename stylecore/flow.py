"""Optical flow (OpenCV DIS), warping, occlusion masks and scene-cut detection.

Convention: ``flow_a_to_b[y, x] = (dx, dy)`` says that pixel ``(x, y)`` of frame a is found
at ``(x + dx, y + dy)`` in frame b, i.e. ``a(p) ~= b(p + flow(p))``. To bring the previous
frame into the current frame's coordinates, warp it with ``flow_cur_to_prev``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

_DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}

# Ruder et al. 2016, forward-backward consistency and motion-boundary thresholds.
_CONSISTENCY_REL = 0.01
_CONSISTENCY_ABS = 0.5
_BOUNDARY_REL = 0.01
_BOUNDARY_ABS = 0.002

# Scene cuts. Measured on big_buck_bunny_640x360_24fps_60s.mp4 (see tests/test_flow.py and
# the report in docs): over its ordinary frame pairs (pans, character motion) the reliable
# fraction stays high and the histogram distance low; its hard cuts drop the one and
# raise the other.
DEFAULT_CUT_RELIABLE = 0.5
DEFAULT_CUT_HISTOGRAM = 0.5
_HIST_BINS = 32
_HIST_SIZE = 128  # histograms are taken on a small copy: faster, and robust to noise

# DIS objects hold scratch buffers and are not thread-safe: one per preset per thread.
_local = threading.local()


def _dis(preset: str) -> cv2.DISOpticalFlow:
    if preset not in _DIS_PRESETS:
        raise ValueError(f"unknown DIS preset {preset!r}; choose one of {', '.join(_DIS_PRESETS)}")
    cache: dict[str, cv2.DISOpticalFlow] = getattr(_local, "dis", None) or {}
    _local.dis = cache
    if preset not in cache:
        cache[preset] = cv2.DISOpticalFlow_create(_DIS_PRESETS[preset])
    return cache[preset]


def _gray_u8(image: np.ndarray) -> np.ndarray:
    """HxWx3 float RGB in [0,1] (or HxW gray) -> HxW uint8 gray, as DIS requires."""
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 3:
        img = cv2.cvtColor(img[..., :3], cv2.COLOR_RGB2GRAY)
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


def compute_flow(a: np.ndarray, b: np.ndarray, *, preset: str = "medium") -> np.ndarray:
    """DIS optical flow from ``a`` to ``b`` (HxWx3 float images): ``a(x) ~= b(x + flow(x))``.

    Returns an ``H x W x 2`` float32 array of ``(dx, dy)``.
    """
    if a.shape[:2] != b.shape[:2]:
        raise ValueError(f"compute_flow: frame sizes differ: {a.shape[:2]} vs {b.shape[:2]}")
    flow = _dis(preset).calc(_gray_u8(a), _gray_u8(b), None)
    return flow.astype(np.float32, copy=False)


def _sample_maps(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, w = flow.shape[:2]
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return xs + flow[..., 0], ys + flow[..., 1]


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``out(x) = image(x + flow(x))``, bilinear, edges replicated.

    ``image`` is HxW or HxWxC (any C); ``flow`` HxWx2 in the output's coordinates.
    """
    map_x, map_y = _sample_maps(np.asarray(flow, dtype=np.float32))
    src = np.ascontiguousarray(image, dtype=np.float32)

    def remap(channels: np.ndarray) -> np.ndarray:
        return cv2.remap(channels, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    if src.ndim == 2 or src.shape[2] <= 4:
        out = remap(src)
        # cv2 drops a trailing channel axis of size 1.
        return out.reshape(src.shape)
    return np.stack([remap(np.ascontiguousarray(src[..., c])) for c in range(src.shape[2])], axis=-1)


def warp_tensor(image: Tensor, flow: Tensor | np.ndarray) -> Tensor:
    """Differentiable ``warp`` for ``N x C x H x W`` tensors (``grid_sample``, border padding).

    ``flow`` is a NumPy ``H x W x 2`` array, a tensor ``H x W x 2`` (shared by the batch) or
    a tensor ``N x 2 x H x W``.
    """
    n, _, h, w = image.shape
    fl = torch.as_tensor(flow, dtype=image.dtype, device=image.device)
    if fl.dim() == 3:
        fl = fl.permute(2, 0, 1).unsqueeze(0)
    fl = fl.expand(n, 2, h, w)
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=image.dtype, device=image.device),
        torch.arange(w, dtype=image.dtype, device=image.device),
        indexing="ij",
    )
    # align_corners=True: -1 and +1 are the centres of the first and last pixels.
    gx = (xs + fl[:, 0]) * (2.0 / max(w - 1, 1)) - 1.0
    gy = (ys + fl[:, 1]) * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack((gx, gy), dim=-1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


def occlusion_mask(flow_bw: np.ndarray, flow_fw: np.ndarray) -> np.ndarray:
    """Reliability of the current frame t's pixels for temporal consistency (Ruder et al.).

    ``flow_bw`` = w (t -> t-1), ``flow_fw`` = w' (t-1 -> t). With ``w~'(x) = w'(x + w(x))``,
    a pixel is occluded when ``|w + w~'|^2 > 0.01 (|w|^2 + |w~'|^2) + 0.5``, on a motion
    boundary when ``|grad u|^2 + |grad v|^2 > 0.01 |w|^2 + 0.002`` (u, v: components of w),
    and unreliable when ``x + w(x)`` leaves the frame. Returns HxW float32, 1 = reliable.
    """
    w_bw = np.asarray(flow_bw, dtype=np.float32)
    fw_at_prev = warp(flow_fw, w_bw)
    bw_sq = (w_bw**2).sum(axis=-1)
    round_trip = ((w_bw + fw_at_prev) ** 2).sum(axis=-1)
    occluded = round_trip > _CONSISTENCY_REL * (bw_sq + (fw_at_prev**2).sum(axis=-1)) + _CONSISTENCY_ABS

    du_dy, du_dx = np.gradient(w_bw[..., 0])
    dv_dy, dv_dx = np.gradient(w_bw[..., 1])
    grad_sq = du_dx**2 + du_dy**2 + dv_dx**2 + dv_dy**2
    boundary = grad_sq > _BOUNDARY_REL * bw_sq + _BOUNDARY_ABS

    h, w = w_bw.shape[:2]
    map_x, map_y = _sample_maps(w_bw)
    outside = (map_x < 0) | (map_x > w - 1) | (map_y < 0) | (map_y > h - 1)

    return (~(occluded | boundary | outside)).astype(np.float32)


@dataclass(frozen=True)
class FramePair:
    """Flows between a previous frame (t-1) and the current one (t), and t's reliability mask."""

    flow_bw: np.ndarray  # t -> t-1: warps frame t-1 into t's coordinates
    flow_fw: np.ndarray  # t-1 -> t
    mask: np.ndarray  # HxW float32, 1 = reliable in frame t


def flow_pair(prev: np.ndarray, cur: np.ndarray, *, preset: str = "medium") -> FramePair:
    """Both flows between ``prev`` and ``cur`` and the occlusion mask for ``cur``."""
    flow_bw = compute_flow(cur, prev, preset=preset)
    flow_fw = compute_flow(prev, cur, preset=preset)
    return FramePair(flow_bw=flow_bw, flow_fw=flow_fw, mask=occlusion_mask(flow_bw, flow_fw))


def reliable_fraction(mask: np.ndarray) -> float:
    """Mean of a reliability mask: the share of pixels whose flow passed the checks."""
    return float(np.mean(mask)) if np.size(mask) else 0.0


def histogram_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Bhattacharyya distance in [0, 1] between the hue-saturation-value histograms of two frames.

    Near 0 for two views of one scene, near 1 for unrelated images.
    """
    hists = []
    for img in (a, b):
        small = cv2.resize(np.asarray(img, dtype=np.float32)[..., :3], (_HIST_SIZE, _HIST_SIZE), interpolation=cv2.INTER_AREA)
        hsv = cv2.cvtColor(np.clip(small, 0.0, 1.0), cv2.COLOR_RGB2HSV)  # H in [0,360), S,V in [0,1]
        hist = cv2.calcHist([hsv], [0, 1, 2], None, [_HIST_BINS // 2, _HIST_BINS // 4, _HIST_BINS // 4], [0, 360, 0, 1.0001, 0, 1.0001])
        hists.append(hist)
    return float(cv2.compareHist(hists[0], hists[1], cv2.HISTCMP_BHATTACHARYYA))


def is_scene_cut(
    prev: np.ndarray,
    cur: np.ndarray,
    pair: FramePair | None = None,
    *,
    threshold: float = DEFAULT_CUT_RELIABLE,
    histogram_threshold: float = DEFAULT_CUT_HISTOGRAM,
) -> bool:
    """True when ``cur`` starts a new shot: the flow explains less than ``threshold`` of the
    pixels, or the colour histograms are more than ``histogram_threshold`` apart.
    """
    if pair is None:
        pair = flow_pair(prev, cur)
    if reliable_fraction(pair.mask) < threshold:
        return True
    return histogram_distance(prev, cur) > histogram_threshold
