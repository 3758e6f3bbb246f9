"""The Ray farm (``stylecore.farm``) on a local cluster of 2 CPUs, with tiny clips."""

from __future__ import annotations

import os
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import SAMPLES, pan_frames, smooth_texture, write_png_folder
from stylecore.cli.main import main
from stylecore.errors import Cancelled, InputError
from stylecore.farm import SETTLE, Chunk, Stitch, plan_chunks
from stylecore.io.imageops import load_image
from stylecore.jobspec import JobSpec
from stylecore.pipeline import run_job

import ray  # the farm extra: scripts/test.sh installs it, so these tests always run

BUNNY = SAMPLES / "bunny_96f_320x180.mp4"
STEP = 2  # px per frame of the synthetic pan
# Tiny optimisation: the farm's mechanics, not the picture, are under test.
FAST = dict(loss_net="random-vgg19", first_iterations=12, iterations=5, device="cpu")


@pytest.fixture(scope="module")
def cluster() -> Any:
    """A local Ray cluster of 2 CPUs for the module; the farm joins it (`farm` auto)."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="error")
    yield
    ray.shutdown()


def frame_numbers(events: list[dict[str, Any]], *, skipped: bool) -> list[int]:
    return [e["number"] for e in events if e["event"] == "frame" and bool(e["skipped"]) == skipped]


def read_frames(folder: Path, count: int) -> list[np.ndarray]:
    return [load_image(folder / f"frame_{n:06d}.png") for n in range(1, count + 1)]


def pan_errors(frames: list[np.ndarray]) -> list[float]:
    """Warping error of each consecutive pair under the pan's known flow (pair t-1 -> t at t-1)."""
    return [float(np.mean((cur[:, :-STEP] - prev[:, STEP:]) ** 2)) for prev, cur in zip(frames, frames[1:])]


def test_shots_then_chunks() -> None:
    chunks = plan_chunks(20, 6, cuts=[9], chained=True)
    assert chunks == [Chunk(0, 6), Chunk(6, 9, stitched=True, lead=1 + SETTLE), Chunk(9, 15),
                      Chunk(15, 20, stitched=True, lead=1 + SETTLE)]
    # A stitched chunk starts its chain early enough to settle before the common frame 5.
    assert chunks[1].span == range(5 - SETTLE, 9)
    # ... but never before its shot: here the shot starts at 3.
    assert plan_chunks(10, 5, [3], chained=True)[2] == Chunk(8, 10, stitched=True, lead=5)
    assert plan_chunks(10, 2, [3], chained=True)[3] == Chunk(5, 7, stitched=True, lead=2)
    assert all(not c.stitched for c in plan_chunks(20, 6, chained=False))


def test_a_stitch_carries_the_previous_chain_on() -> None:
    """Two 'chains' of the same pan, each a different texture moving with the content plus
    its own small frame-to-frame changes: stitched at frame 3, the cut is not seen."""
    count, h, w, cut = 10, 32, 48, 3
    content = pan_frames(count, height=h, width=w, step=STEP)
    rng = np.random.default_rng(0)

    def chain(seed: int) -> list[np.ndarray]:
        texture = smooth_texture(h, w + STEP * count, seed=seed, sigma=1.5)
        return [np.clip(texture[:, t * STEP:t * STEP + w] + rng.normal(0, 0.01, (h, w, 3)), 0, 1).astype(np.float32)
                for t in range(count)]

    first, second = chain(5), chain(9)
    stitch = Stitch(first[cut], second[cut], (w, h))
    frames = first[: cut + 1]
    for t in range(cut + 1, count):
        stitch.advance(content[t - 1], content[t])
        frames.append(stitch.apply(second[t]))
    errors = pan_errors(frames)
    unstitched = pan_errors(first[: cut + 1] + second[cut + 1:])[cut]
    others = float(np.median([e for t, e in enumerate(errors) if t != cut]))
    assert errors[cut] <= 1.5 * others < 0.05 * unstitched, (errors[cut], others, unstitched)


def test_feedforward_farm_equals_a_single_process_run(cluster: None, tmp_path: Path) -> None:
    common = dict(content=str(BUNNY), mode="feedforward", size=64, frames=(0, 20), device="cpu", batch_size=4)
    events: list[dict[str, Any]] = []
    run_job(JobSpec(output=str(tmp_path / "farm"), farm="auto", chunk=8, **common), events.append)
    run_job(JobSpec(output=str(tmp_path / "single"), **common))
    farm = [e for e in events if e["event"] == "farm"]
    assert farm and farm[0]["chunks"] == 3
    assert sorted(frame_numbers(events, skipped=False)) == list(range(1, 21))
    for a, b in zip(read_frames(tmp_path / "farm", 20), read_frames(tmp_path / "single", 20)):
        # Farm tasks run with their own thread count, and a convolution's float sums follow
        # the threads: the same frames to 8-bit rounding (at most one level apart).
        assert np.abs(a - b).max() <= 1.5 / 255, np.abs(a - b).max() * 255
    progress = [e for e in events if e["event"] == "progress"]
    assert progress[-1]["done"] == progress[-1]["total"] == 20


