"""Run one stylization job: the single place where a job is executed.

The CLI, the worker (Blender) and the Python API all call ``run_job``. It opens the
content, resolves which source frames become which output frames, opens the job folder
(resume, parameter check), runs the mode's frame loop and, for a video output, encodes
the frames with the source's audio.
"""

from __future__ import annotations

import dataclasses
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stylecore import flow
from stylecore.io import imageops
from stylecore.devices import oom_guard, resolve_device
from stylecore.errors import Cancelled, InputError, OutputError
from stylecore.io.encode import encode_video, remove_stale_temp_videos
from stylecore.io.ranges import resolve_range
from stylecore.io.sources import FrameSource, VideoEndedEarly, is_pattern, open_source, pattern_files
from stylecore.jobdir import JobDir, is_job_file_name
from stylecore.catalog import model_for
from stylecore.jobspec import NOT_WRITTEN_SUFFIXES, VIDEO_SUFFIXES, JobSpec
from stylecore.modes.optimize import RECIPE, OptimConfig, TemporalTarget, auto_scales, optimize_frame, style_grams
from stylecore.losses import blend_grams
from stylecore.modes.style_video import StyleMapping, style_index
from stylecore.nets.loss_nets import load_loss_network, resolve_loss_net, weights_location

EventSink = Callable[[dict[str, Any]], None]
CancelCheck = Callable[[], bool]

# Default long side per mode: optimisation is costly per pixel; feedforward is not.
DEFAULT_SIZE = {"optimization": 512, "style-video": 512, "feedforward": None}
# VGG19 halves the frame four times before relu5_1: a smaller short side has no pixel left.
_MIN_OPTIMIZATION_SIDE = 16


@dataclass(frozen=True)
class JobResult:
    """Where the job's frames (and video) are."""

    frames_dir: Path
    frames: int
    video: Path | None


def is_video_output(output: str | Path) -> bool:
    return Path(output).suffix.lower() in VIDEO_SUFFIXES


def frames_dir_for(output: str | Path) -> Path:
    """The job folder: the output itself, or ``NAME.stylecore-frames`` beside a video."""
    path = Path(output)
    if is_video_output(path):
        return path.with_name(path.stem + ".stylecore-frames")
    return path


def resolve_indices(spec: JobSpec, count: int) -> list[int]:
    """Source frame index for each output frame (output number k + 1 <- indices[k])."""
    if spec.frame_map is not None:
        bad = [i for i in spec.frame_map if not 0 <= i < count]
        if bad:
            raise InputError(f"frame_map asks for source frame {bad[0]}, but the content has {count} frames")
        return list(spec.frame_map)
    return list(resolve_range(spec.frames, count))


def run_job(
    spec: JobSpec,
    on_event: EventSink | None = None,
    cancel: CancelCheck | None = None,
    *,
    overwrite: bool = False,
) -> JobResult:
    """Run ``spec`` to the end, resuming whatever is already on disk.

    Raises ``StylecoreError`` subclasses for anything the user can fix, and
    ``Cancelled`` when ``cancel()`` turns true (whole frames stay on disk).
    """
    emit = _ProgressEmitter(on_event)
    should_cancel = cancel or (lambda: False)
    check_output(spec.output)
    if spec.mode == "feedforward":
        # The model is found once, here (a missing file, unknown name or untrained style
        # stops the job; a style image picks its model by scanning every model's
        # thumbnail); the fingerprint, the input checks and the frame loop read the path.
        spec = dataclasses.replace(spec, model=str(model_for(spec.model, spec.styles)))
    _check_inputs(spec)
    refuse_output_over_inputs(spec.output, job_inputs(spec))
    video_out = Path(spec.output) if is_video_output(spec.output) else None
    if video_out is not None and video_out.exists() and not overwrite:
        raise OutputError(f"{video_out} exists; choose another `output`, or `overwrite` to replace it")
    net: dict[str, str] = {}
    if spec.mode != "feedforward":
        # The concrete network goes into the fingerprint: frames of different networks never mix.
        spec = dataclasses.replace(spec, loss_net=resolve_loss_net(spec.loss_net, spec.vgg_weights))
        net = {"loss_net": spec.loss_net, "loss_net_weights": weights_location(spec.loss_net, spec.vgg_weights)}
    with open_source(spec.content) as source:
        indices = resolve_indices(spec, source.info.count)
        with JobDir(frames_dir_for(spec.output), spec.fingerprint(), overwrite=overwrite) as jobdir:
            try:
                todo = sum(1 for n in range(1, len(indices) + 1) if not jobdir.has_frame(n))
                emit.start(total=len(indices), todo=todo, output=str(jobdir.folder), **net)
                indices = _run_frames(spec, source, indices, jobdir, emit, should_cancel)
            except BaseException:
                jobdir.discard_if_empty()  # a job that failed before its first frame leaves nothing behind
                raise
            jobdir.mark_done(len(indices))
            video = None
            if video_out is not None:
                video = _encode(spec, source, indices, jobdir)  # still under the folder's lock
    emit({"event": "done", "output": str(video or jobdir.folder), "frames": len(indices)})
    return JobResult(frames_dir=jobdir.folder, frames=len(indices), video=video)


