"""The add-on's sequencer side under the bpy module: frame maps, weights, result strips, reports.

No stylecore worker is needed here; the worker's finished frames are simulated where a
test needs them. Frame maps are checked against what Blender itself renders.
"""

from __future__ import annotations

from pathlib import Path

import blender_helpers as bh
import pytest

bpy = pytest.importorskip("bpy")

from blender_addon import jobs, operators, props, vse  # noqa: E402


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("media")
    bh.fresh_scene(folder)
    return {"movie": bh.make_movie(folder / "clip.mp4", 12), "frames": folder / "clip_src", "root": folder}


@pytest.fixture()
def scene(tmp_path: Path):
    return bh.fresh_scene(tmp_path)


@pytest.fixture(scope="module")
def reference(media: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> list[float]:
    """Mean red level Blender renders for each frame of the generated movie."""
    folder = tmp_path_factory.mktemp("ref")
    scene = bh.fresh_scene(folder)
    bh.add_movie(scene, media["movie"])
    levels = [float(bh.render_frame(scene, t, folder)[..., 0].mean()) for t in range(1, 13)]
    assert all(b - a > 0.03 for a, b in zip(levels, levels[1:])), "generated frames must be distinguishable"
    return levels


def plan(scene, strip, **kw):
    return jobs.plan_strip(scene, strip, operators.settings_for(bpy.context), **kw)


def assert_map_matches_render(scene, strip, reference: list[float], folder: Path) -> list[int]:
    frame_map = plan(scene, strip).job["frame_map"]
    assert len(frame_map) == strip.frame_final_duration
    shown = [bh.decode_index(bh.render_frame(scene, t, folder), reference)
             for t in range(strip.frame_final_start, strip.frame_final_end)]
    assert frame_map == shown
    return frame_map


# ------------------------------------------------------------------------- frame maps


def test_movie_with_moved_start_and_trimmed_handles(scene, media, reference, tmp_path) -> None:
    strip = bh.add_movie(scene, media["movie"], start=5)
    strip.frame_offset_start = 3
    strip.frame_offset_end = 2
    frame_map = assert_map_matches_render(scene, strip, reference, tmp_path)
    assert frame_map == list(range(3, 10))


def test_movie_with_animation_offset(scene, media, reference, tmp_path) -> None:
    strip = bh.add_movie(scene, media["movie"], start=3)
    strip.animation_offset_start = 2
    strip.animation_offset_end = 1
    frame_map = assert_map_matches_render(scene, strip, reference, tmp_path)
    assert frame_map == list(range(2, 11))


def test_movie_reversed_and_strobed(scene, media, reference, tmp_path) -> None:
    strip = bh.add_movie(scene, media["movie"])
    strip.use_reverse_frames = True
    strip.strobe = 3.0
    frame_map = assert_map_matches_render(scene, strip, reference, tmp_path)
    assert frame_map == [9, 9, 9, 6, 6, 6, 3, 3, 3, 0, 0, 0]  # 11, 10, ... quantised by the strobe


def test_movie_held_beyond_its_content(scene, media, reference, tmp_path) -> None:
    strip = bh.add_movie(scene, media["movie"], start=4)
    strip.frame_offset_start = -2  # left handle two frames before the content: holds frame 0
    strip.frame_offset_end = -3
    frame_map = assert_map_matches_render(scene, strip, reference, tmp_path)
    assert frame_map[:3] == [0, 0, 0] and frame_map[-4:] == [11, 11, 11, 11]


def test_movie_at_another_frame_rate_than_the_scene(scene, media, reference, tmp_path) -> None:
    # Added from Python the strip keeps one media frame per scene frame (the UI may instead
    # play it at its own rate, which the add-on detects by the strip's length).
    scene.render.fps = 30
    strip = bh.add_movie(scene, media["movie"], start=2)
    assert strip.fps == pytest.approx(24.0)
    assert assert_map_matches_render(scene, strip, reference, tmp_path) == list(range(12))
    assert (scene.render.fps, scene.render.fps_base) == (30, 1.0)  # probing restored the rate


def test_image_strip_maps_to_the_folder_in_stylecores_order(scene, media, reference, tmp_path) -> None:
    folder = media["frames"]  # f1.png .. f12.png: natural order differs from plain sorting
    strips = vse.children(scene.sequence_editor)
    strip = strips.new_image("Pics", str(folder / "f1.png"), 1, 2)
    for i in range(2, 13):
        strip.elements.append(f"f{i}.png")
    strip.frame_offset_start = 1
    strip.animation_offset_start = 2
    strip.select = True
    p = plan(scene, strip)
    assert p.job["content"] == str(folder)
    shown = [bh.decode_index(bh.render_frame(scene, t, tmp_path), reference)
             for t in range(strip.frame_final_start, strip.frame_final_end)]
    assert p.job["frame_map"] == shown == list(range(3, 12))


def test_strips_without_a_media_file_are_rendered_through_blender(scene, media) -> None:
    # Retimed movies take this path too; retiming keys cannot be made headless (the RNA
    # add() needs retiming data only the UI operators create), so an effect strip stands in.
    strip = vse.new_effect(vse.children(scene.sequence_editor), "Colour", "COLOR", 1, 3, 6)
    p = plan(scene, strip)
    assert p.rendered and p.folder is None  # the folder waits for the rendered pixels' hash
    assert p.render_frames == [3, 4, 5, 6, 7, 8] and p.job["frame_map"] == list(range(6))
    assert p.shown_size == (bh.W, bh.H)


def test_rendering_a_strip_isolates_it_and_restores_the_scene(scene, media, reference, tmp_path) -> None:
    strip = bh.add_movie(scene, media["movie"], channel=2)
    strip.blend_type = "ADD"
    cover = vse.new_effect(vse.children(scene.sequence_editor), "Cover", "COLOR", 3, 1, 12)
    cover.color = (0.0, 1.0, 0.0)
    frames = list(range(3, 7))
    out = tmp_path / "rendered"
    assert list(vse.render_strip_frames(scene, strip, out, frames)) == [1, 2, 3, 4]
    shown = [bh.decode_index(bh.read_png(out / f"frame_{k:06d}.png"), reference) for k in range(1, 5)]
    assert shown == [2, 3, 4, 5]
    assert float(bh.read_png(out / "frame_000001.png")[..., 1].mean()) < 0.6  # the green cover was muted
    assert not cover.mute and strip.blend_type == "ADD"


# --------------------------------------------------------------------------- weights


def test_keyframed_style_weight_is_sent_per_frame(scene, media) -> None:
    strip = bh.add_movie(scene, media["movie"], start=7)  # frames 7..18
    name = props.STYLE_WEIGHT
    setattr(strip, name, 1.0)
    assert strip.keyframe_insert(name, frame=7)
    setattr(strip, name, 0.1)
    assert strip.keyframe_insert(name, frame=16)
    curve = vse.fcurve(scene, strip.path_from_id(name))
    for point in curve.keyframe_points:
        point.interpolation = "LINEAR"
    weights = plan(scene, strip).job["style_weights"]
    expected = [1.0 - 0.1 * (t - 7) for t in range(7, 17)] + [0.1, 0.1]
    assert weights == pytest.approx(expected, abs=1e-5)
    assert "style_weight" not in plan(scene, strip).job
    assert plan(scene, strip, preview_frame=10).job["style_weights"] == pytest.approx([0.7], abs=1e-5)


def test_style_weight_lives_on_the_strip_because_group_properties_cannot_be_keyframed(scene, media) -> None:
    # Blender's "Insert Keyframe" (I over a field) resolves the same RNA path as
    # keyframe_insert; a strip's PropertyGroup has none, the strip's own property has.
    strip = bh.add_movie(scene, media["movie"])
    assert strip.keyframe_insert(props.STYLE_WEIGHT, frame=1)
    assert vse.fcurve(scene, strip.path_from_id(props.STYLE_WEIGHT)) is not None
    with pytest.raises(Exception, match="could not make path"):
        props.strip_settings(strip).keyframe_insert("temporal_weight", frame=1)


def test_constant_style_weight_without_keyframes(scene, media) -> None:
    strip = bh.add_movie(scene, media["movie"])
    setattr(strip, props.STYLE_WEIGHT, 0.4)
    job = plan(scene, strip).job
    assert job["style_weight"] == pytest.approx(0.4) and "style_weights" not in job


# ---------------------------------------------------------------------- result strips


def finished(p: jobs.Plan) -> jobs.Plan:
    """Simulate the worker: write the plan's frames."""
    assert p.folder is not None
    p.folder.mkdir(parents=True, exist_ok=True)
    for k in range(p.frame_count):
        bh.save_png(p.folder / jobs.FRAME_NAME.format(k + 1), bh.frame_pixels(k))
    return p


def test_result_strip_sits_above_its_source_frame_for_frame(scene, media) -> None:
    strip = bh.add_movie(scene, media["movie"], start=5)
    strip.frame_offset_start = 2
    blocker = vse.new_effect(vse.children(scene.sequence_editor), "Blocker", "COLOR", 2, 10, 4)
    result = jobs.apply_result(scene, finished(plan(scene, strip)))
    assert result.type == "IMAGE" and result.channel == 3  # channel 2 is taken at those frames
    assert (result.frame_final_start, result.frame_final_duration) == (7, 10)
    assert result.blend_type == "ALPHA_OVER"
    assert [e.filename for e in result.elements] == [jobs.FRAME_NAME.format(k) for k in range(1, 11)]
    assert props.strip_settings(result).is_result and props.strip_settings(result).source_name == "Clip"
    assert props.strip_settings(strip).batch
    assert blocker.channel == 2
    assert result.keyframe_insert("blend_alpha", frame=7)  # the Mix slider is keyframable


def test_restylizing_updates_the_result_in_place(scene, media) -> None:
    strip = bh.add_movie(scene, media["movie"])
    first = jobs.apply_result(scene, finished(plan(scene, strip)))
    first.blend_alpha = 0.5
    strip.frame_offset_end = 4
    strip.frame_start = 3
    props.strip_settings(strip).size = 256  # other settings: a new job folder
    p = finished(plan(scene, strip))
    second = jobs.apply_result(scene, p)
    strips = vse.all_strips(scene)
    assert len(strips) == 2 and second.name == first.name
    assert (second.frame_final_start, second.frame_final_duration) == (3, 8)
    assert second.blend_alpha == pytest.approx(0.5)
    assert Path(props.strip_settings(second).output_dir) == p.folder
    assert jobs.source_of(scene, second) == strip


def test_same_settings_resume_in_the_same_folder(scene, media) -> None:
    strip = bh.add_movie(scene, media["movie"])
    assert plan(scene, strip).folder == plan(scene, strip).folder
    setattr(strip, props.STYLE_WEIGHT, 0.5)
    assert plan(scene, strip).folder != plan(scene, strip, preview_frame=1).folder


def test_stale_until_the_result_matches(scene, media) -> None:
    strip = bh.add_movie(scene, media["movie"])
    settings = operators.settings_for(bpy.context)
    assert jobs.is_stale(scene, strip, settings)  # no result yet
    jobs.apply_result(scene, finished(plan(scene, strip)))
    assert not jobs.is_stale(scene, strip, settings)
    props.strip_settings(strip).preserve_colors = "LUMINANCE"
    assert jobs.is_stale(scene, strip, settings)


def test_loss_network_field_goes_into_the_job_and_its_hash(media, tmp_path) -> None:
    scene = bh.fresh_scene(tmp_path, job_options={})  # the test default would set loss_net itself
    strip = bh.add_movie(scene, media["movie"])
    st = props.strip_settings(strip)
    st.mode = "OPTIMIZATION"
    st.style_image = str(bh.save_png(media["root"] / "style.png", bh.frame_pixels(3)))
    auto = plan(scene, strip)
    assert auto.job["loss_net"] == "auto"
    st.loss_net = "HED_VGG16"
    hed = plan(scene, strip)
    assert hed.job["loss_net"] == "hed-vgg16" and hed.job_hash != auto.job_hash
    assert set(jobs.LOSS_NETS) == {item[0] for item in props.LOSS_NET_ITEMS}


def test_result_geometry_matches_the_source_on_screen(scene, media) -> None:
    strip = bh.add_movie(scene, media["movie"])
    strip.transform.scale_x = strip.transform.scale_y = 0.5
    strip.transform.offset_x = 7.0
    p = plan(scene, strip)
    assert p.folder is not None
    p.folder.mkdir(parents=True)
    for k in range(p.frame_count):  # half-size stylized frames (as at a smaller processing size)
        bh.save_png(p.folder / jobs.FRAME_NAME.format(k + 1), bh.frame_pixels(k)[::2, ::2])
    result = jobs.apply_result(scene, p)
    assert result.transform.scale_x == pytest.approx(1.0) and result.transform.scale_y == pytest.approx(1.0)
    assert result.transform.offset_x == pytest.approx(7.0)


# --------------------------------------------------------------------------- reports


def test_sound_strip_gets_a_clear_report(scene, media, tmp_path) -> None:
    wav = tmp_path / "tone.wav"
    _write_wav(wav)
    sound = vse.children(scene.sequence_editor).new_sound("Tone", str(wav), 1, 1)
    sound.select = True
    with pytest.raises(RuntimeError, match="'Tone' is a sound strip"):
        bpy.ops.sequencer.stylize()


def test_missing_movie_gets_a_clear_report(scene, media, tmp_path) -> None:
    moved = tmp_path / "moved.mp4"
    moved.write_bytes(media["movie"].read_bytes())
    strip = bh.add_movie(scene, moved)
    moved.unlink()
    with pytest.raises(RuntimeError, match="the movie of strip 'Clip' is missing"):
        bpy.ops.sequencer.stylize()
    assert strip.name == "Clip"


def test_missing_worker_interpreter_gets_a_clear_report(scene, media, tmp_path) -> None:
    bh.add_movie(scene, media["movie"])
    props.preferences().worker_python = str(tmp_path / "no" / "python")
    with pytest.raises(RuntimeError, match="Worker Python set in the add-on's preferences does not exist"):
        bpy.ops.sequencer.stylize()


def test_bad_extra_job_options_get_a_clear_report(scene, media) -> None:
    bh.add_movie(scene, media["movie"])
    props.preferences().job_options = '{"frame_map": [1]}'
    with pytest.raises(RuntimeError, match="may not set frame_map"):
        bpy.ops.sequencer.stylize()


def _write_wav(path: Path) -> None:
    import math
    import struct
    import wave

    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(i / 5))) for i in range(4000)))
