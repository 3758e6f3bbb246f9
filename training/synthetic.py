"""Synthetic motion: two views of a still image related by a known small similarity
transform (translation, zoom, rotation), with its exact optical flow.

Each view ``f`` is the image resampled through an affine map ``A_f`` from crop pixel to
image pixel. With ``A_cur = A_prev o M`` for a motion ``M`` about the crop centre, pixel
``p`` of the current view shows what the previous view shows at ``M(p)``, so the exact
flow is ``flow_cur_to_prev(p) = M(p) - p``; it is reliable where ``M(p)`` lies inside
the previous view.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .pairs import TrainPair


@dataclass(frozen=True)
class MotionRange:
    """Largest motion between the two views (uniformly drawn up to these)."""

    shift: float = 0.04  # fraction of the crop size
    zoom: float = 0.04  # relative scale change
    rotation_deg: float = 2.0


def _affine(scale: float, angle_rad: float, centre: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """3x3 matrix of ``p -> centre + scale * R(angle) (p - centre) + shift``."""
    c, s = math.cos(angle_rad) * scale, math.sin(angle_rad) * scale
    rot = np.array([[c, -s], [s, c]])
    out = np.eye(3)
    out[:2, :2] = rot
    out[:2, 2] = centre - rot @ centre + shift
    return out


def _sample(image: np.ndarray, crop_to_image: np.ndarray, size: int) -> np.ndarray:
    return cv2.warpAffine(
        image,
        crop_to_image[:2].astype(np.float64),
        (size, size),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REFLECT_101,
    )


def synthetic_pair(image: np.ndarray, size: int, rng: np.random.Generator, motion: MotionRange = MotionRange()) -> TrainPair:
    """A ``size x size`` frame pair from one ``H x W x 3`` image (uint8 or float in [0, 1])."""
    h, w = image.shape[:2]
    if min(h, w) < size:
        raise ValueError(f"synthetic_pair: image {w}x{h} is smaller than the {size}px crop")
    # Previous view: an axis-aligned crop at a random sub-pixel position (both views are
    # resampled, so neither is systematically sharper than the other).
    origin = np.array([rng.uniform(0, w - size), rng.uniform(0, h - size)])
    prev_to_image = np.eye(3)
    prev_to_image[:2, 2] = origin
    centre = np.array([(size - 1) / 2.0, (size - 1) / 2.0])
    move = _affine(
        scale=1.0 + rng.uniform(-motion.zoom, motion.zoom),
        angle_rad=math.radians(rng.uniform(-motion.rotation_deg, motion.rotation_deg)),
        centre=centre,
        shift=rng.uniform(-motion.shift, motion.shift, size=2) * size,
    )
    cur_to_image = prev_to_image @ move

    xs, ys = np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64))
    tx = move[0, 0] * xs + move[0, 1] * ys + move[0, 2]
    ty = move[1, 0] * xs + move[1, 1] * ys + move[1, 2]
    flow = np.stack([tx - xs, ty - ys], axis=-1).astype(np.float32)
    inside = (tx >= 0) & (tx <= size - 1) & (ty >= 0) & (ty <= size - 1)
    return TrainPair(
        prev=_sample(image, prev_to_image, size),
        cur=_sample(image, cur_to_image, size),
        flow_bw=flow,
        mask=inside.astype(np.float32),
        frame=image,
    )
