"""Optimization mode's later frames at 426x240 (the size at which the project's origin
took two minutes a frame on a GPU), default quality, ``hed-vgg16``, on this machine; and
where a later frame's time goes.

    python -m bench.optimization_speed                # bench/results/optimization_speed.json
    python -m bench.optimization_speed --frames 8
    python -m bench.optimization_speed --reference    # also the earlier defaults, for the A/B

Runs ``run_job`` on Big Buck Bunny from 20 s at 426x240 with default settings (the first
frame coarse to fine, later frames warm-started from the warped previous result with the
temporal loss, each stopping when the loss stops falling; the loss network in bfloat16
where the CPU has it) and reports each frame's seconds and L-BFGS evaluations, and the
result's style loss, content loss and warping error; then times the parts of a later
frame on their own: the optical flow pair, one loss evaluation in float32 and in bfloat16
(loss network forward and backward, Grams, temporal term), and resizing and writing the
frame. ``--reference`` also runs float32 with later frames stopping only when 10
iterations gain less than 0.2 % (the settings before stop 19) on the same frames; the
rest of the solver is today's (the Grams' one-product backward, later frames without a
line search), so it is not the old code's time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from stylecore import flow
from stylecore.io import imageops
from stylecore.io.sources import open_source
from stylecore.jobspec import JobSpec
from stylecore.modes import optimize
from stylecore.pipeline import run_job

from .common import BUNNY, REPO, SAMPLES, describe_machine, load_average, median, timed, write_report

STYLE = SAMPLES / "starry_night_512.jpg"
SIZE = 426
START_S = 20.0


def _median_time(fn: Callable[[], object], repeats: int = 5, device: torch.device | None = None) -> float:
    """Median wall time of ``fn``; on a GPU each call waits for the device's work."""
    if device is not None and device.type == "cuda":
        plain = fn

        def fn() -> object:
            result = plain()
            torch.cuda.synchronize(device)
            return result
    fn()  # warm-up
    return median([timed(fn)[0] for _ in range(repeats)])


def job(frames: int, work: Path, device: str = "cpu", **options: object) -> dict[str, object]:
    """One default job; each frame's seconds and loss evaluations (L-BFGS's objective
    calls, counted by wrapping ``optimize._run_lbfgs``; a frame's count is the running
    total at its ``frame`` event minus the previous frame's), and the quality of what it
    made (``quality``)."""
    with open_source(BUNNY) as source:
        first = round(START_S * source.info.fps)
    spec = JobSpec(content=str(BUNNY), output=str(work / "out"), mode="optimization", styles=((str(STYLE), 1.0),),
                   size=SIZE, frames=(first, first + frames), loss_net="hed-vgg16", device=device, **options)  # type: ignore[arg-type]
    evaluations = 0
    seconds: list[float] = []
    totals: list[int] = []
    original = optimize._run_lbfgs

    def counting(image, objective, *args, **kwargs):  # type: ignore[no-untyped-def]
        def counted() -> torch.Tensor:
            nonlocal evaluations
            evaluations += 1
            return objective()
        return original(image, counted, *args, **kwargs)

    def on_event(event: dict[str, object]) -> None:
        if event.get("event") == "frame" and not event.get("skipped"):
            seconds.append(float(event["seconds"]))  # type: ignore[arg-type]
            totals.append(evaluations)
        elif event.get("event") == "cut":
            raise SystemExit("the bench range holds a scene cut; pick another --start")

    optimize._run_lbfgs = counting  # type: ignore[assignment]
    load = load_average()
    began = time.perf_counter()
    try:
        run_job(spec, on_event)
    finally:
        optimize._run_lbfgs = original  # type: ignore[assignment]
    counts = [b - a for a, b in zip([0, *totals], totals)]
    return {"wall_s": round(time.perf_counter() - began, 1), "load_at_start": load, "frame_s": seconds,
            "evaluations": counts, "later_median_s": statistics.median(seconds[1:]),
            "later_median_evaluations": statistics.median(counts[1:]), "options": {k: str(v) for k, v in options.items()},
            **quality(work / "out", first, frames)}


