"""Issue 12's GPU targets, measured on a CUDA device in one run:

- feedforward network alone at 1920x1080 >= 300 fps (and the other sizes, batch sizes,
  precisions, ``torch.compile``, the small copy);
- feedforward end to end at 1920x1080 >= 60 fps: ``run_job`` from an H.264 clip to PNG
  frames (decode + stylize + encode), with decoding and one PNG encoding timed alone;
- optimization mode's later frames at 426x240 <= 1 s (``bench.optimization_speed`` on
  the device: each frame's seconds and loss evaluations, the result's losses, and the
  parts of a later frame).

    python -m bench.gpu_targets --clips DIR      # writes bench/results/gpu_targets.json; DIR holds bbb_1920x1080.mp4, bbb_1280x720.mp4
    python -m bench.gpu_targets --clips DIR --skip-optimization --out results.json
    python -m bench.gpu_targets --clips DIR --device cpu --quick   # a dry run of the script

Network timings use CUDA events around ``repeats`` calls on frames already on the
device (real video frames, not zeros), after a warm-up; each figure is the median of
five such groups. Nothing here runs without a GPU: CI never has one, and the CPU
figures live in the other benches.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .common import REPO, describe_machine, load_average, write_report

TEACHER = "scream"
SMALL = "scream-small"
SIZES = ((1920, 1080), (1280, 720), (640, 360))


QUICK = {"batches": (1, 2), "repeats": 1, "groups": 1, "frames": 3}  # --quick: a dry run


def _fps(fn: Callable[[], object], frames_per_call: int, device: torch.device, repeats: int = 10,
         groups: int = 5) -> float:
    """Median frames per second of ``fn`` over ``groups`` groups of ``repeats`` calls (CUDA
    events on a GPU: the device's time, not the launches')."""
    for _ in range(min(3, repeats + 1)):
        fn()
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
    rates = []
    for _ in range(groups):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        began = time.perf_counter()
        for _ in range(repeats):
            fn()
        if cuda:
            end.record()
            end.synchronize()
            seconds = start.elapsed_time(end) / 1000
        else:
            seconds = time.perf_counter() - began
        rates.append(frames_per_call * repeats / seconds)
    return statistics.median(rates)


def _frames(clip: Path, count: int) -> np.ndarray:
    from stylecore.io.sources import open_source

    with open_source(clip) as source:
        return np.stack([frame for _, frame in source.iter_pixels(range(min(count, source.info.count)))])


def network_alone(clips: dict[tuple[int, int], Path], device: torch.device, quick: bool,
                  compiled: bool = True) -> list[dict[str, object]]:
    """fps of the network on device-resident frames, per model, size, batch and precision."""
    from stylecore.catalog import resolve_model
    from stylecore.modes.feedforward import Stylizer, get_stylizer
    from stylecore.nets.model_file import load_model

    rows: list[dict[str, object]] = []

    def measure(name: str, size: tuple[int, int], batch: int, variant: str) -> None:
        pixels = torch.from_numpy(_frames(clips[size], batch)).to(device)
        if pixels.shape[0] < batch:  # a short clip: repeat its frames
            pixels = pixels.repeat((batch + pixels.shape[0] - 1) // pixels.shape[0], 1, 1, 1)[:batch]
        began = time.perf_counter()
        if variant == "compiled bf16":
            stylizer = get_stylizer(resolve_model(name), device, compile=True)
        elif variant in ("eager fp16", "eager fp32", "eager bf16 NCHW", "eager bf16 untuned"):
            model, info = load_model(resolve_model(name), "cpu")
            dtype = {"eager fp16": torch.float16, "eager fp32": torch.float32}.get(variant, torch.bfloat16)
            stylizer = Stylizer(model, info, device, dtype=dtype)
            if variant.endswith("NCHW"):  # the plain layout, against channels-last
                stylizer.channels_last = False
                stylizer.model.to(memory_format=torch.contiguous_format)
        else:
            stylizer = get_stylizer(resolve_model(name), device)
        net = stylizer.compiled if stylizer.compiled is not None else stylizer.model
        x = stylizer._prepare(pixels.permute(0, 3, 1, 2))
        w = torch.ones(1, device=device)
        cuda = device.type == "cuda"
        # Jobs let cuDNN time its algorithms (devices.cudnn_autotune); "untuned" is its
        # heuristic choice, as before.
        torch.backends.cudnn.benchmark = cuda and not variant.endswith("untuned")
        timing = {"repeats": QUICK["repeats"], "groups": QUICK["groups"]} if quick else {}
        with torch.inference_mode():
            net(x, w)
            if cuda:
                torch.cuda.synchronize(device)
            first_s = time.perf_counter() - began
            fps = _fps(lambda: net(x, w), batch, device, **timing)
        # The stylizer's whole call, as a job makes it: pinned 8-bit frames in, 8-bit out.
        host = pixels.cpu()
        host = (host.pin_memory() if cuda else host).permute(0, 3, 1, 2)
        torch.backends.cudnn.benchmark = False  # the stylizer sets it itself
        call_fps = _fps(lambda: stylizer(host, [1.0] * batch, pixels=True), batch, device,
                        **(timing or {"repeats": 3, "groups": 3}))
        row = {"model": name, "size": f"{size[0]}x{size[1]}", "batch": batch, "variant": variant,
               "network_fps": round(fps, 1), "stylizer_call_fps": round(call_fps, 1),
               "first_call_s": round(first_s, 2),
               "cuda_peak_mib": round(torch.cuda.max_memory_allocated(device) / 2**20) if cuda else None}
        print("network:", json.dumps(row), flush=True)
        rows.append(row)
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
            if variant in ("eager bf16", "compiled bf16") and batch == 8 and size == SIZES[0] and name == TEACHER:
                torch.backends.cudnn.benchmark = True
                _profile(lambda: net(x, w))
                torch.backends.cudnn.benchmark = False

    def _profile(fn: Callable[[], object]) -> None:
        """Where the device's time goes in one batch: the top kernels."""
        from torch.profiler import ProfilerActivity, profile

        with torch.inference_mode(), profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(3):
                fn()
            torch.cuda.synchronize(device)
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=10, max_name_column_width=70), flush=True)

    big = SIZES[0]
    batches = QUICK["batches"] if quick else (1, 4, 8, 16)
    many = batches[-1] if quick else 8
    for batch in batches:
        measure(TEACHER, big, batch, "eager bf16")
    for variant in (("eager bf16 NCHW",) if quick else ("eager bf16 untuned", "eager fp16", "eager fp32", "eager bf16 NCHW")):
        measure(TEACHER, big, many, variant)
    measure(SMALL, big, many, "eager bf16")
    for size in SIZES[1:]:
        if size in clips:
            measure(TEACHER, size, many, "eager bf16")
    if compiled and device.type == "cuda":  # compiling for the CPU is bench_feedforward's business
        measure(TEACHER, big, many, "compiled bf16")
        measure(SMALL, big, many, "compiled bf16")
    return rows


