"""Flat memory: the peak RSS of a feedforward job must not grow with the clip's length."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from .common import Section, child_env, fmt, median, run_child


@dataclass(frozen=True)
class MemoryBench:
    counts: tuple[int, ...] = (100, 1000)
    size: int = 128  # long side in pixels: small, so 1000 frames take a minute on a CPU
    runs: int = 1


def run(cfg: MemoryBench, clip: Path, clip_note: str, work: Path) -> Section:
    rows: list[list[object]] = []
    data: dict[str, object] = {}
    peaks: dict[int, float] = {}
    env = child_env()
    for count in cfg.counts:
        rss: list[float] = []
        secs: list[float] = []
        for run_no in range(cfg.runs):
            out = work / f"mem_{count}_{run_no}"
            if out.exists():
                shutil.rmtree(out)
            # A fresh interpreter per run, so the peak is this job's alone.
            child = run_child(
                [
                    sys.executable,
                    "-m",
                    "stylecore",
                    "stylize",
                    str(clip),
                    "--mode",
                    "feedforward",
                    "-o",
                    str(out),
                    "--frames",
                    f"0:{count}",
                    "--size",
                    str(cfg.size),
                    "--device",
                    "cpu",
                    "--quiet",
                ],
                env=env,
            )
            if child.returncode != 0:
                raise RuntimeError(f"feedforward job of {count} frames failed: {child.stderr_tail.strip()[-500:]}")
            rss.append(child.peak_rss_bytes / 2**20)
            secs.append(child.seconds)
            shutil.rmtree(out, ignore_errors=True)
        peaks[count] = median(rss)
        rows.append([count, fmt(median(rss), 4), fmt(median(secs)), fmt(count / median(secs))])
        data[str(count)] = {"peak_rss_mib": rss, "seconds": secs}
    notes = []
    if len(cfg.counts) >= 2:
        lo, hi = cfg.counts[0], cfg.counts[-1]
        growth = peaks[hi] - peaks[lo]
        notes.append(
            f"{hi} frames vs {lo} frames: peak RSS {'+' if growth >= 0 else ''}{growth:.1f} MiB "
            f"({growth / peaks[lo] * 100:+.1f} %) for {hi / lo:.0f}x the frames."
        )
    notes.append(clip_note)
    return Section(
        title="Flat memory (feedforward job, whole process)",
        setup=(
            f"`stylecore stylize CLIP --mode feedforward --size {cfg.size}` in a fresh process, CPU; peak resident set "
            f"size (`VmHWM` of the child, polled every 20 ms; includes Python, torch and the decoder); median of {cfg.runs} run(s)."
        ),
        columns=["frames", "peak RSS MiB", "wall s", "frames/s"],
        rows=rows,
        notes=notes,
        data=data,
    )
