"""Running stylecore jobs from the suite and choosing the loss network."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stylecore.jobspec import JobSpec


@dataclass(frozen=True)
class JobTiming:
    """Seconds per written frame (in order) and the whole job's wall time."""

    frame_seconds: tuple[float, ...]
    wall_seconds: float
    frames_dir: Path


def run_timed(spec: JobSpec) -> JobTiming:
    """Run ``spec`` from scratch (its output is cleared first) and collect the frame events."""
    from stylecore.pipeline import frames_dir_for, run_job

    folder = frames_dir_for(spec.output)
    if folder.exists():
        shutil.rmtree(folder)
    seconds: list[float] = []

    def on_event(event: dict[str, Any]) -> None:
        if event.get("event") == "frame" and not event.get("skipped"):
            seconds.append(float(event["seconds"]))

    start = time.perf_counter()
    result = run_job(spec, on_event, overwrite=True)
    return JobTiming(tuple(seconds), time.perf_counter() - start, result.frames_dir)


def loss_network() -> tuple[str, str | None]:
    """``("vgg19", None)`` when the ImageNet weights are on this machine, else the random
    network and a note saying why (nothing is downloaded during a benchmark)."""
    from stylecore.errors import WeightsError
    from stylecore.vgg import resolve_vgg_weights

    try:
        resolve_vgg_weights(download=False)
        return "vgg19", None
    except WeightsError:
        return (
            "random-vgg19",
            "the ImageNet VGG19 weights are not on this machine, so optimization uses `random-vgg19` "
            "(same architecture and cost per iteration; lower visual quality)",
        )