def quality(folder: Path, first: int, frames: int) -> dict[str, float]:
    """Style and content loss (``hed-vgg16``, the style at the frame's long side, later
    frames) and warping error of a finished job's frames, as ``stylecore evaluate`` has them."""
    from stylecore import evaluate
    from stylecore.nets.loss_nets import load_loss_network

    made = [imageops.load_image(p) for p in sorted(folder.glob("frame_*.png"))]
    size = (made[0].shape[1], made[0].shape[0])
    with open_source(BUNNY) as source:
        contents = [imageops.resize(source.read(first + k), size) for k in range(frames)]
    style = imageops.load_image(STYLE)
    style = imageops.resize(style, imageops.scaled_size(style.shape[1], style.shape[0], max(size)))
    # The judge of bench.model_sheet's quality table, so the numbers compare with it.
    encoder = load_loss_network("hed-vgg16", {**evaluate.GATYS_STYLE_LAYERS, **evaluate.GATYS_CONTENT_LAYERS},
                                torch.device("cpu"))
    losses = evaluate.feature_losses(made[1:], contents[1:], encoder, style=style)
    return {"style_loss": losses.style_loss, "content_loss": losses.content_loss,
            "warping_error": evaluate.warping_error(made, contents).warping_error}


def reference_job(frames: int, work: Path) -> dict[str, object]:
    """The settings before stop 19 on today's solver: float32, and later frames held to
    the first frame's 0.2 % stop rule."""
    from stylecore.modes import optimize_loop

    saved = optimize_loop.LATER_TOLERANCE
    optimize_loop.LATER_TOLERANCE = optimize.FIRST_TOLERANCE
    try:
        return job(frames, work, bf16=False)
    finally:
        optimize_loop.LATER_TOLERANCE = saved


def parts(device: torch.device | None = None) -> dict[str, float]:
    """Seconds of the pieces of one later frame at 426x240, each on its own (the loss
    network on ``device``, the CPU by default; flow and writing are always the CPU's)."""
    device = device or torch.device("cpu")
    with open_source(BUNNY) as source:
        first = round(START_S * source.info.fps)
        a, b = (source.read(first + k) for k in (0, 1))
    size = imageops.scaled_size(a.shape[1], a.shape[0], SIZE)
    a, b = imageops.resize(a, size), imageops.resize(b, size)
    config = optimize.OptimConfig()
    from stylecore.nets.loss_nets import load_loss_network
    encoder = load_loss_network("hed-vgg16", config.layers, device, pooling=optimize.RECIPE.pooling)
    style = imageops.to_tensor(imageops.resize(imageops.load_image(STYLE), size), device)
    grams = optimize.style_grams(encoder, style, config.style_layers)
    pair = flow.flow_pair(a, b)
    target = optimize.TemporalTarget(imageops.to_tensor(flow.warp(a, pair.flow_bw), device),
                                     torch.from_numpy(np.ascontiguousarray(pair.mask, np.float32))[None, None].to(device))
    content = imageops.to_tensor(b, device)

    from stylecore import losses

    style_loss = losses.StyleLoss(grams, config.style_layers)
    content_loss = losses.ContentLoss(encoder(content), config.content_layers)

    def evaluation_only(bf16: bool) -> None:
        image = target.warped.clone().requires_grad_(True)
        feats = optimize._features(encoder, image, bf16)
        loss = content_loss(feats) + style_loss(feats) + losses.tv_loss(image) + losses.temporal_loss(
            image, target.warped, target.mask)
        loss.backward()

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "f.png"
        io_s = _median_time(lambda: imageops.save_image(out, imageops.resize(b, (640, 360))))
    return {"flow_pair_s": _median_time(lambda: flow.flow_pair(a, b)),
            "evaluation_float32_s": _median_time(lambda: evaluation_only(False), device=device),
            "evaluation_bfloat16_s": _median_time(lambda: evaluation_only(True), device=device),
            "content_features_s": _median_time(lambda: encoder(content), device=device),
            "write_frame_s": io_s}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.optimization_speed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--reference", action="store_true",
                        help="also run the settings before stop 19 (float32, 0.2 %% stop rule for later frames)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "optimization_speed.json")
    args = parser.parse_args(argv)
    report: dict[str, object] = {"machine": describe_machine().line(), "threads": torch.get_num_threads(),
                                 "size": "426x240"}
    report["parts"] = parts()
    print("parts:", json.dumps(report["parts"]), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        report["default"] = job(args.frames, Path(tmp))
    print("default:", json.dumps(report["default"]), flush=True)
    if args.reference:
        with tempfile.TemporaryDirectory() as tmp:
            report["reference"] = reference_job(args.frames, Path(tmp))
        print("reference:", json.dumps(report["reference"]), flush=True)
    return write_report(args.out, report)


if __name__ == "__main__":
    raise SystemExit(main())
