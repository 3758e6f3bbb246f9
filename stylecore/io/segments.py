"""A video job's frames kept as short video segments: its resume record.

A job whose product is a video keeps its frames only to resume after a stop and to make
the video. Kept as one PNG each, they cost the job more than anything but the network:
a 640x360 feedforward job (192 frames, this 2-core CPU) ran 17.4-18.0 s writing them
and 13.7-14.0 s without, because PNG's filtering and deflate take a core from a network
that needs both. So a feedforward job with a video output encodes its frames, as they
come, into segments of ``SEGMENT_FRAMES`` frames, each by an encoder of its own (each
starts on a key frame and stands alone), written to a hidden temp file and renamed to
``segment_FIRST-LAST.EXT`` only when whole. The video is the segments joined without
encoding them again (``io.encode.join_videos``).

Resume: a cancelled or failed job closes the segment in progress, so every frame it
made is kept; a killed one loses at most the frames of that segment. Segments end on
multiples of ``SEGMENT_FRAMES``, so a resumed job's segments are those of an unbroken
run except where a stop closed one early; its frames are the same, and the joined video
differs from an unbroken run's only in where its key frames fall.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from stylecore.errors import EncodeError, OutputError
from stylecore.io.encode import VideoEncoder, join_videos

# Frames per segment: 2 s at 24 fps. Each segment costs an encoder start (about 0.1 s of
# CPU) and a key frame; a killed job redoes at most this many frames.
SEGMENT_FRAMES = 48
SEGMENT_PREFIX = "segment_"
_SEGMENT_RE = re.compile(re.escape(SEGMENT_PREFIX) + r"(\d{6})-(\d{6})\.[A-Za-z0-9]+\Z")


def segment_span(name: str) -> tuple[int, int] | None:
    """``(first, last)`` output frame numbers of a segment file's name; None for other names."""
    m = _SEGMENT_RE.match(name)
    if m is None:
        return None
    first, last = int(m.group(1)), int(m.group(2))
    return (first, last) if 1 <= first <= last else None


def find_segments(folder: Path) -> list[tuple[int, int, Path]]:
    """The whole segments in ``folder`` as ``(first, last, path)``, in frame order."""
    if not folder.is_dir():
        return []
    found = []
    for entry in folder.iterdir():
        span = segment_span(entry.name)
        if span is not None:
            found.append((*span, entry))
    return sorted(found)


class SegmentWriter:
    """Encodes frames, in increasing order, into segments in ``folder``.

    ``write`` starts a segment at the first frame after a gap or a segment's end and
    closes it after a frame numbered a multiple of ``SEGMENT_FRAMES``; ``close`` ends the
    one in progress (a stop keeps its frames); ``abort`` drops it.
    """

    def __init__(self, folder: Path, suffix: str, fps: float) -> None:
        self.folder = folder
        self.suffix = suffix
        self.fps = fps
        self._encoder: VideoEncoder | None = None
        self._first = 0
        self._next = 0

    def path_for(self, first: int, last: int) -> Path:
        return self.folder / f"{SEGMENT_PREFIX}{first:06d}-{last:06d}{self.suffix}"

    def write(self, number: int, pixels: np.ndarray) -> None:
        """Append output frame ``number`` (``H x W x 3`` RGB ``uint8``)."""
        with self._said_plainly():
            if self._encoder is not None and number != self._next:
                self.close()
            if self._encoder is None:
                last = (number + SEGMENT_FRAMES - 1) // SEGMENT_FRAMES * SEGMENT_FRAMES  # the planned end
                height, width = pixels.shape[:2]
                self._encoder = VideoEncoder(self.path_for(number, last), (width, height), self.fps,
                                             frames=last - number + 1)
                self._first = self._next = number
            self._encoder.write(cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))
            self._next += 1
            if number % SEGMENT_FRAMES == 0:
                self.close()

    def close(self) -> None:
        """Finish the segment in progress under the name of the frames it holds."""
        encoder, self._encoder = self._encoder, None
        if encoder is not None:
            with self._said_plainly():
                encoder.close(self.path_for(self._first, self._next - 1))

    @contextlib.contextmanager
    def _said_plainly(self) -> Iterator[None]:
        """ffmpeg's failure (a full disk, mostly) as one line that says where, and what is safe."""
        try:
            yield
        except EncodeError as exc:
            raise OutputError(f"cannot write the frames into {self.folder} ({exc.reason}); the frames finished "
                              "before are safe there: free disk space or fix the folder, then run the same job "
                              "again to resume") from None

    def abort(self) -> None:
        """Drop the segment in progress (its frames are made again on resume)."""
        encoder, self._encoder = self._encoder, None
        if encoder is not None:
            encoder.abort()


def join_segments(folder: Path, total: int, out_path: Path, fps: float, *,
                  audio_from: str | Path | None = None, audio_start: float = 0.0) -> None:
    """Join the segments holding frames ``1..total`` of ``folder`` into ``out_path``."""
    parts, expected = [], 1
    for first, last, path in find_segments(folder):
        if first == expected and last <= total:
            parts.append(path)
            expected = last + 1
    if expected != total + 1:
        raise RuntimeError(f"the segments in {folder} end at frame {expected - 1}, not {total}")
    join_videos(parts, out_path, total / fps, audio_from=audio_from, audio_start=audio_start)
