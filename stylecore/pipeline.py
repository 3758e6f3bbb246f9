"""Run one stylization job: the single place where a job is executed.

The CLI, the worker (Blender) and the Python API all call ``run_job``. It opens the
content, resolves which source frames become which output frames, opens the job folder
(resume, parameter check), runs the mode's frame loop and, for a video output, encodes
the frames with the source's audio.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stylecore.errors import InputError, OutputError
from stylecore.io.encode import VideoEncoder, encode_video, remove_stale_temp_videos
from stylecore.io.ffmpeg import ffmpeg_exe
from stylecore.io.segments import join_segments
from stylecore.io.live_encode import LiveEncode
from stylecore.io.ranges import resolve_range
from stylecore.io.sources import FrameSource, VideoEndedEarly, is_pattern, open_source, pattern_files
from stylecore.jobdir import JobDir, is_job_file_name
from stylecore.catalog import model_for
from stylecore.jobspec import NOT_WRITTEN_SUFFIXES, VIDEO_SUFFIXES, JobSpec
from stylecore.modes.frame_loop import CancelCheck, Emit, FeedforwardLoopConfig, loop_config
from stylecore.modes.optimize_loop import run_optimization
from stylecore.nets.loss_nets import resolve_loss_net, weights_location


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
    on_event: Emit | None = None,
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
            live = None
            try:
                todo = len(jobdir.missing(len(indices)))
                emit.start(total=len(indices), todo=todo, output=str(jobdir.folder), **net)
                if video_out is not None:
                    remove_stale_temp_videos(video_out)  # of a run killed while encoding; the lock says none runs
                    if _keeps_segments(spec, jobdir):
                        jobdir.record_as_segments(video_out.suffix.lower(), source.info.fps)
                    elif spec.farm is None:  # a farm's frames come in any order: it encodes from disk
                        live = LiveEncode(jobdir, len(indices), _video_encoder(spec, source, indices))
                indices = _run_frames(spec, source, indices, jobdir, emit, should_cancel)
                if jobdir.segments is not None:
                    jobdir.segments.close()
            except BaseException:
                if live is not None:
                    live.abort()
                if jobdir.segments is not None:
                    _close_segment_after_stop(jobdir)
                jobdir.discard_if_empty()  # a job that failed before its first frame leaves nothing behind
                raise
            jobdir.mark_done(len(indices))
            video = None
            if video_out is not None:
                video = _encode(spec, source, indices, jobdir, live)  # still under the folder's lock
    emit({"event": "done", "output": str(video or jobdir.folder), "frames": len(indices)})
    return JobResult(frames_dir=jobdir.folder, frames=len(indices), video=video)


def _run_frames(spec: JobSpec, source: FrameSource, indices: list[int], jobdir: JobDir, emit: Emit,
                cancel: CancelCheck) -> list[int]:
    """Run the mode's frame loop; returns the indices made, fewer when the video ends early."""
    config = loop_config(spec, len(indices))
    while True:
        try:
            if spec.farm is not None:
                from stylecore.farm import run_farm  # Ray: an optional extra

                run_farm(spec, source, indices, jobdir, emit, cancel)
            elif isinstance(config, FeedforwardLoopConfig):
                from stylecore.modes.feedforward import run_feedforward  # heavy imports only when needed

                run_feedforward(config, source, indices, jobdir, emit, cancel)
            else:
                run_optimization(config, source, indices, jobdir, emit, cancel)
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


def _audio(spec: JobSpec, source: FrameSource, indices: Sequence[int]) -> tuple[str | None, float]:
    """The video's sound: the content's audio from the first frame's time, when it lines up."""
    contiguous = all(b == a + 1 for a, b in zip(indices, indices[1:]))
    audio_from = spec.content if (spec.audio and source.info.kind == "video" and contiguous) else None
    return audio_from, indices[0] / source.info.fps


def _video_encoder(spec: JobSpec, source: FrameSource, indices: Sequence[int]) -> Callable[[tuple[int, int]], VideoEncoder]:
    audio_from, audio_start = _audio(spec, source, indices)
    return lambda size: VideoEncoder(spec.output, size, source.info.fps, frames=len(indices),
                                     audio_from=audio_from, audio_start=audio_start)


def _keeps_segments(spec: JobSpec, jobdir: JobDir) -> bool:
    """Whether this video job keeps its frames as video segments (``io.segments``) rather
    than PNGs: feedforward jobs with ffmpeg, unless the folder holds PNG frames of an earlier
    run or the user keeps the frames. A folder that holds segments goes on with them."""
    if jobdir.has_segments():
        if spec.farm is not None:
            raise InputError(f"the frames made so far in {jobdir.folder} are video segments, which a farm does not "
                             "continue; run the same job again without `farm`, or with `overwrite` to start over")
        if spec.keep_frames:
            warnings.warn(f"the frames of this job are kept in {jobdir.folder} as video segments, not PNGs, because "
                          "its first run was without `keep_frames`; run it with `overwrite` for PNG frames",
                          stacklevel=3)
        return True
    return (spec.mode == "feedforward" and spec.farm is None and not spec.keep_frames
            and ffmpeg_exe() is not None and not jobdir.completed())


def _close_segment_after_stop(jobdir: JobDir) -> None:
    """A stopped job keeps the frames it made: close the segment in progress (dropped if
    even that fails: its frames are made again on resume)."""
    assert jobdir.segments is not None
    try:
        jobdir.segments.close()
    except Exception:  # noqa: BLE001 - the job's own error is the one to report
        jobdir.segments.abort()


def _encode(spec: JobSpec, source: FrameSource, indices: Sequence[int], jobdir: JobDir,
            live: LiveEncode | None) -> Path:
    """Put the job's video in place: the segments joined, the one encoded as the frames
    came (``live``), or one encoded now from the PNGs, with the source's audio when it lines up."""
    out = Path(spec.output)
    if jobdir.has_segments():
        audio_from, audio_start = _audio(spec, source, indices)
        try:
            join_segments(jobdir.folder, len(indices), out, source.info.fps, audio_from=audio_from,
                          audio_start=audio_start)
        except OSError as exc:
            raise OutputError(f"cannot write the video {out} ({exc.strerror or exc}); the frames are safe in "
                              f"{jobdir.folder}: free space or fix the folder, then run the same job again") from None
    elif live is None or not live.finish(len(indices)):
        audio_from, audio_start = _audio(spec, source, indices)
        paths = [jobdir.frame_path(n) for n in range(1, len(indices) + 1)]
        try:
            encode_video(paths, out, source.info.fps, audio_from=audio_from, audio_start=audio_start)
        except OSError as exc:  # the temp video could not be made: a read-only folder or a full disk
            raise OutputError(f"cannot write the video {out} ({exc.strerror or exc}); the frames are safe in "
                              f"{jobdir.folder}: free space or fix the folder, then run the same job again") from None
    if not spec.keep_frames:
        jobdir.remove()
    return out


class _ProgressEmitter:
    """Forwards events and adds ``progress`` events (done, s/frame, ETA) after each frame."""

    def __init__(self, sink: Emit | None) -> None:
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
