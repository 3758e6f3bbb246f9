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

# Scene cuts, measured on big_buck_bunny_640x360_24fps_60s.mp4 (1439 frame pairs, DIS
# "medium" at 640x360). Its six hard cuts (frames 1, 285, 378, 553, 1145, 1346) have an
# explained fraction <= 0.025 and a histogram distance >= 0.518. Ordinary pairs after the
# opening fade-in (pans, tilts, character motion) have an explained fraction >= 0.48 (1st
# percentile 0.77) and a histogram distance <= 0.13. During the fade-in from black
# (frames 2-50: near-black, brightening, no trustworthy flow) the flow test still fires
# on 18 frames. Two unrelated smooth-noise frames explain <= 0.11 by chance.
DEFAULT_CUT_RELIABLE = 0.15
DEFAULT_CUT_HISTOGRAM = 0.4
# A reliable pixel is "explained" when the warped previous frame matches it within this
# many standard deviations of the frame's grey levels (per-frame normalised: fade-proof).
# Without it, smooth flows between unrelated frames pass the consistency check by chance
# on up to ~25% of the pixels.
_EXPLAINED_TOL = 0.5
_HIST_SIZE = 128  # histograms are taken on a small copy: faster, and less sensitive to noise
_HUE_BINS = 16
_SAT_BINS = 8
_HIST_DARK = 0.08  # relative brightness below which hue is noise
_HIST_MIN_WHITE = 0.02  # a frame darker than this everywhere counts as black

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

    return (~(occluded | boundary | ~lands_inside(w_bw))).astype(np.float32)


def lands_inside(flow: np.ndarray) -> np.ndarray:
    """HxW bool: where ``x + flow(x)`` lies inside the frame (what ``warp`` samples is real)."""
    h, w = flow.shape[:2]
    map_x, map_y = _sample_maps(np.asarray(flow, dtype=np.float32))
    return (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1)


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


def _standardised_gray(image: np.ndarray) -> np.ndarray:
    gray = cv2.cvtColor(np.asarray(image, dtype=np.float32)[..., :3], cv2.COLOR_RGB2GRAY)
    return (gray - gray.mean()) / max(float(gray.std()), 1e-3)


def explained_fraction(prev: np.ndarray, cur: np.ndarray, pair: FramePair) -> float:
    """Share of ``cur``'s pixels that are reliable in ``pair.mask`` *and* whose warped
    previous grey level matches (after normalising each frame to zero mean, unit std).
    """
    diff = np.abs(warp(_standardised_gray(prev), pair.flow_bw) - _standardised_gray(cur))
    return float(np.mean(pair.mask * (diff < _EXPLAINED_TOL)))


def _colour_histogram(image: np.ndarray) -> np.ndarray:
    """Normalised hue-saturation histogram plus one bin for dark pixels.

    Brightness is measured relative to the frame's 95th percentile, so a global exposure
    change or a fade scales it away; pixels darker than ``_HIST_DARK`` of that have no
    meaningful hue and are counted in the extra bin instead.
    """
    small = cv2.resize(np.asarray(image, dtype=np.float32)[..., :3], (_HIST_SIZE, _HIST_SIZE), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(np.clip(small, 0.0, 1.0), cv2.COLOR_RGB2HSV)  # H in [0, 360), S and V in [0, 1]
    value = hsv[..., 2] / max(float(np.percentile(hsv[..., 2], 95)), _HIST_MIN_WHITE)
    hue = np.minimum((hsv[..., 0] * (_HUE_BINS / 360.0)).astype(np.int64), _HUE_BINS - 1)
    sat = np.minimum((hsv[..., 1] * _SAT_BINS).astype(np.int64), _SAT_BINS - 1)
    dark_bin = _HUE_BINS * _SAT_BINS
    index = np.where(value < _HIST_DARK, dark_bin, hue * _SAT_BINS + sat)
    counts = np.bincount(index.ravel(), minlength=dark_bin + 1).astype(np.float64)
    return counts / counts.sum()


def histogram_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Hellinger (Bhattacharyya) distance ``sqrt(1 - sum(sqrt(p * q)))`` in [0, 1] between the
    colour histograms of two frames: near 0 for two views of one scene, near 1 for
    unrelated images.
    """
    p, q = _colour_histogram(a), _colour_histogram(b)
    return float(np.sqrt(max(0.0, 1.0 - float(np.sqrt(p * q).sum()))))


def is_scene_cut(
    prev: np.ndarray,
    cur: np.ndarray,
    pair: FramePair | None = None,
    *,
    threshold: float = DEFAULT_CUT_RELIABLE,
    histogram_threshold: float = DEFAULT_CUT_HISTOGRAM,
) -> bool:
    """True when ``cur`` starts a new shot: the flow explains less than ``threshold`` of its
    pixels (``explained_fraction``), or the colour histograms are more than
    ``histogram_threshold`` apart. ``pair`` (from ``flow_pair(prev, cur)``) saves recomputing.
    """
    if pair is None:
        pair = flow_pair(prev, cur)
    if explained_fraction(prev, cur, pair) < threshold:
        return True
    return histogram_distance(prev, cur) > histogram_threshold