def test_optimization_farm_stitches_invisibly_and_survives_a_killed_task(cluster: None, tmp_path: Path,
                                                                      style_png: Path) -> None:
    count, chunk = 14, 5  # each stitched chunk's chain gets its full SETTLE frames
    # Frames are made at 48 px and written at the clip's 96 px, as a real job's are: the
    # stitch must carry the texture at the written size (it once worked at the processing
    # size and its blurred correction left a seam 100x the other frames' error on a real clip).
    content = write_png_folder(tmp_path / "pan", pan_frames(count, height=64, width=96, step=STEP))
    spec = JobSpec(content=str(content), output=str(tmp_path / "out"), mode="optimization", size=48,
                   styles=((str(style_png), 1.0),), farm="auto", chunk=chunk, **FAST)
    events: list[dict[str, Any]] = []
    killed: list[int] = []

    def on_event(event: dict[str, Any]) -> None:
        events.append(event)
        # Kill the worker of the shot's first chunk once it has written a frame of it.
        if event["event"] == "frame" and event["number"] == 1 and not event["skipped"] and not killed:
            first = [e for e in events if e["event"] == "task" and e["kind"] == "chunk" and e["first"] == 1]
            killed.append(first[0]["pid"])
            os.kill(first[0]["pid"], signal.SIGKILL)

    run_job(spec, on_event)
    farm = [e for e in events if e["event"] == "farm"][0]
    assert (farm["chunks"], farm["stitches"]) == (3, 2)
    # Ray ran the killed chunk again, and the re-run made only what was missing.
    assert killed and sum(1 for e in events if e["event"] == "task" and e["kind"] == "chunk" and e["first"] == 1) == 2
    made = Counter(frame_numbers(events, skipped=False) + frame_numbers(events, skipped=True))
    assert made == Counter(range(1, count + 1)), "every frame exactly once"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        *(f"frame_{n:06d}.png" for n in range(1, count + 1)), "stylecore-job.json"]

    frames = read_frames(tmp_path / "out", count)
    assert np.mean((frames[0] - pan_frames(1, height=64, width=96)[0]) ** 2) > 1e-3  # really stylized
    errors = pan_errors(frames)
    starts = (chunk, 2 * chunk)  # positions of the stitched chunks' first frames
    seams = [errors[s - 1] for s in starts]  # the pairs into them
    others = [e for t, e in enumerate(errors) if t + 1 not in starts]
    assert max(seams) <= 1.5 * float(np.median(others)), (seams, float(np.median(others)))

    again: list[dict[str, Any]] = []
    run_job(spec, again.append)
    assert frame_numbers(again, skipped=False) == []


def test_a_cancelled_farm_keeps_whole_frames_and_resumes(cluster: None, tmp_path: Path, style_png: Path) -> None:
    content = write_png_folder(tmp_path / "pan", pan_frames(8, height=32, width=48, step=STEP))
    spec = JobSpec(content=str(content), output=str(tmp_path / "out"), mode="optimization",
                   styles=((str(style_png), 1.0),), farm="auto", chunk=4, **FAST)
    events: list[dict[str, Any]] = []
    with pytest.raises(Cancelled):
        run_job(spec, events.append, cancel=lambda: len(frame_numbers(events, skipped=False)) >= 1)
    names = [p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".stylecore-farm")]
    assert all(n == "stylecore-job.json" or (n.startswith("frame_") and n.endswith(".png")) for n in names), names
    before = {int(n[6:12]) for n in names if n.startswith("frame_")}
    assert before

    resumed: list[dict[str, Any]] = []
    run_job(spec, resumed.append)
    assert sorted(frame_numbers(resumed, skipped=True)) == sorted(before)
    assert sorted(frame_numbers(resumed, skipped=False)) == [n for n in range(1, 9) if n not in before]


def test_a_bad_address_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(InputError, match=r"cannot reach the Ray cluster at ray://127\.0\.0\.1:1 "):
        run_job(JobSpec(content=str(BUNNY), output=str(tmp_path / "a"), mode="feedforward", farm="ray://127.0.0.1:1"))
    with pytest.raises(InputError, match="is not auto, ray://HOST:PORT or HOST:PORT"):
        run_job(JobSpec(content=str(BUNNY), output=str(tmp_path / "b"), mode="feedforward", farm="head node"))
    assert not (tmp_path / "a").exists()  # refused before the job folder is made
    code = main(["stylize", str(BUNNY), "-o", str(tmp_path / "c"), "--farm", "127.0.0.1:1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "--farm" in err and "Traceback" not in err


def test_without_ray_the_farm_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    code = main(["stylize", str(BUNNY), "-o", str(tmp_path / "out"), "--farm", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert '--farm needs Ray, an optional extra: pip install "stylecore[farm]"' in err
    assert not (tmp_path / "out").exists()
