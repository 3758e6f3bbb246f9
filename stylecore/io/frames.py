"""Frame sources (video, image folder, printf pattern, single image) and video output.

Sources hand out ``H x W x 3`` float32 RGB frames in ``[0, 1]`` by 0-based index and never
hold more than a couple of decoded frames, so any length of video streams through. Videos
are decoded by an ffmpeg child process (imageio-ffmpeg's binary) that converts to RGB with
the stream's own colour matrix, as Blender does; OpenCV is the fallback without ffmpeg.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shutil
import subprocess
import tempfile
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Protocol

import cv2
import numpy as np

try:  # Linux/macOS: lets a pipe be widened
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

from stylecore.errors import InputError, StylecoreError
from stylecore.io.imageops import TEMP_MARK, current_umask, load_image, temp_path_for

if TYPE_CHECKING:  # typing.Self is 3.11+; annotations are never evaluated at run time
    from typing_extensions import Self

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".exr", ".webp"})
# Image sequences carry no frame rate; this is Blender's default scene rate.
DEFAULT_SEQUENCE_FPS = 24.0
# Decoding forward is exact and, for short jumps, faster than a container seek (which
# lands on a keyframe and decodes forward anyway), so skip ahead by grabbing up to this many.
_MAX_GRAB = 48
_VIDEO_CACHE = 2  # decoded frames kept: flow needs frame i again right after i+1
# A stream this many frames (or 1 %) short of its container's count is taken as ending
# there; more missing means a damaged file.
_COUNT_SLACK = 2
_PATTERN_RE = re.compile(r"%(0?\d*)d|#+")

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class SourceInfo:
    """What a frame source holds. ``count`` frames at ``fps``, each ``width x height``."""

    path: str
    kind: str  # "video" | "folder" | "pattern" | "image"
    width: int
    height: int
    fps: float
    count: int


class VideoEndedEarly(InputError):
    """The stream ended a few frames before the count its container reports; ``frames``
    is how many it really holds."""

    def __init__(self, message: str, *, frames: int) -> None:
        super().__init__(message)
        self.frames = frames


class FrameSource:
    """Random-access frames of a video or image sequence; use as a context manager."""

    info: SourceInfo

    def read(self, index: int) -> np.ndarray:
        """Frame ``index`` (0-based) as ``H x W x 3`` float32 RGB."""
        raise NotImplementedError

    def iter_frames(self, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(index, frame)`` one at a time; ascending indices decode sequentially."""
        for index in indices:
            yield index, self.read(index)

    def close(self) -> None:
        """Release the decoder; the source cannot be read afterwards."""

    def __len__(self) -> int:
        return self.info.count

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _check_index(self, index: int) -> None:
        if not 0 <= index < self.info.count:
            raise InputError(
                f"frame {index} is outside {self.info.path}, which has frames 0..{self.info.count - 1}; "
                "check `frames`"
            )


