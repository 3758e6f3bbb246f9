"""What a mode's frame loop takes: its settings, made from a ``JobSpec`` in one place
(``loop_config``), and the event and cancel callables.

The loops (``optimize_loop.run_optimization``, ``feedforward.run_feedforward``) read these
settings, never the ``JobSpec``: ``run_job`` and the farm's tasks derive them the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stylecore.catalog import model_for
from stylecore.modes.optimize import OptimConfig
from stylecore.modes.style_video import StyleMapping

if TYPE_CHECKING:
    from stylecore.jobspec import JobSpec

Emit = Callable[[dict[str, Any]], None]
CancelCheck = Callable[[], bool]


@dataclass(frozen=True)
class FrameLoopConfig:
    """The settings every frame loop reads."""

    device: str
    size: int | None  # long side to stylize at; None = the mode's default
    preserve_colors: str
    style_weights: tuple[float, ...]  # one per output frame (number n at n - 1)


@dataclass(frozen=True)
class FeedforwardLoopConfig(FrameLoopConfig):
    """Feedforward mode: a trained model streams the frames through."""

    model: Path
    batch_size: int
    tile: int
    compile: bool | None  # None: automatic (feedforward.wants_compile)


@dataclass(frozen=True)
class OptimizationLoopConfig(FrameLoopConfig):
    """Optimization and style-video modes: each frame optimised, chained by optical flow."""

    styles: tuple[tuple[str, float], ...]
    style_video: str | None
    style_mapping: StyleMapping
    style_scale: float
    loss_net: str
    vgg_weights: str | None
    solver: OptimConfig  # optimizer and loss weights; iterations, scales and style weight vary per frame
    iterations: int
    first_iterations: int
    scales: int  # 0 = automatic from the frame size
    seed: int
    bf16: bool | None  # the loss network in bfloat16; None = where it is faster (devices.bf16_autocast_pays)


def loop_config(spec: JobSpec, frames: int) -> FeedforwardLoopConfig | OptimizationLoopConfig:
    """The frame loop's settings for ``spec`` making ``frames`` output frames."""
    common = (spec.device, spec.size, spec.preserve_colors,
              tuple(spec.style_weight_at(n) for n in range(1, frames + 1)))
    if spec.mode == "feedforward":
        return FeedforwardLoopConfig(*common, model=model_for(spec.model, spec.styles), batch_size=spec.batch_size,
                                     tile=spec.tile, compile=spec.compile)
    return OptimizationLoopConfig(
        *common,
        styles=spec.styles,
        style_video=spec.style_video,
        style_mapping=StyleMapping(spec.style_sync, spec.style_rate, spec.style_offset, spec.style_end),
        style_scale=spec.style_scale,
        loss_net=spec.loss_net,
        vgg_weights=spec.vgg_weights,
        solver=OptimConfig(optimizer=spec.optimizer, content_weight=spec.content_weight, tv_weight=spec.tv_weight,
                           temporal_weight=spec.temporal_weight),
        iterations=spec.iterations,
        first_iterations=spec.first_iterations,
        scales=spec.scales,
        seed=spec.seed,
        bf16=spec.bf16,
    )
