"""User-facing errors: each message says what went wrong and what to do about it."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

# Library messages name settings by their Python argument, in backticks (`loss_net`); the
# CLI and the Blender add-on re-word them for their readers (flags, panel fields).
_SETTING = re.compile(r"`([a-z_]+)`")


def reword(message: str, names: Mapping[str, str] | Callable[[str], str]) -> str:
    """Replace each backticked setting in ``message`` by what ``names`` calls it (a mapping,
    where unknown names just lose the backticks, or a function)."""
    if callable(names):
        return _SETTING.sub(lambda m: names(m.group(1)), message)
    return _SETTING.sub(lambda m: names.get(m.group(1), m.group(1)), message)


def cli_flag(setting: str) -> str:
    """``loss_net`` -> ``--loss-net``: how the command line names a setting."""
    return "--" + setting.replace("_", "-")


class StylecoreError(Exception):
    """Base class for errors that are shown to the user as one line, without a traceback."""


class InputError(StylecoreError):
    """A content, style, model or schedule input is missing, unreadable or malformed."""


class WeightsError(StylecoreError):
    """Loss-network or model weights are missing, corrupt or cannot be downloaded."""


class JobMismatchError(StylecoreError):
    """An output folder holds a job made with different parameters."""


class DeviceError(StylecoreError):
    """The requested device is unavailable, or it ran out of memory."""


class Cancelled(StylecoreError):
    """The job was cancelled; frames already written are kept and the job can resume."""
