"""User-facing errors: each message says what went wrong and what to do about it."""

from __future__ import annotations

import re

# Library messages name settings by their Python argument, in backticks (`loss_net`); the
# CLI and the Blender add-on re-word them for their readers (flags, panel fields).
_SETTING = re.compile(r"`([a-z_]+)`")
# Settings whose flag is not their name with - for _.
_FLAGS = {"long_term_gap": "--long-term"}


def cli_wording(message: str) -> str:
    """``message`` as the command line says it: each backticked setting becomes its flag
    (`loss_net` -> --loss-net). The Blender add-on has its own wording (runner.for_blender)."""
    return _SETTING.sub(lambda m: _FLAGS.get(m.group(1), "--" + m.group(1).replace("_", "-")), message)


def first_line(exc: BaseException) -> str:
    """An exception's message cut to its first line (its type's name when it has none):
    library errors often carry tracebacks or hints over many lines."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class StylecoreError(Exception):
    """Base class for errors that are shown to the user as one line, without a traceback."""


class InputError(StylecoreError):
    """A content, style, model or schedule input is missing, unreadable or malformed."""


class WeightsError(StylecoreError):
    """Loss-network or model weights are missing, corrupt or cannot be downloaded."""


class JobMismatchError(StylecoreError):
    """An output folder holds a job made with different parameters."""


class OutputError(StylecoreError):
    """The output cannot be written: a read-only folder, a full disk, a run already using
    it, or a path that would replace a file the user did not ask to replace."""


class EncodeError(StylecoreError):
    """ffmpeg failed while encoding; ``reason`` is its last line of output."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class DeviceError(StylecoreError):
    """The requested device is unavailable, or it ran out of memory."""


class Cancelled(StylecoreError):
    """The job was cancelled; frames already written are kept and the job can resume."""
