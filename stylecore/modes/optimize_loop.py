"""The optimization and style-video modes' frame loop (Ruder et al.): each frame is
optimised (``optimize.py``), warm-started from the previous stylized frame warped by
optical flow (``warm_start``: the recoloured content where a subject uncovered the background) and
held to it by a temporal loss; a scene cut restarts the chain.

Every frame is read back from the job folder before the next is chained to it, so a
resumed run makes exactly the frames an uninterrupted run makes.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch

from stylecore import flow
from stylecore.devices import bf16_autocast_pays, oom_guard, resolve_device, reuse_freed_memory
from stylecore.errors import Cancelled, InputError
from stylecore.io import imageops
from stylecore.io.sources import FrameSource, open_source
from stylecore.jobdir import JobDir
from stylecore.losses import blend_grams
from stylecore.modes.frame_loop import CancelCheck, Emit, OptimizationLoopConfig
from stylecore.modes.optimize import (FIRST_TOLERANCE, LATER_TOLERANCE, RECIPE, TemporalTarget, auto_scales,
                                      optimize_frame, style_grams)
from stylecore.modes.style_video import style_index
from stylecore.nets.loss_nets import load_loss_network

# Without `size`, frames are stylized at this long side at most: optimisation is costly per pixel.
_DEFAULT_SIZE = 512
# VGG19 halves the frame four times before relu5_1: a smaller short side has no pixel left.
_MIN_SIDE = 16
# A region the temporal term leaves free, this fraction of the short side across (or
# more), is one a subject uncovered, restarted from the content by ``warm_start``;
# thinner ones are the slivers along moving edges. 1/20: 12 px at 426x240, 54 px at 1080p.
_UNCOVERED_WIDTH = 1 / 20
# ``temporal_weights``: an unreliable pixel around which the warped previous content
# matches this frame's (mean RGB difference below _MATCHED over a window _MATCH_WINDOW of
# the short side across: 7 px at 426x240) keeps _WEAK_TEMPORAL of the temporal term.
_MATCHED = 0.05
_MATCH_WINDOW = 1 / 40
_WEAK_TEMPORAL = 0.3


class _StyleTargets:
    """Gram targets for each output frame: fixed style images, or a style video's frames."""

    def __init__(self, config: OptimizationLoopConfig, encoder: torch.nn.Module, device: torch.device,
                 size: tuple[int, int], content_fps: float) -> None:
        self._config = config
        self._encoder = encoder
        self._layers = config.solver.style_layers
        self._device = device
        self._long_side = max(1, round(max(size) * config.style_scale))
        self._content_fps = content_fps
        self._cache: dict[Any, dict[str, torch.Tensor]] = {}
        self._video: FrameSource | None = open_source(config.style_video) if config.style_video else None
        self._images = [imageops.load_image(p) for p, _ in config.styles]
        self._weights = [w for _, w in config.styles]
        if any(w < 0 for w in self._weights) or (self._weights and sum(self._weights) <= 0):
            raise InputError("style blend weights must be >= 0 and not all zero (`style` a.jpg:0.7 `style` b.jpg:0.3)")

    def close(self) -> None:
        if self._video is not None:
            self._video.close()

    def grams(self, k: int, content: np.ndarray | None, shot: int) -> dict[str, torch.Tensor]:
        """Targets for output frame k (0-based). ``content`` is the colour reference of the
        shot that starts at output frame ``shot``; the shot number keys the cache."""
        histogram = self._config.preserve_colors == "histogram"
        if self._video is not None:
            info = self._video.info
            s = style_index(k, self._config.style_mapping, content_fps=self._content_fps, style_fps=info.fps,
                            style_count=info.count)
            key: Any = ("video", s, shot if histogram else None)
            if key not in self._cache:
                self._cache.clear()  # one style frame at a time: memory stays flat
                self._cache[key] = self._compute([self._video.read(s)], [1.0], content if histogram else None)
            return self._cache[key]
        key = ("images", shot if histogram else None)
        if key not in self._cache:
            self._cache.clear()
            self._cache[key] = self._compute(self._images, self._weights, content if histogram else None)
        return self._cache[key]

    def _compute(self, images: list[np.ndarray], weights: list[float], colour_ref: np.ndarray | None
                 ) -> dict[str, torch.Tensor]:
        grams = []
        for image in images:
            if colour_ref is not None:
                image = imageops.match_color(image, colour_ref)
            h, w = image.shape[:2]
            image = imageops.resize(image, imageops.scaled_size(w, h, self._long_side))
            grams.append(style_grams(self._encoder, imageops.to_tensor(image, self._device), self._layers))
        return blend_grams(grams, weights) if len(grams) > 1 else grams[0]


