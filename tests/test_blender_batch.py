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


def batch(*args: str, timeout: float = 600, cwd: Path = bh.REPO) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, STYLECORE_WORKER_PYTHON=str(WORKER or ""), PYTHONPATH=str(bh.REPO))
    return subprocess.run([sys.executable, "-m", "blender_addon.batch", *args], cwd=cwd, env=env,
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


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sys.path.insert(0, str(bh.REPO / "tools"))
    import build_extension

    return build_extension.build(tmp_path_factory.mktemp("dist"))


def bare_python(folder: Path) -> Path:
    """A Python without stylecore (a fresh venv), like a wrongly chosen Worker Python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=120)
    return folder / "bin" / "python"


@pytest.mark.slow
@pytest.mark.skipif(WORKER is None, reason="no Python with stylecore: set STYLECORE_WORKER_PYTHON")
def test_batch_uses_the_worker_python_saved_in_the_installed_extension(edit_blend: Path, tmp_path: Path,
                                                                       archive: Path) -> None:
    marker = tmp_path / "used"
    wrapper = tmp_path / "worker-python"
    wrapper.write_text(f'#!/bin/sh\ntouch "{marker}"\nexec "{WORKER}" "$@"\n')
    wrapper.chmod(0o755)
    env = bh.install_extension(archive, tmp_path / "blender-user", worker_python=str(wrapper))
    env.pop("STYLECORE_WORKER_PYTHON", None)
    done = subprocess.run([sys.executable, "-m", "blender_addon.batch", str(edit_blend), "--job-options", FAST],
                          cwd=bh.REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Clip: 8/8 frames" in done.stdout
    assert marker.exists(), "the Worker Python saved in the preferences was not used"


def test_batch_refuses_to_render_a_strip_it_could_not_stylize(edit_blend: Path, tmp_path: Path) -> None:
    python = bare_python(tmp_path / "bare")
    out = tmp_path / "out.mp4"
    # Run outside the checkout: there "python -m stylecore.worker" would find its stylecore folder.
    done = batch(str(edit_blend), "--worker-python", str(python), "--render", str(out), "--job-options", FAST,
                 cwd=tmp_path)
    assert done.returncode == 1
    # A Worker Python without stylecore gets the documented message, not a raw import error.
    assert f"stylecore is not installed for the worker Python {python}" in done.stderr
    assert "not rendering: the stylized result of 'Clip' is missing or out of date" in done.stderr
    assert "--allow-stale" in done.stderr and not out.exists()
    anyway = batch(str(edit_blend), "--worker-python", str(python), "--render", str(out), "--job-options", FAST,
                   "--allow-stale", cwd=tmp_path)
    assert anyway.returncode == 1 and out.is_file()
    assert "warning: rendering with the missing or out-of-date stylized result of 'Clip'" in anyway.stderr


def test_headless_setup_message_names_the_flag_and_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from blender_addon.environment import SetupError, resolve_worker_python

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)  # no stylecore in this Python
    with pytest.raises(SetupError) as headless:
        resolve_worker_python("", env={}, headless=True)
    assert "--worker-python" in str(headless.value) and "STYLECORE_WORKER_PYTHON" in str(headless.value)
    assert "Edit > Preferences" not in str(headless.value)
    with pytest.raises(SetupError, match="Edit > Preferences"):
        resolve_worker_python("", env={})


@pytest.mark.slow
@pytest.mark.skipif(WORKER is None, reason="no Python with stylecore: set STYLECORE_WORKER_PYTHON")
def test_ctrl_c_in_a_headless_batch_cancels_and_keeps_whole_frames(tmp_path: Path) -> None:
    import signal

    scene = bh.fresh_scene(tmp_path)
    scene.frame_end = 24
    strip = bh.add_movie(scene, bh.make_movie(tmp_path / "long.mp4", 24))
    bh.optimization_settings(strip, tmp_path / "long_src" / "f3.png")
    props.strip_settings(strip).batch = True
    blend = tmp_path / "long.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    slow = json.dumps({**bh.FAST_JOB, "first_iterations": 30})
    env = dict(os.environ, STYLECORE_WORKER_PYTHON=str(WORKER), PYTHONUNBUFFERED="1")
    # Its own session, as a shell runs a foreground job: Ctrl+C goes to the whole group. A
    # foreground job takes SIGINT's default action even when these tests run in the
    # background (where the shell hands its children SIGINT ignored, and Python then
    # installs no KeyboardInterrupt handler).
    proc = subprocess.Popen([sys.executable, "-m", "blender_addon.batch", str(blend), "--render",
                             str(tmp_path / "out.mp4"), "--job-options", slow, "--worker-python", str(WORKER)],
                            cwd=bh.REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = []
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("Clip: 1/24 frames"):
            break
    os.killpg(proc.pid, signal.SIGINT)
    rest, err = proc.communicate(timeout=600)
    output = "".join(seen) + rest + err
    assert proc.returncode == 130, output[-3000:]
    assert "cancelled (Ctrl+C): whole frames are kept" in err
    assert "could not decode" not in output and "truncated" not in output
    frames = list((tmp_path / "stylized").glob("Clip-*/job-*/frame_*.png"))
    assert 1 <= len(frames) < 24 and all(bh.png_is_whole(f) for f in frames)
    assert not (tmp_path / "out.mp4").exists()
