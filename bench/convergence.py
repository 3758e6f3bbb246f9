"""Convergence of optimization mode's later frames: how many L-BFGS iterations they need.

    python -m bench.convergence                       # 426x240, 6 Big Buck Bunny frames
    python -m bench.convergence --size 426 --frames 8 --iterations 150

Runs the first frame as the pipeline does, then each later frame as the pipeline starts
and weights it (``optimize_loop.warm_start``, ``temporal_weights``; bfloat16 where the CPU
has it, no line search), for a fixed ``--iterations`` (no early stop), and records
the loss after every 10-iteration chunk. Also times one iteration on this machine (state
the load). Writes ``bench/results/convergence.json`` and a plot
``docs/images/convergence.png``: the loss of each later frame relative to its final value,
so the iteration budget and the stop rule can be read off.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence

import numpy as np
import torch

from stylecore import flow
from stylecore.io import imageops
from stylecore.devices import bf16_autocast_pays
from stylecore.modes import optimize, optimize_loop
from stylecore.io.imageops import load_image, resize, scaled_size, to_tensor
from stylecore.nets.loss_nets import load_loss_network

from .common import BUNNY, REPO, SAMPLES, load_average

RESULTS = REPO / "bench" / "results"


def frames(start_s: float, count: int, long_side: int) -> list[np.ndarray]:
    from stylecore.io.sources import open_source

    with open_source(BUNNY) as src:
        first = round(start_s * src.info.fps)
        out = [f for _, f in src.iter_frames(range(first, first + count))]
    h, w = out[0].shape[:2]
    return [resize(f, scaled_size(w, h, long_side)) for f in out]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.convergence", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=426, help="long side (default 426: 426x240)")
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--start", type=float, default=20.0, help="second of the clip to start at")
    parser.add_argument("--iterations", type=int, default=150, help="later-frame iterations (no early stop)")
    parser.add_argument("--style", default=str(SAMPLES / "starry_night_512.jpg"))
    args = parser.parse_args(argv)

    device = torch.device("cpu")
    bf16 = bf16_autocast_pays(device)  # the default, ``--bf16 auto``
    base = optimize.OptimConfig()
    encoder = load_loss_network("hed-vgg16", base.layers, device, pooling=optimize.RECIPE.pooling)
    clip = frames(args.start, args.frames, args.size)
    h, w = clip[0].shape[:2]
    style = load_image(args.style)
    style = resize(style, scaled_size(style.shape[1], style.shape[0], max(w, h)))
    grams = optimize.style_grams(encoder, to_tensor(style, device), base.style_layers)
    load_start = load_average()

    curves: list[list[tuple[int, float]]] = []
    seconds: list[float] = []
    previous: np.ndarray | None = None
    for k, content in enumerate(clip):
        trace: list[tuple[int, float]] = []
        temporal = None
        start = None
        if previous is not None:
            # As the pipeline starts and weights a later frame (``optimize_loop``).
            pair = flow.flow_pair(clip[k - 1], content)
            warped = flow.warp(previous, pair.flow_bw)
            weights = optimize_loop.temporal_weights(pair, clip[k - 1], content)
            temporal = optimize.TemporalTarget(to_tensor(warped, device), torch.from_numpy(weights)[None, None])
            start = to_tensor(optimize_loop.warm_start(warped, weights, content), device)
        # No early stop for later frames: the whole curve is the point.
        config = optimize.OptimConfig(iterations=args.iterations if temporal else 300,
                                      scales=1 if temporal else optimize.auto_scales(w, h),
                                      tolerance=float("-inf") if temporal else optimize.OptimConfig.tolerance,
                                      line_search=temporal is None, bf16=bf16)
        started = time.perf_counter()
        result = optimize.optimize_frame(encoder, to_tensor(content, device), grams, config,
                                         init=start, temporal=temporal,
                                         trace=lambda level, n, loss: trace.append((n, loss)))
        elapsed = time.perf_counter() - started
        previous = imageops.to_numpy(result)
        if temporal is not None:
            curves.append(trace)
            seconds.append(elapsed / max(trace[-1][0], 1))
        print(f"frame {k + 1}: {trace[-1][0] if trace else 0} iterations, {elapsed:.1f} s", flush=True)

    report = {
        "size": [w, h],
        "style": args.style,
        "iterations": args.iterations,
        "seconds_per_iteration": float(np.median(seconds)) if seconds else None,
        "load_average": [load_start, load_average()],
        "curves": curves,
        # Iterations after which each later frame is within 1 % / 0.2 % of its final loss.
        "within_1pct": [next(n for n, v in c if v <= c[-1][1] * 1.01) for c in curves],
        "within_0_2pct": [next(n for n, v in c if v <= c[-1][1] * 1.002) for c in curves],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "convergence.json").write_text(json.dumps(report, indent=1) + "\n")
    _plot(report)
    print(json.dumps({k: v for k, v in report.items() if k != "curves"}, indent=1))
    return 0


def _plot(report: dict[str, object]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=110)
    for k, curve in enumerate(report["curves"]):  # type: ignore[arg-type]
        n = [p[0] for p in curve]
        v = np.array([p[1] for p in curve])
        ax.plot(n, v / v[-1], label=f"frame {k + 2}")
    w, h = report["size"]  # type: ignore[misc]
    ax.set_xlabel("L-BFGS iterations")
    ax.set_ylabel("loss / final loss")
    ax.set_title(f"optimization mode, later frames, {w}x{h}, hed-vgg16")
    ax.set_ylim(0.98, 1.3)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(REPO / "docs" / "images" / "convergence.png")


if __name__ == "__main__":
    raise SystemExit(main())
