"""Optimization mode: seconds for the first frame (cold, multi-scale) and later frames (warm)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stylecore.jobspec import JobSpec

from .common import Section, fmt, median
from .jobs import loss_network, run_timed


@dataclass(frozen=True)
class OptimizationBench:
    sizes: tuple[tuple[int, int], ...] = ((320, 180), (640, 360))
    frames: int = 3  # one first frame, the rest warm-started
    first_iterations: int = 20
    iterations: int = 10
    runs: int = 1


def run(cfg: OptimizationBench, clips: dict[tuple[int, int], Path], style: Path, work: Path) -> Section:
    net, net_note = loss_network()
    rows: list[list[object]] = []
    data: dict[str, object] = {}
    for size in cfg.sizes:
        first: list[float] = []
        later: list[float] = []
        for run_no in range(cfg.runs):
            spec = JobSpec(
                content=str(clips[size]),
                output=str(work / f"opt_{size[0]}x{size[1]}_{run_no}"),
                mode="optimization",
                styles=((str(style), 1.0),),
                frames=(0, cfg.frames),
                size=max(size),
                iterations=cfg.iterations,
                first_iterations=cfg.first_iterations,
                loss_net=net,
                device="cpu",
            )
            timing = run_timed(spec)
            first.append(timing.frame_seconds[0])
            later.append(median(timing.frame_seconds[1:]))
        f, l_ = median(first), median(later)
        rows.append(
            [
                f"{size[0]}x{size[1]}",
                fmt(f),
                fmt(l_),
                fmt(f / cfg.first_iterations),
                fmt(l_ / cfg.iterations),
                fmt(l_ / cfg.iterations * 150 + 0.0),
            ]
        )
        data[f"{size[0]}x{size[1]}"] = {"first_s": f, "later_s": l_, "first_runs": first, "later_runs": later}
    notes = [
        "s/iteration includes the optical flow, warping and PNG writing of the frame, spread over its iterations.",
        f"The last column extrapolates a later frame to the default `--iterations {JobSpec.iterations}` (first frames: "
        f"at most {JobSpec.first_iterations}); L-BFGS stops once the loss stops falling, so real frames are often faster.",
    ]
    if net_note:
        notes.append(net_note)
    return Section(
        title="Optimization mode (Gatys/Ruder), CPU",
        setup=(
            f"{cfg.frames} frames of the test clip per size; first frame {cfg.first_iterations} L-BFGS iterations "
            f"(coarse-to-fine), later frames {cfg.iterations} iterations with the temporal loss; loss network "
            f"`{net}`; median of {cfg.runs} run(s)."
        ),
        columns=[
            "size",
            "first frame s",
            "later frame s",
            "first s/iter",
            "later s/iter",
            "later frame @150 it (est.) s",
        ],
        rows=rows,
        notes=notes,
        data=data,
    )
