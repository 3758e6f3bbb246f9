"""Video decoders behind ``VideoSource``: an ffmpeg child process, or OpenCV without one.

ffmpeg converts to RGB with the stream's own colour matrix, as Blender does; OpenCV is
the fallback. A decoder reads forward from a position; the source decides when to seek.
"""

from __future__ import annotations

import math
import re
import subprocess
import tempfile
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

import cv2
import numpy as np

try:  # Linux/macOS: lets a pipe be widened
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

from stylecore.errors import InputError, StylecoreError
from stylecore.io.ffmpeg import ffmpeg_exe, input_url, no_window

# A stream without a colour tag is taken as HD (BT.709) from this size on, and as SD
# (BT.601) below it, as players such as mpv and VLC do. (Blender 4.5 and 5.0 take every
# untagged stream as BT.601; tagged streams, the usual case, decode alike everywhere.)
_HD_MIN_WIDTH, _SD_MAX_HEIGHT = 1280, 576
_UNTAGGED = frozenset({"unknown", "unspecified", "reserved"})
_MAX_ERROR_CHARS = 200  # of ffmpeg's last message, quoted in a one-line error
_PIPE_BYTES = 1 << 20  # Linux's default 64 KiB pipe would need a dozen wake-ups per HD frame
_PROBE_TIMEOUT_S = 120
# swscale's fast YUV -> RGB path: within 1-3 levels of Blender (about 1 level darker on
# average). "neighbor+full_chroma_int+accurate_rnd" matches Blender's decode bit for bit but
# costs ~0.5 ms more CPU per 640x360 frame (raw decoding 35-40 % slower than OpenCV).
_SWS_FLAGS = "bicubic"
# Demuxers with a frame index and true presentation times, where ffmpeg's -ss lands on the
# exact frame. Others seek by guessing byte positions (MPEG-TS, raw streams: the decode may
# start at a frame that cannot decode) or lack those times (AVI: off by a frame with B-frames).
_INDEXED_CONTAINERS = frozenset({"mov", "mp4", "matroska", "webm"})
_SEEK_PREROLL_S = 1.0  # more than any decoder's reordering delay
_VFR_TOLERANCE = 0.01  # relative gap between average and base frame rate that means variable rate
_warned_opencv = False


class Decoder(Protocol):
    """Decodes a video forward from a position; ``VideoSource`` decides when to seek."""

    width: int
    height: int
    fps: float
    count: int
    seekable: bool  # False: seek(index) is only exact for index 0

    def seek(self, index: int) -> None:
        """Make the next ``read``/``skip`` return frame ``index``."""

    def skip(self) -> bool:
        """Decode the next frame and drop it; False at the end of the stream."""

    def read(self) -> np.ndarray | None:
        """The next frame as ``H x W x 3`` uint8 RGB, or None at the end of the stream."""

    def last_error(self) -> str:
        """The decoder's last complaint, or ``""``."""

    def close(self) -> None:
        """Stop decoding and release everything."""


class _FfmpegUnusable(Exception):
    """The ffmpeg binary could not be run at all."""


def open_decoder(path: Path, default_fps: float) -> Decoder:
    """ffmpeg's decoder, else OpenCV's (warned once); ``default_fps`` for a video that states no rate."""
    exe = ffmpeg_exe()
    if exe is not None:
        try:
            return _FfmpegDecoder(exe, path, default_fps)
        except _FfmpegUnusable as exc:
            reason = f"ffmpeg ({exe}) cannot run: {exc}"
    else:
        reason = "ffmpeg not found"
    _warn_opencv_fallback(reason)
    return _OpenCVDecoder(path, default_fps)


def _warn_opencv_fallback(reason: str) -> None:
    global _warned_opencv
    if not _warned_opencv:  # once per process: every video opened would repeat it
        _warned_opencv = True
        warnings.warn(
            f"{reason}: decoding video with OpenCV, which converts HD colours with the wrong (BT.601) "
            "matrix; pip install imageio-ffmpeg",
            stacklevel=5,  # the caller of open_source
        )