def run_optimization(
    config: OptimizationLoopConfig,
    source: FrameSource,
    indices: Sequence[int],
    jobdir: JobDir,
    emit: Emit,
    cancel: CancelCheck,
    *,
    span: range | None = None,
) -> None:
    """Ruder et al.: each frame warm-started from the warped previous one, with a temporal loss.

    ``span``: the output positions (0-based) to make; the farm (``farm.py``) runs a chunk.
    """
    device = resolve_device(config.device)
    reuse_freed_memory(device)
    info = source.info
    size = processing_size(config.size, info.width, info.height)  # (w, h)
    if min(size) < _MIN_SIDE:
        raise InputError(
            f"frames of {size[0]}x{size[1]} px are too small for the VGG loss network (it pools 4 times): "
            f"use `size` so the short side is at least {_MIN_SIDE} px"
        )
    bf16 = bf16_autocast_pays(device) if config.bf16 is None else config.bf16
    solver = dataclasses.replace(config.solver, bf16=bf16)
    encoder = load_loss_network(config.loss_net, solver.layers, device, weights_path=config.vgg_weights,
                                pooling=RECIPE.pooling)
    targets = _StyleTargets(config, encoder, device, size, info.fps)
    temporal_on = solver.temporal_weight > 0
    first_scales = config.scales or auto_scales(*size)
    histogram = config.preserve_colors == "histogram"
    shot_reference: np.ndarray | None = None  # first content frame of the current shot
    shot_start = 0  # its output number
    previous: tuple[int, np.ndarray] | None = None  # (output number, processed content)
    cuts: dict[int, bool] = {}  # k: a scene cut lies between output frames k - 1 and k

    def content_at(k: int) -> np.ndarray:
        return imageops.resize(source.read(indices[k]), size)

    def cut_before(k: int) -> bool:
        if k not in cuts:
            a, b = content_at(k - 1), content_at(k)
            cuts[k] = flow.is_scene_cut(a, b, flow.flow_pair(a, b))
        return cuts[k]

    def shot_start_of(k: int) -> int:
        """Output position (0-based) where frame k's shot starts, found from the content
        alone, so a resumed run picks the colour reference an uninterrupted run picked."""
        while k > 0 and not cut_before(k):
            k -= 1
        return k

    try:
        for k in span if span is not None else range(len(indices)):
            index, number = indices[k], k + 1
            if jobdir.has_frame(number):
                emit(dict(event="frame", number=number, index=index, path=str(jobdir.frame_path(number)),
                          seconds=0.0, skipped=True))
                continue
            if cancel():
                raise Cancelled("cancelled")
            started = time.perf_counter()
            content = content_at(k)
            temporal: TemporalTarget | None = None
            start_from: torch.Tensor | None = None
            cut_here = False
            if temporal_on and number > 1 and jobdir.has_frame(number - 1):
                prev_content = previous[1] if previous and previous[0] == number - 1 else content_at(k - 1)
                pair = flow.flow_pair(prev_content, content)
                cut_here = cuts[k] = flow.is_scene_cut(prev_content, content, pair)
                if cut_here:
                    emit(dict(event="cut", index=index, number=number))
                    shot_reference = None
                else:
                    # The previous frame is read back from disk, so a resumed run continues
                    # exactly like an uninterrupted one.
                    warped = flow.warp(previous_result(jobdir, number - 1, size), pair.flow_bw)
                    weights = temporal_weights(pair, prev_content, content)
                    temporal = TemporalTarget(imageops.to_tensor(warped, device),
                                              torch.from_numpy(weights)[None, None].to(device))
                    start_from = imageops.to_tensor(warm_start(warped, weights, content), device)
            if not temporal_on or cut_here or k == 0:
                shot_reference, shot_start = content, number
            elif histogram and (previous is None or previous[0] != number - 1):
                # Resumed mid-shot (frames before this one were skipped): the shot's colour
                # reference is its first frame, not the first frame this run makes.
                start = shot_start_of(k)
                shot_reference, shot_start = (content if start == k else content_at(start)), start + 1
            elif shot_reference is None:
                shot_reference, shot_start = content, number
            frame_solver = dataclasses.replace(
                solver,
                iterations=config.iterations if temporal else config.first_iterations,
                tolerance=LATER_TOLERANCE if temporal else FIRST_TOLERANCE,
                line_search=temporal is None,
                style_weight=config.style_weights[number - 1],
                scales=1 if temporal else first_scales,
            )
            torch.manual_seed(config.seed + number)
            content_t = imageops.to_tensor(content, device)
            with oom_guard(f"stylizing frame {number} at {size[0]}x{size[1]}"):
                result = optimize_frame(
                    encoder,
                    content_t,
                    targets.grams(k, shot_reference, shot_start),
                    frame_solver,
                    init=start_from if temporal else None,
                    temporal=temporal,
                    cancel=cancel,
                )
            image = imageops.to_numpy(result)
            if config.preserve_colors == "luminance":
                image = imageops.luminance_transfer(image, content)
            if size != (info.width, info.height):
                jobdir.write_work_frame(number, image)
                image = imageops.resize(image, (info.width, info.height))
            path = jobdir.write_frame(number, image)
            previous = (number, content)
            emit(dict(event="frame", number=number, index=index, path=str(path),
                      seconds=round(time.perf_counter() - started, 4), skipped=False))
    finally:
        targets.close()


