"""The ``stylecore`` command: one module a subcommand (``main`` parses and dispatches)."""

from stylecore.cli.main import main

__all__ = ["main"]
