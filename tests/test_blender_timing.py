"""Frame mapping arithmetic of the add-on (pure Python), against hand-worked answers."""

from __future__ import annotations

import blender_helpers  # noqa: F401 - puts the repository on sys.path
import pytest

pytest.importorskip("bpy")  # importing blender_addon imports bpy

from blender_addon.timing import StripTiming, content_index, frame_map, natural_key, round_half_up


def plain(**kw: object) -> StripTiming:
    base = dict(frame_start=10.0, final_start=10, final_end=20, content_length=10, duration=10)
    base.update(kw)
    return StripTiming(**base)  # type: ignore[arg-type]


def test_untouched_strip_maps_one_to_one() -> None:
    assert frame_map(plain()) == list(range(10))


def test_left_handle_moved_in_skips_the_head() -> None:
    # Content starts at 10, the left handle sits at 13: the first shown frame is index 3.
    assert frame_map(plain(final_start=13)) == [3, 4, 5, 6, 7, 8, 9]


def test_animation_offset_shifts_into_the_file() -> None:
    # 2 frames trimmed from the head of the media: content index 0 is file frame 2.
    assert frame_map(plain(content_length=8, duration=8, final_end=18, animation_offset_start=2)) == list(range(2, 10))


def test_handles_beyond_content_hold_first_and_last_frame() -> None:
    t = plain(final_start=8, final_end=22)
    assert frame_map(t) == [0, 0, *range(10), 9, 9]


def test_reverse_plays_backwards() -> None:
    assert frame_map(plain(reverse=True)) == list(range(9, -1, -1))


def test_strobe_holds_every_nth_frame() -> None:
    assert frame_map(plain(strobe=3.0)) == [0, 0, 0, 3, 3, 3, 6, 6, 6, 9]


def test_playback_rate_scales_and_rounds_half_up() -> None:
    # A 48 fps movie in a 24 fps scene shows every second frame; 12 fps shows each twice.
    fast = plain(content_length=20, duration=10, playback_rate=2.0)
    assert frame_map(fast) == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]
    slow = plain(content_length=5, duration=10, playback_rate=0.5)
    # 0, 0.5, 1, 1.5, ... round half up (Blender's round_fl_to_int), clamped to 4.
    assert frame_map(slow) == [0, 1, 1, 2, 2, 3, 3, 4, 4, 4]


def test_round_half_up_is_not_bankers_rounding() -> None:
    assert [round_half_up(x) for x in (0.5, 1.5, 2.5, -0.5, 2.49)] == [1, 2, 3, 0, 2]


def test_content_index_for_single_frames() -> None:
    t = plain(final_start=12)
    assert content_index(t, 12) == 2
    assert content_index(t, 5) == 0  # before the content: clamped to the first frame


def test_natural_order_matches_stylecore() -> None:
    names = ["f10.png", "f2.png", "F1.png", "f1b.png"]
    assert sorted(names, key=natural_key) == ["F1.png", "f1b.png", "f2.png", "f10.png"]


def test_natural_order_is_the_engines() -> None:
    # Asked of the worker's own Python, where the engine lives (Blender's Python has no
    # torch or OpenCV), exactly as the add-on relies on it.
    import json
    import subprocess

    python = blender_helpers.worker_python()
    if python is None:
        pytest.skip("no Python with stylecore: set STYLECORE_WORKER_PYTHON")
    names = ["a10.png", "a9.png", "A1.png", "b.png", "a1b2.png", "a01.png", "x_3_10.jpg", "x_3_9.jpg"]
    code = ("import json, sys; from stylecore.io.sources import natural_key; "
            "print(json.dumps(sorted(json.loads(sys.argv[1]), key=natural_key)))")
    engine = subprocess.run([python, "-c", code, json.dumps(names)], capture_output=True, text=True, check=True)
    assert sorted(names, key=natural_key) == json.loads(engine.stdout)
