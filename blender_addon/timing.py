"""Which source frame a strip shows at each timeline frame: pure arithmetic, no ``bpy``.

This mirrors the sequencer's own rule (Blender's ``SEQ_give_frame_index`` and the movie
reader): the timeline frame is taken relative to the strip's content start, reversed if
asked, scaled by the media playback rate, clamped to the content, quantised by strobe,
rounded, and shifted by the animation start offset (the trimmed-away head of the media).
``vse.py`` reads the numbers from a strip; this module only computes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class StripTiming:
    """The timing numbers of one movie or image strip, as the sequencer stores them."""

    frame_start: float  # timeline frame where content frame 0 would be shown
    final_start: int  # first timeline frame the strip shows (left handle)
    final_end: int  # one past the last timeline frame the strip shows (right handle)
    content_length: int  # media frames in the strip's content, after the animation offsets
    duration: int  # content length in timeline frames (``frame_duration``)
    playback_rate: float = 1.0  # media frames per timeline frame (fps-adjusted movies)
    reverse: bool = False
    strobe: float = 1.0
    animation_offset_start: int = 0  # media frames trimmed from the head of the file

    @property
    def frame_count(self) -> int:
        return max(0, self.final_end - self.final_start)


def round_half_up(value: float) -> int:
    """Blender's ``round_fl_to_int``: floor(x + 0.5), not Python's banker's rounding."""
    return math.floor(value + 0.5)


def content_index(timing: StripTiming, timeline_frame: int) -> int:
    """Index into the media file (0-based) shown at ``timeline_frame``."""
    start = timing.frame_start
    if timing.reverse:
        last = start + timing.duration - 1
        position = last - timeline_frame
    else:
        position = timeline_frame - start
    position = max(position, 0.0) * timing.playback_rate
    position = min(max(position, 0.0), float(max(timing.content_length - 1, 0)))
    strobe = max(timing.strobe, 1.0)
    if strobe > 1.0:
        position -= math.fmod(position, strobe)
    return round_half_up(position) + timing.animation_offset_start


def frame_map(timing: StripTiming) -> list[int]:
    """Source index for each frame the strip shows, from its left handle to its right."""
    return [content_index(timing, t) for t in range(timing.final_start, timing.final_end)]


def natural_key(name: str) -> tuple[object, ...]:
    """Order ``frame2`` before ``frame10``: the order stylecore reads an image folder in.

    Kept identical to ``stylecore.io.sources.natural_key`` (the add-on cannot import stylecore),
    so a position in this order is the source index the worker uses.
    """
    parts = re.split(r"(\d+)", name)
    return tuple(int(part) if i % 2 else part.lower() for i, part in enumerate(parts))
