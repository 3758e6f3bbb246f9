"""Seconds per L-BFGS iteration of optimization mode for one loss network and frame size.

    python -m bench.lbfgs_iteration --loss-net hed-vgg16 --size 320x180 --iterations 20

Runs exactly ``--iterations`` iterations of the default Gatys/Ruder loss on a Big Buck
Bunny frame (the convergence stop is switched off so every run does the same work) and
prints the time per iteration, excluding start-up and weight loading.
"""

from __future__ import annotations

import argparse
import time

from .common import SAMPLES, load_average


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lbfgs_iteration", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loss-net", default="hed-vgg16")
    parser.add_argument("--size", default="320x180", help="WxH")
    parser.add_argument("--iterations", type=int, default=20)
    args = parser.parse_args(argv)

    import torch

    from stylecore.modes import optimize
    from stylecore.io.sources import open_source
    from stylecore.io.imageops import load_image, resize, to_tensor
    from stylecore.nets.loss_nets import load_loss_network

    w, h = (int(v) for v in args.size.split("x"))
    with open_source(str(SAMPLES / "bunny_96f_320x180.mp4")) as src:
        content = resize(src.read(40), (w, h))
    style = resize(load_image(SAMPLES / "starry_night_512.jpg"), (w, h))
    recipe = optimize.RECIPE
    encoder = load_loss_network(args.loss_net, recipe.layers, torch.device("cpu"), pooling=recipe.pooling)
    grams = optimize.style_grams(encoder, to_tensor(style), recipe.style_layers)
    started = time.perf_counter()
    optimize.optimize_frame(encoder, to_tensor(content), grams, optimize.OptimConfig(iterations=args.iterations,
                                                                                      tolerance=float("-inf")))
    seconds = time.perf_counter() - started
    print(f"{args.loss_net} {w}x{h}: {seconds / args.iterations:.3f} s per L-BFGS iteration "
          f"({args.iterations} iterations, {torch.get_num_threads()} threads, load average {load_average():.1f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
