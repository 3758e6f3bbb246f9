"""Frame sources: a video, an image folder, a printf/``#`` pattern, or one image.

Sources hand out ``H x W x 3`` float32 RGB frames in ``[0, 1]`` by 0-based index (or, for a
consumer that converts on a GPU, the 8-bit pixels: ``iter_pixels``) and never
hold more than a couple of decoded frames, so any length of video streams through.
Videos are decoded by ``decoders.py``.
"""

from __future__ import annotations

import dataclasses
import re
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import numpy as np

from stylecore.contract import IMAGE_EXTENSIONS
from stylecore.errors import InputError
from stylecore.io.decoders import open_decoder
from stylecore.io.imageops import load_image, pixels_to_float, read_image, read_pixels, to_pixels

if TYPE_CHECKING:  # typing.Self is 3.11+; annotations are never evaluated at run time
    from typing_extensions import Self

# Image sequences (and videos that state none) carry no frame rate; this is Blender's default scene rate.
DEFAULT_SEQUENCE_FPS = 24.0
# Decoding forward is exact and, for short jumps, faster than a container seek (which
# lands on a keyframe and decodes forward anyway), so skip ahead by grabbing up to this many.
_MAX_GRAB = 48
_VIDEO_CACHE = 2  # decoded frames kept: flow needs frame i again right after i+1
# A stream this many frames (or 1 %) short of its container's count is taken as ending
# there; more missing means a damaged file.
_COUNT_SLACK = 2
_PATTERN_RE = re.compile(r"%(0?\d*)d|#+")


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
    # Whether the frames are 8-bit, so ``read_pixels`` loses nothing: a consumer may then
    # take them as pixels (16-bit and float images keep their precision as floats).
    eight_bit: bool = False

    def read(self, index: int) -> np.ndarray:
        """Frame ``index`` (0-based) as ``H x W x 3`` float32 RGB."""
        raise NotImplementedError

    def iter_frames(self, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(index, frame)`` one at a time; ascending indices decode sequentially."""
        for index in indices:
            yield index, self.read(index)

    def read_pixels(self, index: int) -> np.ndarray:
        """Frame ``index`` as ``H x W x 3`` uint8 RGB (read-only: a video's may be its cache)."""
        return to_pixels(self.read(index))

    def iter_pixels(self, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        """``iter_frames`` as uint8 pixels: a quarter of the bytes to copy to a GPU, and no
        float conversion on the CPU where a video is decoded as 8-bit anyway."""
        for index in indices:
            yield index, self.read_pixels(index)

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

    eight_bit = True  # decoded as rgb24

    def __init__(self, path: Path) -> None:
        self._path = path
        self._decoder = open_decoder(path, DEFAULT_SEQUENCE_FPS)
        d = self._decoder
        self.info = SourceInfo(str(path), "video", d.width, d.height, d.fps, d.count)
        self._next = 0  # index that the decoder's next read returns
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def read(self, index: int) -> np.ndarray:
        return pixels_to_float(self.read_pixels(index))

    def read_pixels(self, index: int) -> np.ndarray:
        self._check_index(index)
        raw = self._cache.get(index)
        if raw is None:
            raw = self._decode(index)
            raw.flags.writeable = False  # cached and handed out as is
            self._cache[index] = raw
            while len(self._cache) > _VIDEO_CACHE:
                self._cache.popitem(last=False)
        return raw

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


class ImageSequenceSource(FrameSource):
    """Image files in a fixed order (folder, printf pattern, or a single image)."""

    def __init__(self, files: Sequence[Path], kind: str, label: str, fps: float) -> None:
        self._files = list(files)
        # A sequence has one format; its first file speaks for it.
        first, self.eight_bit = read_image(self._files[0])
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
        img = self._checked(index, load_image(self._files[index]))
        self._last = (index, img)
        return img.copy()

    def read_pixels(self, index: int) -> np.ndarray:
        # Decoded as pixels, not through ``read``'s floats and back (two passes a frame).
        self._check_index(index)
        return self._checked(index, read_pixels(self._files[index]))

    def _checked(self, index: int, img: np.ndarray) -> np.ndarray:
        if img.shape[:2] != (self.info.height, self.info.width):
            raise InputError(
                f"{self._files[index]} is {img.shape[1]}x{img.shape[0]} but {self._files[0].name} is "
                f"{self.info.width}x{self.info.height}; all images of a sequence must have one size"
            )
        return img


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


def is_pattern(path: str | Path) -> bool:
    """True for a printf (``%04d``) or Blender (``####``) frame pattern."""
    return _PATTERN_RE.search(Path(path).name) is not None
