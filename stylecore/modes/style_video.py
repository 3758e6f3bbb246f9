"""Style-video mode: which frame of the style video styles each output frame.

``sync="index"`` steps through style frames by output frame; ``sync="time"`` follows the
two clips' clocks, so a 12 fps style video on 24 fps content changes every second frame.
``rate`` speeds the style up (2.0) or down (0.5), ``offset`` starts it later, and ``end``
says what happens past its last frame: ``loop`` (wrap around), ``pingpong`` (play back
and forth) or ``hold`` (stay on the last frame; before the first, the first).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from stylecore.errors import InputError

SYNCS = ("index", "time")
ENDS = ("loop", "pingpong", "hold")
# Guards floor() against float error: 3 / 24 * 24 may come out as 2.9999999999999996.
_EPS = 1e-6


@dataclass(frozen=True)
class StyleMapping:
    """How output frames walk through the style video."""

    sync: str = "index"
    rate: float = 1.0
    offset: int = 0
    end: str = "loop"

    def __post_init__(self) -> None:
        if self.sync not in SYNCS:
            raise InputError(f"`style_sync` must be one of {', '.join(SYNCS)}, not {self.sync!r}")
        if self.end not in ENDS:
            raise InputError(f"`style_end` must be one of {', '.join(ENDS)}, not {self.end!r}")
        if not math.isfinite(self.rate) or self.rate < 0:
            raise InputError(f"`style_rate` {self.rate} must be a number >= 0")


def style_index(k: int, mapping: StyleMapping, *, content_fps: float, style_fps: float, style_count: int) -> int:
    """0-based style frame for output position ``k`` (0-based)."""
    if style_count < 1:
        raise InputError("the style video has no frames; give another `style_video`")
    if mapping.sync == "index":
        step = k * mapping.rate
    else:
        if content_fps <= 0 or style_fps <= 0:
            raise InputError("`style_sync` time needs both videos' frame rates; use `style_sync` index")
        step = k / content_fps * style_fps * mapping.rate
    return fold(mapping.offset + math.floor(step + _EPS), style_count, mapping.end)


def style_indices(
    count: int, mapping: StyleMapping, *, content_fps: float, style_fps: float, style_count: int
) -> list[int]:
    """:func:`style_index` for output positions ``0..count-1``."""
    return [
        style_index(k, mapping, content_fps=content_fps, style_fps=style_fps, style_count=style_count)
        for k in range(count)
    ]


def fold(s: int, n: int, end: str) -> int:
    """Bring any integer ``s`` into ``[0, n)`` by looping, ping-ponging or clamping."""
    if end == "loop":
        return s % n
    if end == "hold":
        return min(max(s, 0), n - 1)
    if end == "pingpong":
        if n == 1:
            return 0
        period = 2 * n - 2  # 0 1 .. n-1 n-2 .. 1, then again; the ends are not repeated
        m = s % period
        return m if m < n else period - m
    raise InputError(f"`style_end` must be one of {', '.join(ENDS)}, not {end!r}")
