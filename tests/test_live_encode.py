"""A job's video encoded while its frames are written (``io.live_encode``), and the
encode from disk it falls back to."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import pan_frames, write_video
from stylecore import pipeline
from stylecore.errors import Cancelled
from stylecore.io import live_encode
from stylecore.io.encode import VideoEncoder, encode_video
from stylecore.io.ffmpeg import ffmpeg_exe
from stylecore.io.imageops import to_pixels
from stylecore.jobdir import JobDir
from stylecore.jobspec import JobSpec
from stylecore.pipeline import run_job

FPS = 12.0


@pytest.fixture(autouse=True)
def _ffmpeg_is_installed() -> None:
    # imageio-ffmpeg is a dependency: these tests check the ffmpeg path, never skip it.
    assert ffmpeg_exe() is not None


def _frames(count: int) -> list[np.ndarray]:
    return pan_frames(count, height=36, width=50)  # even sides: nothing padded


def _opener(out: Path, total: int) -> live_encode.OpenEncoder:
    return lambda size: VideoEncoder(out, size, FPS, frames=total)


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_live_video_equals_one_encoded_afterwards_and_reads_back_only_old_frames(tmp_path: Path, monkeypatch) -> None:
    frames = _frames(6)
    read: list[str] = []
    real_read = live_encode.read_bgr
    monkeypatch.setattr(live_encode, "read_bgr", lambda path: read.append(path.name) or real_read(path))
    out = tmp_path / "live.mp4"
    with JobDir(tmp_path / "job", {"job": 1}) as jobdir:
        for n in (1, 2):  # made by an earlier, interrupted run
            jobdir.write_frame(n, frames[n - 1])
        live = live_encode.LiveEncode(jobdir, 6, _opener(out, 6))
        for n in range(3, 7):
            jobdir.write_frame(n, frames[n - 1])
        assert live.finish(6)
        assert jobdir.frame_listener is None
        after = tmp_path / "after.mp4"
        encode_video([jobdir.frame_path(n) for n in range(1, 7)], after, FPS)
    # The frames the job wrote went to ffmpeg from memory; the earlier run's were read back.
    assert read == ["frame_000001.png", "frame_000002.png"]
    assert out.read_bytes() == after.read_bytes()
    assert _hidden(tmp_path) == []


class _SlowEncoder:
    """Stands in for ``VideoEncoder``: records the frames, slower than the job makes them."""

    def __init__(self) -> None:
        self.frames: list[np.ndarray] = []
        self.closed = False

    def write(self, frame: np.ndarray) -> None:
        time.sleep(0.02)
        self.frames.append(frame)

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        raise AssertionError("a job in order must not be given up")


def test_a_job_faster_than_the_encoder_waits_for_it_instead_of_giving_up(tmp_path: Path) -> None:
    total = 3 * live_encode.MAX_PENDING
    frames = _frames(total)
    slow = _SlowEncoder()
    with JobDir(tmp_path / "job", {"job": 1}) as jobdir:
        live = live_encode.LiveEncode(jobdir, total, lambda size: slow)  # type: ignore[arg-type,return-value]
        for n in range(1, total + 1):
            jobdir.write_frame(n, frames[n - 1])
        assert live.finish(total)
    assert slow.closed and len(slow.frames) == total
    expected = [cv2.cvtColor(to_pixels(f), cv2.COLOR_RGB2BGR) for f in frames]
    assert all(np.array_equal(a, b) for a, b in zip(slow.frames, expected))


def test_frames_far_out_of_order_give_up_and_leave_no_partial_video(tmp_path: Path) -> None:
    frames = _frames(live_encode.MAX_PENDING + 4)
    total = len(frames)
    out = tmp_path / "live.mp4"
    with JobDir(tmp_path / "job", {"job": 1}) as jobdir:
        live = live_encode.LiveEncode(jobdir, total, _opener(out, total))
        for n in range(2, total + 1):  # frame 1 comes last
            jobdir.write_frame(n, frames[n - 1])
        jobdir.write_frame(1, frames[0])
        assert not live.finish(total)
    assert not out.exists()
    assert _hidden(tmp_path) == []


def test_abort_removes_the_partial_video(tmp_path: Path) -> None:
    frames = _frames(3)
    out = tmp_path / "live.mp4"
    with JobDir(tmp_path / "job", {"job": 1}) as jobdir:
        live = live_encode.LiveEncode(jobdir, 5, _opener(out, 5))
        for n in range(1, 4):
            jobdir.write_frame(n, frames[n - 1])
        live.abort()
        assert jobdir.frame_listener is None
    assert not out.exists()
    assert _hidden(tmp_path) == []


def test_a_clip_that_ended_early_is_not_finished_live(tmp_path: Path) -> None:
    frames = _frames(3)
    with JobDir(tmp_path / "job", {"job": 1}) as jobdir:
        live = live_encode.LiveEncode(jobdir, 4, _opener(tmp_path / "live.mp4", 4))
        for n in range(1, 4):
            jobdir.write_frame(n, frames[n - 1])
        assert not live.finish(3)  # its audio and length were set for 4
    assert not (tmp_path / "live.mp4").exists()
    assert _hidden(tmp_path) == []


def _ff_spec(clip: Path, out: Path) -> JobSpec:
    # Keeping the frames keeps them as PNGs, which live encoding follows (without, a
    # feedforward job keeps video segments instead: test_segments.py).
    return JobSpec(content=str(clip), output=str(out), mode="feedforward", device="cpu", audio=False,
                   keep_frames=True)


def test_a_cancelled_job_leaves_no_video_debris_and_its_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    clip = write_video(tmp_path / "clip.mp4", _frames(6), fps=FPS)
    whole = run_job(_ff_spec(clip, tmp_path / "whole.mp4")).video
    out = tmp_path / "resumed.mp4"
    made: list[int] = []

    def on_event(event: dict[str, object]) -> None:
        if event.get("event") == "frame":
            made.append(int(event["number"]))  # type: ignore[arg-type]

    # Stopped at its third check, between frames 2 and 3. Counting the frame events instead
    # raced: the writer thread reports a frame after the network made it, and six tiny
    # frames could all be made before the second was reported (no cancel at all).
    checks = iter(range(100))
    with pytest.raises(Cancelled):
        run_job(_ff_spec(clip, out), on_event, cancel=lambda: next(checks) >= 2)
    assert made == [1, 2]  # every frame made before the stop is written
    assert not out.exists()
    assert _hidden(tmp_path) == []
    assert (tmp_path / "resumed.stylecore-frames").is_dir()
    result = run_job(_ff_spec(clip, out))
    assert whole is not None and out.read_bytes() == whole.read_bytes()
    assert result.frames == 6
    assert sorted(p.name for p in (tmp_path / "resumed.stylecore-frames").glob("*.png")) == \
        [f"frame_{n:06d}.png" for n in range(1, 7)]


def test_a_failing_live_encoder_falls_back_to_encoding_from_disk(tmp_path: Path, monkeypatch) -> None:
    clip = write_video(tmp_path / "clip.mp4", _frames(4), fps=FPS)
    reference = run_job(_ff_spec(clip, tmp_path / "reference.mp4")).video

    tried: list[tuple[int, int]] = []

    def broken(*args: object) -> live_encode.OpenEncoder:
        def open_encoder(size: tuple[int, int]) -> VideoEncoder:
            tried.append(size)
            raise OSError(28, "No space left on device")
        return open_encoder

    monkeypatch.setattr(pipeline, "_video_encoder", broken)
    out = tmp_path / "result.mp4"
    run_job(_ff_spec(clip, out))
    assert tried == [(50, 36)]  # the live encoder was asked for, and failed
    assert reference is not None and out.read_bytes() == reference.read_bytes()
    assert _hidden(tmp_path) == []
