"""The ffmpeg binary: where it is, how to start it, and what a media file holds."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path


def ffmpeg_exe() -> str | None:
    """Path of an ffmpeg binary: imageio-ffmpeg's bundled one, else one on PATH, else None."""
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        return shutil.which("ffmpeg")


def no_window() -> int:
    # Launched from Blender on Windows, ffmpeg would otherwise flash a console window.
    return getattr(subprocess, "CREATE_NO_WINDOW", 0)


def input_url(path: str | Path) -> str:
    # Without the protocol, ffmpeg would read a name such as "a:b.mp4" as protocol "a".
    return f"file:{path}"


def has_audio(path: str | Path) -> bool:
    """True when ``path`` is a media file with an audio stream (False without ffmpeg)."""
    exe = ffmpeg_exe()
    if exe is None or not Path(path).is_file():
        return False
    try:
        proc = subprocess.run(
            [exe, "-hide_banner", "-i", input_url(path)],
            check=False, capture_output=True, text=True, errors="replace", timeout=60,
            creationflags=no_window(),
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    # Without an output ffmpeg exits 1 after printing the input's streams.
    return re.search(r"Stream #\S+.*: Audio:", proc.stderr) is not None
