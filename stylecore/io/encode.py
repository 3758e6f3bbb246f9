"""Video output: image frames encoded by ffmpeg (with audio), or by OpenCV without it."""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import warnings
from collections.abc import Callable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import NoReturn

import cv2
import numpy as np

from stylecore.errors import EncodeError, InputError, StylecoreError
from stylecore.io.ffmpeg import ffmpeg_exe, has_audio, no_window
from stylecore.io.imageops import TEMP_MARK, current_umask, temp_path_for
from stylecore.io.sources import pattern_files

Progress = Callable[[int, int], None]


# H.264 settings. Measured on stylized Big Buck Bunny frames (192 at 640x360, 36 at
# 1920x1080; this 2-core CPU): "veryfast" at CRF 16 keeps the luma PSNR of "medium" at
# CRF 18 (35.96 vs 35.87 dB and 36.12 vs 35.87 dB) for 2.3-2.5x less encoder CPU time,
# with files 13-18 % larger. Stylized frames are all fine texture, where x264's slower
# presets buy little; the encoder shares the CPU with the job (``io.live_encode``).
H264_PRESET = "veryfast"
H264_CRF = 16


def _codec_args(suffix: str) -> tuple[list[str], list[str]]:
    """(video args, audio args) for a container."""
    if suffix == ".webm":
        return ["-c:v", "libvpx-vp9", "-b:v", "0", "-crf", "32", "-pix_fmt", "yuv420p"], ["-c:a", "libopus"]
    video = ["-c:v", "libx264", "-preset", H264_PRESET, "-crf", str(H264_CRF), "-pix_fmt", "yuv420p"]
    return video + _container_args(suffix), ["-c:a", "aac", "-b:a", "192k"]


def _container_args(suffix: str) -> list[str]:
    if suffix in (".mp4", ".mov", ".m4v"):
        return ["-movflags", "+faststart"]  # playable while downloading / quick to open
    return []


def _audio_input(audio_from: str | Path, audio_start: float, duration: float) -> list[str]:
    # -ss before -i seeks the input; -t keeps only the stylized frames' stretch of sound.
    return ["-ss", f"{max(audio_start, 0.0):.6f}", "-t", f"{duration:.6f}", "-i", str(audio_from)]


def encode_video(
    frames: Sequence[Path] | str | Path,
    out_path: Path | str,
    fps: float,
    *,
    audio_from: str | Path | None = None,
    audio_start: float = 0.0,
    progress: Progress | None = None,
    crf: int | None = None,
) -> None:
    """Encode image frames (a list, or a pattern like ``frame_%06d.png``) into a video.

    With ffmpeg: H.264 yuv420p (BT.709), odd sizes padded by one pixel; the audio of
    ``audio_from`` from ``audio_start`` seconds for the frames' duration is added when it
    has any. Without ffmpeg: OpenCV 'mp4v', no audio, and a warning. The file appears
    only when complete. ``progress(done, total)`` is called after each frame. ``crf``
    overrides the codec's quality (lower is better; default 16 for H.264, 32 for VP9).
    """
    files = pattern_files(frames) if isinstance(frames, (str, Path)) else [Path(f) for f in frames]
    if not files:
        raise InputError(f"no frames to encode into {out_path}; stylize some frames first")
    first = read_bgr(files[0])
    height, width = first.shape[:2]
    encoder = VideoEncoder(out_path, (width, height), fps, frames=len(files), audio_from=audio_from,
                           audio_start=audio_start, crf=crf)
    try:
        for done, frame in enumerate(_frames_bgr(files, first), start=1):
            encoder.write(frame)
            if progress is not None:
                progress(done, len(files))
        encoder.close()
    except BaseException:
        encoder.abort()
        raise


