"""The ``stylecore`` command: bad input gives one clear line and a non-zero exit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import pan_frames, write_png_folder, write_video
from stylecore.cli.main import main


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 1
    assert len(lines) == 1, err
    assert lines[0].startswith("stylecore: error: ")
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


OPT = ["--loss-net", "random-vgg19", "--first-iterations", "2", "--iterations", "1", "--quiet"]


def test_missing_content(tmp_path: Path, capsys, style_png: Path) -> None:
    code, _, err = run_cli(capsys, "stylize", str(tmp_path / "nope.mp4"), "--style", str(style_png),
                           "-o", str(tmp_path / "out"), *OPT)
    assert_one_line_error(code, err, "nope.mp4")


def test_unreadable_video(tmp_path: Path, capsys, style_png: Path) -> None:
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x01 this is not a video" * 50)
    code, _, err = run_cli(capsys, "stylize", str(bad), "--style", str(style_png), "-o", str(tmp_path / "o"), *OPT)
    assert_one_line_error(code, err, "broken.mp4")


def test_empty_folder(tmp_path: Path, capsys, style_png: Path) -> None:
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, "stylize", str(tmp_path / "empty"), "--style", str(style_png),
                           "-o", str(tmp_path / "o"), *OPT)
    assert_one_line_error(code, err, "empty")


def test_style_missing(tmp_path: Path, capsys, pan_folder: Path) -> None:
    code, _, err = run_cli(capsys, "stylize", str(pan_folder), "--style", str(tmp_path / "gone.jpg"),
                           "-o", str(tmp_path / "o"), *OPT)
    assert_one_line_error(code, err, "gone.jpg")


def test_zero_length_range(tmp_path: Path, capsys, pan_folder: Path, style_png: Path) -> None:
    code, _, err = run_cli(capsys, "stylize", str(pan_folder), "--style", str(style_png), "--frames", "3:3",
                           "-o", str(tmp_path / "o"), *OPT)
    assert_one_line_error(code, err, "3:3")


def test_weights_missing_offline(tmp_path: Path, capsys, monkeypatch, pan_folder: Path, style_png: Path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("STYLECORE_OFFLINE", "1")
    monkeypatch.delenv("STYLECORE_VGG_WEIGHTS", raising=False)
    monkeypatch.delenv("STYLECORE_HED_WEIGHTS", raising=False)
    from stylecore.nets import hed

    monkeypatch.setattr(hed, "installed_h5", lambda: None)
    code, _, err = run_cli(capsys, "stylize", str(pan_folder), "--style", str(style_png), "-o", str(tmp_path / "o"),
                           "--first-iterations", "2", "--quiet")
    # The default network (auto) finds none: the line names both ways to get one, in flags.
    assert_one_line_error(code, err, "stylecore weights get hed-vgg16", "--vgg-weights", "--loss-net random-vgg19")
    assert "`" not in err
    # Nothing was created: the corrected command starts clean.
    assert not (tmp_path / "o").exists()


def test_stylize_writes_frames_and_resumes(tmp_path: Path, capsys, style_png: Path) -> None:
    clip = write_video(tmp_path / "clip.mp4", pan_frames(3))
    out = tmp_path / "out"
    code, stdout, _ = run_cli(capsys, "stylize", str(clip), "--style", str(style_png), "-o", str(out), *OPT)
    assert code == 0 and "3 frames" in stdout
    assert sorted(p.name for p in out.glob("frame_*.png")) == [f"frame_{n:06d}.png" for n in (1, 2, 3)]
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("frame_*.png")}
    code, _, _ = run_cli(capsys, "stylize", str(clip), "--style", str(style_png), "-o", str(out), *OPT)
    assert code == 0
    assert before == {p.name: p.stat().st_mtime_ns for p in out.glob("frame_*.png")}


def test_style_weight_schedule_file(tmp_path: Path, capsys, style_png: Path) -> None:
    from stylecore.cli.stylize import job_from_args
    from stylecore.cli.main import build_parser

    folder = write_png_folder(tmp_path / "pan", pan_frames(4))
    schedule = tmp_path / "weights.json"
    schedule.write_text('{"1": 0.0, "4": 3.0}')
    args = build_parser().parse_args(["stylize", str(folder), "--style", f"{style_png}:0.5", "--style-weight",
                                      str(schedule), "-o", str(tmp_path / "o")])
    spec = job_from_args(args)
    assert spec.style_weights == pytest.approx((0.0, 1.0, 2.0, 3.0))
    assert spec.styles == ((str(style_png), 0.5),)
    assert spec.mode == "optimization"


def test_help_teaches_every_option() -> None:
    text = subprocess.run([sys.executable, "-m", "stylecore", "stylize", "--help"], capture_output=True,
                          text=True, check=True).stdout
    for option in ("--style", "--style-video", "--output", "--mode", "--size", "--frames", "--iterations",
                   "--first-iterations", "--style-weight", "--temporal-weight", "--preserve-colors",
                   "--loss-net", "--device", "--seed", "auto", "hed-vgg16", "random-vgg19", "LOW QUALITY"):
        assert option in text, option


@pytest.mark.parametrize("command", [[], ["stylize"], ["evaluate"], ["weights"], ["export"]])
def test_help_answers_without_loading_torch_or_opencv(command: list[str]) -> None:
    # Heavy imports happen where a command runs, so '--help' answers at once.
    code = ("import sys, contextlib, io\nfrom stylecore.cli.main import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    try: main({command + ['--help']!r})\n    except SystemExit: pass\n"
            "print(sorted(m for m in ('torch', 'cv2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_python_api_names_arguments_and_the_cli_names_flags(tmp_path: Path, capsys, pan_folder: Path) -> None:
    import stylecore
    from stylecore.errors import InputError

    with pytest.raises(InputError) as info:
        stylecore.stylize(str(pan_folder), str(tmp_path / "py"), size=8)
    assert "`size` 8" in str(info.value) and "--size" not in str(info.value)
    code, _, err = run_cli(capsys, "stylize", str(pan_folder), "-o", str(tmp_path / "cli"), "--size", "8")
    assert_one_line_error(code, err, "--size 8 is too small")
    assert "`" not in err


@pytest.mark.parametrize(
    "option, needle",
    [
        (["--tile", "-5"], "--tile -5 must be at least 0"),
        (["--style-scale", "0"], "--style-scale 0 must be > 0"),
        (["--content-weight", "nan"], "--content-weight must be a finite number"),
        (["--temporal-weight", "inf"], "--temporal-weight must be a finite number"),
        (["--style-rate", "nan"], "--style-rate must be a finite number"),
    ],
)
def test_bad_numbers_are_one_line(tmp_path: Path, capsys, pan_folder: Path, style_png: Path,
                                  option: list[str], needle: str) -> None:
    code, _, err = run_cli(capsys, "stylize", str(pan_folder), "--style", str(style_png), "-o", str(tmp_path / "o"),
                           *OPT, *option)
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "o").exists()


def test_a_gif_output_lists_the_video_formats(tmp_path: Path, capsys, pan_folder: Path, style_png: Path) -> None:
    code, _, err = run_cli(capsys, "stylize", str(pan_folder), "--style", str(style_png),
                           "-o", str(tmp_path / "result.gif"), *OPT)
    assert_one_line_error(code, err, ".gif", ".m4v", ".mp4", "--output")
    assert not (tmp_path / "result.gif").exists()
    text = subprocess.run([sys.executable, "-m", "stylecore", "stylize", "--help"], capture_output=True,
                          text=True, check=True).stdout
    assert ".m4v" in text


def test_the_schedule_file_is_never_the_output(tmp_path: Path, capsys, pan_folder: Path, style_png: Path) -> None:
    video_schedule = tmp_path / "w.mp4"
    video_schedule.write_text("1,1.0\n")
    code, _, err = run_cli(capsys, "stylize", str(pan_folder), "--style", str(style_png), "--style-weight",
                           str(video_schedule), "-o", str(video_schedule), *OPT, "--overwrite")
    assert_one_line_error(code, err, "would overwrite the style-weight schedule")
    assert video_schedule.read_text() == "1,1.0\n"


def test_two_runs_to_one_video_the_second_says_so(tmp_path: Path, capsys, pan_folder: Path, style_png: Path) -> None:
    """While a run works on out.mp4 (here: another process holding its job folder), a second
    run to the same video stops with one line naming the first, and touches nothing."""
    code = ("import sys; from stylecore.jobdir import JobDir\n"
            f"job = JobDir({str(tmp_path / 'out.stylecore-frames')!r}, {{'other': 1}})\n"
            "print('held', flush=True); sys.stdin.readline(); job.close()")
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        for extra in ([], ["--overwrite"]):
            status, _, err = run_cli(capsys, "stylize", str(pan_folder), "--style", str(style_png),
                                     "-o", str(tmp_path / "out.mp4"), *OPT, *extra)
            assert_one_line_error(status, err, "in use by another stylecore run", f"process {holder.pid}")
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait(timeout=60)
    assert not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize(("flags", "expected"), [([], None), (["--compile"], True), (["--compile", "on"], True),
                                                 (["--compile", "off"], False), (["--compile", "auto"], None)])
def test_compile_is_automatic_unless_set(tmp_path: Path, flags: list[str], expected: bool | None) -> None:
    """No flag lets a feedforward job decide (compile when the clip repays it); the flag
    alone still forces it, and `off` keeps a job eager."""
    import argparse

    from stylecore.cli.stylize import job_from_args, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    clip = tmp_path / "clip.mp4"
    args = parser.parse_args(["stylize", str(clip), "-o", str(tmp_path / "out"), *flags])
    assert job_from_args(args).compile is expected
    # --bf16 reads the same way
    bf16_flags = [flag.replace("--compile", "--bf16") for flag in flags]
    args = parser.parse_args(["stylize", str(clip), "-o", str(tmp_path / "out"), "--style", "s.jpg", *bf16_flags])
    assert job_from_args(args).bf16 is expected
