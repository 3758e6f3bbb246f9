"""Frame sources, frame ranges and video encoding."""

from __future__ import annotations

import gc
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import stream_duration, write_video_with_sound
from stylecore.errors import InputError
from stylecore.io import decoders, encode
from stylecore.io.encode import encode_video
from stylecore.io.ffmpeg import ffmpeg_exe, has_audio
from stylecore.io.ranges import parse_frame_range, resolve_range
from stylecore.io.sources import DEFAULT_SEQUENCE_FPS, natural_key, open_source
from stylecore.io.imageops import save_image

W, H = 32, 24
SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def _frame(k: int) -> np.ndarray:
    """A BGR uint8 frame whose brightness says its number (so misplaced reads show)."""
    img = np.full((H, W, 3), (k * 4) % 256, np.uint8)
    img[:, : W // 2, 1] = 255 - (k * 4) % 256
    return img


def make_video(path: Path, n: int, fourcc: str = "mp4v", fps: float = 24.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (W, H))
    assert writer.isOpened()
    for k in range(n):
        writer.write(_frame(k))
    writer.release()
    return path


def read_back(path: Path) -> tuple[int, int, int]:
    """(frames decoded, width, height) of a video, counted by decoding."""
    cap = cv2.VideoCapture(str(path))
    n, size = 0, (0, 0)
    while True:
        ok, img = cap.read()
        if not ok:
            break
        n, size = n + 1, (img.shape[1], img.shape[0])
    cap.release()
    return n, size[0], size[1]


def _brightness(img: np.ndarray) -> float:
    return float(img[:, W // 2 :].mean() * 255)


# ------------------------------------------------------------------ video


def test_video_info_and_sequential_reads(tmp_path: Path) -> None:
    video = make_video(tmp_path / "clip.mp4", 20, fps=25.0)
    with open_source(str(video)) as src:
        assert src.info.kind == "video"
        assert (src.info.width, src.info.height, src.info.count) == (W, H, 20)
        assert src.info.fps == pytest.approx(25.0)
        got = list(src.iter_frames(range(20)))
    assert [i for i, _ in got] == list(range(20))
    for k, img in got:
        assert img.shape == (H, W, 3) and img.dtype == np.float32
        assert _brightness(img) == pytest.approx((k * 4) % 256, abs=6)


def test_video_random_access_matches_sequential(tmp_path: Path) -> None:
    n = 120  # long enough that a far jump seeks instead of decoding forward
    video = make_video(tmp_path / "clip.mp4", n)
    with open_source(video) as src:
        reference = {k: img for k, img in src.iter_frames(range(n))}
    order = [119, 3, 2, 60, 61, 0, 110, 57, 118, 4, 4]
    with open_source(video) as src:
        for k in order:
            np.testing.assert_array_equal(src.read(k), reference[k], err_msg=f"frame {k}")
        with pytest.raises(InputError, match="outside"):
            src.read(n)


def test_video_with_lying_frame_count(tmp_path: Path) -> None:
    whole = make_video(tmp_path / "whole.mkv", 30).read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(whole[: len(whole) // 2])  # header still says 30 frames
    with open_source(cut) as src:
        assert src.info.count == 30
        with pytest.raises(InputError, match="truncated"):
            for _ in src.iter_frames(range(src.info.count)):
                pass


def test_corrupt_and_missing_inputs(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(InputError, match="could not decode .*ffmpeg"):
        open_source(junk)
    with pytest.raises(InputError, match="does not exist"):
        open_source(tmp_path / "missing.mp4")


needs_ffmpeg = pytest.mark.skipif(ffmpeg_exe() is None, reason="no ffmpeg")


def _ffmpeg(*args: str) -> None:
    exe = ffmpeg_exe()
    assert exe is not None
    subprocess.run([exe, "-v", "error", "-y", *args], check=True)


# (Kr, Kb) of the two YCbCr matrices (ITU-R BT.709 and BT.601).
_LUMA = {"bt709": (0.2126, 0.0722), "bt601": (0.299, 0.114)}


def _to_ycbcr(rgb: np.ndarray, matrix: str, full: bool) -> np.ndarray:
    """8-bit R'G'B' -> 8-bit Y'CbCr code values (limited range 16-235/240, or full 0-255)."""
    kr, kb = _LUMA[matrix]
    r, g, b = np.asarray(rgb, np.float64) / 255
    y = kr * r + (1 - kr - kb) * g + kb * b
    cb, cr = (b - y) / (2 - 2 * kb), (r - y) / (2 - 2 * kr)
    return np.array([255 * y, 128 + 255 * cb, 128 + 255 * cr] if full else [16 + 219 * y, 128 + 224 * cb, 128 + 224 * cr])


def _to_rgb(ycc: np.ndarray, matrix: str, full: bool) -> np.ndarray:
    """The inverse of ``_to_ycbcr``."""
    kr, kb = _LUMA[matrix]
    y, cb, cr = (ycc - [0, 128, 128]) / 255 if full else (ycc - [16, 128, 128]) / [219, 224, 224]
    r, b = y + (2 - 2 * kr) * cr, y + (2 - 2 * kb) * cb
    return 255 * np.array([r, (y - kr * r - kb * b) / (1 - kr - kb), b])


_LEFT, _RIGHT = (200, 60, 30), (40, 200, 60)  # saturated, so the matrices disagree by far


def _two_colour_clip(path: Path, size: tuple[int, int], matrix: str, full: bool, tagged: bool) -> Path:
    """3 frames, left half ``_LEFT`` and right half ``_RIGHT``, H.264 yuv420p made with ``matrix``."""
    w, h = size
    rng = "pc" if full else "tv"
    halves = ";".join(
        f"color=c=0x{r:02X}{g:02X}{b:02X}:s={w // 2}x{h}:r=24,format=rgb24[c{i}]"
        for i, (r, g, b) in enumerate((_LEFT, _RIGHT))
    )
    graph = f"{halves};[c0][c1]hstack,scale=out_color_matrix={matrix}:out_range={rng},format=yuv420p"
    if tagged:
        tag = {"bt709": "bt709", "bt601": "smpte170m"}[matrix]
        tags = ["-colorspace", tag, "-color_primaries", tag, "-color_trc", tag, "-color_range", rng]
    else:  # newer ffmpeg tags what scale= converted: clear it again
        graph += ",setparams=range=unknown:color_primaries=unknown:color_trc=unknown:colorspace=unknown"
        tags = []
    _ffmpeg("-filter_complex", graph + "[v]", "-map", "[v]", "-frames:v", "3", *tags,
            "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", str(path))
    return path


@needs_ffmpeg
@pytest.mark.parametrize(
    ("size", "matrix", "full", "tagged"),
    [
        ((64, 48), "bt709", False, True),  # the tag wins over the SD size
        ((64, 48), "bt601", False, True),
        ((64, 48), "bt709", True, True),
        ((64, 48), "bt601", False, False),  # untagged SD: BT.601
        ((1280, 720), "bt709", False, False),  # untagged HD: BT.709
    ],
    ids=["bt709-tagged", "bt601-tagged", "bt709-full-range", "sd-untagged", "hd-untagged"],
)
def test_video_colours_follow_the_stream_matrix(
    tmp_path: Path, size: tuple[int, int], matrix: str, full: bool, tagged: bool
) -> None:
    clip = _two_colour_clip(tmp_path / "flat.mp4", size, matrix, full, tagged)
    other = "bt601" if matrix == "bt709" else "bt709"
    w, h = size
    with open_source(clip) as src:
        assert src.info.count == 3
        for true, columns in ((_LEFT, slice(4, w // 2 - 4)), (_RIGHT, slice(w // 2 + 4, w - 4))):
            ycc = _to_ycbcr(np.array(true), matrix, full)
            # The test can tell: the wrong matrix or range would be more than 10 levels off.
            assert np.abs(_to_rgb(ycc, other, full) - true).max() > 10
            assert np.abs(_to_rgb(ycc, matrix, not full) - true).max() > 10
            for k in (0, 2):
                got = src.read(k)[4 : h - 4, columns] * 255
                assert np.abs(got - true).max() <= 3, f"frame {k}: {got.mean(axis=(0, 1))} != {true}"


def test_ycbcr_formulas_round_trip() -> None:
    # Guards the reference formulas above: known BT.709 and BT.601 code values of pure red.
    np.testing.assert_allclose(_to_ycbcr(np.array([255, 0, 0]), "bt709", False), [62.56, 102.34, 240], atol=0.01)
    np.testing.assert_allclose(_to_ycbcr(np.array([255, 0, 0]), "bt601", False), [81.48, 90.20, 240], atol=0.01)
    for matrix, full in (("bt709", False), ("bt601", True)):
        np.testing.assert_allclose(_to_rgb(_to_ycbcr(np.array(_LEFT), matrix, full), matrix, full), _LEFT)


def _assert_random_access_matches_sequential(path: Path, order: list[int]) -> None:
    with open_source(path) as src:
        reference = dict(src.iter_frames(range(src.info.count)))
    with open_source(path) as src:
        for k in order:
            np.testing.assert_array_equal(src.read(k), reference[k], err_msg=f"frame {k} of {path.name}")


_JUMPS = [95, 0, 50, 49, 1, 94, 2, 80, 79, 30, 40, 93, 3, 60]  # far and near, back and forth


@pytest.mark.skipif(not (SAMPLES / "bunny_96f_320x180.mp4").exists(), reason="samples not present")
def test_sample_random_access_matches_sequential() -> None:
    # H.264 with B-frames: every seek must land on the very frame a sequential decode gives.
    _assert_random_access_matches_sequential(SAMPLES / "bunny_96f_320x180.mp4", _JUMPS)


@needs_ffmpeg
@pytest.mark.parametrize(
    ("name", "codec"),
    [
        # Open GOP: frames shown before a keyframe are decoded after it, from the GOP before.
        ("open_gop.mp4", ["-c:v", "libx265", "-x265-params",
                          "log-level=error:keyint=16:min-keyint=16:open-gop=1:bframes=8:b-adapt=0"]),
        ("stream.h264", ["-c:v", "libx264", "-g", "20", "-f", "h264"]),  # no index and no frame count
        ("stream.ts", ["-c:v", "libx264", "-g", "20", "-f", "mpegts"]),  # no index: never seeks
        # Variable frame rate: a frame's time does not give its number.
        ("vfr.mp4", ["-vf", "setpts='(N+floor(N/10))/(24*TB)'", "-fps_mode", "vfr", "-c:v", "libx264"]),
    ],
    ids=["hevc-open-gop", "raw-h264", "mpeg-ts", "variable-rate"],
)
def test_hard_to_seek_videos_read_like_sequential(tmp_path: Path, name: str, codec: list[str]) -> None:
    path = tmp_path / name
    try:
        _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=24", "-frames:v", "96", "-pix_fmt", "yuv420p",
                *codec, str(path))
    except subprocess.CalledProcessError:
        pytest.skip(f"this ffmpeg cannot write {name}")
    with open_source(path) as src:
        assert src.info.count == 96
    _assert_random_access_matches_sequential(path, _JUMPS)


@needs_ffmpeg
def test_video_rotation_is_applied(tmp_path: Path) -> None:
    rotated = tmp_path / "portrait.mp4"
    try:
        _ffmpeg("-display_rotation", "90", "-i", str(make_video(tmp_path / "v.mp4", 3)), "-c", "copy", str(rotated))
    except subprocess.CalledProcessError:
        pytest.skip("this ffmpeg has no -display_rotation")
    with open_source(rotated) as src:  # as Blender shows it: turned a quarter, W and H swapped
        assert (src.info.width, src.info.height) == (H, W)
        img = src.read(1)
    # The green-free half of frame 1 was on the right; a quarter turn puts it at the top or bottom.
    rows = img[:, :, 1].mean(axis=1) * 255
    assert abs(rows[: W // 2].mean() - rows[W // 2 :].mean()) > 100


@needs_ffmpeg
def test_decoder_processes_are_reaped(tmp_path: Path) -> None:
    video = make_video(tmp_path / "clip.mp4", 120)
    src = open_source(video)
    src.read(60)
    first = src._decoder._pipe._proc  # type: ignore[attr-defined]
    src.read(1)  # a jump back replaces the ffmpeg process
    second = src._decoder._pipe._proc  # type: ignore[attr-defined]
    assert second is not first and first.returncode is not None  # killed and waited for: no zombie
    src.close()
    assert second.returncode is not None
    with open_source(video) as src:
        src.read(119)  # reading the last frame ends ffmpeg at once
        assert src._decoder._pipe is None  # type: ignore[attr-defined]
    # A source dropped without close() takes its ffmpeg with it.
    src = open_source(video)
    src.read(0)
    third = src._decoder._pipe._proc  # type: ignore[attr-defined]
    del src
    gc.collect()
    assert third.returncode is not None


def test_video_without_ffmpeg_falls_back_to_opencv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decoders, "ffmpeg_exe", lambda: None)
    monkeypatch.setattr(decoders, "_warned_opencv", False)
    video = make_video(tmp_path / "clip.mp4", 60)
    with pytest.warns(UserWarning, match="ffmpeg not found") as record:
        for _ in range(2):
            with open_source(video) as src:
                assert (src.info.count, src.info.width, src.info.height) == (60, W, H)
                for k in (3, 2, 59, 0):
                    assert _brightness(src.read(k)) == pytest.approx((k * 4) % 256, abs=6)
    assert len([w for w in record if "ffmpeg not found" in str(w.message)]) == 1  # warned once


# ------------------------------------------------------------------ image sequences


def _write_png(path: Path, value: float, size: tuple[int, int] = (W, H)) -> None:
    save_image(path, np.full((size[1], size[0], 3), value, np.float32))


def test_folder_is_sorted_naturally_and_skips_other_files(tmp_path: Path) -> None:
    for number, value in [(10, 0.3), (2, 0.2), (1, 0.1)]:
        _write_png(tmp_path / f"frame{number}.png", value)
    (tmp_path / "notes.txt").write_text("not a frame")
    _write_png(tmp_path / ".frame_000004.png.x.tmp.png", 0.9)  # a half-written temp file
    with open_source(tmp_path) as src:
        assert src.info.kind == "folder" and src.info.count == 3
        assert src.info.fps == DEFAULT_SEQUENCE_FPS
        values = [round(float(img.mean()), 1) for _, img in src.iter_frames(range(3))]
    assert values == [0.1, 0.2, 0.3]
    assert sorted(["f10", "f2", "F1"], key=natural_key) == ["F1", "f2", "f10"]


def test_folder_read_and_iter_agree_in_any_order(tmp_path: Path) -> None:
    for k in range(5):
        _write_png(tmp_path / f"{k:03d}.jpg", k / 5)
    with open_source(tmp_path, fps=30) as src:
        assert src.info.fps == 30.0
        seq = dict(src.iter_frames(range(5)))
        for k in [4, 0, 2, 2, 1]:
            np.testing.assert_array_equal(src.read(k), seq[k])


@pytest.mark.parametrize("pattern", ["frame_%04d.png", "frame_####.png"])
def test_pattern_starts_at_first_existing_number(tmp_path: Path, pattern: str) -> None:
    for number in (5, 6, 7, 8):
        _write_png(tmp_path / f"frame_{number:04d}.png", number / 10)
    _write_png(tmp_path / "frame_05.png", 0.0)  # wrong padding: not part of the sequence
    with open_source(str(tmp_path / pattern)) as src:
        assert src.info.kind == "pattern" and src.info.count == 4
        assert [round(float(img.mean()), 1) for _, img in src.iter_frames(range(4))] == [0.5, 0.6, 0.7, 0.8]
    with pytest.raises(InputError, match="no file matches"):
        open_source(str(tmp_path / "other_%04d.png"))


def test_single_image(tmp_path: Path) -> None:
    _write_png(tmp_path / "still.png", 0.4)
    with open_source(tmp_path / "still.png") as src:
        assert src.info.kind == "image" and src.info.count == 1
        assert src.read(0).mean() == pytest.approx(0.4, abs=1 / 255)


def test_bad_folders(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="is empty"):
        open_source(empty)
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "a.txt").write_text("x")
    with pytest.raises(InputError, match="holds no images"):
        open_source(texts)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    _write_png(mixed / "a1.png", 0.1)
    _write_png(mixed / "a2.png", 0.1, size=(W * 2, H))
    with open_source(mixed) as src, pytest.raises(InputError, match="one size"):
        src.read(1)


# ------------------------------------------------------------------ ranges


def test_parse_and_resolve_frame_ranges() -> None:
    assert parse_frame_range("10:20") == (10, 20)
    assert parse_frame_range(" 5 : ") == (5, -1)
    assert resolve_range((10, 20), 100) == range(10, 20)
    assert resolve_range((5, -1), 12) == range(5, 12)
    assert resolve_range((5, 500), 12) == range(5, 12)
    assert resolve_range(None, 3) == range(3)
    with pytest.raises(InputError, match="10:10 selects no frame"):
        parse_frame_range("10:10")
    with pytest.raises(InputError, match="selects no frame"):
        parse_frame_range("9:3")
    for bad in ("", "abc", "-1:3", "3", "1:2:3"):
        with pytest.raises(InputError, match="START:END"):
            parse_frame_range(bad)
    with pytest.raises(InputError, match="after the last frame"):
        resolve_range((12, -1), 12)


# ------------------------------------------------------------------ encoding


def _png_frames(folder: Path, n: int, size: tuple[int, int]) -> list[Path]:
    folder.mkdir(exist_ok=True)
    paths = []
    for k in range(n):
        path = folder / f"frame_{k + 1:06d}.png"
        _write_png(path, k / n, size)
        paths.append(path)
    return paths


@needs_ffmpeg
def test_encode_video_odd_size_count_and_progress(tmp_path: Path) -> None:
    paths = _png_frames(tmp_path / "f", 10, (33, 25))
    seen: list[tuple[int, int]] = []
    out = tmp_path / "out" / "video.mp4"
    encode_video(paths, out, 24.0, progress=lambda d, t: seen.append((d, t)))
    assert read_back(out) == (10, 34, 26)  # padded to even sides for yuv420p
    assert seen == [(k, 10) for k in range(1, 11)]
    assert sorted(p.name for p in out.parent.iterdir()) == ["video.mp4"]
    assert not has_audio(out)
    # A pattern names the same frames.
    encode_video(str(tmp_path / "f" / "frame_%06d.png"), tmp_path / "p.mp4", 12.0)
    assert read_back(tmp_path / "p.mp4")[0] == 10


@needs_ffmpeg
def test_encode_video_keeps_trimmed_audio(tmp_path: Path) -> None:
    source = write_video_with_sound(tmp_path / "with_sound.mp4")
    assert has_audio(source)
    paths = _png_frames(tmp_path / "f", 12, (64, 48))
    out = tmp_path / "styled.mp4"
    encode_video(paths, out, 24.0, audio_from=str(source), audio_start=1.0)
    assert has_audio(out)
    assert read_back(out)[0] == 12
    # 12 frames at 24 fps: half a second of the source's sound, not all two seconds.
    assert stream_duration(out, "Audio") == pytest.approx(0.5, abs=0.06)
    # A source without audio gives a silent video rather than an error.
    silent = tmp_path / "silent.mp4"
    encode_video(paths, silent, 24.0, audio_from=str(out.with_name("nothing.mp4")))
    assert not has_audio(silent)


def test_encode_video_without_ffmpeg_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(encode, "ffmpeg_exe", lambda: None)
    paths = _png_frames(tmp_path / "f", 6, (32, 24))
    out = tmp_path / "fallback.mp4"
    with pytest.warns(UserWarning, match="ffmpeg not found"):
        encode_video(paths, out, 24.0)
    assert read_back(out) == (6, 32, 24)


@needs_ffmpeg
def test_encode_failure_leaves_nothing(tmp_path: Path) -> None:
    paths = _png_frames(tmp_path / "f", 4, (32, 24))
    paths[2].unlink()
    out = tmp_path / "o" / "video.mp4"
    with pytest.raises(InputError, match="frame_000003.png"):
        encode_video(paths, out, 24.0)
    assert list(out.parent.iterdir()) == []
    with pytest.raises(InputError, match="no frames"):
        encode_video([], out, 24.0)


def test_read_back_helper_sees_frames(tmp_path: Path) -> None:
    # Guards the helper the encoding tests rely on.
    assert read_back(make_video(tmp_path / "v.mp4", 7)) == (7, W, H)


@pytest.mark.skipif(not (SAMPLES / "bunny_96f_320x180.mp4").exists(), reason="samples not present")
def test_bundled_samples_are_as_documented() -> None:
    with open_source(SAMPLES / "bunny_96f_320x180.mp4") as src:
        assert (src.info.width, src.info.height, src.info.count, src.info.fps) == (320, 180, 96, 24.0)
        diffs = {}
        prev = None
        for k, img in src.iter_frames(range(76, 85)):
            if prev is not None:
                diffs[k] = float(np.abs(img - prev).mean())
            prev = img
    # samples/README.md promises one hard cut, at frame 80.
    assert max(diffs, key=diffs.get) == 80
    assert diffs[80] > 10 * max(v for k, v in diffs.items() if k != 80)
    with open_source(SAMPLES / "style_clip.mp4") as src:
        assert (src.info.count, src.info.fps) == (48, 12.0)
        # H.264 with B-frames: a seek must land on the very frame a sequential decode gives.
        reference = dict(src.iter_frames(range(48)))
    with open_source(SAMPLES / "style_clip.mp4") as src:
        for k in (47, 1, 30, 29, 0, 46):
            np.testing.assert_array_equal(src.read(k), reference[k], err_msg=f"frame {k}")
    for name in ("starry_night_512.jpg", "the_scream_512.jpg"):
        with open_source(SAMPLES / name) as src:
            assert max(src.info.width, src.info.height) == 512
