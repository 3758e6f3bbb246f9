"""``stylecore weights``: where the loss network's weights are, and how to get them."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "weights",
        help="show where the VGG19 loss-network weights are looked for, and how to get them",
        description=(
            "Optimization mode and training use an ImageNet VGG19 as the loss network. This shows "
            "where its weights are looked for (--vgg-weights, $STYLECORE_VGG_WEIGHTS, the torch hub "
            "cache), whether they are there, and how to fetch them on an offline machine. "
            "Use --download to fetch them now."
        ),
    )
    parser.add_argument("--download", action="store_true", help="download the weights into the cache now")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    return weights_command(download=bool(args.download))


def weights_command(*, download: bool) -> int:
    from .vgg import resolve_vgg_weights, weights_report

    if download:
        path = resolve_vgg_weights(download=True, progress=True)
        print(f"VGG19 weights ready: {path}")
    print(weights_report())
    return 0
