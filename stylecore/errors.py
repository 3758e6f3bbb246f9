"""User-facing errors: each message says what went wrong and what to do about it."""

from __future__ import annotations


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
