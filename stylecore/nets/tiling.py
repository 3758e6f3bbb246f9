"""Tiled inference for frames too large for the device: overlapping tiles, blended seams.

Two things would make naive tiling visible:
- Instance normalisation: each tile would normalise by its own statistics, so tiles
  would differ in colour and contrast. Here every tile uses the *whole frame's*
  statistics. They are measured one normalisation layer at a time: pass ``k`` runs
  every tile up to layer ``k`` (earlier layers already fixed) and accumulates the mean
  and variance of that layer's input over the tiles' non-overlapping cores. This costs
  about seven forward passes instead of one, only on frames that do not fit.
- Borders: a tile's edge pixels lack context. Tiles overlap by more than the network's
  receptive radius, and neighbouring outputs are cross-faded with linear ramps that sum
  to one across each seam.

With the default overlap every blended pixel is computed with its full context, so the
result equals untiled inference up to floating-point rounding.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

from stylecore.nets.transformer import SIZE_MULTIPLE, CapturedActivation, NormStats, StyleTransformer

BLEND = 16  # width of the cross-fade band across a seam, in pixels
_MIN_CORE = 64  # smallest useful non-overlapping part of a tile


@dataclass(frozen=True)
class Span:
    """One tile along one axis: ``core`` is the part it owns, ``window`` what it computes."""

    core: tuple[int, int]
    window: tuple[int, int]


@dataclass(frozen=True)
class Tile:
    y: Span
    x: Span


def default_overlap(model: StyleTransformer) -> int:
    """Margin on each side of a tile's core: the receptive radius plus half the blend band,
    rounded up to the network's size multiple, so blended pixels see their full context."""
    margin = model.receptive_radius() + BLEND // 2
    return -(-margin // SIZE_MULTIPLE) * SIZE_MULTIPLE


def min_tile(model: StyleTransformer) -> int:
    return 2 * default_overlap(model) + _MIN_CORE


def spans(length: int, tile: int, overlap: int) -> list[Span]:
    """Cover ``[0, length)`` with cores of at most ``tile - 2 * overlap`` pixels whose cuts
    fall on multiples of 4 (so stride-2 layers stay aligned); windows add ``overlap``."""
    core = (tile - 2 * overlap) // SIZE_MULTIPLE * SIZE_MULTIPLE
    if core < SIZE_MULTIPLE:
        raise ValueError(f"tile {tile} leaves no core with overlap {overlap}")
    count = -(-length // core)
    # Even cuts, on the 4-pixel grid.
    cuts = [round(length * i / count / SIZE_MULTIPLE) * SIZE_MULTIPLE for i in range(count)] + [length]
    out: list[Span] = []
    for a, b in zip(cuts, cuts[1:]):
        out.append(Span(core=(a, b), window=(max(0, a - overlap), min(length, b + overlap))))
    return out


def tile_grid(height: int, width: int, tile: int, overlap: int) -> list[Tile]:
    return [Tile(y, x) for y in spans(height, tile, overlap) for x in spans(width, tile, overlap)]


def _ramp(span: Span, length: int, blend: int, device: torch.device) -> Tensor:
    """Weights along one axis of a window: 1 on the core, linear ramps of width ``blend``
    centred on each cut that has a neighbour; adjacent ramps sum to one."""
    lo, hi = span.window
    pos = torch.arange(lo, hi, device=device, dtype=torch.float32) + 0.5
    weight = torch.ones(hi - lo, device=device)
    a, b = span.core
    if a > 0:
        weight = torch.minimum(weight, ((pos - (a - blend / 2)) / blend).clamp(0, 1))
    if b < length:
        weight = torch.minimum(weight, (((b + blend / 2) - pos) / blend).clamp(0, 1))
    return weight


def _windows(image: Tensor, tiles: list[Tile]) -> Iterator[tuple[Tile, Tensor]]:
    for t in tiles:
        yield t, image[:, :, t.y.window[0] : t.y.window[1], t.x.window[0] : t.x.window[1]]


@torch.inference_mode()
def measure_stats(model: StyleTransformer, image: Tensor, style_weight: Tensor, tiles: list[Tile]) -> NormStats:
    """Whole-frame instance-norm statistics, measured tile by tile (see module docstring)."""
    stats = NormStats()
    n = image.shape[0]
    for layer in range(model.num_norms):
        stats.capture = layer
        count = 0.0
        mean: Tensor | None = None
        m2: Tensor | None = None
        for t, window in _windows(image, tiles):
            try:
                model(window, style_weight, stats)
                raise RuntimeError(f"normalisation layer {layer} was never reached")
            except CapturedActivation as got:
                act = got.activation
            stride = window.shape[2] // act.shape[2]
            core = act[
                :,
                :,
                (t.y.core[0] - t.y.window[0]) // stride : (t.y.core[1] - t.y.window[0]) // stride,
                (t.x.core[0] - t.x.window[0]) // stride : (t.x.core[1] - t.x.window[0]) // stride,
            ].float()
            size = float(core.shape[2] * core.shape[3])
            var_t, mean_t = torch.var_mean(core, dim=(2, 3), unbiased=False)
            mean_t, m2_t = mean_t.double(), var_t.double() * size
            if mean is None or m2 is None:
                mean, m2, count = mean_t, m2_t, size
                continue
            # Chan et al.'s pairwise update: numerically safe merging of (count, mean, M2).
            delta = mean_t - mean
            total = count + size
            mean = mean + delta * (size / total)
            m2 = m2 + m2_t + delta**2 * (count * size / total)
            count = total
        assert mean is not None and m2 is not None
        stats.mean[layer] = mean.float().reshape(n, -1)
        stats.var[layer] = (m2 / count).float().reshape(n, -1)
    stats.capture = None
    return stats


@torch.inference_mode()
def stylize_tiled(
    model: StyleTransformer, image: Tensor, style_weight: Tensor, tile: int, overlap: int | None = None
) -> Tensor:
    """Stylize ``N x 3 x H x W`` in overlapping ``tile x tile`` windows; same result as
    ``model(image, style_weight)`` but with the memory of one window. The output is
    assembled in float32 on the CPU, so only one window is on the device at a time."""
    overlap = default_overlap(model) if overlap is None else overlap
    n, _, h, w = image.shape
    pad_h, pad_w = (-h) % SIZE_MULTIPLE, (-w) % SIZE_MULTIPLE
    # Pad exactly as the network would, so edge tiles see what untiled inference sees.
    padded = F.pad(image, (0, pad_w, 0, pad_h), mode="reflect") if (pad_h or pad_w) else image
    hp, wp = padded.shape[2], padded.shape[3]
    tiles = tile_grid(hp, wp, tile, overlap)
    stats = measure_stats(model, padded, style_weight, tiles)
    out = torch.zeros(n, 3, hp, wp, dtype=torch.float32)
    for t, window in _windows(padded, tiles):
        result = model(window, style_weight, stats).float()
        weight = _ramp(t.y, hp, BLEND, result.device)[:, None] * _ramp(t.x, wp, BLEND, result.device)[None, :]
        out[:, :, t.y.window[0] : t.y.window[1], t.x.window[0] : t.x.window[1]] += (result * weight).cpu()
    return out[:, :, :h, :w]
