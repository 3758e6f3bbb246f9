"""A job's video encoded while its frames are made.

A job with a video output that keeps PNG frames (optimization and style-video jobs,
``--keep-frames``, a folder an earlier run filled with PNGs; feedforward jobs keep video
segments instead, ``io.segments``) writes each frame as a PNG first (they are what a
resumed job picks up). Encoding them only after the last one was a serial tail that mostly decoded
the PNGs again: 1.4 s for 192 frames at 640x360 and 2.3 s for 36 at 1920x1080 on this
2-core CPU. ``LiveEncode`` hands ffmpeg each frame as it is written, in order (the frames
a resumed job already had are read from disk when their turn comes), so the video is
done soon after the last frame. It never decides a job's fate: when it cannot follow
exactly (frames far out of order, a clip that ends early, ffmpeg failing) it stops,
removes its partial file, and the job encodes from the PNGs as before, whose errors are
the ones the user sees.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import cv2
import numpy as np

from stylecore.io.encode import VideoEncoder, read_bgr

if TYPE_CHECKING:
    from stylecore.jobdir import JobDir

_log = logging.getLogger(__name__)

# Frames held while the encoder waits for an earlier one (modes write in order, so this
# is only the encoder running behind); more than this out of order and it gives up.
MAX_PENDING = 8

OpenEncoder = Callable[[tuple[int, int]], VideoEncoder]


class LiveEncode:
    """Feeds frames ``1..total`` of ``jobdir`` to ``open_encoder((width, height))``'s
    encoder as they are written. ``finish`` completes the video, ``abort`` drops it."""

    def __init__(self, jobdir: JobDir, total: int, open_encoder: OpenEncoder) -> None:
        self._jobdir = jobdir
        self._total = total
        self._open_encoder = open_encoder
        self._on_disk = set(jobdir.completed())  # written by an earlier run: read back
        self._pending: dict[int, np.ndarray] = {}
        self._next = 1
        self._closing = False  # the job is done: a frame never offered is read from disk
        self._failed: str | None = None
        self._encoder: VideoEncoder | None = None
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._feed, name="stylecore-encoder", daemon=True)
        jobdir.frame_listener = self.offer
        self._thread.start()

    def offer(self, number: int, pixels: np.ndarray) -> None:
        """Frame ``number`` (``H x W x 3`` RGB ``uint8``) is on disk. Blocks while the encoder
        is behind (``MAX_PENDING``), so a fast job waits rather than filling memory."""
        with self._cond:
            if self._failed or number < self._next or number in self._on_disk or number > self._total:
                return
            while len(self._pending) >= MAX_PENDING and self._next in self._pending and not self._failed:
                self._cond.wait(0.1)
            if self._failed:
                return
            if len(self._pending) >= MAX_PENDING:
                self._give_up(f"frames arrive out of order (frame {self._next} is still missing)")
                return
            self._pending[number] = pixels
            self._cond.notify_all()

    def finish(self, total: int) -> bool:
        """Complete the video after the job's last frame; False when it could not (the
        caller then encodes from the frames on disk). ``total``: the job's final frame
        count (fewer than at the start when the clip ended early)."""
        with self._cond:
            if total != self._total:
                self._give_up(f"the job made {total} frames, not {self._total}")
            self._closing = True
            self._cond.notify_all()
        self._thread.join()
        self._jobdir.frame_listener = None
        if self._failed or self._encoder is None:
            self.abort()
            return False
        try:
            self._encoder.close()
        except Exception as exc:  # noqa: BLE001 - the encode from disk reports it, if it persists
            self._failed = str(exc)
            _log.info("encoding the video again from the frames on disk: %s", exc)
            return False
        return True

    def abort(self) -> None:
        """Stop and remove the partial video (the job failed or was cancelled)."""
        with self._cond:
            if not self._failed:
                self._failed = "stopped"
            self._cond.notify_all()
        self._thread.join()
        self._jobdir.frame_listener = None
        if self._encoder is not None:
            self._encoder.abort()

    def _give_up(self, why: str) -> None:
        """(Under the lock.) Stop following the job; the video is made from disk at the end."""
        if not self._failed:
            _log.info("the video will be encoded after the last frame: %s", why)
            self._failed = why
        self._pending.clear()
        self._cond.notify_all()

    def _feed(self) -> None:
        """Encoder thread: frames in order, each from the job or from disk."""
        try:
            while True:
                with self._cond:
                    number = self._next
                    if number > self._total:
                        return
                    while not self._failed and number not in self._pending and number not in self._on_disk \
                            and not self._closing:
                        self._cond.wait()
                    if self._failed:
                        return
                    pixels = self._pending.pop(number, None)
                    # Taken: ``offer`` now waits for the following frame, not this one.
                    self._next += 1
                    self._cond.notify_all()
                bgr = read_bgr(self._jobdir.frame_path(number)) if pixels is None else cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
                if self._encoder is None:
                    self._encoder = self._open_encoder((bgr.shape[1], bgr.shape[0]))
                self._encoder.write(bgr)
        except Exception as exc:  # noqa: BLE001 - never the job's error: the encode from disk follows
            with self._cond:
                self._give_up(str(exc) or type(exc).__name__)
            if self._encoder is not None:
                self._encoder.abort()