class VideoEncoder:
    """An encode in progress: BGR ``uint8`` frames in, one video out.

    The video is made in a hidden temp file beside ``out_path`` and renamed into place by
    ``close()`` only when whole; ``abort()`` (or any failure) removes it. With ffmpeg:
    H.264 yuv420p (BT.709), odd sizes padded by one pixel, and the audio of ``audio_from``
    from ``audio_start`` seconds for ``frames / fps`` seconds when it has any. Without
    ffmpeg: OpenCV 'mp4v', no audio, and a warning. ``crf`` overrides the codec's quality.
    """

    def __init__(
        self,
        out_path: Path | str,
        size: tuple[int, int],
        fps: float,
        *,
        frames: int,
        audio_from: str | Path | None = None,
        audio_start: float = 0.0,
        crf: int | None = None,
    ) -> None:
        if not fps or fps <= 0 or not math.isfinite(fps):
            raise InputError(f"frame rate {fps} must be a positive number")
        self.out_path = Path(out_path)
        self.size = size
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = temp_path_for(self.out_path)
        self._proc: subprocess.Popen[bytes] | None = None
        self._cv: cv2.VideoWriter | None = None
        try:
            exe = ffmpeg_exe()
            if exe is None:
                warnings.warn("ffmpeg not found: writing an 'mp4v' video without audio", stacklevel=3)
                self._cv = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter.fourcc(*"mp4v"), fps, size)
                if not self._cv.isOpened():
                    raise StylecoreError(f"OpenCV cannot write {self._tmp.suffix} video; install ffmpeg or use an .mp4 output")
            else:
                audio = audio_from is not None and has_audio(audio_from)
                cmd = _ffmpeg_command(exe, self._tmp, size, fps, frames / fps, audio_from if audio else None,
                                      audio_start, crf)
                self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                              stderr=subprocess.PIPE, creationflags=no_window())
        except BaseException:
            self.abort()
            raise

    def write(self, frame: np.ndarray) -> None:
        """Append one ``H x W x 3`` BGR ``uint8`` frame of this encoder's size."""
        if frame.shape[1::-1] != self.size:
            raise InputError(f"a frame of {frame.shape[1]}x{frame.shape[0]} does not fit a video of "
                             f"{self.size[0]}x{self.size[1]}; all frames of a video must have one size")
        if self._cv is not None:
            self._cv.write(frame)
            return
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write(np.ascontiguousarray(frame).data)
        except BrokenPipeError:
            self._fail()  # ffmpeg died: its message says why

    def close(self, out_path: Path | None = None) -> None:
        """Finish the video and put it in place (atomically): at ``out_path`` when given
        (a segment's name says how many frames it holds, known only now), else where asked."""
        try:
            if self._cv is not None:
                self._cv.release()
                self._cv = None
            elif self._proc is not None:
                assert self._proc.stdin is not None
                try:
                    self._proc.stdin.close()
                except BrokenPipeError:
                    pass
                if self._proc.wait() != 0:
                    self._fail()
            # The temp file is created private; the video gets the usual permissions, like frames.
            os.chmod(self._tmp, 0o666 & ~current_umask())
            # Rename only a complete file: a killed encode never leaves a broken video behind.
            self._tmp.replace(out_path or self.out_path)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Stop encoding and remove the partial video (safe to call more than once)."""
        if self._cv is not None:
            self._cv.release()
            self._cv = None
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            for pipe in (self._proc.stdin, self._proc.stderr):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
        self._tmp.unlink(missing_ok=True)

    def _fail(self) -> NoReturn:
        assert self._proc is not None and self._proc.stderr is not None
        self._proc.wait()
        last = _ffmpeg_reason(self._proc.stderr.read(), self._proc.returncode)
        raise EncodeError(f"ffmpeg could not encode the video ({last}); check the output path and free disk space", last)


def join_videos(parts: Sequence[Path], out_path: Path | str, duration: float, *,
                audio_from: str | Path | None = None, audio_start: float = 0.0) -> None:
    """Join videos of one codec and size end to end into ``out_path`` without encoding
    them again (ffmpeg's concat demuxer, stream copy), with the audio of ``audio_from``
    from ``audio_start`` for ``duration`` seconds when it has any. The file appears only
    when complete."""
    if not parts:
        raise InputError(f"no frames to encode into {out_path}; stylize some frames first")
    exe = ffmpeg_exe()
    if exe is None:
        raise StylecoreError("ffmpeg is needed to join the video's segments; install ffmpeg and run the same job again")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(out_path)
    listing = temp_path_for(parts[0].with_suffix(".txt"))  # beside the parts: their folder cleans up after a kill
    try:
        # The concat demuxer's list: one quoted absolute path per line (' written as '\'').
        listing.write_text("".join("file '{}'\n".format(str(p.resolve()).replace("'", "'\\''")) for p in parts),
                           encoding="utf-8")
        audio = audio_from is not None and has_audio(audio_from)
        cmd = [exe, "-hide_banner", "-loglevel", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing)]
        cmd += _audio_input(audio_from, audio_start, duration) if audio else []
        cmd += ["-map", "0:v:0"] + (["-map", "1:a:0"] if audio else []) + ["-c:v", "copy"]
        _, audio_args = _codec_args(out_path.suffix.lower())
        cmd += (audio_args if audio else []) + _container_args(out_path.suffix.lower()) + [str(tmp)]
        done = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              creationflags=no_window())
        if done.returncode != 0:
            last = _ffmpeg_reason(done.stderr, done.returncode)
            raise EncodeError(f"ffmpeg could not join the video's segments ({last}); "
                              "check the output path and free disk space", last)
        os.chmod(tmp, 0o666 & ~current_umask())
        tmp.replace(out_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        listing.unlink(missing_ok=True)


def _ffmpeg_reason(stderr: bytes, returncode: int) -> str:
    """Why ffmpeg failed: the last line it printed (its error comes last), else its exit status."""
    err = stderr.decode(errors="replace").strip()
    return err.splitlines()[-1] if err else f"exit status {returncode}"


def remove_stale_temp_videos(out_path: Path | str) -> None:
    """Delete the hidden partial videos that runs killed while encoding ``out_path`` left
    beside it (``encode_video``'s temp names). Call it only where no encode of that output runs."""
    out_path = Path(out_path)
    if not out_path.parent.is_dir():
        return
    prefix, suffix = f".{out_path.name}.", f"{TEMP_MARK}{out_path.suffix}"
    for entry in out_path.parent.iterdir():
        if entry.name.startswith(prefix) and entry.name.endswith(suffix):
            entry.unlink(missing_ok=True)


def read_bgr(path: Path) -> np.ndarray:
    """A frame file as BGR ``uint8`` (OpenCV's order, what the encoders take)."""
    raw = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_COLOR) if path.is_file() else None
    if raw is None:
        raise InputError(f"cannot read frame {path}; it is missing or not an image")
    return raw


def _frames_bgr(files: Sequence[Path], first: np.ndarray) -> Iterator[np.ndarray]:
    yield first
    for f in files[1:]:
        raw = read_bgr(f)
        if raw.shape != first.shape:
            raise InputError(
                f"{f} is {raw.shape[1]}x{raw.shape[0]} but {files[0].name} is {first.shape[1]}x{first.shape[0]}; "
                "all frames of a video must have one size"
            )
        yield raw


def _ffmpeg_command(exe: str, tmp: Path, size: tuple[int, int], fps: float, duration: float,
                    audio_from: str | Path | None, audio_start: float, crf: int | None) -> list[str]:
    width, height = size
    rate = Fraction(fps).limit_denominator(1001)  # 23.976 -> 24000/1001 exactly
    cmd = [exe, "-hide_banner", "-loglevel", "error", "-y",
           "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{width}x{height}", "-framerate", str(rate), "-i", "-"]
    if audio_from is not None:
        cmd += _audio_input(audio_from, audio_start, duration)
    cmd += ["-map", "0:v:0"] + (["-map", "1:a:0"] if audio_from is not None else [])
    # yuv420p needs even sides: pad odd ones by a pixel. Convert with the BT.709 matrix
    # and say so in the stream, as players assume for HD.
    cmd += ["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2,scale=out_color_matrix=bt709:out_range=tv",
            "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709"]
    video_args, audio_args = _codec_args(tmp.suffix.lower())
    if crf is not None:
        video_args[video_args.index("-crf") + 1] = str(int(crf))
    return cmd + video_args + (audio_args if audio_from is not None else []) + [str(tmp)]