def _run_frames(spec: JobSpec, source: FrameSource, indices: list[int], jobdir: JobDir, emit: EventSink,
                cancel: CancelCheck) -> list[int]:
    """Run the mode's frame loop; returns the indices made, fewer when the video ends early."""
    while True:
        try:
            if spec.farm is not None:
                from stylecore.farm import run_farm  # Ray: an optional extra

                run_farm(spec, source, indices, jobdir, emit, cancel)
            elif spec.mode == "feedforward":
                from stylecore.modes.feedforward import run_feedforward  # heavy imports only when needed

                run_feedforward(spec, source, indices, jobdir, emit, cancel)
            else:
                _run_optimization(spec, source, indices, jobdir, emit, cancel)
            return indices
        except VideoEndedEarly as end:
            # The container promised more frames than the stream holds (some .ts/.avi): the
            # decoder's end is the truth. Only frames past that end go; the rest resume.
            kept = [i for i in indices if i < end.frames]
            if not kept or kept != indices[: len(kept)]:
                raise
            warnings.warn(f"{spec.content} ends after {end.frames} frames although its container says "
                          f"{source.info.count}; the job stops at its last frame", stacklevel=2)
            indices = kept


def check_output(output: str | Path) -> None:
    """Refuse an output whose extension names a format stylecore does not write (``.gif``
    would otherwise become a folder of PNGs)."""
    suffix = Path(output).suffix.lower()
    if suffix in NOT_WRITTEN_SUFFIXES:
        supported = ", ".join(sorted(VIDEO_SUFFIXES))
        raise InputError(
            f"`output` {Path(output).name}: stylecore does not write {suffix} files; give a video ending in "
            f"{supported}, or a folder name for PNG frames"
        )


def job_inputs(spec: JobSpec) -> dict[str, str]:
    """Every file or folder the job reads, by what the refusal calls it."""
    inputs = {"the content": spec.content}
    for path, _ in spec.styles:
        inputs[f"the style image {Path(path).name}"] = path
    if spec.style_video:
        inputs["the style video"] = spec.style_video
    if spec.mode == "feedforward":
        inputs["the model"] = str(model_for(spec.model, spec.styles))
    if spec.vgg_weights:
        inputs["the loss network's weights"] = spec.vgg_weights
    return inputs


def refuse_output_over_inputs(output: str | Path, inputs: dict[str, str]) -> None:
    """Refuse an output that is one of the job's inputs, or a frames folder where the job
    would replace one (a frame_NNNNNN.png or the job file): writing would destroy what the
    job reads. Paths compare resolved, and existing files by inode (hard links too)."""
    video = Path(output) if is_video_output(output) else None
    folder = frames_dir_for(output)
    for what, text in inputs.items():
        path = Path(text)
        files = [path]
        if not path.exists() and is_pattern(path):
            try:
                files = pattern_files(path)  # a printf pattern: each of its frames is an input
            except InputError:
                files = []
        hit = _same_path(path, folder) or (video is not None and _same_path(path, video)) or any(
            is_job_file_name(f.name) and _same_path(f.parent, folder) for f in files
        )
        if hit:
            raise OutputError(f"`output` {output} would overwrite {what} ({text}); choose another `output`")


