"""End-to-end behaviour of optimisation and style-video jobs (tiny sizes, random VGG)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import pan_frames, smooth_texture, stripe_style, write_image, write_png_folder, write_video
from stylecore.errors import Cancelled, InputError, JobMismatchError
from stylecore.io import imageops
from stylecore.io.imageops import load_image
from stylecore.jobdir import JobDir
from stylecore.jobspec import JobSpec
from stylecore.modes import optimize_loop
from stylecore.pipeline import run_job

STEP = 2  # pan speed of the synthetic clip, px per frame

FAST = dict(loss_net="random-vgg19", first_iterations=40, iterations=15, device="cpu")


def exact_pan_warping_error(frames: list[np.ndarray], step: int = STEP) -> float:
    """Mean squared difference between consecutive outputs, aligned with the exact pan flow."""
    errors = []
    for prev, cur in zip(frames, frames[1:]):
        # cur(x) shows what prev showed at x + step; the last `step` columns are new.
        errors.append(float(np.mean((cur[:, :-step] - prev[:, step:]) ** 2)))
    return float(np.mean(errors))


def read_frames(folder: Path, count: int) -> list[np.ndarray]:
    return [load_image(folder / f"frame_{n:06d}.png") for n in range(1, count + 1)]


@pytest.mark.slow
def test_temporal_loss_lowers_warping_error(tmp_path: Path, style_png: Path) -> None:
    content = write_png_folder(tmp_path / "pan", pan_frames(5, step=STEP))
    common = dict(content=str(content), mode="optimization", styles=((str(style_png), 1.0),), **FAST)
    run_job(JobSpec(output=str(tmp_path / "temporal"), temporal_weight=1.0, **common))
    run_job(JobSpec(output=str(tmp_path / "independent"), temporal_weight=0.0, **common))
    temporal = exact_pan_warping_error(read_frames(tmp_path / "temporal", 5))
    independent = exact_pan_warping_error(read_frames(tmp_path / "independent", 5))
    # Stylization really happened on every frame (a later frame that collapsed back to the
    # content, or to grey, would be "stable" too), and it is stable.
    content_frames = pan_frames(5, step=STEP)
    for n, (out, src) in enumerate(zip(read_frames(tmp_path / "temporal", 5), content_frames), 1):
        assert np.mean((out - src) ** 2) > 1e-3, f"frame {n} is the content"
        assert out.std() > 0.05, f"frame {n} is flat"
    assert temporal < 0.5 * independent, (temporal, independent)


def test_scene_cut_starts_a_new_shot(tmp_path: Path, style_png: Path) -> None:
    shot_a = pan_frames(3, seed=1)
    shot_b = [smooth_texture(48, 64, seed=7, sigma=1.5)[:, ::-1].copy() for _ in range(2)]
    content = write_png_folder(tmp_path / "cut", shot_a + shot_b)
    events: list[dict] = []
    spec = JobSpec(content=str(content), output=str(tmp_path / "out"), mode="optimization",
                   styles=((str(style_png), 1.0),), **{**FAST, "first_iterations": 5, "iterations": 3})
    run_job(spec, events.append)
    cuts = [e for e in events if e["event"] == "cut"]
    assert [c["index"] for c in cuts] == [3]


def test_each_shot_starts_with_the_first_frame_solver(tmp_path: Path, style_png: Path, monkeypatch) -> None:
    """A shot's first frame (the job's, and after a cut) is solved with the line search and
    the strict stop rule; the warm-started later frames without the search, to 2 %."""
    from stylecore.modes import optimize, optimize_loop

    shot_a = pan_frames(3, seed=1)
    shot_b = [smooth_texture(48, 64, seed=7, sigma=1.5)[:, ::-1].copy() for _ in range(2)]
    content = write_png_folder(tmp_path / "cut", shot_a + shot_b)
    solvers: list[tuple[bool, float, bool]] = []
    solve = optimize_loop.optimize_frame

    def recording(encoder, content, grams, config, **kwargs):  # type: ignore[no-untyped-def]
        solvers.append((config.line_search, config.tolerance, kwargs.get("temporal") is not None))
        return solve(encoder, content, grams, config, **kwargs)

    monkeypatch.setattr(optimize_loop, "optimize_frame", recording)
    run_job(JobSpec(content=str(content), output=str(tmp_path / "out"), mode="optimization",
                    styles=((str(style_png), 1.0),), **{**FAST, "first_iterations": 5, "iterations": 3}))
    first = (True, optimize.FIRST_TOLERANCE, False)
    later = (False, optimize.LATER_TOLERANCE, True)
    assert solvers == [first, later, later, first, later]


def test_cancel_then_resume_gives_the_same_frames(tmp_path: Path, style_png: Path) -> None:
    content = write_png_folder(tmp_path / "pan", pan_frames(4))
    common = dict(content=str(content), mode="optimization", styles=((str(style_png), 1.0),),
                  **{**FAST, "first_iterations": 10, "iterations": 5})
    run_job(JobSpec(output=str(tmp_path / "whole"), **common))

    written: list[int] = []

    def on_event(event: dict) -> None:
        if event["event"] == "frame" and not event["skipped"]:
            written.append(event["number"])

    with pytest.raises(Cancelled):
        run_job(JobSpec(output=str(tmp_path / "resumed"), **common), on_event, cancel=lambda: len(written) >= 2)
    leftovers = sorted(p.name for p in (tmp_path / "resumed").iterdir())
    assert leftovers == ["frame_000001.png", "frame_000002.png", "stylecore-job.json"]

    events: list[dict] = []
    run_job(JobSpec(output=str(tmp_path / "resumed"), **common), events.append)
    skipped = [e["number"] for e in events if e["event"] == "frame" and e["skipped"]]
    assert skipped == [1, 2]
    for a, b in zip(read_frames(tmp_path / "whole", 4), read_frames(tmp_path / "resumed", 4)):
        np.testing.assert_array_equal(a, b)


def test_different_parameters_never_mix(tmp_path: Path, style_png: Path) -> None:
    content = write_png_folder(tmp_path / "pan", pan_frames(2))
    common = dict(content=str(content), mode="optimization", styles=((str(style_png), 1.0),),
                  **{**FAST, "first_iterations": 3, "iterations": 2})
    run_job(JobSpec(output=str(tmp_path / "out"), **common))
    with pytest.raises(JobMismatchError, match="style_weight"):
        run_job(JobSpec(output=str(tmp_path / "out"), style_weight=2.0, **common))
    run_job(JobSpec(output=str(tmp_path / "out"), style_weight=2.0, **common), overwrite=True)


@pytest.mark.filterwarnings("error::RuntimeWarning")  # a NaN frame would warn when cast to 8 bits
def test_per_frame_style_weights_arrive(tmp_path: Path, style_png: Path) -> None:
    """A weight of 0 leaves the content; a large weight moves it towards the style."""
    frame = smooth_texture(48, 64, seed=3)
    content = write_png_folder(tmp_path / "still", [frame, frame])
    spec = JobSpec(content=str(content), output=str(tmp_path / "out"), mode="optimization",
                   styles=((str(style_png), 1.0),), style_weights=(0.0, 5.0), temporal_weight=0.0,
                   tv_weight=0.0, **{**FAST, "first_iterations": 30})
    run_job(spec)
    first, second = read_frames(tmp_path / "out", 2)
    assert np.mean((first - frame) ** 2) < 1e-4  # 8-bit rounding only
    assert np.mean((second - frame) ** 2) > 1e-3


@pytest.mark.slow
def test_style_video_mode_follows_the_style_frames_and_stays_stable(tmp_path: Path) -> None:
    """Style frames alternate between two very different styles: with the temporal loss the
    output flickers far less than stylizing each frame independently."""
    styles = [stripe_style(colour=(1.0, 0.1, 0.1)), stripe_style(colour=(0.1, 0.2, 1.0), period=4)]
    style_video = write_png_folder(tmp_path / "style", [styles[i % 2] for i in range(5)])
    content = write_png_folder(tmp_path / "pan", pan_frames(5))
    common = dict(content=str(content), mode="style-video", style_video=str(style_video), **FAST)
    events: list[dict] = []
    run_job(JobSpec(output=str(tmp_path / "temporal"), temporal_weight=1.0, **common), events.append)
    run_job(JobSpec(output=str(tmp_path / "independent"), temporal_weight=0.0, **common))
    independent = read_frames(tmp_path / "independent", 5)
    # Independent frames follow their style frame: red on even frames, blue on odd ones.
    reds = [f[..., 0].mean() - f[..., 2].mean() for f in independent]
    assert reds[0] > reds[1] and reds[2] > reds[1] and reds[2] > reds[3]
    temporal = exact_pan_warping_error(read_frames(tmp_path / "temporal", 5))
    assert temporal < 0.5 * exact_pan_warping_error(independent)


def test_multiple_styles_and_preserve_colors_run(tmp_path: Path) -> None:
    a = write_image(tmp_path / "a.png", stripe_style(colour=(1.0, 0.0, 0.0)))
    b = write_image(tmp_path / "b.png", stripe_style(colour=(0.0, 0.0, 1.0)))
    content = write_png_folder(tmp_path / "c", [smooth_texture(32, 48, seed=5)])
    for preserve in ("none", "luminance", "histogram"):
        out = tmp_path / f"out_{preserve}"
        spec = JobSpec(content=str(content), output=str(out), mode="optimization",
                       styles=((str(a), 0.7), (str(b), 0.3)), preserve_colors=preserve,
                       **{**FAST, "first_iterations": 10})
        run_job(spec)
        image = load_image(out / "frame_000001.png")
        assert image.shape == (32, 48, 3)
    # Luminance-only transfer keeps the content's chroma (YIQ's I and Q) pixel by pixel.
    to_iq = np.array([[0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32)
    content_iq = smooth_texture(32, 48, seed=5) @ to_iq.T
    kept = load_image(tmp_path / "out_luminance" / "frame_000001.png") @ to_iq.T
    free = load_image(tmp_path / "out_none" / "frame_000001.png") @ to_iq.T
    assert np.abs(kept - content_iq).mean() < 0.02 < np.abs(free - content_iq).mean()


def test_video_output_is_encoded_and_frames_removed(tmp_path: Path, style_png: Path) -> None:
    import cv2

    clip = write_video(tmp_path / "clip.mp4", pan_frames(4))
    out = tmp_path / "result.mp4"
    spec = JobSpec(content=str(clip), output=str(out), mode="optimization", styles=((str(style_png), 1.0),),
                   frames=(1, 4), **{**FAST, "first_iterations": 3, "iterations": 2})
    result = run_job(spec)
    assert result.video == out and result.frames == 3
    capture = cv2.VideoCapture(str(out))
    count = 0
    while capture.read()[0]:
        count += 1
    assert count == 3
    assert not (tmp_path / "result.stylecore-frames").exists()


def test_frame_range_outside_the_clip_is_a_clear_error(tmp_path: Path, style_png: Path) -> None:
    content = write_png_folder(tmp_path / "pan", pan_frames(3))
    spec = JobSpec(content=str(content), output=str(tmp_path / "out"), mode="optimization",
                   styles=((str(style_png), 1.0),), frames=(10, 20), **FAST)
    with pytest.raises(InputError, match="has 3 frames"):
        run_job(spec)


RESUME_CASES = {
    "plain": dict(mode="optimization"),
    "luminance": dict(mode="optimization", preserve_colors="luminance"),
    "histogram": dict(mode="optimization", preserve_colors="histogram"),
    "schedule": dict(mode="optimization", style_weights=(1.0, 0.5, 2.0, 0.0, 3.0)),
    "style-video": dict(mode="style-video", preserve_colors="histogram"),
    # Processed at 48x36, written at 64x48: later frames start from the kept work frames.
    "smaller": dict(mode="optimization", size=48),
}


@pytest.mark.parametrize("case", sorted(RESUME_CASES))
def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path: Path, style_png: Path, case: str) -> None:
    """Two shots (a cut before frame 3); the run stops after frame 4 and resumes mid-shot:
    every frame equals the uninterrupted run's, bit for bit (with `histogram` the shot's
    colour reference is still frame 3, not the first frame the resumed run makes)."""
    shot_a = pan_frames(2, seed=1)
    shot_b = [f[::-1].copy() for f in pan_frames(3, seed=7, step=4)]
    content = write_png_folder(tmp_path / "clip", shot_a + shot_b)
    options = dict(RESUME_CASES[case])
    if options["mode"] == "style-video":
        styles = [stripe_style(colour=(1.0, 0.1, 0.1)), stripe_style(colour=(0.1, 0.2, 1.0), period=4)]
        options["style_video"] = str(write_png_folder(tmp_path / "style", [styles[i % 2] for i in range(3)]))
    else:
        options["styles"] = ((str(style_png), 1.0),)
    common = dict(content=str(content), **options, **{**FAST, "first_iterations": 8, "iterations": 4})
    events: list[dict] = []
    run_job(JobSpec(output=str(tmp_path / "whole"), **common), events.append)
    assert [e["index"] for e in events if e["event"] == "cut"] == [2]

    made: list[int] = []

    def count(event: dict) -> None:
        if event["event"] == "frame" and not event["skipped"]:
            made.append(event["number"])

    with pytest.raises(Cancelled):
        run_job(JobSpec(output=str(tmp_path / "resumed"), **common), count, cancel=lambda: len(made) >= 4)
    if case == "smaller":  # each frame made so far left its work frame, at the processing size
        work = sorted((tmp_path / "resumed").glob(".stylecore-work_*.png"))
        assert [p.name for p in work] == [f".stylecore-work_{n:06d}.png" for n in range(1, len(made) + 1)]
        assert load_image(work[0]).shape == (36, 48, 3)
    run_job(JobSpec(output=str(tmp_path / "resumed"), **common))
    for n, (a, b) in enumerate(zip(read_frames(tmp_path / "whole", 5), read_frames(tmp_path / "resumed", 5)), 1):
        assert np.array_equal(a, b), f"frame {n} differs by up to {np.abs(a - b).max() * 255:.0f} levels"
    assert not list((tmp_path / "resumed").glob(".stylecore-work_*"))  # gone once the job is done


def test_changed_content_at_the_same_path_is_another_job(tmp_path: Path, style_png: Path) -> None:
    """A clip re-rendered to the same path: its frames are not "done", and the refusal says
    the content changed."""
    content = write_png_folder(tmp_path / "clip", pan_frames(2))
    common = dict(content=str(content), output=str(tmp_path / "out"), mode="optimization",
                  styles=((str(style_png), 1.0),), **{**FAST, "first_iterations": 3, "iterations": 2})
    run_job(JobSpec(**common))
    write_png_folder(tmp_path / "clip", pan_frames(2, seed=9))
    with pytest.raises(JobMismatchError, match=r"changed: the content \(changed on disk\)"):
        run_job(JobSpec(**common))
    write_image(style_png, stripe_style(colour=(0.0, 1.0, 0.0)))
    with pytest.raises(JobMismatchError, match="style image style.png"):
        run_job(JobSpec(**common))


def test_a_job_that_fails_before_its_first_frame_leaves_no_folder(tmp_path: Path, style_png: Path) -> None:
    content = write_png_folder(tmp_path / "clip", pan_frames(2))
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("not an image")
    out = tmp_path / "out"
    common = dict(content=str(content), output=str(out), mode="optimization", **FAST)
    with pytest.raises(InputError, match="notes.png"):
        run_job(JobSpec(styles=((str(not_an_image), 1.0),), **common))
    assert not out.exists()
    result = run_job(JobSpec(styles=((str(style_png), 1.0),), **{**common, "first_iterations": 2, "iterations": 1}))
    assert result.frames == 2


def test_the_output_never_replaces_an_input(tmp_path: Path, style_png: Path) -> None:
    import os

    from stylecore.errors import OutputError

    clip = write_video(tmp_path / "clip.mp4", pan_frames(3))
    before = clip.read_bytes()
    common = dict(mode="optimization", styles=((str(style_png), 1.0),), **FAST)
    with pytest.raises(OutputError, match="would overwrite the content"):
        run_job(JobSpec(content=str(clip), output=str(clip), **common), overwrite=True)
    os.link(clip, tmp_path / "same.mp4")  # another name for the same file
    with pytest.raises(OutputError, match="would overwrite the content"):
        run_job(JobSpec(content=str(clip), output=str(tmp_path / "same.mp4"), **common), overwrite=True)
    folder = write_png_folder(tmp_path / "frames", pan_frames(2))
    with pytest.raises(OutputError, match="would overwrite the content"):
        run_job(JobSpec(content=str(folder), output=str(folder), **common), overwrite=True)
    style_video = write_video(tmp_path / "sv.mp4", pan_frames(2))
    with pytest.raises(OutputError, match="would overwrite the style video"):
        run_job(JobSpec(content=str(clip), output=str(style_video), mode="style-video",
                        style_video=str(style_video), **FAST), overwrite=True)
    assert clip.read_bytes() == before


def test_an_existing_video_is_replaced_only_with_overwrite(tmp_path: Path, style_png: Path) -> None:
    import os
    import stat

    from stylecore.errors import OutputError

    clip = write_video(tmp_path / "clip.mp4", pan_frames(2))
    out = tmp_path / "result.mp4"
    out.write_bytes(b"someone's film")
    stale = tmp_path / ".result.mp4.k2j3.tmp.mp4"  # left by a run killed while encoding
    stale.write_bytes(b"half a video")
    spec = JobSpec(content=str(clip), output=str(out), mode="optimization", styles=((str(style_png), 1.0),),
                   **{**FAST, "first_iterations": 2, "iterations": 1})
    with pytest.raises(OutputError, match="result.mp4 exists.*`overwrite`"):
        run_job(spec)
    assert out.read_bytes() == b"someone's film"
    run_job(spec, overwrite=True)
    assert out.read_bytes() != b"someone's film"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask  # like frames, not private
    assert not stale.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_gif_output_is_refused_with_the_video_formats(tmp_path: Path, style_png: Path) -> None:
    content = write_png_folder(tmp_path / "clip", pan_frames(2))
    with pytest.raises(InputError, match=r"does not write \.gif.*\.m4v.*\.mp4"):
        run_job(JobSpec(content=str(content), output=str(tmp_path / "result.gif"), mode="optimization",
                        styles=((str(style_png), 1.0),), **FAST))
    assert not (tmp_path / "result.gif").exists()


def test_a_video_one_frame_shorter_than_its_container_says_finishes(tmp_path: Path, monkeypatch) -> None:
    from stylecore.io import decoders
    from stylecore.io.sources import open_source

    clip = write_video(tmp_path / "clip.mp4", pan_frames(4))
    facts = decoders._container_facts
    monkeypatch.setattr(decoders, "_container_facts", lambda path: (facts(path)[0] + 1, facts(path)[1]))
    with open_source(clip) as source:
        assert source.info.count == 5  # what the container claims
    spec = JobSpec(content=str(clip), output=str(tmp_path / "out"), mode="feedforward", device="cpu")
    with pytest.warns(UserWarning, match="ends after 4 frames"):
        result = run_job(spec)
    assert result.frames == 4
    assert sorted(p.name for p in (tmp_path / "out").glob("frame_*.png")) == [f"frame_{n:06d}.png" for n in range(1, 5)]


def test_a_later_frame_starts_from_the_content_where_the_subject_uncovered_it() -> None:
    """A dark square moves right over a still textured background. Where it uncovers the
    background, the flow's forward-backward check marks the pixels unreliable, and the
    warped previous result there is still the square: the warm start takes the content
    (recoloured to the warped result's palette) there instead, and the warp everywhere
    the flow is reliable."""
    from stylecore import flow
    from stylecore.io.imageops import match_color
    from stylecore.modes.optimize_loop import warm_start

    background = 0.4 + 0.5 * smooth_texture(96, 128, seed=3, sigma=2.0)
    prev, cur = background.copy(), background.copy()
    prev[32:64, 24:56] = 0.05
    cur[32:64, 40:72] = 0.05  # moved 16 px right: x 24-40 is uncovered
    pair = flow.flow_pair(prev, cur)
    warped = flow.warp(prev, pair.flow_bw)  # the previous "result": here the frame itself
    start = warm_start(warped, pair.mask, cur)

    uncovered = (slice(34, 62), slice(26, 38))
    assert pair.mask[uncovered].mean() < 0.5  # the check found the uncovered pixels
    ghost = np.abs(warped[uncovered] - cur[uncovered]).mean()
    kept = np.abs(start[uncovered] - cur[uncovered]).mean()
    assert ghost > 0.05 and kept < ghost / 4, (ghost, kept)  # measured 0.069 and 0.0013
    reliable = pair.mask > 0.5
    assert np.array_equal(start[reliable], warped[reliable])
    recoloured = match_color(cur, warped)
    restarted = np.abs(start - warped).max(axis=-1) > 0
    assert np.allclose(start[restarted], recoloured[restarted], atol=1e-6)
    # a frame the flow explains everywhere starts from the warp itself
    everywhere = np.ones(cur.shape[:2], np.float32)
    assert warm_start(warped, everywhere, cur) is warped
    # and so does one whose only unreliable pixels are a thin sliver along an edge, which
    # restarted every frame would flicker
    sliver = everywhere.copy()
    sliver[20:80, 60:62] = 0.0
    assert warm_start(warped, sliver, cur) is warped


def test_a_later_frame_starts_from_the_warp_where_the_weak_temporal_term_holds_it() -> None:
    """A region whose flow failed its checks but whose content still matches the warp (a
    flat area: ``temporal_weights`` keeps a weak term there) starts from the warp, as the
    temporal term would pull it back there anyway; only a region the term leaves free (a
    subject uncovered it) starts from the content."""
    from stylecore.modes.optimize_loop import _WEAK_TEMPORAL, warm_start

    cur = 0.4 + 0.5 * smooth_texture(96, 128, seed=3, sigma=2.0)
    warped = 0.4 + 0.5 * smooth_texture(96, 128, seed=4, sigma=2.0)  # the previous result, warped
    weights = np.ones(cur.shape[:2], np.float32)
    weights[10:60, 10:60] = _WEAK_TEMPORAL
    assert warm_start(warped, weights, cur) is warped
    weights[40:90, 70:120] = 0.0
    start = warm_start(warped, weights, cur)
    changed = np.abs(start - warped).max(axis=-1) > 0
    assert changed[45:85, 75:115].all() and not changed[:60, :60].any()


def test_temporal_weights_keep_a_weak_hold_where_the_warp_still_matches() -> None:
    """Ruder et al.'s weights are 1 where the flow passed its checks and 0 elsewhere. Where
    the checks failed but the warped previous content still matches all around (a flat
    area, small or large), a weak weight stays; none where the content differs (what a
    subject uncovered), not even at a few pixels inside such a region that happen to
    match, and none where the flow leaves the frame (the warp there samples replicated
    border pixels)."""
    from stylecore import flow
    from stylecore.modes import optimize_loop as loop

    h, w = 240, 320  # the match window is then 7 px
    prev = 0.4 + 0.5 * smooth_texture(h, w, seed=3, sigma=2.0)
    cur = prev.copy()
    flow_bw = np.zeros((h, w, 2), np.float32)
    flow_bw[:, :6, 0] = -10.0  # the left columns come from outside the previous frame
    mask = np.ones((h, w), np.float32)
    mask[:, :6] = 0.0
    mask[20:23, 150:153] = 0.0  # checks failed, content matches: weak hold
    mask[120:200, 20:100] = 0.0  # a large flat patch the checks failed on, content matches: weak hold
    mask[100:200, 150:280] = 0.0  # a region a subject uncovered: content differs
    cur[100:200, 150:280] = 0.05
    cur[150:153, 200:203] = prev[150:153, 200:203]  # a few pixels there match by chance
    pair = flow.FramePair(flow_bw=flow_bw, flow_fw=-flow_bw, mask=mask)

    c = loop.temporal_weights(pair, prev, cur)
    weak = np.float32(loop._WEAK_TEMPORAL)
    assert c.dtype == np.float32 and c.shape == (h, w) and 0 < weak < 1
    assert np.all(c[mask == 1.0] == 1.0)
    assert np.all(c[20:23, 150:153] == weak)
    assert np.all(c[120:200, 20:100] == weak)
    assert np.all(c[100:200, 150:280] == 0.0)
    assert np.all(c[:, :6] == 0.0)
    assert set(np.unique(c).tolist()) == {0.0, float(weak), 1.0}
    # a frame the flow explains everywhere keeps Ruder et al.'s weights as they are
    full = flow.FramePair(flow_bw=np.zeros_like(flow_bw), flow_fw=np.zeros_like(flow_bw), mask=np.ones((h, w), np.float32))
    assert np.array_equal(loop.temporal_weights(full, prev, cur), full.mask)


def test_a_later_frame_starts_from_the_previous_frame_as_made_not_resized_back(tmp_path: Path) -> None:
    # Fine texture at the processing size, like a stylized frame's brush strokes.
    made = np.random.default_rng(0).random((36, 48, 3), dtype=np.float32)
    with JobDir(tmp_path / "job", {"job": 1}) as jobdir:
        jobdir.write_work_frame(1, made)
        jobdir.write_frame(1, imageops.resize(made, (64, 48)))  # written at the source's size
        start = optimize_loop.previous_result(jobdir, 1, (48, 36))
        np.testing.assert_array_equal(start, load_image(tmp_path / "job" / ".stylecore-work_000001.png"))
        resized_back = imageops.resize(jobdir.read_frame(1), (48, 36))
        assert np.abs(start - made).max() <= 0.5 / 255 + 1e-6  # only the 8-bit rounding
        assert np.abs(resized_back - made).mean() > 2 * np.abs(start - made).mean()
        # A folder of an earlier version (no work frame) resizes the written frame back.
        (tmp_path / "job" / ".stylecore-work_000001.png").unlink()
        np.testing.assert_array_equal(optimize_loop.previous_result(jobdir, 1, (48, 36)), resized_back)