def end_to_end(clips: dict[tuple[int, int], Path], device: str, work: Path, quick: bool,
               writers: tuple[int, ...] = ()) -> list[dict[str, object]]:
    """Whole jobs: H.264 in, PNG frames out (what the add-on makes), per size and batch;
    with ``writers``, only 1920x1080 in batches of 8, twice for each cap on the PNG writers."""
    from stylecore.modes import feedforward
    from stylecore.io.imageops import save_image
    from stylecore.io.sources import open_source
    from stylecore.jobspec import JobSpec
    from stylecore.pipeline import run_job

    rows: list[dict[str, object]] = []
    for size, clip in clips.items():
        with open_source(clip) as source:
            count = QUICK["frames"] if quick else source.info.count
            began = time.perf_counter()
            frames = [frame for _, frame in source.iter_pixels(range(count))]
            decode_fps = count / (time.perf_counter() - began)
        began = time.perf_counter()
        probes = min(8, count)
        for k in range(probes):
            save_image(work / "probe.png", frames[k])
        png_ms = (time.perf_counter() - began) / probes * 1000
        batches = QUICK["batches"] if quick else ((4, 8, 16) if size == SIZES[0] else (8,))
        runs = [(batch, feedforward._MAX_GPU_WRITERS) for batch in batches]
        if writers:
            if size != SIZES[0]:
                continue
            runs = [(8, cap) for cap in writers for _ in range(2)]
        for k, (batch, cap) in enumerate(runs):
            out = work / f"e2e_{size[0]}_{k}"
            spec = JobSpec(content=str(clip), output=str(out), mode="feedforward", model=TEACHER, device=device,
                           batch_size=batch, audio=False, frames=(0, count))
            times: list[float] = []
            default_cap, feedforward._MAX_GPU_WRITERS = feedforward._MAX_GPU_WRITERS, cap
            began = time.perf_counter()
            try:
                run_job(spec, lambda e: times.append(time.perf_counter()) if e.get("event") == "frame" else None)
                wall = time.perf_counter() - began
                threads = feedforward.writer_count(torch.device(device), in_order=False)
            finally:
                feedforward._MAX_GPU_WRITERS = default_cap
            made = sorted(out.glob("frame_*.png"))
            steady = (len(times) - batch - 1) / (times[-1] - times[batch]) if len(times) > 2 * batch + 1 else float("nan")
            row = {"size": f"{size[0]}x{size[1]}", "batch": batch, "writers": threads, "frames": count, "written": len(made),
                   "job_fps": round(count / wall, 1), "steady_fps": round(steady, 1), "wall_s": round(wall, 2),
                   "first_frame_s": round(times[0] - began, 2) if times else None,
                   "decode_alone_fps": round(decode_fps, 1), "png_encode_ms": round(png_ms, 1)}
            print("e2e:", json.dumps(row), flush=True)
            rows.append(row)
            shutil.rmtree(out)
    return rows


