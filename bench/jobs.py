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
    """The network ``auto`` picks here (nothing is downloaded during a benchmark) and a note
    naming it; the weights-free ``random-vgg19`` with a warning when there is none."""
    from stylecore.errors import WeightsError
    from stylecore.nets.loss_nets import resolve_loss_net

    try:
        net = resolve_loss_net("auto")
        return net, f"optimization used the `{net}` loss network (what `--loss-net auto` picks on this machine)."
    except WeightsError:
        return (
            "random-vgg19",
            "no loss network weights on this machine, so optimization uses `random-vgg19` "
            "(low visual quality; `stylecore weights get hed-vgg16` installs a real one)",
        )