@dataclass(frozen=True)
class _Probe:
    """What ffmpeg says about the first video frame of a file."""

    width: int  # after the rotation the file asks for, as ffmpeg (and Blender) apply it
    height: int
    rate: float  # ffmpeg's guess of the frame rate; 0 when it has none
    variable_rate: bool  # frames are not evenly spaced, so a frame's time does not give its number
    start: float  # seconds from the file's start (ffmpeg's -ss origin) to the first frame
    container: str  # ffmpeg's demuxer names, e.g. "mov,mp4,m4a,3gp,3g2,mj2"
    color_space: str  # the frame's YCbCr matrix tag, "unknown" when untagged
    fps_mode: tuple[str, ...]  # the option that keeps every decoded frame, once


def _probe(exe: str, path: Path) -> _Probe:
    """Decode the first frame with ffmpeg's ``showinfo`` filter and read its report."""
    cmd = [exe, "-nostdin", "-i", input_url(path), "-map", "0:V:0", "-frames:v", "1", "-vf", "showinfo", "-f", "null", "-"]
    try:
        proc = subprocess.run(
            cmd, check=False, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
            timeout=_PROBE_TIMEOUT_S, creationflags=no_window(),
        )
    except OSError as exc:
        raise _FfmpegUnusable(str(exc)) from exc
    except subprocess.TimeoutExpired:
        raise _undecodable(path) from None
    err = proc.stderr
    frame = re.search(r"\bn:\s*0\s+pts:\s*\S+\s+pts_time:(\S+).*?\bs:(\d+)x(\d+)", err)
    if frame is None:
        raise _undecodable(path)
    rate = re.search(r"frame_rate: (\d+)/(\d+)", err)
    container = re.search(r"^Input #0, (.+?), from ", err, re.MULTILINE)
    rates = re.search(r"Video: .*?\b(\d+(?:\.\d+)?k?) fps, (\d+(?:\.\d+)?k?) tbr", err)
    space = re.search(r"\bcolor_space:(\S+)", err)
    version = re.search(r"ffmpeg version \D*(\d+)\.(\d+)", err)
    # -fps_mode arrived in ffmpeg 5.1 and -vsync left in 8; git builds ("N-...") are new.
    old = version is not None and (int(version.group(1)), int(version.group(2))) < (5, 1)
    return _Probe(
        width=int(frame.group(2)),
        height=int(frame.group(3)),
        rate=int(rate.group(1)) / int(rate.group(2)) if rate and int(rate.group(2)) else 0.0,
        variable_rate=rates is not None and _differ(_rate(rates.group(1)), _rate(rates.group(2))),
        start=_finite_or_zero(frame.group(1)),
        container=container.group(1) if container else "",
        color_space=space.group(1) if space else "unknown",
        fps_mode=("-vsync", "passthrough") if old else ("-fps_mode", "passthrough"),
    )


def _rate(text: str) -> float:
    """A rate as ffmpeg prints it: ``23.98``, ``25``, ``90k``."""
    return float(text[:-1]) * 1000 if text.endswith("k") else float(text)


def _differ(average: float, base: float) -> bool:
    return abs(average - base) > _VFR_TOLERANCE * max(average, base)


def _finite_or_zero(text: str) -> float:
    try:
        value = float(text)
    except ValueError:  # "NOPTS"
        return 0.0
    return value if math.isfinite(value) else 0.0


def _input_matrix(color_space: str, width: int, height: int) -> str:
    """The ``scale`` filter's ``in_color_matrix``: the stream's tag, else a guess from the size."""
    if color_space not in _UNTAGGED:
        return "auto"  # per frame, from the tag
    return "bt709" if width >= _HD_MIN_WIDTH or height > _SD_MAX_HEIGHT else "bt601"


def _container_facts(path: Path) -> tuple[int, float]:
    """(frame count, fps) stored in the container, as OpenCV reads them; 0 where unknown."""
    # ffmpeg's command line does not print the container's frame count; OpenCV's libavformat does.
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        if not cap.isOpened():
            return 0, 0.0
        count, fps = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), float(cap.get(cv2.CAP_PROP_FPS))
    finally:
        cap.release()
    return max(count, 0), fps if math.isfinite(fps) and fps > 0 else 0.0