def optimization(frames: int, device: str) -> dict[str, object]:
    from . import optimization_speed

    report: dict[str, object] = {"parts": optimization_speed.parts(torch.device(device))}
    print("optimization parts:", json.dumps(report["parts"]), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        report["default"] = optimization_speed.job(frames, Path(tmp), device=device)
    print("optimization:", json.dumps(report["default"]), flush=True)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_targets", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=Path, required=True,
                        help="folder with bbb_1920x1080.mp4 and bbb_1280x720.mp4 (and bbb_640x360.mp4)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--frames", type=int, default=8, help="optimization frames (the first, then later ones)")
    parser.add_argument("--skip-network", action="store_true")
    parser.add_argument("--skip-e2e", action="store_true")
    parser.add_argument("--skip-optimization", action="store_true")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled networks (a minute each)")
    parser.add_argument("--writers", default="", help="e.g. 8,12: end to end at 1920x1080 only, per cap on the PNG writers")
    parser.add_argument("--quick", action="store_true", help="a dry run: one timing each, a few frames (any device)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "gpu_targets.json")
    args = parser.parse_args(argv)
    if not args.quick and not torch.cuda.is_available():
        raise SystemExit("bench.gpu_targets needs a CUDA GPU (torch.cuda.is_available() is False)")
    clips = {size: args.clips / f"bbb_{size[0]}x{size[1]}.mp4" for size in SIZES}
    clips = {size: path for size, path in clips.items() if path.is_file()}
    if SIZES[0] not in clips:
        raise SystemExit(f"{args.clips} has no bbb_1920x1080.mp4; make one with bench.bench_feedforward.make_clip")
    device = torch.device(args.device)
    report: dict[str, object] = {"machine": describe_machine().line(), "load_at_start": load_average(),
                                 "torch": torch.__version__,
                                 "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    if not args.skip_network:
        report["network"] = network_alone(clips, device, args.quick, compiled=not args.no_compile)
    if not args.skip_e2e:
        with tempfile.TemporaryDirectory() as tmp:
            writers = tuple(int(n) for n in args.writers.split(",") if n)
            report["end_to_end"] = end_to_end(clips, args.device, Path(tmp), args.quick, writers)
    if not args.skip_optimization:
        report["optimization"] = optimization(QUICK["frames"] if args.quick else args.frames, args.device)
    return write_report(args.out, report)


if __name__ == "__main__":
    raise SystemExit(main())
