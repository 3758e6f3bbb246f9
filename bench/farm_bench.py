"""The farm on one machine: a 96-frame optimization job at 192 px with ``--farm`` (a local
Ray cluster, 2 CPU workers, chunks of 48) against the same job without, and whether the
seam between the chunks flickers.

    python -m bench.farm_bench                  # bench/results/farm.json
    python -m bench.farm_bench --iterations 150 # the default quality (about 4x longer)

The seam criterion (issue: farm scale): the warping error into the first frame of each
stitched chunk is at most 1.5x the median warping error of the other frames of the same
run. The content is the 96-frame Big Buck Bunny sample (a real clip, with its own motion
and a scene cut, which restarts the chain in both runs).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stylecore.evaluate import warping_error
from stylecore.farm import plan_chunks
from stylecore.io.sources import open_source

from .common import write_report, REPO, SAMPLES, describe_machine, load_average

CLIP = SAMPLES / "bunny_96f_320x180.mp4"
STYLE = SAMPLES / "starry_night_512.jpg"
CHUNK = 48


def _stylize(out: Path, iterations: int, farm: bool) -> tuple[float, float, dict[str, object]]:
    """Wall seconds of one run, the load average when it started, and the farm's own
    figures (its ``farm`` and ``farm_stats`` events: Ray start, per-task import, setup and
    first frame), through the Python API so that the events are at hand."""
    import stylecore

    events: dict[str, object] = {}

    def keep(event: dict[str, object]) -> None:
        if event.get("event") in ("farm", "farm_stats"):
            events[str(event["event"])] = event

    options: dict[str, object] = dict(mode="optimization", size=192, iterations=iterations,
                                      first_iterations=2 * iterations, loss_net="hed-vgg16")
    if farm:
        options.update(farm="auto", chunk=CHUNK)
    load = load_average()
    began = time.perf_counter()
    stylecore.stylize(str(CLIP), str(out), style=str(STYLE), on_event=keep, **options)
    return time.perf_counter() - began, load, events


def _frames(folder: Path) -> list[np.ndarray]:
    with open_source(folder) as src:
        return [frame for _, frame in src.iter_frames(range(src.info.count))]


def seam_report(frames: Sequence[np.ndarray], content: Sequence[np.ndarray]) -> dict[str, object]:
    """Warping error into each stitched chunk's first frame vs the median of the others."""
    scores = warping_error(frames, content)
    errors = {row.index: row.warping_error for row in scores.per_frame if row.warping_error is not None}
    chunks = plan_chunks(len(frames), CHUNK, scores.cuts, chained=True)
    seams = [c.start for c in chunks if c.stitched]
    others = float(np.median([e for t, e in errors.items() if t not in seams]))
    at_seams = {t: errors[t] for t in seams if t in errors}
    return {"cuts": list(scores.cuts), "seam_frames": seams, "seam_errors": at_seams, "median_other": others,
            "worst_ratio": max(at_seams.values()) / others if at_seams else None,
            "mean_warping_error": scores.warping_error}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.farm_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=40, help="later-frame iterations (first frames: twice)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "farm.json")
    args = parser.parse_args(argv)
    content = _frames(CLIP)
    report: dict[str, object] = {"machine": describe_machine().line(), "clip": CLIP.name, "size": 192,
                                 "iterations": args.iterations, "chunk": CHUNK}
    with tempfile.TemporaryDirectory() as tmp:
        for name, farm in (("single", False), ("farm", True)):
            out = Path(tmp) / name
            seconds, load, events = _stylize(out, args.iterations, farm)
            report[name] = {"wall_s": round(seconds, 1), "load_at_start": load,
                            **seam_report(_frames(out), content), **events}
            print(name, json.dumps(report[name]), flush=True)
    return write_report(args.out, report)


if __name__ == "__main__":
    raise SystemExit(main())