class VideoSource(FrameSource):
    """A video file, decoded by ffmpeg through a pipe, or by OpenCV when there is no ffmpeg.

    ffmpeg converts to RGB with the colour matrix and range the stream is tagged with, as
    Blender and players do. OpenCV always uses the BT.601 matrix, which shifts the colours
    of BT.709 (HD) video, so it is only the fallback.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._decoder = _open_decoder(path)
        d = self._decoder
        self.info = SourceInfo(str(path), "video", d.width, d.height, d.fps, d.count)
        self._next = 0  # index that the decoder's next read returns
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def read(self, index: int) -> np.ndarray:
        self._check_index(index)
        raw = self._cache.get(index)
        if raw is None:
            raw = self._decode(index)
            self._cache[index] = raw
            while len(self._cache) > _VIDEO_CACHE:
                self._cache.popitem(last=False)
        return _rgb8_to_float(raw)

    def _decode(self, index: int) -> np.ndarray:
        if index < self._next or (index - self._next > _MAX_GRAB and self._decoder.seekable):
            # Without a usable seek, going back means decoding forward from the start.
            self._next = index if self._decoder.seekable else 0
            self._decoder.seek(self._next)
        while self._next < index:
            if not self._decoder.skip():
                raise self._truncated(self._next)
            self._next += 1
        raw = self._decoder.read()
        if raw is None:
            raise self._truncated(index)
        self._next += 1
        if raw.shape[:2] != (self.info.height, self.info.width):
            raise InputError(
                f"frame {index} of {self._path} is {raw.shape[1]}x{raw.shape[0]} but the video starts at "
                f"{self.info.width}x{self.info.height}; re-encode it to one size with ffmpeg"
            )
        return raw

    def _truncated(self, index: int) -> InputError:
        said = self._decoder.last_error()
        if 0 < self.info.count - index <= max(_COUNT_SLACK, self.info.count // 100) and index > 0:
            # The container's count is a little off (some .ts/.avi say one frame more than
            # they hold): the stream's end is the truth, and the caller may stop there.
            reported = self.info.count
            self.info = dataclasses.replace(self.info, count=index)
            return VideoEndedEarly(
                f"{self._path} ends after {index} frames although its container says {reported}; "
                f"use `frames` 0:{index}",
                frames=index,
            )
        return InputError(
            f"could not decode frame {index} of {self._path} although it reports {self.info.count} frames"
            f"{f' ({said})' if said else ''}; the file may be truncated: re-encode it with ffmpeg, "
            f"or use `frames` 0:{index}"
        )

    def close(self) -> None:
        self._decoder.close()
        self._cache.clear()


# ---------------------------------------------------------------- video decoders

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


class _Decoder(Protocol):
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


def _open_decoder(path: Path) -> _Decoder:
    exe = ffmpeg_exe()
    if exe is not None:
        try:
            return _FfmpegDecoder(exe, path)
        except _FfmpegUnusable as exc:
            reason = f"ffmpeg ({exe}) cannot run: {exc}"
    else:
        reason = "ffmpeg not found"
    _warn_opencv_fallback(reason)
    return _OpenCVDecoder(path)


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
    cmd = [exe, "-nostdin", "-i", _input_url(path), "-map", "0:V:0", "-frames:v", "1", "-vf", "showinfo", "-f", "null", "-"]
    try:
        proc = subprocess.run(
            cmd, check=False, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
            timeout=_PROBE_TIMEOUT_S, creationflags=_no_window(),
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


def _input_url(path: str | Path) -> str:
    # Without the protocol, ffmpeg would read a name such as "a:b.mp4" as protocol "a".
    return f"file:{path}"


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

    def __init__(self, exe: str, path: Path) -> None:
        self._exe, self._path = exe, path
        probe = _probe(exe, path)
        count, fps = _container_facts(path)
        self.width, self.height = probe.width, probe.height
        self.fps = fps or probe.rate or DEFAULT_SEQUENCE_FPS
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
               "-i", _input_url(self._path), "-map", "0:V:0", *self._probe.fps_mode, "-f", "null", "-"]
        try:
            proc = subprocess.run(
                cmd, check=False, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
                creationflags=_no_window(),
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
        cmd += ["-i", _input_url(self._path), "-map", "0:V:0", *trim, "-vf", scale, *self._probe.fps_mode,
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
                creationflags=_no_window(),
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

    def __init__(self, path: Path) -> None:
        self._path = path
        self._cap = self._open()
        ok, first = self._cap.read()
        if not ok or first is None:
            self._cap.release()
            raise _undecodable(path)
        self.height, self.width = first.shape[:2]
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if math.isfinite(fps) and fps > 0 else DEFAULT_SEQUENCE_FPS
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


class ImageSequenceSource(FrameSource):
    """Image files in a fixed order (folder, printf pattern, or a single image)."""

    def __init__(self, files: Sequence[Path], kind: str, label: str, fps: float) -> None:
        self._files = list(files)
        first = load_image(self._files[0])
        height, width = first.shape[:2]
        self.info = SourceInfo(label, kind, width, height, float(fps), len(self._files))
        self._last: tuple[int, np.ndarray] = (0, first)

    @property
    def files(self) -> list[Path]:
        return list(self._files)

    def read(self, index: int) -> np.ndarray:
        self._check_index(index)
        if self._last[0] == index:
            return self._last[1].copy()
        img = load_image(self._files[index])
        if img.shape[:2] != (self.info.height, self.info.width):
            raise InputError(
                f"{self._files[index]} is {img.shape[1]}x{img.shape[0]} but {self._files[0].name} is "
                f"{self.info.width}x{self.info.height}; all images of a sequence must have one size"
            )
        self._last = (index, img)
        return img.copy()


def open_source(path: str | Path, *, fps: float | None = None) -> FrameSource:
    """Open a video file, a folder of images, a printf/``#`` pattern, or one image.

    ``fps`` sets the rate of image sequences (default 24); videos keep their own rate.
    """
    text = str(path)
    p = Path(text)
    seq_fps = DEFAULT_SEQUENCE_FPS if fps is None else float(fps)
    if seq_fps <= 0:
        raise InputError(f"frame rate {fps} must be positive")
    if p.is_dir():
        return ImageSequenceSource(_folder_images(p), "folder", text, seq_fps)
    if p.is_file():
        if p.suffix.lower() in IMAGE_EXTENSIONS:
            return ImageSequenceSource([p], "image", text, seq_fps)
        return VideoSource(p)
    if _PATTERN_RE.search(p.name):
        return ImageSequenceSource(pattern_files(text), "pattern", text, seq_fps)
    raise InputError(
        f"{text} does not exist; give a video file, a folder of images, or a pattern like frame_%04d.png"
    )


def natural_key(name: str) -> tuple[object, ...]:
    """Sort key that orders ``frame2`` before ``frame10`` (digit runs compare as numbers)."""
    # re.split with one group alternates text, number, text, ...: equal positions hold
    # equal types, so the tuples always compare.
    parts = re.split(r"(\d+)", name)
    return tuple(int(part) if i % 2 else part.lower() for i, part in enumerate(parts))


def _folder_images(folder: Path) -> list[Path]:
    # Hidden files are skipped: they include half-written temp files of a running job.
    entries = [e for e in folder.iterdir() if not e.name.startswith(".")]
    if not entries:
        raise InputError(f"folder {folder} is empty; put the frames in it, or give a video file")
    images = [e for e in entries if e.is_file() and e.suffix.lower() in IMAGE_EXTENSIONS]
    if not images:
        kinds = ", ".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))
        raise InputError(
            f"folder {folder} holds no images ({kinds}); to stylize a video, give the video file itself"
        )
    return sorted(images, key=lambda e: natural_key(e.name))


def pattern_files(pattern: str | Path) -> list[Path]:
    """Existing files of a printf (``frame_%04d.png``) or Blender (``frame_####.png``) pattern.

    All matching numbers in ascending order, from the first that exists; a gap in the
    numbering is kept as is rather than silently ending the sequence.
    """
    p = Path(pattern)
    fields = list(_PATTERN_RE.finditer(p.name))
    if len(fields) != 1:
        raise InputError(f"pattern {pattern} must hold exactly one number field such as %04d or ####")
    field = fields[0]
    token = field.group(0)
    width = len(token) if token.startswith("#") else int(field.group(1) or 0)
    prefix, suffix = p.name[: field.start()], p.name[field.end():]
    matcher = re.compile(re.escape(prefix) + r"(\d+)" + re.escape(suffix) + r"\Z")
    numbered: list[tuple[int, Path]] = []
    if p.parent.is_dir():
        for entry in p.parent.iterdir():
            m = matcher.match(entry.name)
            # The number must print back as it is written: %04d matches 0007, not 07 or 00007.
            if m and f"{int(m.group(1)):0{width}d}" == m.group(1) and entry.is_file():
                numbered.append((int(m.group(1)), entry))
    if not numbered:
        raise InputError(f"no file matches the pattern {pattern}; check the folder and the number format")
    return [entry for _, entry in sorted(numbered)]


def _undecodable(path: Path) -> InputError:
    return InputError(
        f"could not decode {path}; is it a video? try converting it with ffmpeg "
        f"(ffmpeg -i {path.name} -c:v libx264 -pix_fmt yuv420p out.mp4)"
    )


def _rgb8_to_float(raw: np.ndarray) -> np.ndarray:
    # One pass: the division reads uint8 and writes float32 without an intermediate copy.
    return np.divide(raw, np.float32(255.0), dtype=np.float32)


# ---------------------------------------------------------------- frame ranges


def parse_frame_range(text: str) -> tuple[int, int]:
    """``"START:END"`` (0-based, END exclusive) -> ``(start, end)``; ``"START:"`` gives end ``-1``."""
    m = re.fullmatch(r"\s*(\d+)\s*:\s*(\d*)\s*", text or "")
    if not m:
        raise InputError(f"`frames` {text!r} is not START:END (0-based, END exclusive), e.g. 0:48 or 24:")
    start = int(m.group(1))
    end = int(m.group(2)) if m.group(2) else -1
    if end != -1 and end <= start:
        raise InputError(
            f"`frames` {start}:{end} selects no frame; END is exclusive and must be larger than START "
            f"(e.g. `frames` {start}:{start + 1})"
        )
    return start, end


def resolve_range(rng: tuple[int, int] | None, count: int) -> range:
    """The source indices a range selects; ``None`` = all, ``end == -1`` or past the end = to the end."""
    if rng is None:
        return range(count)
    start, end = rng
    if start >= count:
        raise InputError(
            f"`frames` {start}:{'' if end == -1 else end} starts after the last frame; "
            f"the source has {count} frames (0..{count - 1})"
        )
    stop = count if end == -1 else min(end, count)
    return range(start, stop)


# ---------------------------------------------------------------- video output


def ffmpeg_exe() -> str | None:
    """Path of an ffmpeg binary: imageio-ffmpeg's bundled one, else one on PATH, else None."""
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        return shutil.which("ffmpeg")


def _no_window() -> int:
    # Launched from Blender on Windows, ffmpeg would otherwise flash a console window.
    return getattr(subprocess, "CREATE_NO_WINDOW", 0)


def has_audio(path: str | Path) -> bool:
    """True when ``path`` is a media file with an audio stream (False without ffmpeg)."""
    exe = ffmpeg_exe()
    if exe is None or not Path(path).is_file():
        return False
    try:
        proc = subprocess.run(
            [exe, "-hide_banner", "-i", _input_url(path)],
            check=False, capture_output=True, text=True, errors="replace", timeout=60,
            creationflags=_no_window(),
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    # Without an output ffmpeg exits 1 after printing the input's streams.
    return re.search(r"Stream #\S+.*: Audio:", proc.stderr) is not None


def _codec_args(suffix: str) -> tuple[list[str], list[str]]:
    """(video args, audio args) for a container."""
    if suffix == ".webm":
        return ["-c:v", "libvpx-vp9", "-b:v", "0", "-crf", "32", "-pix_fmt", "yuv420p"], ["-c:a", "libopus"]
    video = ["-c:v", "libx264", "-preset", "medium", "-crf", "18", "-pix_fmt", "yuv420p"]
    if suffix in (".mp4", ".mov", ".m4v"):
        video += ["-movflags", "+faststart"]  # playable while downloading / quick to open
    return video, ["-c:a", "aac", "-b:a", "192k"]


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
    overrides the codec's quality (lower is better; default 18 for H.264, 32 for VP9).
    """
    files = pattern_files(frames) if isinstance(frames, (str, Path)) else [Path(f) for f in frames]
    if not files:
        raise InputError(f"no frames to encode into {out_path}; stylize some frames first")
    if not fps or fps <= 0 or not math.isfinite(fps):
        raise InputError(f"frame rate {fps} must be a positive number")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    first = _read_bgr(files[0])
    tmp = temp_path_for(out_path)
    try:
        exe = ffmpeg_exe()
        if exe is None:
            warnings.warn("ffmpeg not found: writing an 'mp4v' video without audio", stacklevel=2)
            _encode_opencv(files, first, tmp, fps, progress)
        else:
            audio = audio_from is not None and has_audio(audio_from)
            _encode_ffmpeg(exe, files, first, tmp, fps, audio_from if audio else None, audio_start, progress, crf)
        # The temp file is created private; the video gets the usual permissions, like frames.
        os.chmod(tmp, 0o666 & ~current_umask())
        # Rename only a complete file: a killed encode never leaves a broken video behind.
        tmp.replace(out_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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


def is_pattern(path: str | Path) -> bool:
    """True for a printf (``%04d``) or Blender (``####``) frame pattern."""
    return _PATTERN_RE.search(Path(path).name) is not None


def _read_bgr(path: Path) -> np.ndarray:
    raw = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_COLOR) if path.is_file() else None
    if raw is None:
        raise InputError(f"cannot read frame {path}; it is missing or not an image")
    return raw


def _frames_bgr(files: Sequence[Path], first: np.ndarray) -> Iterator[np.ndarray]:
    yield first
    for f in files[1:]:
        raw = _read_bgr(f)
        if raw.shape != first.shape:
            raise InputError(
                f"{f} is {raw.shape[1]}x{raw.shape[0]} but {files[0].name} is {first.shape[1]}x{first.shape[0]}; "
                "all frames of a video must have one size"
            )
        yield raw


def _encode_ffmpeg(
    exe: str,
    files: Sequence[Path],
    first: np.ndarray,
    tmp: Path,
    fps: float,
    audio_from: str | Path | None,
    audio_start: float,
    progress: Progress | None,
    crf: int | None,
) -> None:
    height, width = first.shape[:2]
    rate = Fraction(fps).limit_denominator(1001)  # 23.976 -> 24000/1001 exactly
    duration = len(files) / fps
    cmd = [exe, "-hide_banner", "-loglevel", "error", "-y",
           "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{width}x{height}", "-framerate", str(rate), "-i", "-"]
    if audio_from is not None:
        # -ss before -i seeks the input; -t keeps only the stylized frames' stretch of sound.
        cmd += ["-ss", f"{max(audio_start, 0.0):.6f}", "-t", f"{duration:.6f}", "-i", str(audio_from)]
    cmd += ["-map", "0:v:0"] + (["-map", "1:a:0"] if audio_from is not None else [])
    # yuv420p needs even sides: pad odd ones by a pixel. Convert with the BT.709 matrix
    # and say so in the stream, as players assume for HD.
    cmd += ["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2,scale=out_color_matrix=bt709:out_range=tv",
            "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709"]
    video_args, audio_args = _codec_args(tmp.suffix.lower())
    if crf is not None:
        video_args[video_args.index("-crf") + 1] = str(int(crf))
    cmd += video_args + (audio_args if audio_from is not None else [])
    cmd += [str(tmp)]
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, creationflags=_no_window()
    )
    assert proc.stdin is not None and proc.stderr is not None
    try:
        for done, frame in enumerate(_frames_bgr(files, first), start=1):
            proc.stdin.write(frame.tobytes())
            if progress is not None:
                progress(done, len(files))
        proc.stdin.close()
    except BrokenPipeError:
        pass  # ffmpeg died; its message is read below
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    err = proc.stderr.read().decode(errors="replace").strip()
    if proc.wait() != 0:
        last = err.splitlines()[-1] if err else f"exit status {proc.returncode}"
        raise StylecoreError(f"ffmpeg could not encode the video ({last}); check the output path and free disk space")


def _encode_opencv(
    files: Sequence[Path], first: np.ndarray, tmp: Path, fps: float, progress: Progress | None
) -> None:
    height, width = first.shape[:2]
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise StylecoreError(f"OpenCV cannot write {tmp.suffix} video; install ffmpeg or use an .mp4 output")
    try:
        for done, frame in enumerate(_frames_bgr(files, first), start=1):
            writer.write(frame)
            if progress is not None:
                progress(done, len(files))
    finally:
        writer.release()
