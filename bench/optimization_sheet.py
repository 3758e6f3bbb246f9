"""Optimization mode by eye, at its defaults: several contents and styles, each clip's first
frame and its last, which has been carried through four warm-started later frames.

    python -m bench.optimization_sheet    # docs/images/optimization.jpg, bench/results/optimization_sheet.json

Runs ``run_job`` (default settings, ``hed-vgg16``, 426x240: issue 12's size) on 5 frames
of each content: Big Buck Bunny at 12 s (a stream, grass and a pink sky) and at 52 s (the
bunny's fur and face), and a still that is not Big Buck Bunny, the astronaut, panned 4 px
a frame so that later frames have motion to follow. For each content and style a row:
content | style | frame 1 | frame 5 | frame 5 at 100 %; and each run's style loss, content
loss and warping error (``hed-vgg16``, as ``stylecore evaluate``) and seconds a later
frame. About 15 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

from stylecore import evaluate
from stylecore.io import imageops
from stylecore.io.sources import open_source
from stylecore.jobspec import JobSpec
from stylecore.nets.loss_nets import load_loss_network
from stylecore.pipeline import run_job

from .common import BUNNY, REPO, SAMPLES, describe_machine, load_average, write_report
from .pictures import fit, labelled, save_sheet, to_u8

FRAMES = 5
SIZE = 426
PAN_PX = 4  # a frame, in the 16:9 window moved over the still
STYLES = {"starry_night": SAMPLES / "starry_night_512.jpg", "the_scream": SAMPLES / "the_scream_512.jpg"}
PANEL = (284, 160)  # (w, h) of a panel on the sheet
CROP = (284, 160)  # the 100 % crop, from the frame's centre


def _bunny(start_s: float, folder: Path) -> tuple[Path, tuple[int, int]]:
    with open_source(BUNNY) as source:
        first = round(start_s * source.info.fps)
    return BUNNY, (first, first + FRAMES)


def _pan(still: Path, folder: Path) -> tuple[Path, tuple[int, int]]:
    """``FRAMES`` 16:9 windows moving right over ``still``, written as PNGs to ``folder``."""
    image = imageops.load_image(still)
    h, w = image.shape[:2]
    window_h = min(h, int((w - PAN_PX * FRAMES) * 9 / 16))
    window_w = window_h * 16 // 9
    folder.mkdir(parents=True)
    for k in range(FRAMES):
        x = k * PAN_PX
        imageops.save_image(folder / f"frame_{k + 1:04d}.png", image[(h - window_h) // 2:][:window_h, x:x + window_w])
    return folder, (0, FRAMES)


CONTENTS = {
    "bunny 12 s": lambda folder: _bunny(12.0, folder),
    "bunny 52 s": lambda folder: _bunny(52.0, folder),
    "astronaut, panned": lambda folder: _pan(SAMPLES / "astronaut_512x384.jpg", folder),
}


def _run(content: Path, frames: tuple[int, int], style: Path, out: Path) -> tuple[list[np.ndarray], list[float]]:
    spec = JobSpec(content=str(content), output=str(out), mode="optimization", styles=((str(style), 1.0),),
                   size=SIZE, frames=frames, loss_net="hed-vgg16", device="cpu")
    seconds: list[float] = []

    def on_event(event: dict[str, object]) -> None:
        if event.get("event") == "frame" and not event.get("skipped"):
            seconds.append(float(event["seconds"]))  # type: ignore[arg-type]

    run_job(spec, on_event)
    return [imageops.load_image(p) for p in sorted(out.glob("frame_*.png"))], seconds


def _crop(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    cw, ch = CROP
    y, x = (h - ch) // 2, (w - cw) // 2
    return image[y:y + ch, x:x + cw]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.optimization_sheet", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "optimization_sheet.json")
    parser.add_argument("--sheet", type=Path, default=REPO / "docs" / "images" / "optimization.jpg")
    args = parser.parse_args(argv)
    judge = load_loss_network("hed-vgg16", {**evaluate.GATYS_STYLE_LAYERS, **evaluate.GATYS_CONTENT_LAYERS},
                              torch.device("cpu"))
    report: dict[str, object] = {"machine": describe_machine().line(), "threads": torch.get_num_threads(),
                                 "load_at_start": load_average(), "runs": {}}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for content_name, make in CONTENTS.items():
            source, frames = make(Path(tmp) / content_name.replace(" ", "_").replace(",", ""))
            with open_source(source) as clip:
                contents = [clip.read(index) for index in range(*frames)]
            for style_name, style in STYLES.items():
                made, seconds = _run(source, frames, style, Path(tmp) / f"out_{content_name}_{style_name}")
                size = (made[0].shape[1], made[0].shape[0])
                scaled = [imageops.resize(c, size) for c in contents]
                painting = imageops.load_image(style)
                painting = imageops.resize(painting, imageops.scaled_size(painting.shape[1], painting.shape[0], SIZE))
                losses = evaluate.feature_losses(made[1:], scaled[1:], judge, style=painting)
                figures = {"style_loss": losses.style_loss, "content_loss": losses.content_loss,
                           "warping_error": evaluate.warping_error(made, scaled).warping_error,
                           "first_frame_s": seconds[0], "later_median_s": statistics.median(seconds[1:]),
                           "load_after": load_average()}
                report["runs"][f"{content_name}, {style_name}"] = figures  # type: ignore[index]
                print(content_name, style_name, {k: round(v, 5) for k, v in figures.items()}, flush=True)
                shown = imageops.resize(made[-1], (SIZE, SIZE * made[-1].shape[0] // made[-1].shape[1]))
                rows.append(np.concatenate([
                    labelled(to_u8(fit(scaled[-1], PANEL)), f"{content_name}, frame {FRAMES}"),
                    labelled(to_u8(fit(imageops.load_image(style), PANEL)), style_name),
                    labelled(to_u8(fit(made[0], PANEL)), "frame 1"),
                    labelled(to_u8(fit(made[-1], PANEL)), f"frame {FRAMES}"),
                    labelled(to_u8(_crop(shown)), f"frame {FRAMES}, 100 % at {SIZE} px"),
                ], axis=1))
    report["load_at_end"] = load_average()
    save_sheet(args.sheet, rows)
    return write_report(args.out, report)


if __name__ == "__main__":
    raise SystemExit(main())