def _same_path(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)  # also a hard link, or the same file by another name
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def _check_inputs(spec: JobSpec) -> None:
    """Fail fast, before anything heavy loads, on inputs that are plainly missing."""
    for path, _ in spec.styles:
        if not Path(path).is_file():
            raise InputError(f"style image not found: {path}")
    if spec.style_video and not Path(spec.style_video).exists() and "%" not in spec.style_video:
        raise InputError(f"style video not found: {spec.style_video}")
    if is_video_output(spec.output) and not Path(spec.output).parent.exists():
        raise InputError(f"the output's folder does not exist: {Path(spec.output).parent}")
    if spec.farm is not None:
        from stylecore.farm import check_farm

        check_farm(spec)  # Ray installed, a usable address, a usable chunk size


def _encode(spec: JobSpec, source: FrameSource, indices: Sequence[int], jobdir: JobDir) -> Path:
    """Encode the job's frames to the output video, with the source's audio when it lines up."""
    contiguous = all(b == a + 1 for a, b in zip(indices, indices[1:]))
    audio_from = spec.content if (spec.audio and source.info.kind == "video" and contiguous) else None
    paths = [jobdir.frame_path(n) for n in range(1, len(indices) + 1)]
    out = Path(spec.output)
    remove_stale_temp_videos(out)  # of a run killed while encoding; the folder's lock says none is running
    try:
        encode_video(paths, out, source.info.fps, audio_from=audio_from, audio_start=indices[0] / source.info.fps)
    except OSError as exc:  # the temp video could not be made: a read-only folder or a full disk
        raise OutputError(f"cannot write the video {out} ({exc.strerror or exc}); the frames are safe in "
                          f"{jobdir.folder}: free space or fix the folder, then run the same job again") from None
    if not spec.keep_frames:
        jobdir.remove()
    return out


class _ProgressEmitter:
    """Forwards events and adds ``progress`` events (done, s/frame, ETA) after each frame."""

    def __init__(self, sink: EventSink | None) -> None:
        self._sink = sink
        self.total = 0
        self.done = 0
        self._worked = 0
        self._seconds = 0.0

    def start(self, *, total: int, todo: int, output: str, **extra: str) -> None:
        self.total = total
        self(dict(event="start", total=total, todo=todo, output=output, **extra))

    def __call__(self, event: dict[str, Any]) -> None:
        if self._sink is not None:
            self._sink(event)
        if event.get("event") != "frame":
            return
        self.done += 1
        if not event.get("skipped"):
            self._worked += 1
            self._seconds += float(event.get("seconds", 0.0))
        per_frame = self._seconds / self._worked if self._worked else 0.0
        # A farm works on several frames at once; its frame events say on how many.
        parallel = max(1, int(event.get("parallel", 1)))
        if self._sink is not None:
            self._sink(
                dict(
                    event="progress",
                    done=self.done,
                    total=self.total,
                    seconds_per_frame=round(per_frame, 4),
                    eta_seconds=round(per_frame * (self.total - self.done) / parallel, 1),
                )
            )


# ---------------------------------------------------------------------------------------
# Optimisation and style-video modes


class _StyleTargets:
    """Gram targets for each output frame: fixed style images, or a style video's frames."""

    def __init__(self, spec: JobSpec, encoder: torch.nn.Module, config: OptimConfig, device: torch.device,
                 size: tuple[int, int], content_fps: float) -> None:
        self._spec = spec
        self._encoder = encoder
        self._layers = config.style_layers
        self._device = device
        self._long_side = max(1, round(max(size) * spec.style_scale))
        self._content_fps = content_fps
        self._cache: dict[Any, dict[str, torch.Tensor]] = {}
        self._video: FrameSource | None = open_source(spec.style_video) if spec.style_video else None
        self._images = [imageops.load_image(p) for p, _ in spec.styles]
        self._weights = [w for _, w in spec.styles]
        if any(w < 0 for w in self._weights) or (self._weights and sum(self._weights) <= 0):
            raise InputError("style blend weights must be >= 0 and not all zero (`style` a.jpg:0.7 `style` b.jpg:0.3)")

    def close(self) -> None:
        if self._video is not None:
            self._video.close()

    def grams(self, k: int, content: np.ndarray | None, shot: int) -> dict[str, torch.Tensor]:
        """Targets for output frame k (0-based). ``content`` is the colour reference of the
        shot that starts at output frame ``shot``; the shot number keys the cache."""
        histogram = self._spec.preserve_colors == "histogram"
        if self._video is not None:
            info = self._video.info
            mapping = StyleMapping(self._spec.style_sync, self._spec.style_rate, self._spec.style_offset,
                                   self._spec.style_end)
            s = style_index(k, mapping, content_fps=self._content_fps, style_fps=info.fps, style_count=info.count)
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