class _FfmpegDecoder:
    """Raw RGB frames from an ffmpeg child process; a seek restarts it at the frame's time."""

    def __init__(self, exe: str, path: Path, default_fps: float) -> None:
        self._exe, self._path = exe, path
        probe = _probe(exe, path)
        count, fps = _container_facts(path)
        self.width, self.height = probe.width, probe.height
        self.fps = fps or probe.rate or default_fps
        self._probe = probe
        # Some containers (raw streams, streamed MKV/WebM) store no count: decode to count.
        self.count = count or self._count_by_decoding()
        if self.count <= 0:
            raise _undecodable(path)
        # Seeking goes by time: exact only in indexed containers with evenly spaced frames.
        indexed = not _INDEXED_CONTAINERS.isdisjoint(probe.container.split(","))
        self.seekable = indexed and not probe.variable_rate
        self._start = 0  # frame that a new ffmpeg starts at
        self._delivered = 0  # frames read since that start
        self._pipe: _FfmpegPipe | None = None
        self._error = ""  # last message of a finished ffmpeg
        self._scratch = np.empty((self.height, self.width, 3), np.uint8)

    def _count_by_decoding(self) -> int:
        cmd = [self._exe, "-nostdin", "-hide_banner", "-loglevel", "error", "-nostats", "-progress", "pipe:1",
               "-i", input_url(self._path), "-map", "0:V:0", *self._probe.fps_mode, "-f", "null", "-"]
        try:
            proc = subprocess.run(
                cmd, check=False, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
                creationflags=no_window(),
            )
        except OSError:
            return 0
        counts = re.findall(r"^frame=(\d+)", proc.stdout, re.MULTILINE)
        return int(counts[-1]) if counts else 0

    def _command(self, start: int) -> list[str]:
        cmd = [self._exe, "-nostdin", "-hide_banner", "-loglevel", "error"]
        trim: list[str] = []
        if start > 0:
            # Frame `start` is shown at this time; half a frame early, rounding cannot skip it.
            at = self._probe.start + (start - 0.5) / self.fps
            # -ss before -i jumps to the last keyframe before its time; after -i it drops the
            # frames before its time. Jumping a little earlier than the frame lets frames that
            # are decoded after a keyframe but shown before it (open-GOP HEVC) find their references.
            jump = max(at - _SEEK_PREROLL_S, 0.0)
            if jump > 0:
                cmd += ["-ss", f"{jump:.6f}"]
            trim = ["-ss", f"{at - jump:.6f}"]  # input times restart at 0 after a jump
        matrix = _input_matrix(self._probe.color_space, self.width, self.height)
        # Naming the size keeps every frame as announced, even if the stream changes size.
        scale = f"scale=w={self.width}:h={self.height}:in_color_matrix={matrix}:flags={_SWS_FLAGS}"
        cmd += ["-i", input_url(self._path), "-map", "0:V:0", *trim, "-vf", scale, *self._probe.fps_mode,
                "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
        return cmd

    def seek(self, index: int) -> None:
        self._stop()
        self._start, self._delivered = index, 0

    def _running(self) -> _FfmpegPipe:
        if self._pipe is None:
            try:
                self._pipe = _FfmpegPipe(self._command(self._start))
            except OSError as exc:
                raise StylecoreError(f"cannot run ffmpeg ({exc}); reinstall imageio-ffmpeg") from exc
        return self._pipe

    def skip(self) -> bool:
        return self._fill(self._scratch)

    def read(self) -> np.ndarray | None:
        frame = np.empty((self.height, self.width, 3), np.uint8)
        return frame if self._fill(frame) else None

    def _fill(self, frame: np.ndarray) -> bool:
        if self._start + self._delivered >= self.count:
            return False
        pipe = self._running()
        if pipe.read_into(frame):
            self._delivered += 1
            if self._start + self._delivered == self.count:
                # The last frame: reap ffmpeg now, not at close(), so it never idles as a zombie.
                self._error = pipe.last_error()
                self._stop()
            return True
        self._error = pipe.last_error()
        self._stop()
        if self._start > 0 and self._delivered == 0:
            return self._fill_from_first(frame)
        return False

    def _fill_from_first(self, frame: np.ndarray) -> bool:
        # A seek that finds no frame: this file cannot seek after all, so decode forward.
        target = self._start
        self.seekable = False
        self.seek(0)
        return all(self._fill(self._scratch) for _ in range(target)) and self._fill(frame)

    def last_error(self) -> str:
        return self._error

    def _stop(self) -> None:
        if self._pipe is not None:
            self._pipe.close()
            self._pipe = None

    def close(self) -> None:
        self._stop()


class _FfmpegPipe:
    """One ffmpeg process writing raw frames to its stdout.

    It is killed and reaped on ``close()`` or when the object is collected (a finalizer,
    which unlike ``__del__`` also runs at interpreter exit), so no ffmpeg outlives its
    source and none lingers as a zombie.
    """

    def __init__(self, cmd: list[str]) -> None:
        # Messages go to a file, not a pipe: an undrained pipe would fill and stall ffmpeg.
        self._messages = tempfile.TemporaryFile()
        try:
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._messages, bufsize=0,
                creationflags=no_window(),
            )
        except BaseException:
            self._messages.close()
            raise
        self._finalizer = weakref.finalize(self, _reap, self._proc, self._messages)
        _grow_pipe(self._proc.stdout)

    def read_into(self, frame: np.ndarray) -> bool:
        """Fill ``frame`` with the next frame's bytes; False at the end of the stream."""
        stdout = self._proc.stdout
        assert stdout is not None
        view = memoryview(frame).cast("B")
        filled = 0
        while filled < len(view):
            got = stdout.readinto(view[filled:])
            if not got:
                return False
            filled += got
        return True

    def last_error(self) -> str:
        """ffmpeg's last message line (after it exits), or ``""``."""
        self._messages.seek(0)
        lines = self._messages.read().decode(errors="replace").strip().splitlines()
        return lines[-1].strip()[:_MAX_ERROR_CHARS] if lines else ""

    def close(self) -> None:
        self._finalizer()


