"""Stylecore: temporally stable neural style transfer for video."""

from __future__ import annotations

__version__ = "0.1.0"
