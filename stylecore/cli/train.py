"""``stylecore train``: train a feedforward model for a style image, by name."""

from __future__ import annotations

import argparse
import shlex
import sys

_DESCRIPTION = """\
Train a real-time (feedforward) model for one style image. The model goes into your model
folder under its name (or to a .safetensors path), with a thumbnail of the style; then
'stylecore stylize clip.mp4 --model NAME' uses it, and so does '--style IMAGE' in
feedforward mode and Blender's Stylize.

Content to learn from: --content (your own footage: the clip you will stylize gives the
best result for that shot, its real motion trains the temporal stability) plus the
general data (--data; by default the sample content of a checkout and the folders listed
in $STYLECORE_TRAINING_DATA). More varied content generalises better.
"""

_EPILOG = """\
examples:
  stylecore train --style scream.jpg --content clip.mp4 -o scream_clip
  stylecore train --style scream.jpg --data videos/ --data photos/ -o scream --quality best
  stylecore train --style s.jpg --content clip.mp4 -o test --steps 20 --size 64 --loss-net random-vgg19

Ctrl+C keeps a checkpoint: run the same command again to resume (--restart starts over).
Steps per --quality: draft 300, good 1500 (default), best 4000. For every training
setting see 'python -m training.train --help'.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from training.job import DEFAULT_QUALITY, QUALITY_STEPS

    from stylecore.devices import DEVICE_CHOICES
    from stylecore.nets.loss_nets import LOSS_NETS

    p = subparsers.add_parser(
        "train",
        help="train a real-time model for a style image",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--style", required=True, help="the style image (a painting)")
    p.add_argument("-o", "--output", required=True,
                   help="model name (goes to your model folder, see 'stylecore models') or a .safetensors path")
    p.add_argument("--content", action="append", default=[],
                   help="your own footage: video, frame folder or image; repeat to combine")
    p.add_argument("--data", action="append", default=None,
                   help="general training data instead of the defaults; repeat to combine")
    p.add_argument("--quality", choices=tuple(QUALITY_STEPS), default=DEFAULT_QUALITY,
                   help="training length (default %(default)s)")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps (overrides --quality)")
    p.add_argument("--size", type=int, default=None, help="training crop size in pixels (default 256)")
    p.add_argument("--loss-net", choices=LOSS_NETS, default=None, help="loss network (default auto)")
    p.add_argument("--device", choices=DEVICE_CHOICES, default=None)
    p.add_argument("--preview-every", type=int, default=None, help="steps between preview sheets")
    p.add_argument("--restart", action="store_true", help="discard an interrupted run's checkpoint and start over")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from training.job import TrainJob, run_train_job
    from training.progress import TrainingBar

    options = {key: value for key, value in (("size", args.size), ("loss_net", args.loss_net),
                                             ("device", args.device), ("preview_every", args.preview_every))
               if value is not None}
    job = TrainJob(style=args.style, output=args.output, content=tuple(args.content),
                   data=None if args.data is None else tuple(args.data), quality=args.quality, steps=args.steps,
                   restart=args.restart, options=options)
    bar = TrainingBar(disabled=True if args.quiet else None)
    try:
        path = run_train_job(job, on_event=bar, log=bar.log,
                             command=shlex.join(["stylecore", "train", *sys.argv[2:]]))
    finally:
        bar.close()
    if bar.preview:
        print(f"last preview: {bar.preview}")
    from stylecore.catalog import user_models_dir

    named = path.parent == user_models_dir().resolve() or path.parent == user_models_dir()
    print(f"model: {path} (use it with --model {path.stem if named else path})")
    return 0
