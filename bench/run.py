"""One command, one report: ``python -m bench.run [--quick] [--out BENCHMARKS.md]``.

Runs every part of the suite on this machine in one go and writes ``BENCHMARKS.md``,
``bench/plots/*.png``, ``bench/results.json`` and the README pictures in
``docs/images/``. Every part has size and frame-count knobs (``SuiteConfig``) so the
whole run fits in about 20 minutes on 2 CPU cores; ``--quick`` is a smoke run of a few
minutes whose figures are too small to quote.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import (
    part_feedforward,
    part_memory,
    part_optimization,
    part_quality,
    pictures,
    report,
)
from .common import (
    BUNNY,
    REPO,
    SAMPLES,
    STYLES_DIR,
    Machine,
    Section,
    describe_machine,
    extract_clip,
    load_average,
    read_frames,
    synthetic_clip,
)

PARTS = ("feedforward", "optimization", "quality", "memory", "pictures")
# Frames 205.. of Big Buck Bunny: a slow camera tilt over the meadow, the same shot as
# samples/bunny_96f_320x180.mp4, so the pictures and the quality figures show one scene.
BUNNY_START = 205
SAMPLE_CLIP = SAMPLES / "bunny_96f_320x180.mp4"
SAMPLE_FRAMES = 80  # its first shot; a scene cut follows


@dataclass(frozen=True)
class SuiteConfig:
    feedforward: part_feedforward.FeedforwardBench = part_feedforward.FeedforwardBench()
    optimization: part_optimization.OptimizationBench = part_optimization.OptimizationBench()
    quality: part_quality.QualityBench = part_quality.QualityBench()
    memory: part_memory.MemoryBench = part_memory.MemoryBench()
    gif_frames: int = 48  # at most the quality clip's length
    gif_fps: float = 8.0  # slower than the clip's 24 fps, so the flicker is easy to see
    parts: tuple[str, ...] = PARTS
    device: str = "cpu"


def quick_config() -> SuiteConfig:
    """A smoke run: every part, tiny sizes and counts."""
    return SuiteConfig(
        feedforward=part_feedforward.FeedforwardBench(sizes=((640, 360),), frames=8, runs=1),
        optimization=part_optimization.OptimizationBench(
            sizes=((320, 180),), frames=2, first_iterations=6, iterations=3
        ),
        quality=part_quality.QualityBench(frames=6, size=(160, 90), first_iterations=6, iterations=3, long_term_gap=3),
        memory=part_memory.MemoryBench(counts=(30, 120), size=96),
        gif_frames=12,
    )


@dataclass
class _Run:
    """What the parts hand to each other while the suite runs."""

    work: Path
    sections: list[Section] = field(default_factory=list)
    quality_outputs: part_quality.Outputs | None = None
    images: list[Path] = field(default_factory=list)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, a few minutes")
    parser.add_argument("--out", default=str(REPO / "BENCHMARKS.md"), help="report path (default BENCHMARKS.md); plots, pictures and results.json go beside it")
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts to run ({', '.join(PARTS)})")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch/onnxruntime CPU threads (default 0: torch's default); on a crowded machine 1 "
        "avoids thread oversubscription",
    )
    parser.add_argument("--device", default="cpu", help="device for the feedforward part (cpu or cuda)")
    parser.add_argument("--keep-work", action="store_true", help="keep the scratch folder of intermediate clips")
    parser.add_argument(
        "--ff-model-plain",
        metavar="MODEL",
        help="feedforward model trained WITHOUT the temporal loss (default: found by its metadata in "
        "stylecore/models/ or bench/models/)",
    )
    parser.add_argument(
        "--ff-model-temporal",
        metavar="MODEL",
        help="feedforward model trained WITH the temporal loss (default: likewise, else the shipped one)",
    )
    args = parser.parse_args(argv)
    parts = tuple(p.strip() for p in args.only.split(",") if p.strip())
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    config = dataclasses.replace(quick_config() if args.quick else SuiteConfig(), parts=parts, device=args.device)
    config = dataclasses.replace(
        config,
        quality=dataclasses.replace(config.quality, ff_plain=args.ff_model_plain, ff_temporal=args.ff_model_temporal),
    )
    command = shlex.join(["python", "-m", "bench.run", *(sys.argv[1:] if argv is None else argv)])
    return run_suite(config, Path(args.out), command=command, threads=args.threads, keep_work=args.keep_work)


def run_suite(config: SuiteConfig, out: Path, *, command: str, threads: int = 0, keep_work: bool = False) -> int:
    import torch

    if threads:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    machine = describe_machine()
    work = Path(tempfile.mkdtemp(prefix="stylecore-bench-"))
    state = _Run(work=work)
    # Plots, pictures and raw results go beside the report (the repository for the default
    # --out), so a smoke run written elsewhere never overwrites the published figures.
    root = out.resolve().parent
    plots = root / "bench" / "plots"
    images = root / "docs" / "images"
    style = SAMPLES / "starry_night_512.jpg"
    if not style.is_file():
        style = STYLES_DIR / "van_gogh_starry_night.jpg"
    steps: list[tuple[str, Callable[[], None]]] = [
        ("feedforward", lambda: _feedforward(config, state, plots)),
        ("optimization", lambda: _optimization(config, state, style, plots)),
        ("quality", lambda: _quality(config, state, style, plots)),
        ("memory", lambda: _memory(config, state, plots)),
        ("pictures", lambda: _pictures(config, state, style, images)),
    ]
    try:
        for name, step in steps:
            if name not in config.parts:
                continue
            t0 = time.perf_counter()
            load0 = load_average()
            before = len(state.sections)
            print(f"[bench] {name} ...", file=sys.stderr, flush=True)
            step()
            seconds = time.perf_counter() - t0
            if len(state.sections) > before:
                # The machine is shared: say how busy it was while this part ran.
                state.sections[-1].setup += (
                    f" Part took {seconds / 60:.1f} min; load average {load0:.1f} at its start, "
                    f"{load_average():.1f} at its end."
                )
            print(f"[bench] {name} done in {seconds:.0f} s", file=sys.stderr, flush=True)
    finally:
        if not keep_work:
            shutil.rmtree(work, ignore_errors=True)
    minutes = (time.perf_counter() - started) / 60
    report.write_markdown(out, machine, state.sections, command=command, minutes=minutes, images=state.images)
    _write_results(root / "bench" / "results.json", machine, config, state.sections, minutes)
    print(f"[bench] wrote {out} in {minutes:.1f} min", file=sys.stderr)
    return 0


# --- clips ----------------------------------------------------------------------------


def _clip(state: _Run, size: tuple[int, int], frames: int) -> tuple[Path, str]:
    """A test clip of ``frames`` frames at ``size`` and a note on where it came from.

    Big Buck Bunny from the shared data, else the repository's sample cut of the same shot
    (when it is long enough), else a synthetic textured pan.
    """
    name = f"{size[0]}x{size[1]}_{frames}.mp4"
    credit = "Big Buck Bunny (CC BY 3.0, Blender Foundation)"
    scaled = " upscaled from 640x360" if size[0] > 640 else ""
    if BUNNY.is_file():
        path = extract_clip(BUNNY, state.work / f"bunny_{name}", start_frame=BUNNY_START, frames=frames, size=size)
        return path, f"clip: {frames} frames of {credit} from frame {BUNNY_START}, {size[0]}x{size[1]}{scaled}"
    if SAMPLE_CLIP.is_file() and frames <= SAMPLE_FRAMES:
        path = extract_clip(SAMPLE_CLIP, state.work / f"sample_{name}", start_frame=0, frames=frames, size=size)
        return path, (
            f"clip: {frames} frames of {credit} from {SAMPLE_CLIP.name} (the shared video is absent), "
            f"{size[0]}x{size[1]}"
        )
    path = synthetic_clip(state.work / f"synthetic_{name}", frames=frames, size=size)
    return path, f"clip: {frames} frames of a synthetic textured pan, {size[0]}x{size[1]} (Big Buck Bunny is absent)"


# --- parts ----------------------------------------------------------------------------


def _feedforward(config: SuiteConfig, state: _Run, plots: Path) -> None:
    cfg = config.feedforward
    section = part_feedforward.run(cfg, state.work, device=config.device)
    series = part_feedforward.fps_series(section, cfg.sizes)
    if series:
        groups = [f"{w}x{h}" for w, h in cfg.sizes]
        section.plots.append(
            report.bar_groups(
                plots / "feedforward_fps.png",
                groups,
                series,
                ylabel="frames per second",
                title="Feedforward throughput, CPU (higher is better)",
                log=True,
            )
        )
    state.sections.append(section)


def _optimization(config: SuiteConfig, state: _Run, style: Path, plots: Path) -> None:
    cfg = config.optimization
    clips = {size: _clip(state, size, cfg.frames)[0] for size in cfg.sizes}
    section = part_optimization.run(cfg, clips, style, state.work)
    groups = [f"{w}x{h}" for w, h in cfg.sizes]
    series = {
        "first frame": [section.data[g]["first_s"] for g in groups],
        "later frame": [section.data[g]["later_s"] for g in groups],
    }
    section.plots.append(
        report.bar_groups(
            plots / "optimization_seconds.png",
            groups,
            series,
            ylabel="seconds per frame",
            title="Optimization mode, CPU (lower is better)",
        )
    )
    state.sections.append(section)


def _quality(config: SuiteConfig, state: _Run, style: Path, plots: Path) -> None:
    cfg = config.quality
    if not BUNNY.is_file() and not (SAMPLE_CLIP.is_file() and cfg.frames <= SAMPLE_FRAMES):
        note = f"Skipped: neither the Big Buck Bunny clip ({BUNNY}) nor the sample {SAMPLE_CLIP.name} is here."
        state.sections.append(Section(title="Temporal quality", setup="skipped", columns=[], notes=[note]))
        return
    found = part_feedforward.models_for_quality()
    plain = cfg.ff_plain or found.plain
    temporal = cfg.ff_temporal or found.temporal
    notes = tuple(
        f"No feedforward model trained {how} the temporal loss was found (pass --ff-model-{flag}), so that row is empty."
        for how, flag, path in (("without", "plain", plain), ("with", "temporal", temporal))
        if path is None
    )
    cfg = dataclasses.replace(cfg, ff_plain=plain, ff_temporal=temporal, ff_notes=notes)
    clip, clip_note = _clip(state, cfg.size, cfg.frames)
    section, outputs = part_quality.run(cfg, clip, style, state.work)
    section.notes.append(clip_note)
    labels = [row[0] for row in section.rows]
    values = [_as_float(row[1]) for row in section.rows]
    section.plots.append(
        report.horizontal_bars(
            plots / "warping_error.png",
            labels,
            values,
            xlabel="warping error (lower is better)",
            title="Temporal warping error",
        )
    )
    per_frame = {k: v["per_frame_warping_error"] for k, v in section.data.items() if isinstance(v, dict)}
    section.plots.append(
        report.lines(
            plots / "warping_error_per_frame.png",
            per_frame,
            xlabel="frame",
            ylabel="warping error vs frame t-1",
            title="Warping error per frame",
        )
    )
    state.sections.append(section)
    state.quality_outputs = outputs


def _memory(config: SuiteConfig, state: _Run, plots: Path) -> None:
    cfg = config.memory
    clip, note = _clip(state, (640, 360), max(cfg.counts))
    section = part_memory.run(cfg, clip, note, state.work)
    groups = [str(c) for c in cfg.counts]
    series = {"peak RSS (MiB)": [section.data[g]["peak_rss_mib"][0] for g in groups]}
    section.plots.append(
        report.bar_groups(
            plots / "memory.png",
            [f"{g} frames" for g in groups],
            series,
            ylabel="MiB",
            title="Peak resident memory of a feedforward job",
        )
    )
    state.sections.append(section)


def _pictures(config: SuiteConfig, state: _Run, style_path: Path, images: Path) -> None:
    from stylecore.io.imageops import load_image

    outputs = state.quality_outputs
    if outputs is None:
        state.sections.append(
            Section(
                title="Pictures",
                setup="skipped",
                columns=[],
                notes=["Skipped: the pictures reuse the temporal-quality outputs, which did not run."],
            )
        )
        return
    content = read_frames(outputs.content)
    ours = {
        "per-frame": outputs.frames.get(part_quality.METHOD_PER_FRAME),
        "temporal": outputs.frames.get(part_quality.METHOD_TEMPORAL),
    }
    ff = outputs.frames.get("feedforward, trained with temporal loss")
    if ff is not None:
        ours["feedforward"] = ff
    results = {k: v for k, v in ours.items() if v is not None}
    style = load_image(style_path)
    frame = min(len(content) - 1, max(1, len(content) // 2))
    sheet = pictures.contact_sheet(images / "contact_sheet.png", content, style, results, frame=frame)
    count = min(config.gif_frames, len(content))
    gif = pictures.animation(
        images / "side_by_side.gif",
        {"content": content[:count]} | {k: v[:count] for k, v in results.items()},
        fps=config.gif_fps,
    )
    state.images += [sheet, gif]


def _as_float(text: object) -> float:
    try:
        return float(str(text))
    except ValueError:
        return float("nan")


def _write_results(path: Path, machine: Machine, config: SuiteConfig, sections: list[Section], minutes: float) -> None:
    def plain(obj: Any) -> Any:
        if isinstance(obj, Path):
            return str(obj)
        if isinstance(obj, float) and obj != obj:
            return None
        if isinstance(obj, dict):
            return {str(k): plain(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [plain(v) for v in obj]
        return obj

    data = {
        "machine": dataclasses.asdict(machine),
        "config": dataclasses.asdict(config),
        "minutes": minutes,
        "sections": {
            s.title: {"setup": s.setup, "columns": s.columns, "rows": s.rows, "notes": s.notes, "data": s.data}
            for s in sections
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(plain(data), indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
