"""The headless batch command: stylize stale strips of a .blend, render the sequencer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import blender_helpers as bh
import pytest

bpy = pytest.importorskip("bpy")

from blender_addon import props, vse  # noqa: E402

WORKER = bh.worker_python()
FAST = json.dumps(bh.FAST_JOB)


def batch(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, STYLECORE_WORKER_PYTHON=str(WORKER or ""))
    return subprocess.run([sys.executable, "-m", "blender_addon.batch", *args], cwd=bh.REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def frame_count(video: Path) -> int:
    """Frames in ``video`` as Blender reads them."""
    scene = bpy.data.scenes.new("count")
    try:
        strip = vse.children(scene.sequence_editor_create()).new_movie("v", str(video), 1, 1)
        return int(strip.frame_duration)
    finally:
        bpy.data.scenes.remove(scene)


@pytest.fixture()
def edit_blend(tmp_path: Path) -> Path:
    """A saved edit: an 8-frame movie marked for stylization, not stylized yet."""
    scene = bh.fresh_scene(tmp_path)
    scene.frame_end = 8
    strip = bh.add_movie(scene, bh.make_movie(tmp_path / "clip.mp4", 8))
    bh.optimization_settings(strip, tmp_path / "clip_src" / "f3.png")
    props.strip_settings(strip).batch = True
    path = tmp_path / "edit.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    return path


@pytest.mark.slow
@pytest.mark.skipif(WORKER is None, reason="no Python with stylecore: set STYLECORE_WORKER_PYTHON")
def test_batch_stylizes_stale_strips_then_renders_a_video(edit_blend: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    done = batch(str(edit_blend), "--stylize", "stale", "--render", str(out), "--job-options", FAST, "--save")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "stylizing 1 of 1 marked strip(s)" in done.stdout
    assert "Clip: 8/8 frames" in done.stdout and "rendered frame 8 (8/8)" in done.stdout
    assert frame_count(out) == 8
    assert len(list((tmp_path / "stylized").glob("Clip-*/job-*/frame_*.png"))) == 8  # //stylized/ beside the .blend

    again = batch(str(edit_blend), "--render", str(tmp_path / "frames"), "--frames", "3:5", "--job-options", FAST)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "Clip: up to date" in again.stdout and "stylizing 0 of 1" in again.stdout
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == ["frame_0003.png", "frame_0004.png",
                                                                       "frame_0005.png"]


def test_batch_reports_a_missing_movie_and_exits_non_zero(edit_blend: Path, tmp_path: Path) -> None:
    (tmp_path / "clip.mp4").unlink()
    done = batch(str(edit_blend), "--stylize", "stale", "--job-options", FAST)
    assert done.returncode == 1
    assert "the movie of strip 'Clip' is missing" in done.stderr
    assert "Traceback" not in done.stderr


def test_batch_rejects_bad_arguments(edit_blend: Path, tmp_path: Path) -> None:
    assert batch(str(tmp_path / "nope.blend")).returncode == 2
    bad = batch(str(edit_blend), "--frames", "9:2")
    assert bad.returncode == 2 and "END must not be before START" in bad.stderr


def test_batch_runs_as_a_blender_script(edit_blend: Path, tmp_path: Path) -> None:
    """``blender -b edit.blend -P blender_addon/batch.py -- ...``, emulated with the bpy module."""
    out = tmp_path / "frames"
    script = bh.REPO / "blender_addon" / "batch.py"
    code = (
        "import bpy, runpy, sys\n"
        f"bpy.ops.wm.open_mainfile(filepath={str(edit_blend)!r})\n"
        f"sys.argv = ['blender', '-b', {str(edit_blend)!r}, '-P', {str(script)!r}, '--',"
        f" '--stylize', 'none', '--render', {str(out)!r}, '--frames', '1:2']\n"
        f"runpy.run_path({str(script)!r}, run_name='__main__')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["frame_0001.png", "frame_0002.png"]
    assert "rendered 2 frame(s)" in done.stdout
