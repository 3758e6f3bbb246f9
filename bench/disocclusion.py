"""What a subject leaves behind: optimization mode on Big Buck Bunny's bird taking off,
with later frames started from the warp everywhere (Ruder et al.) and from
``optimize_loop.warm_start`` (the recoloured content where the temporal term leaves a
region free).

    python -m bench.disocclusion      # docs/images/disocclusion.jpg, bench/results/disocclusion.json

Runs ``run_job`` (default settings, ``hed-vgg16``, 320x180) on the 10 frames from 20.6 s,
in which the bird flies off its branch and uncovers the sky and a title, for two styles
and both starts; writes a sheet (content | warp everywhere | warm start) of three frames
after the take-off, and each run's style loss, content loss and warping error. About 10
minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from stylecore import evaluate
from stylecore.io import imageops
from stylecore.io.sources import open_source
from stylecore.jobspec import JobSpec
from stylecore.modes import optimize_loop
from stylecore.nets.loss_nets import load_loss_network
from stylecore.pipeline import run_job

from .common import BUNNY, REPO, SAMPLES, describe_machine, load_average, write_report
from .pictures import labelled, save_sheet, to_u8

START_S = 20.6  # the bird is still on its branch; it is gone 8 frames later
FRAMES = 10
SIZE = 320
SHOWN = (6, 8, 10)  # output frames on the sheet
STYLES = {"starry_night": SAMPLES / "starry_night_512.jpg", "the_scream": SAMPLES / "the_scream_512.jpg"}


def _run(style: Path, out: Path, first: int, warp_everywhere: bool) -> list[np.ndarray]:
    spec = JobSpec(content=str(BUNNY), output=str(out), mode="optimization", styles=((str(style), 1.0),), size=SIZE,
                   frames=(first, first + FRAMES), loss_net="hed-vgg16", device="cpu")
    saved = optimize_loop.warm_start
    if warp_everywhere:
        optimize_loop.warm_start = lambda warped, weights, content: warped  # type: ignore[assignment]
    try:
        run_job(spec)
    finally:
        optimize_loop.warm_start = saved
    return [imageops.load_image(p) for p in sorted(out.glob("frame_*.png"))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.disocclusion", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "disocclusion.json")
    parser.add_argument("--sheet", type=Path, default=REPO / "docs" / "images" / "disocclusion.jpg")
    args = parser.parse_args(argv)
    with open_source(BUNNY) as source:
        first = round(START_S * source.info.fps)
        contents = [source.read(first + k) for k in range(FRAMES)]
    judge = load_loss_network("hed-vgg16", {**evaluate.GATYS_STYLE_LAYERS, **evaluate.GATYS_CONTENT_LAYERS},
                              torch.device("cpu"))
    report: dict[str, object] = {"machine": describe_machine().line(), "load_at_start": load_average(), "runs": {}}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, style in STYLES.items():
            made = {}
            for start, warp_everywhere in (("warp everywhere", True), ("warm start", False)):
                frames = _run(style, Path(tmp) / f"{name}_{warp_everywhere}", first, warp_everywhere)
                made[start] = frames
                size = (frames[0].shape[1], frames[0].shape[0])
                scaled = [imageops.resize(c, size) for c in contents]
                painting = imageops.load_image(style)
                painting = imageops.resize(painting, imageops.scaled_size(painting.shape[1], painting.shape[0], max(size)))
                losses = evaluate.feature_losses(frames[1:], scaled[1:], judge, style=painting)
                temporal = evaluate.warping_error(frames, scaled)
                figures = {"style_loss": losses.style_loss, "content_loss": losses.content_loss,
                           "warping_error": temporal.warping_error,
                           "content_loss_per_frame": losses.per_frame_content,
                           "warping_error_per_frame": [f.warping_error for f in temporal.per_frame]}
                report["runs"][f"{name}, {start}"] = figures  # type: ignore[index]
                print(name, start, {k: v for k, v in figures.items() if "per_frame" not in k}, flush=True)
                print("  warping error per frame:", [None if v is None else round(v, 5)
                                                     for v in figures["warping_error_per_frame"]], flush=True)
            for number in SHOWN:
                content = imageops.resize(contents[number - 1], size)
                rows.append(np.concatenate([labelled(to_u8(content), f"content, frame {number}")]
                                           + [labelled(to_u8(made[s][number - 1]), f"{name}: {s}") for s in made],
                                           axis=1))
    report["load_at_end"] = load_average()
    save_sheet(args.sheet, rows)
    return write_report(args.out, report)


if __name__ == "__main__":
    raise SystemExit(main())
