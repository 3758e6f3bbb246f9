"""The ``stylecore`` command. Each subcommand lives in its own module and registers itself."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from stylecore import __version__
from stylecore.errors import Cancelled, StylecoreError, cli_wording

# Modules with a ``register(subparsers)`` function, in the order ``--help`` lists them.
COMMANDS = (
    "stylecore.cli.stylize",
    "stylecore.cli.models",
    "stylecore.cli.train",
    "stylecore.cli.weights",
    "stylecore.cli.evaluate",
    "stylecore.cli.export",
)

_EPILOG = """\
examples:
  stylecore stylize clip.mp4 --style starry_night.jpg -o out/       numbered PNG frames
  stylecore stylize clip.mp4 --style starry_night.jpg -o out.mp4    an encoded video (with the audio)
  stylecore stylize frames/ --style-video style_clip.mp4 -o out/    style changes over time
  stylecore stylize clip.mp4 -o out.mp4                             the shipped real-time model
  stylecore stylize clip.mp4 --model scream -o out.mp4              another shipped model ('stylecore models')
  stylecore train --style painting.jpg --content clip.mp4 -o mine   train a real-time model for any style
  stylecore weights                                                 where the VGG19 weights are

Run 'stylecore COMMAND --help' for every option of a command.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stylecore",
        description="Temporally stable neural style transfer for video.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"stylecore {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: returns the exit status (0 ok, 1 error, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except Cancelled:
        print("stylecore: interrupted; finished frames are kept: run the same command again to resume",
              file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("\nstylecore: interrupted; finished frames are kept: run the same command again to resume",
              file=sys.stderr)
        return 130
    except StylecoreError as exc:
        print(f"stylecore: error: {cli_wording(str(exc))}", file=sys.stderr)
        if os.environ.get("STYLECORE_DEBUG"):
            raise
        return 1


if __name__ == "__main__":
    sys.exit(main())
