"""End to end: the add-on drives the real stylecore worker from the bpy module.

The worker runs in its own interpreter ($STYLECORE_WORKER_PYTHON, or this one when
stylecore is importable here), exactly as in Blender. Jobs use an untrained feedforward
model, or a randomly initialised VGG with one optimisation step per frame at 32 px, so
they take seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import blender_helpers as bh
import pytest

bpy = pytest.importorskip("bpy")

from blender_addon import jobs, operators, props, vse  # noqa: E402
from blender_addon.session import StylizeSession  # noqa: E402

WORKER = bh.worker_python()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(WORKER is None, reason="no Python with stylecore: set STYLECORE_WORKER_PYTHON"),
]


@pytest.fixture(autouse=True)
def worker_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STYLECORE_WORKER_PYTHON", str(WORKER))


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("media")
    bh.fresh_scene(folder)
    style = folder / "style.png"
    import numpy as np

    stripes = np.zeros((32, 32, 4), np.float32)
    stripes[..., 3] = 1.0
    stripes[::4, :, 1] = 1.0  # green stripes: far from the red/blue content
    stripes[:, ::4, 2] = 1.0
    bh.save_png(style, stripes)
    return {"movie": bh.make_movie(folder / "clip.mp4", 8), "long": bh.make_movie(folder / "long.mp4", 24),
            "style": style, "model": bh.make_random_model(folder / "random.safetensors", str(WORKER))}


def job_file(folder: Path) -> dict:
    return json.loads((folder / "stylecore-job.json").read_text())


def test_stylize_makes_an_aligned_result_with_keyframed_weights_and_mix(media, tmp_path) -> None:
    scene = bh.fresh_scene(tmp_path)
    strip = bh.add_movie(scene, media["movie"], start=5)
    strip.frame_offset_start = 1  # shows frames 6..12 = source frames 1..7
    bh.feedforward_settings(strip, media["model"])
    name = props.STYLE_WEIGHT
    setattr(strip, name, 2.0)
    strip.keyframe_insert(name, frame=6)
    setattr(strip, name, 0.5)
    strip.keyframe_insert(name, frame=12)

    assert bpy.ops.sequencer.stylize() == {"FINISHED"}

    result = jobs.find_result(scene, strip)
    assert result is not None and result.channel == 2 and result.blend_type == "ALPHA_OVER"
    assert (result.frame_final_start, result.frame_final_end) == (6, 13)
    folder = Path(props.strip_settings(result).output_dir)
    frames = sorted(folder.glob("frame_*.png"))
    assert [f.name for f in frames] == [jobs.FRAME_NAME.format(k) for k in range(1, 8)]
    assert all(jobs.png_size(f) == (bh.W, bh.H) for f in frames)
    fingerprint = job_file(folder)["fingerprint"]
    assert fingerprint["frame_map"] == list(range(1, 8))
    curve = vse.fcurve(scene, strip.path_from_id(name))
    assert fingerprint["style_weights"] == pytest.approx([curve.evaluate(t) for t in range(6, 13)], abs=1e-5)
    assert fingerprint["style_weights"][0] == pytest.approx(2.0)
    assert fingerprint["style_weights"][-1] == pytest.approx(0.5)

    # Mix: with blend_alpha 0.5 the render lies halfway between original and stylized.
    result.blend_alpha = 0.0
    original = bh.render_frame(scene, 8, tmp_path / "a")
    result.blend_alpha = 1.0
    stylized = bh.render_frame(scene, 8, tmp_path / "b")
    result.blend_alpha = 0.5
    mixed = bh.render_frame(scene, 8, tmp_path / "c")
    differ = abs(stylized - original) > 0.1
    assert differ.mean() > 0.1, "the stylized frame should differ from the original"
    expected = (original + stylized) / 2
    assert abs(mixed - expected)[differ].max() < 3 / 255
    assert ((mixed > original.clip(max=stylized) - 1e-3) & (mixed < original.clip(min=stylized) + 1e-3)).all()


def test_cancel_then_rerun_resumes_with_whole_frames(media, tmp_path) -> None:
    scene = bh.fresh_scene(tmp_path)
    strip = bh.add_movie(scene, media["long"])
    bh.optimization_settings(strip, media["style"])
    settings = operators.settings_for(bpy.context)
    folder = jobs.plan_strip(scene, strip, settings).folder
    session = StylizeSession(scene.name, [strip.name], settings)
    deadline = time.monotonic() + 300
    while not session.step(wait=0.05):
        if len(list(folder.glob("frame_*.png"))) >= 2:
            session.cancel()
        assert time.monotonic() < deadline
    assert session.cancelled and not session.results
    assert any(m.level == "WARNING" and "stylize again to resume" in m.text for m in session.messages)
    kept = sorted(folder.glob("frame_*.png"))
    assert 2 <= len(kept) < 24
    assert all(bh.png_is_whole(f) for f in kept)
    # No half-written temp file; the hidden files left are the frames as made at the
    # processing size (the next frame starts from them), whole, one per frame kept.
    hidden = sorted(p for p in folder.iterdir() if p.name.startswith("."))
    assert [p.name for p in hidden] == [f".stylecore-work_{f.name[len('frame_'):]}" for f in kept]
    assert all(bh.png_is_whole(f) for f in hidden)
    stamps = {f.name: f.stat().st_mtime_ns for f in kept}
    assert jobs.find_result(scene, strip) is None

    assert bpy.ops.sequencer.stylize() == {"FINISHED"}
    assert jobs.find_result(scene, strip) is not None
    assert len(list(folder.glob("frame_*.png"))) == 24
    assert job_file(folder)["fingerprint"]["styles"] == [[str(media["style"]), 1.0]]
    assert {name: (folder / name).stat().st_mtime_ns for name in stamps} == stamps  # resumed, not redone
    assert not list(folder.glob(".stylecore-work_*"))  # needed only to go on


def test_a_crash_before_saving_the_strip_id_resumes_in_the_same_folder(media, tmp_path) -> None:
    """Blender killed after Stylize, the .blend saved before: the strip's id is lost, yet
    Stylize finds the frames already made for the same strip and job and keeps them."""
    scene = bh.fresh_scene(tmp_path)
    strip = bh.add_movie(scene, media["movie"])
    bh.feedforward_settings(strip, media["model"])
    assert bpy.ops.sequencer.stylize() == {"FINISHED"}
    folder = Path(props.strip_settings(jobs.find_result(scene, strip)).output_dir)
    frames = sorted(folder.glob("frame_*.png"))
    frames[-1].unlink()  # the frame in flight when Blender died
    stamps = {f.name: f.stat().st_mtime_ns for f in frames[:-1]}
    # What the file saved before the first Stylize holds: no id, no result strip.
    vse.children(scene.sequence_editor).remove(jobs.find_result(scene, strip))
    props.strip_settings(strip).uid = ""
    assert bpy.ops.sequencer.stylize() == {"FINISHED"}
    again = Path(props.strip_settings(jobs.find_result(scene, strip)).output_dir)
    assert again == folder and len(list(folder.parent.parent.iterdir())) == 1
    assert {name: (folder / name).stat().st_mtime_ns for name in stamps} == stamps  # kept, not recomputed
    assert (folder / frames[-1].name).is_file()
    assert props.strip_settings(strip).uid and folder.parent.name.endswith(props.strip_settings(strip).uid[:6])


def test_an_unsaved_files_results_move_beside_the_blend_when_it_is_saved(media, tmp_path) -> None:
    """Stylized before the first save: the frames go to this file's own temp folder, and
    saving moves them beside the .blend, with the result strip (in the saved file too)."""
    from blender_addon.environment import unsaved_root

    bh.fresh_scene(tmp_path)
    key = operators._UNSAVED_KEY
    scene = bh.fresh_scene(tmp_path)  # File > New: another unsaved file, another folder
    assert operators._UNSAVED_KEY != key
    props.preferences().property_unset("output_dir")  # the default, //stylized/
    strip = bh.add_movie(scene, media["movie"])
    bh.feedforward_settings(strip, media["model"])
    assert bpy.ops.sequencer.stylize() == {"FINISHED"}
    temp = Path(props.strip_settings(jobs.find_result(scene, strip)).output_dir)
    unsaved = unsaved_root(operators._UNSAVED_KEY)
    assert unsaved in temp.parents and len(list(temp.glob("frame_*.png"))) == 8
    stamps = {f.name: f.stat().st_mtime_ns for f in temp.glob("frame_*.png")}

    blend = tmp_path / "project" / "edit.blend"
    blend.parent.mkdir()
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))

    result = jobs.find_result(bpy.context.scene, strip)
    moved = Path(props.strip_settings(result).output_dir)
    assert moved == blend.parent / "stylized" / temp.relative_to(unsaved / "stylized")
    assert Path(bpy.path.abspath(result.directory)) == moved
    assert {f.name: f.stat().st_mtime_ns for f in moved.glob("frame_*.png")} == stamps
    assert not unsaved.exists(), "nothing of the unsaved file is left in the temp folder"
    # The saved file points there, and Stylize resumes there (nothing to redo).
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    scene = bpy.context.scene
    strip = vse.find_strip(scene, "Clip")
    assert Path(props.strip_settings(jobs.find_result(scene, strip)).output_dir) == moved
    vse.select_only(scene, strip)
    assert bpy.ops.sequencer.stylize() == {"FINISHED"}
    assert Path(props.strip_settings(jobs.find_result(scene, strip)).output_dir) == moved
    assert {f.name: f.stat().st_mtime_ns for f in moved.glob("frame_*.png")} == stamps


def test_meta_strip_is_rendered_through_blender_then_stylized(media, tmp_path) -> None:
    scene = bh.fresh_scene(tmp_path)
    meta = vse.children(scene.sequence_editor).new_meta("Meta", 1, 3)
    vse.children(meta).new_movie("Clip", str(media["movie"]), 1, 3)
    meta.frame_final_end = 3 + 8  # a new meta starts one frame long
    bh.feedforward_settings(meta, media["model"])
    vse.select_only(scene, meta)
    assert bpy.ops.sequencer.stylize() == {"FINISHED"}
    result = jobs.find_result(scene, meta)
    assert (result.frame_final_start, result.frame_final_duration) == (3, 8)
    rendered = sorted((Path(props.strip_settings(result).output_dir).parent / "render").glob("frame_*.png"))
    assert len(rendered) == 8


def test_preview_stylizes_only_the_current_frame(media, tmp_path) -> None:
    scene = bh.fresh_scene(tmp_path)
    strip = bh.add_movie(scene, media["movie"])
    bh.feedforward_settings(strip, media["model"])
    scene.frame_set(4)
    assert bpy.ops.sequencer.stylize(preview=True) == {"FINISHED"}
    image = props.scene_settings(scene).preview_image
    assert image is not None and tuple(image.size) == (bh.W, bh.H)
    folder = Path(image.filepath).parent
    assert [f.name for f in folder.glob("frame_*.png")] == ["frame_000001.png"]
    assert job_file(folder)["fingerprint"]["frame_map"] == [3]
    assert jobs.find_result(scene, strip) is None  # a preview makes no result strip


def _shipped_model_exists() -> bool:
    code = "from stylecore.catalog import default_model_path; print(default_model_path().is_file())"
    done = subprocess.run([str(WORKER), "-c", code], capture_output=True, text=True, timeout=300)
    return done.stdout.strip() == "True"


def test_defaults_need_no_settings(media, tmp_path) -> None:
    """With the shipped feedforward model, a fresh strip stylizes without touching a setting."""
    if not _shipped_model_exists():
        pytest.skip("stylecore ships no default model yet (stylecore/models/)")
    scene = bh.fresh_scene(tmp_path, job_options={})
    strip = bh.add_movie(scene, media["movie"])
    assert bpy.ops.sequencer.stylize() == {"FINISHED"}
    result = jobs.find_result(scene, strip)
    assert result is not None and result.frame_final_duration == 8
    assert job_file(Path(props.strip_settings(result).output_dir))["fingerprint"]["mode"] == "feedforward"


def test_worker_error_surfaces_as_a_readable_report(media, tmp_path) -> None:
    scene = bh.fresh_scene(tmp_path, job_options={"loss_net": "random-vgg19", "optimizer": "sgd"})
    strip = bh.add_movie(scene, media["movie"])
    bh.optimization_settings(strip, media["style"])
    with pytest.raises(RuntimeError, match="optimizer must be one of"):
        bpy.ops.sequencer.stylize()
    assert os.environ["STYLECORE_WORKER_PYTHON"] == str(WORKER)