def _reap(proc: subprocess.Popen[bytes], messages: IO[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
    messages.close()


def _grow_pipe(stdout: IO[bytes] | None) -> None:
    """Widen the pipe so ffmpeg hands over a frame in one or two writes (Linux only)."""
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None) if fcntl is not None else None
    if stdout is None or set_size is None:
        return
    try:
        fcntl.fcntl(stdout.fileno(), set_size, _PIPE_BYTES)
    except OSError:  # above /proc/sys/fs/pipe-max-size: the default size still works
        pass


class _OpenCVDecoder:
    """OpenCV's FFmpeg backend: the fallback when there is no ffmpeg binary."""

    def __init__(self, path: Path, default_fps: float) -> None:
        self._path = path
        self._cap = self._open()
        ok, first = self._cap.read()
        if not ok or first is None:
            self._cap.release()
            raise _undecodable(path)
        self.height, self.width = first.shape[:2]
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if math.isfinite(fps) and fps > 0 else default_fps
        self.count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.seekable = True  # OpenCV checks where its seeks land
        if self.count <= 0:  # some containers (raw streams, some MKV/WebM) store no count
            self.count = 1 + sum(1 for _ in iter(self._cap.grab, False))
        self.seek(0)

    def _open(self) -> cv2.VideoCapture:
        # Name the FFmpeg backend: the default may pick CAP_IMAGES for names containing digits.
        cap = cv2.VideoCapture(str(self._path), cv2.CAP_FFMPEG)
        if not cap.isOpened():
            raise _undecodable(self._path)
        return cap

    def seek(self, index: int) -> None:
        if index == 0:  # reopening is exact where a seek to 0 may not be
            self._cap.release()
            self._cap = self._open()
        else:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, index)

    def skip(self) -> bool:
        return bool(self._cap.grab())

    def read(self) -> np.ndarray | None:
        ok, raw = self._cap.read()
        if not ok or raw is None:
            return None
        if raw.ndim == 2:
            return cv2.cvtColor(raw, cv2.COLOR_GRAY2RGB)
        return cv2.cvtColor(raw, cv2.COLOR_BGR2RGB)

    def last_error(self) -> str:
        return ""

    def close(self) -> None:
        self._cap.release()


def _undecodable(path: Path) -> InputError:
    return InputError(
        f"could not decode {path}; is it a video? try converting it with ffmpeg "
        f"(ffmpeg -i {path.name} -c:v libx264 -pix_fmt yuv420p out.mp4)"
    )
