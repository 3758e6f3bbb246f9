"""Content frame -> style frame mapping, checked against hand-written sequences."""

from __future__ import annotations

import pytest

from stylecore.errors import InputError
from stylecore.modes.style_video import StyleMapping, fold, style_index, style_indices


def _seq(mapping: StyleMapping, n: int, style_count: int, content_fps: float = 24, style_fps: float = 24) -> list[int]:
    return style_indices(n, mapping, content_fps=content_fps, style_fps=style_fps, style_count=style_count)


def test_index_loop() -> None:
    assert _seq(StyleMapping(), 8, 3) == [0, 1, 2, 0, 1, 2, 0, 1]


def test_index_pingpong() -> None:
    assert _seq(StyleMapping(end="pingpong"), 12, 4) == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2, 1]
    assert _seq(StyleMapping(end="pingpong"), 4, 1) == [0, 0, 0, 0]
    assert _seq(StyleMapping(end="pingpong"), 5, 2) == [0, 1, 0, 1, 0]


def test_index_hold() -> None:
    assert _seq(StyleMapping(end="hold"), 6, 3) == [0, 1, 2, 2, 2, 2]
    assert _seq(StyleMapping(end="hold", offset=-2), 5, 3) == [0, 0, 0, 1, 2]


def test_rate_and_offset() -> None:
    assert _seq(StyleMapping(rate=0.5), 6, 10) == [0, 0, 1, 1, 2, 2]
    assert _seq(StyleMapping(rate=2.0), 5, 5) == [0, 2, 4, 1, 3]
    assert _seq(StyleMapping(offset=3), 4, 5) == [3, 4, 0, 1]
    # 1 + floor(1.5 k) = 1, 2, 4, 5, 7, 8; ping-pong over 4 frames has period 6 (0123 21).
    assert _seq(StyleMapping(rate=1.5, offset=1, end="pingpong"), 6, 4) == [1, 2, 2, 1, 1, 2]
    # 1/3 steps: float error must not drop frame 3 -> style 1 to 0.
    assert _seq(StyleMapping(rate=1 / 3), 7, 10) == [0, 0, 0, 1, 1, 1, 2]


def test_time_sync_follows_clocks() -> None:
    # 12 fps style on 24 fps content: each style frame lasts two output frames.
    assert _seq(StyleMapping(sync="time"), 6, 10, content_fps=24, style_fps=12) == [0, 0, 1, 1, 2, 2]
    # 30 fps style on 24 fps content: floor(k * 1.25).
    assert _seq(StyleMapping(sync="time"), 6, 100, content_fps=24, style_fps=30) == [0, 1, 2, 3, 5, 6]
    # NTSC rates that are equal in fact map one to one despite float error.
    ntsc = 24000 / 1001
    assert _seq(StyleMapping(sync="time"), 50, 1000, content_fps=ntsc, style_fps=ntsc) == list(range(50))
    assert _seq(StyleMapping(sync="time", rate=2.0, end="hold"), 4, 3, content_fps=24, style_fps=12) == [0, 1, 2, 2]


def test_index_sync_ignores_frame_rates() -> None:
    mapping = StyleMapping()
    assert [style_index(k, mapping, content_fps=24, style_fps=5, style_count=9) for k in range(4)] == [0, 1, 2, 3]


def test_fold_negative_positions() -> None:
    assert [fold(s, 3, "loop") for s in range(-3, 1)] == [0, 1, 2, 0]
    assert [fold(s, 3, "pingpong") for s in range(-4, 1)] == [0, 1, 2, 1, 0]


def test_bad_mappings() -> None:
    with pytest.raises(InputError, match="`style_sync`"):
        StyleMapping(sync="frames")
    with pytest.raises(InputError, match="`style_end`"):
        StyleMapping(end="bounce")
    with pytest.raises(InputError, match="`style_rate`"):
        StyleMapping(rate=-1.0)
    with pytest.raises(InputError, match="no frames"):
        style_index(0, StyleMapping(), content_fps=24, style_fps=24, style_count=0)
    with pytest.raises(InputError, match="frame rates"):
        style_index(1, StyleMapping(sync="time"), content_fps=0, style_fps=24, style_count=3)