def _run_optimization(
    spec: JobSpec,
    source: FrameSource,
    indices: Sequence[int],
    jobdir: JobDir,
    emit: EventSink,
    cancel: CancelCheck,
    *,
    span: range | None = None,
) -> None:
    """Ruder et al.: each frame warm-started from the warped previous one, with a temporal loss.

    ``span``: the output positions (0-based) to make; the farm (``farm.py``) runs a chunk.
    """
    device = resolve_device(spec.device)
    info = source.info
    size = _processing_size(spec, info.width, info.height)  # (w, h)
    if min(size) < _MIN_OPTIMIZATION_SIDE:
        raise InputError(
            f"frames of {size[0]}x{size[1]} px are too small for the VGG loss network (it pools 4 times): "
            f"use `size` so the short side is at least {_MIN_OPTIMIZATION_SIDE} px"
        )
    base = OptimConfig(
        optimizer=spec.optimizer,
        content_weight=spec.content_weight,
        tv_weight=spec.tv_weight,
        temporal_weight=spec.temporal_weight,
    )
    encoder = load_loss_network(spec.loss_net, base.layers, device, weights_path=spec.vgg_weights,
                                pooling=RECIPE.pooling)
    targets = _StyleTargets(spec, encoder, base, device, size, info.fps)
    temporal_on = spec.temporal_weight > 0
    first_scales = spec.scales or auto_scales(size[1], size[0])
    histogram = spec.preserve_colors == "histogram"
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
                    prev_out = imageops.resize(jobdir.read_frame(number - 1), size)
                    warped = flow.warp(prev_out, pair.flow_bw)
                    temporal = TemporalTarget(
                        imageops.to_tensor(warped, device),
                        torch.from_numpy(np.ascontiguousarray(pair.mask, dtype=np.float32))[None, None].to(device),
                    )
            if not temporal_on or cut_here or k == 0:
                shot_reference, shot_start = content, number
            elif histogram and (previous is None or previous[0] != number - 1):
                # Resumed mid-shot (frames before this one were skipped): the shot's colour
                # reference is its first frame, not the first frame this run makes.
                start = shot_start_of(k)
                shot_reference, shot_start = (content if start == k else content_at(start)), start + 1
            elif shot_reference is None:
                shot_reference, shot_start = content, number
            config = OptimConfig(
                iterations=spec.iterations if temporal else spec.first_iterations,
                optimizer=base.optimizer,
                content_weight=base.content_weight,
                style_weight=spec.style_weight_at(number),
                tv_weight=base.tv_weight,
                temporal_weight=base.temporal_weight,
                scales=1 if temporal else first_scales,
            )
            torch.manual_seed(spec.seed + number)
            content_t = imageops.to_tensor(content, device)
            with oom_guard(f"stylizing frame {number} at {size[0]}x{size[1]}"):
                result = optimize_frame(
                    encoder,
                    content_t,
                    targets.grams(k, shot_reference, shot_start),
                    config,
                    init=temporal.warped if temporal else None,
                    temporal=temporal,
                    cancel=cancel,
                )
            image = imageops.to_numpy(result)
            if spec.preserve_colors == "luminance":
                image = imageops.luminance_transfer(image, content)
            image = imageops.resize(image, (info.width, info.height))
            path = jobdir.write_frame(number, image)
            previous = (number, content)
            emit(dict(event="frame", number=number, index=index, path=str(path),
                      seconds=round(time.perf_counter() - started, 4), skipped=False))
    finally:
        targets.close()


def _processing_size(spec: JobSpec, width: int, height: int) -> tuple[int, int]:
    """(w, h) to stylize at: ``spec.size`` as the long side, or the mode's default."""
    long_side = spec.size
    if long_side is None:
        default = DEFAULT_SIZE.get(spec.mode)
        long_side = None if default is None else min(default, max(width, height))
    return imageops.scaled_size(width, height, long_side)
