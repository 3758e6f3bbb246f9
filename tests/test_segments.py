"""A video job's frames kept as video segments (``io.segments``): what is on disk after a
stop, what a resume makes again, and the video joined from them."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import pan_frames, stream_duration, write_video, write_video_with_sound
from stylecore import jobdir as jobdir_module
from stylecore import pipeline
from stylecore.errors import Cancelled, EncodeError, InputError, OutputError
from stylecore.io import segments
from stylecore.io.encode import VideoEncoder
from stylecore.io.ffmpeg import ffmpeg_exe, has_audio
from stylecore.io.imageops import load_image, to_pixels
from stylecore.jobdir import JobDir, is_job_file_name
from stylecore.jobspec import JobSpec
from stylecore.pipeline import run_job

FPS = 12.0


@pytest.fixture(autouse=True)
def _short_segments(monkeypatch) -> None:
    # imageio-ffmpeg is a dependency: these tests check the ffmpeg path, never skip it.
    assert ffmpeg_exe() is not None
    monkeypatch.setattr(segments, "SEGMENT_FRAMES", 4)


def _frames(count: int) -> list[np.ndarray]:
    return pan_frames(count, height=36, width=50)  # even sides: nothing padded


def _decoded(video: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0)
    cap.release()
    return frames


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / max(float(np.mean((a - b) ** 2)), 1e-12)))


def _encoded_once(frames: list[np.ndarray], out: Path) -> list[np.ndarray]:
    """The frames as one unbroken encode decodes them: the loss the codec alone costs."""
    encoder = VideoEncoder(out, (frames[0].shape[1], frames[0].shape[0]), FPS, frames=len(frames))
    for frame in frames:
        encoder.write(cv2.cvtColor(to_pixels(frame), cv2.COLOR_RGB2BGR))
    encoder.close()
    return _decoded(out)


def _like_one_encode(video: list[np.ndarray], frames: list[np.ndarray], once: list[np.ndarray]) -> bool:
    """Each decoded frame is as close to its frame as one unbroken encode's (within 1.5 dB),
    and closer to it than to the frames beside it: the right frames, in order."""
    assert len(video) == len(frames) == len(once)
    for k, (v, f, o) in enumerate(zip(video, frames, once)):
        near = [frames[j] for j in (k - 1, k + 1) if 0 <= j < len(frames)]
        if _psnr(v, f) < _psnr(o, f) - 1.5 or any(_psnr(v, n) >= _psnr(v, f) for n in near):
            return False
    return True


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_segments_end_on_multiples_a_close_keeps_the_one_in_progress_and_an_abort_drops_it(tmp_path: Path) -> None:
    frames = _frames(9)
    writer = segments.SegmentWriter(tmp_path, ".mp4", FPS)
    for n in range(1, 7):
        writer.write(n, to_pixels(frames[n - 1]))
    writer.close()  # a stop after frame 6
    assert _names(tmp_path) == ["segment_000001-000004.mp4", "segment_000005-000006.mp4"]
    for n in (7, 8, 9):
        writer.write(n, to_pixels(frames[n - 1]))
    assert [name for name in _names(tmp_path) if not name.startswith(".")] == ["segment_000001-000004.mp4", "segment_000005-000006.mp4",
                                "segment_000007-000008.mp4"]
    writer.abort()  # frame 9's segment was in progress: gone, and no temp file left
    assert _names(tmp_path) == ["segment_000001-000004.mp4", "segment_000005-000006.mp4",
                                "segment_000007-000008.mp4"]

    out = tmp_path / "joined" / "out.mp4"
    segments.join_segments(tmp_path, 8, out, FPS)
    assert _like_one_encode(_decoded(out), frames[:8], _encoded_once(frames[:8], tmp_path / "once" / "once.mp4"))
    assert [p.name for p in out.parent.iterdir()] == ["out.mp4"]
    with pytest.raises(RuntimeError, match="end at frame 8, not 9"):
        segments.join_segments(tmp_path, 9, tmp_path / "short.mp4", FPS)


def test_the_job_folder_counts_segment_frames_clears_them_on_overwrite_and_removes_killed_ones(tmp_path: Path) -> None:
    folder = tmp_path / "job"
    with JobDir(folder, {"job": 1}) as jobdir:
        jobdir.record_as_segments(".mp4", FPS)
        for n, frame in enumerate(_frames(6), start=1):
            jobdir.write_frame(n, frame)
        # A kill here leaves frames 5-6 in a hidden temp file, never under a segment's name.
        assert jobdir.completed() == [1, 2, 3, 4] and jobdir.has_frame(4) and not jobdir.has_frame(5)
        assert jobdir.has_segments() and jobdir.missing(6) == [5, 6]
        killed = [p.name for p in folder.iterdir() if p.name.startswith(".segment_")]
        assert len(killed) == 1
        jobdir.segments = None  # as if the process died: nothing closes the segment
    assert is_job_file_name("segment_000001-000004.mp4") and not is_job_file_name("segment_1-4.mp4")
    with JobDir(folder, {"job": 1}) as jobdir:  # the next run: the killed segment's temp file is gone
        assert _names(folder) == [".stylecore-job.lock", "segment_000001-000004.mp4", "stylecore-job.json"]
        assert jobdir.completed() == [1, 2, 3, 4]
    with JobDir(folder, {"job": 2}, overwrite=True) as jobdir:  # another job over it
        assert jobdir.completed() == [] and not jobdir.has_segments()


def _spec(clip: Path, out: Path, **fields: object) -> JobSpec:
    return JobSpec(content=str(clip), output=str(out), mode="feedforward", device="cpu", audio=False,
                   **fields)  # type: ignore[arg-type]


def _frame_events(made: list[int], skipped: list[int]):  # type: ignore[no-untyped-def]
    def on_event(event: dict[str, object]) -> None:
        if event.get("event") == "frame":
            (skipped if event.get("skipped") else made).append(int(event["number"]))  # type: ignore[arg-type]
    return on_event


def test_a_stopped_video_job_keeps_its_frames_in_segments_and_resumes_after_them(tmp_path: Path, monkeypatch) -> None:
    clip = write_video(tmp_path / "clip.mp4", _frames(10), fps=FPS)
    # The frames themselves, as PNGs (keeping the frames keeps PNGs).
    reference = run_job(_spec(clip, tmp_path / "reference.mp4", keep_frames=True))
    pngs = [load_image(reference.frames_dir / f"frame_{n:06d}.png") for n in range(1, 11)]

    written: list[Path] = []
    monkeypatch.setattr(jobdir_module, "save_image", lambda path, img: written.append(Path(path)))
    out = tmp_path / "out.mp4"
    folder = tmp_path / "out.stylecore-frames"
    made: list[int] = []
    checks = iter(range(100))
    with pytest.raises(Cancelled):  # stopped at its 6th check, between frames
        run_job(_spec(clip, out), _frame_events(made, []), cancel=lambda: next(checks) >= 5)
    # Every frame made is kept: the segment in progress was closed at the stop.
    kept = [n for n in range(1, 11) if JobDir.attached(folder).has_frame(n)]
    assert kept == made and 3 <= len(kept) < 10
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert not [p for p in folder.iterdir() if p.name.startswith(".") and "lock" not in p.name]

    made_again: list[int] = []
    skipped: list[int] = []
    result = run_job(_spec(clip, out), _frame_events(made_again, skipped))
    assert skipped == kept and made_again == list(range(len(kept) + 1, 11))
    assert written == []  # no PNG on the way
    assert result.video == out and not folder.exists()
    assert _like_one_encode(_decoded(out), pngs, _decoded(reference.video))


def test_a_folder_with_png_frames_goes_on_with_pngs(tmp_path: Path) -> None:
    clip = write_video(tmp_path / "clip.mp4", _frames(6), fps=FPS)
    out = tmp_path / "out.mp4"
    made: list[int] = []
    checks = iter(range(100))
    with pytest.raises(Cancelled):  # a first run that kept its frames, stopped after two
        run_job(_spec(clip, out, keep_frames=True), _frame_events(made, []), cancel=lambda: next(checks) >= 2)
    assert made == [1, 2]
    folder = tmp_path / "out.stylecore-frames"
    assert not JobDir.attached(folder).has_segments()
    run_job(_spec(clip, out))
    assert len(_decoded(out)) == 6 and not folder.exists()


def test_a_farm_does_not_continue_a_job_kept_in_segments(tmp_path: Path) -> None:
    with JobDir(tmp_path / "job", {"job": 1}) as jobdir:
        jobdir.record_as_segments(".mp4", FPS)
        for n, frame in enumerate(_frames(4), start=1):
            jobdir.write_frame(n, frame)
        spec = _spec(tmp_path / "clip.mp4", tmp_path / "out.mp4", farm="auto")
        with pytest.raises(InputError, match="without `farm`, or with `overwrite`"):
            pipeline._keeps_segments(spec, jobdir)


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".webm"])
def test_the_joined_video_has_every_frame_and_the_stretch_of_sound_they_cover(tmp_path: Path, suffix: str) -> None:
    clip = write_video_with_sound(tmp_path / "with_sound.mp4")
    out = tmp_path / f"out{suffix}"
    # Source frames 12..29: output frames 1..18, in segments 1-4, ..., 17-18.
    run_job(JobSpec(content=str(clip), output=str(out), mode="feedforward", device="cpu", frames=(12, 30)))
    assert len(_decoded(out)) == 18
    assert has_audio(out)
    # 18 frames at 24 fps: three quarters of a second of the source's sound, from 0.5 s.
    assert stream_duration(out, "Audio") == pytest.approx(0.75, abs=0.06)
    assert stream_duration(out, "Video") == pytest.approx(0.75, abs=0.05)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["with_sound.mp4", out.name])


def test_a_full_disk_while_encoding_says_where_and_keeps_the_segments_already_whole(tmp_path: Path,
                                                                                   monkeypatch) -> None:
    clip = write_video(tmp_path / "clip.mp4", _frames(10), fps=FPS)
    written: list[int] = []

    class FillsTheDisk(VideoEncoder):
        def write(self, frame: np.ndarray) -> None:
            written.append(1)
            if len(written) == 6:  # ffmpeg's own words for it
                raise EncodeError("ffmpeg could not encode the video (...)", "No space left on device")
            super().write(frame)

    monkeypatch.setattr(segments, "VideoEncoder", FillsTheDisk)
    out = tmp_path / "out.mp4"
    folder = tmp_path / "out.stylecore-frames"
    with pytest.raises(OutputError, match=r"cannot write the frames into .*out\.stylecore-frames \(No space left "
                                          r"on device\); the frames finished before are safe there"):
        run_job(_spec(clip, out))
    # Frame 5 reached the encoder before the failure: the stop closed its segment too.
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == \
        ["segment_000001-000004.mp4", "segment_000005-000005.mp4", "stylecore-job.json"]
    assert not [p for p in folder.iterdir() if p.name.startswith(".") and "lock" not in p.name]
    monkeypatch.setattr(segments, "VideoEncoder", VideoEncoder)  # space freed
    made: list[int] = []
    skipped: list[int] = []
    run_job(_spec(clip, out), _frame_events(made, skipped))
    assert skipped == [1, 2, 3, 4, 5] and made == list(range(6, 11)) and len(_decoded(out)) == 10


def test_keeping_the_frames_of_a_job_begun_in_segments_goes_on_with_them_and_says_so(tmp_path: Path) -> None:
    with JobDir(tmp_path / "job", {"job": 1}) as jobdir:
        jobdir.record_as_segments(".mp4", FPS)
        for n, frame in enumerate(_frames(4), start=1):
            jobdir.write_frame(n, frame)
        spec = _spec(tmp_path / "clip.mp4", tmp_path / "out.mp4", keep_frames=True)
        with pytest.warns(UserWarning, match="as video segments, not PNGs.*with `overwrite` for PNG frames"):
            assert pipeline._keeps_segments(spec, jobdir)
