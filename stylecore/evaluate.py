"""Quality metrics for stylized video (``stylecore evaluate``).

- Temporal warping error (Lai et al., "Learning Blind Video Temporal Consistency",
  ECCV 2018): optical flow between consecutive *content* frames, a forward-backward
  occlusion mask ``M`` in frame t-1, and per pair

      E(t) = sum_x M(x) * ||O_t(x + f(x)) - O_{t-1}(x)||^2 / sum_x M(x)

  with ``f`` the flow t-1 -> t and ``||.||^2`` summed over the RGB channels of [0, 1]
  images; the clip's value is the mean over pairs. Pairs across a scene cut are left out.
- Long-term consistency: the same error between frame t and frame t-k.
- Temporal difference: the same error with no motion compensation (``f = 0``, ``M = 1``),
  i.e. the mean squared change between consecutive frames; a flow-free baseline.
- Style and content losses of the stylized frames under a loss network (Gatys et al.).
- Noise stability of a feedforward model: how much its output moves per unit of input
  noise (Gupta et al. 2017 discuss why this predicts flicker).

Everything here takes frames as ``H x W x 3`` float32 RGB in ``[0, 1]`` and streams: a clip
is consumed frame by frame, holding only the last ``k + 1`` frames in memory.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from torch import Tensor

from stylecore import flow as flowlib
from stylecore.errors import InputError
from stylecore.io.imageops import resize, to_tensor
from stylecore.losses import (
    GATYS_CONTENT_LAYERS,
    GATYS_STYLE_LAYERS,
    content_loss,
    gram_matrix,
    style_loss,
)


@dataclass(frozen=True)
class TemporalConfig:
    """Settings of the temporal metrics."""

    long_term_gap: int = 10  # k in "frame t against t-k"; 0 turns long-term off
    flow_preset: str = "medium"  # DIS preset for the content flow
    detect_cuts: bool = True
    cut_threshold: float = flowlib.DEFAULT_CUT_RELIABLE
    cut_histogram_threshold: float = flowlib.DEFAULT_CUT_HISTOGRAM

    def __post_init__(self) -> None:
        if self.long_term_gap < 0:
            raise InputError(f"`long_term_gap` {self.long_term_gap} must be >= 0 (0 turns it off)")
        if self.long_term_gap == 1:
            raise InputError("`long_term_gap` 1 repeats the warping error; use k >= 2, or 0 to turn it off")


@dataclass(frozen=True)
class FrameTemporal:
    """Per-frame values; ``None`` where a value is undefined (first frames, scene cuts)."""

    index: int  # position in the evaluated clip, 0-based
    cut: bool  # a scene cut starts at this frame
    warping_error: float | None  # frame t against t-1
    long_term_error: float | None  # frame t against t-k
    temporal_difference: float | None


@dataclass(frozen=True)
class TemporalScores:
    """Clip-level temporal metrics: means over the scored frame pairs (NaN when none)."""

    warping_error: float
    long_term_error: float
    long_term_gap: int
    temporal_difference: float
    frames: int
    pairs: int  # consecutive pairs scored (cuts and pairs with no reliable pixel left out)
    long_term_pairs: int
    cuts: tuple[int, ...]  # clip positions where a new shot starts
    per_frame: tuple[FrameTemporal, ...] = field(repr=False, default=())


@dataclass(frozen=True)
class PairGeometry:
    """Where each pixel of an earlier frame goes in a later one, and where that is trustworthy."""

    flow: np.ndarray  # earlier -> later, H x W x 2
    mask: np.ndarray  # H x W in the earlier frame's coordinates, 1 = reliable


def _as_image(frame: np.ndarray, what: str) -> np.ndarray:
    img = np.asarray(frame)
    if img.ndim != 3 or img.shape[2] != 3:
        raise InputError(f"{what} has shape {img.shape}; expected H x W x 3 RGB frames")
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    return img.astype(np.float32, copy=False)


def pair_geometry(earlier: np.ndarray, later: np.ndarray, *, preset: str = "medium") -> PairGeometry:
    """Flow ``earlier -> later`` between two content frames and the occlusion mask in ``earlier``."""
    return _geometry_of(flowlib.flow_pair(earlier, later, preset=preset))


def _geometry_of(pair: flowlib.FramePair) -> PairGeometry:
    """The earlier frame's view of a ``FramePair`` (whose mask is the later frame's).

    ``occlusion_mask(a_to_b, b_to_a)`` masks frame a, so swapping the flows masks t-1.
    """
    return PairGeometry(flow=pair.flow_fw, mask=flowlib.occlusion_mask(pair.flow_fw, pair.flow_bw))


def pair_warping_error(earlier: np.ndarray, later: np.ndarray, geometry: PairGeometry) -> float:
    """``sum(M * ||warp(later) - earlier||^2) / sum(M)``; NaN when no pixel is reliable."""
    warped = flowlib.warp(later, geometry.flow)
    sq = ((warped - earlier) ** 2).sum(axis=-1)
    weight = float(geometry.mask.sum())
    if weight <= 0.0:
        return math.nan
    return float((geometry.mask * sq).sum() / weight)


def fine_detail(image: np.ndarray) -> float:
    """Mean absolute Laplacian of an ``H x W x 3`` image's luminance: the energy of strokes
    and edges a pixel wide. Of two stylizations of one frame, the smoother has less; PSNR
    cannot say which, since strokes left out and strokes drawn a pixel off score alike."""
    grey = cv2.cvtColor(np.ascontiguousarray(image, dtype=np.float32), cv2.COLOR_RGB2GRAY)
    return float(np.abs(cv2.Laplacian(grey, cv2.CV_32F, ksize=1)).mean())


def frame_difference(earlier: np.ndarray, later: np.ndarray) -> float:
    """Mean over pixels of ``||later - earlier||^2`` (channels summed): the flow-free error."""
    return float(((later - earlier) ** 2).sum(axis=-1).mean())


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def temporal_scores(
    outputs: Mapping[str, Iterable[np.ndarray]],
    content: Iterable[np.ndarray],
    config: TemporalConfig = TemporalConfig(),
) -> dict[str, TemporalScores]:
    """Temporal metrics of one or more stylized clips of the same content.

    The content flow, masks and scene cuts are computed once and shared by all outputs
    (the flow dominates the cost). All outputs must have one frame size; the content is
    resized to it. Every clip must have as many frames as the content.
    """
    if not outputs:
        raise ValueError("temporal_scores: no output clip given")
    names = list(outputs)
    gap = config.long_term_gap
    window = max(gap, 1) + 1
    contents: deque[np.ndarray] = deque(maxlen=window)
    outs: dict[str, deque[np.ndarray]] = {n: deque(maxlen=window) for n in names}
    cut_positions: list[int] = []
    rows: dict[str, list[FrameTemporal]] = {n: [] for n in names}
    size: tuple[int, int] | None = None

    for t, (content_frame, *frames) in enumerate(_zip_clips(content, [outputs[n] for n in names])):
        imgs = [_as_image(f, f"stylized frame {t} of {n!r}") for n, f in zip(names, frames)]
        if size is None:
            size = (imgs[0].shape[1], imgs[0].shape[0])
        for name, img in zip(names, imgs):
            if (img.shape[1], img.shape[0]) != size:
                raise InputError(
                    f"stylized frame {t} of {name!r} is {img.shape[1]}x{img.shape[0]}, not {size[0]}x{size[1]}; "
                    "all frames of the compared clips must have one size"
                )
        cur = resize(_as_image(content_frame, f"content frame {t}"), size)
        contents.append(cur)
        for name, img in zip(names, imgs):
            outs[name].append(img)

        cut = False
        short: PairGeometry | None = None
        if t >= 1:
            prev = contents[-2]
            pair = flowlib.flow_pair(prev, cur, preset=config.flow_preset)
            short = _geometry_of(pair)
            if config.detect_cuts:
                cut = flowlib.is_scene_cut(
                    prev,
                    cur,
                    pair,
                    threshold=config.cut_threshold,
                    histogram_threshold=config.cut_histogram_threshold,
                )
            if cut:
                cut_positions.append(t)
        # Long-term pair (t-k, t): only when no cut lies in (t-k, t].
        long_geom: PairGeometry | None = None
        if gap >= 2 and t >= gap and not any(t - gap < c <= t for c in cut_positions):
            long_geom = pair_geometry(contents[-1 - gap], cur, preset=config.flow_preset)

        for name in names:
            clip = outs[name]
            we = lt = td = None
            if short is not None and not cut:
                we = pair_warping_error(clip[-2], clip[-1], short)
                td = frame_difference(clip[-2], clip[-1])
            if long_geom is not None:
                lt = pair_warping_error(clip[-1 - gap], clip[-1], long_geom)
            rows[name].append(
                FrameTemporal(index=t, cut=cut, warping_error=we, long_term_error=lt, temporal_difference=td)
            )

    return {name: _summarise(rows[name], gap, tuple(cut_positions)) for name in names}


def _summarise(rows: list[FrameTemporal], gap: int, cuts: tuple[int, ...]) -> TemporalScores:
    we = [r.warping_error for r in rows if r.warping_error is not None]
    lt = [r.long_term_error for r in rows if r.long_term_error is not None]
    td = [r.temporal_difference for r in rows if r.temporal_difference is not None]
    return TemporalScores(
        warping_error=_mean(we),
        long_term_error=_mean(lt),
        long_term_gap=gap,
        temporal_difference=_mean(td),
        frames=len(rows),
        pairs=sum(1 for v in we if not math.isnan(v)),
        long_term_pairs=sum(1 for v in lt if not math.isnan(v)),
        cuts=cuts,
        per_frame=tuple(rows),
    )


def _zip_clips(
    content: Iterable[np.ndarray], outputs: Sequence[Iterable[np.ndarray]]
) -> Iterator[tuple[np.ndarray, ...]]:
    """``zip`` that turns a length mismatch into an actionable error."""
    iters = [iter(content), *(iter(o) for o in outputs)]
    count = 0
    while True:
        items = [next(it, None) for it in iters]
        if all(i is None for i in items):
            return
        if any(i is None for i in items):
            short = "the content" if items[0] is None else "a stylized clip"
            raise InputError(
                f"{short} ends after {count} frames while the other goes on; evaluate the same frames "
                "(select the content's range with `frames` START:END)"
            )
        count += 1
        yield tuple(items)  # type: ignore[misc]


def warping_error(
    frames: Iterable[np.ndarray],
    content_frames: Iterable[np.ndarray],
    config: TemporalConfig = TemporalConfig(),
) -> TemporalScores:
    """Temporal metrics of one stylized clip against its content (see module docstring)."""
    return temporal_scores({"output": frames}, content_frames, config)["output"]


# --- style and content losses ---------------------------------------------------------


@dataclass(frozen=True)
class FeatureLosses:
    """Mean style and content loss over the frames, and the per-frame values."""

    content_loss: float
    style_loss: float | None  # None when no style image was given
    per_frame_content: tuple[float, ...] = field(repr=False, default=())
    per_frame_style: tuple[float, ...] | None = field(repr=False, default=None)


def feature_losses(
    frames: Iterable[np.ndarray],
    content_frames: Iterable[np.ndarray],
    network: Callable[[Tensor], Mapping[str, Tensor]],
    *,
    style: np.ndarray | None = None,
    style_layers: Mapping[str, float] = GATYS_STYLE_LAYERS,
    content_layers: Mapping[str, float] = GATYS_CONTENT_LAYERS,
    device: torch.device | str = "cpu",
) -> FeatureLosses:
    """Gatys content loss against each content frame (resized to the output) and style loss
    against ``style``'s Gram matrices, each the weighted sum over its layers.

    ``network`` maps a ``1 x 3 x H x W`` [0, 1] image to a dict of layer features. Both losses
    are the normalised ones of ``losses.py``, so values compare across loss networks' scales.
    The style image is used as given: resize it first to the scale you want judged.
    """
    device = torch.device(device)
    targets: dict[str, Tensor] | None = None
    if style is not None:
        with torch.no_grad():
            feats = network(to_tensor(_as_image(style, "style image"), device))
        targets = {name: gram_matrix(feats[name]) for name in style_layers}

    per_content: list[float] = []
    per_style: list[float] = []
    with torch.no_grad():
        for src, out in _zip_clips(content_frames, [frames]):
            img = _as_image(out, "stylized frame")
            ref = resize(_as_image(src, "content frame"), (img.shape[1], img.shape[0]))
            f_out = network(to_tensor(img, device))
            f_ref = network(to_tensor(ref, device))
            per_content.append(float(sum(w * content_loss(f_out[n], f_ref[n]) for n, w in content_layers.items())))
            if targets is not None:
                per_style.append(
                    float(
                        sum(
                            w * style_loss(f_out[n], targets[n]) for n, w in style_layers.items()
                        )
                    )
                )
    if not per_content:
        raise InputError("no frame to evaluate: the stylized clip is empty")
    return FeatureLosses(
        content_loss=float(np.mean(per_content)),
        style_loss=float(np.mean(per_style)) if targets is not None else None,
        per_frame_content=tuple(per_content),
        per_frame_style=tuple(per_style) if targets is not None else None,
    )


# --- noise stability ------------------------------------------------------------------


@dataclass(frozen=True)
class NoiseStability:
    """How strongly a model passes small input noise on to its output.

    ``amplification = rms(f(x + n) - f(x)) / rms(n)`` pooled over all frames, with ``n`` the
    noise actually added after clipping to [0, 1]: 1 means the noise goes through
    unchanged, lower is more stable. ``output_change`` is ``mean((f(x + n) - f(x))^2)``.
    """

    amplification: float
    output_change: float
    sigma: float
    frames: int


def noise_stability(
    model: Callable[[Tensor], Tensor],
    frames: Iterable[np.ndarray],
    *,
    sigma: float = 0.02,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> NoiseStability:
    """Run ``model`` (``1 x 3 x H x W`` [0, 1] -> same) on each frame with and without Gaussian
    noise of standard deviation ``sigma`` and compare the outputs."""
    if sigma <= 0:
        raise InputError(f"noise sigma must be positive, got {sigma}")
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    out_sq = in_sq = 0.0
    out_count = in_count = 0
    n = 0
    with torch.no_grad():
        for frame in frames:
            x = to_tensor(_as_image(frame, "frame"), device)
            noise = torch.randn(x.shape, generator=gen).to(device) * sigma
            noisy = (x + noise).clamp(0.0, 1.0)
            delta_out = model(noisy).float() - model(x).float()
            out_sq += float((delta_out**2).sum())
            out_count += delta_out.numel()
            in_sq += float(((noisy - x) ** 2).sum())
            in_count += x.numel()
            n += 1
    if n == 0:
        raise InputError("no frame to measure noise stability on")
    out_ms = out_sq / out_count
    in_ms = in_sq / in_count
    return NoiseStability(amplification=math.sqrt(out_ms / in_ms), output_change=out_ms, sigma=sigma, frames=n)