def previous_result(jobdir: JobDir, number: int, size: tuple[int, int]) -> np.ndarray:
    """Frame ``number`` as this job made it, at the processing ``size``: the kept work frame
    when the written one was resized to the source's size. Resizing the written frame back
    instead (as before stop 25) blurred every later frame's start and temporal target,
    and its iterations went on sharpening that blur again: at 426x240 from a 640x360 clip,
    60 loss evaluations a later frame rather than 40, with a higher style loss and warping
    error (BENCHMARKS.md, "Optimization mode at 426x240"). A folder without work frames
    (an earlier version's) still resizes."""
    kept = jobdir.read_work_frame(number)
    if kept is not None and kept.shape[:2] == (size[1], size[0]):
        return kept
    return imageops.resize(jobdir.read_frame(number), size)


def warm_start(warped: np.ndarray, weights: np.ndarray, content: np.ndarray) -> np.ndarray:
    """Where a later frame's optimisation starts: the previous result warped into it (Ruder
    et al.), except in the regions a moving subject uncovered, which start from the content
    frame recoloured to the warped result's palette (``imageops.match_color``). ``weights``
    are the temporal term's (``temporal_weights``): a region it leaves free (0) is one the
    previous frame did not see.

    Departs from Ruder et al., who start from the warp everywhere: where the previous frame
    did not see the background, the warp drags the subject's strokes along, no loss term
    pulls them away (the temporal term is masked off there and the content term, at
    relu4_2, barely minds), and the subject leaves a smeared ghost that outlives it by many
    frames (``bench.disocclusion``: Big Buck Bunny's bird taking off). Only free regions
    at least ``_UNCOVERED_WIDTH`` of the short side across are restarted (a morphological
    opening): the thin unreliable slivers along every moving edge keep the warp, else they
    would be re-stylized every frame and flicker. A region the flow's checks failed but
    whose content still matches the warp (a flat area; the weak temporal term holds it)
    starts from the warp too: restarted from the content, as before stop 27, its first 20
    iterations went on pulling it back to the warp (at 426x240 the loss started twice as
    high, and after 30 iterations was still above where the warp starts after 20)."""
    free = (np.asarray(weights) <= 0).astype(np.uint8)
    if not free.any():
        return warped
    side = max(3, int(round(min(free.shape) * _UNCOVERED_WIDTH)) | 1)
    uncovered = cv2.morphologyEx(free, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side)))
    if not uncovered.any():
        return warped
    fill = uncovered.astype(np.float32)[..., None]
    return warped * (1.0 - fill) + imageops.match_color(content, warped) * fill


def temporal_weights(pair: flow.FramePair, prev_content: np.ndarray, content: np.ndarray) -> np.ndarray:
    """The temporal loss's per-pixel weights ``c`` (HxW float32): 1 where the flow passed
    its checks (``pair.mask``), 0 where it failed, except ``_WEAK_TEMPORAL`` where it
    failed but the warped previous content still matches this frame's all around the
    pixel (mean RGB difference under ``_MATCHED`` over a small window) and the flow lands
    inside the frame.

    Departs from Ruder et al.'s binary weights. On a flat area (a dark tank, sky, a wall)
    the forward and backward flows disagree although the pixels plainly move with their
    surroundings; with no temporal term there, nothing holds the strokes still and they
    grow into speckles that change every frame (``bench.optimization_sheet``: the
    astronaut pan's dark tank, 2.5-3.3 % of its pixels unreliable). The weak term steadies
    them, and they start from the warp (``warm_start``). What a subject uncovered does not
    match the warped previous content (the warp drags the subject along), so it stays
    free and no ghost is pulled back; matching is judged over a window so that a few
    pixels of the subject that happen to match the background do not count. A pixel that
    entered at the frame's edge samples replicated border pixels: held to them, the
    entering edge streaks, so it stays free too."""
    reliable = np.asarray(pair.mask) >= 0.5
    if reliable.all():
        return np.ascontiguousarray(pair.mask, dtype=np.float32)
    diff = np.abs(flow.warp(prev_content, pair.flow_bw) - content).mean(axis=-1)
    window = max(3, int(round(min(diff.shape) * _MATCH_WINDOW)) | 1)
    matched = cv2.blur(diff, (window, window), borderType=cv2.BORDER_REFLECT) < _MATCHED
    weak = ~reliable & matched & flow.lands_inside(pair.flow_bw)
    return np.where(reliable, 1.0, np.where(weak, _WEAK_TEMPORAL, 0.0)).astype(np.float32)


def processing_size(long_side: int | None, width: int, height: int) -> tuple[int, int]:
    """(w, h) to stylize a ``width x height`` source at: ``long_side``, else ``_DEFAULT_SIZE`` at most."""
    if long_side is None:
        long_side = min(_DEFAULT_SIZE, max(width, height))
    return imageops.scaled_size(width, height, long_side)
