"""Temporal quality: warping error of each way of stylizing one clip, peers included."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stylecore.evaluate import TemporalConfig, TemporalScores, feature_losses, temporal_scores
from stylecore.jobspec import JobSpec

from . import peers
from .common import Section, fmt, read_frames
from .jobs import loss_network, run_timed


@dataclass(frozen=True)
class QualityBench:
    frames: int = 16
    size: tuple[int, int] = (192, 108)
    first_iterations: int = 30  # per-frame stylization uses this for every frame
    iterations: int = 15  # later frames of the temporal optimization
    long_term_gap: int = 8
    peer_smooth: float = peers.DEFAULT_SMOOTH
    # Feedforward models (path or None = not available), without / with the temporal loss.
    ff_plain: str | None = None
    ff_temporal: str | None = None
    ff_notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Method:
    label: str
    job: Callable[[], tuple[Path, float]] | None  # -> (frames, s/frame); None = unavailable here
    settings: str


@dataclass
class Outputs:
    """Where each method's frames are, so the pictures can reuse them."""

    content: Path
    frames: dict[str, list[np.ndarray]] = field(default_factory=dict)


METHOD_PER_FRAME = "optimization, per frame (temporal weight 0)"
METHOD_TEMPORAL = "optimization, temporal (Ruder et al.)"


def run(cfg: QualityBench, clip: Path, style: Path, work: Path) -> tuple[Section, Outputs]:
    net, net_note = loss_network()
    content = read_frames(clip)
    outputs = Outputs(content=clip)
    notes: list[str] = []

    def opt_job(name: str, temporal_weight: float) -> Callable[[], tuple[Path, float]]:
        def go() -> tuple[Path, float]:
            spec = JobSpec(
                content=str(clip),
                output=str(work / name),
                mode="optimization",
                styles=((str(style), 1.0),),
                size=max(cfg.size),
                iterations=cfg.iterations,
                first_iterations=cfg.first_iterations,
                temporal_weight=temporal_weight,
                loss_net=net,
                device="cpu",
            )
            timing = run_timed(spec)
            return timing.frames_dir, timing.wall_seconds / len(content)

        return go

    def ff_job(name: str, model: str) -> Callable[[], tuple[Path, float]]:
        def go() -> tuple[Path, float]:
            spec = JobSpec(content=str(clip), output=str(work / name), mode="feedforward", model=model, device="cpu")
            timing = run_timed(spec)
            return timing.frames_dir, timing.wall_seconds / len(content)

        return go

    def peer_job(name: str, smooth: float) -> Callable[[], tuple[Path, float]]:
        def go() -> tuple[Path, float]:
            dst = work / f"{name}.mp4"
            return dst, peers.stylize_video(clip, dst, smooth=smooth) / len(content)

        return go

    methods = [
        _Method(METHOD_PER_FRAME, opt_job("opt_per_frame", 0.0), f"{cfg.first_iterations} iterations every frame"),
        _Method(METHOD_TEMPORAL, opt_job("opt_temporal", 1.0), f"{cfg.first_iterations} first, {cfg.iterations} later"),
        _Method(
            "feedforward, trained without temporal loss",
            ff_job("ff_plain", cfg.ff_plain) if cfg.ff_plain else None,
            Path(cfg.ff_plain).name if cfg.ff_plain else "no such model",
        ),
        _Method(
            "feedforward, trained with temporal loss",
            ff_job("ff_temporal", cfg.ff_temporal) if cfg.ff_temporal else None,
            Path(cfg.ff_temporal).name if cfg.ff_temporal else "no such model",
        ),
    ]
    version = peers.available()
    if version:
        label = f"{peers.PEER} {version}, style {peers.PEER_STYLE}"
        methods += [
            _Method(label, peer_job("peer", 0.0), "its mp4v output"),
            _Method(
                f"{label}, --smooth {cfg.peer_smooth}", peer_job("peer_smooth", cfg.peer_smooth), "its mp4v output"
            ),
        ]
    else:
        notes.append(f"{peers.PEER} is not installed (`pip install {peers.PEER}`): its rows are missing.")

    produced: dict[str, list[np.ndarray]] = {}
    seconds: dict[str, float] = {}
    for method in methods:
        if method.job is not None:
            where, seconds[method.label] = method.job()
            produced[method.label] = read_frames(where)
    outputs.frames = produced

    config = TemporalConfig(long_term_gap=cfg.long_term_gap)
    # The content itself is the floor: what flow error alone costs on this clip.
    floor = temporal_scores({"content": content}, content, config)["content"]
    scores = temporal_scores(produced, content, config) if produced else {}
    # Next to the eye and the warping error: how much style and how much content each
    # output carries (a blurry, smooth output has a low warping error and a high style loss).
    judged = {"content": content, **produced}
    feature, judge_note = _feature_losses(judged, content, style)
    notes.append(judge_note)

    rows: list[list[object]] = [
        [
            "content itself (floor: flow error only)",
            fmt(floor.warping_error),
            fmt(floor.long_term_error),
            fmt(floor.temporal_difference),
            *_loss_cells(feature.get("content")),
            "",
            "",
        ]
    ]
    data: dict[str, object] = {"content": _score_dict(floor)}
    for method in methods:
        if method.job is None:
            rows.append([method.label, "n/a", "n/a", "n/a", "n/a", "n/a", "", method.settings])
            continue
        s = scores[method.label]
        sec = seconds[method.label]
        rows.append(
            [
                method.label,
                fmt(s.warping_error),
                fmt(s.long_term_error),
                fmt(s.temporal_difference),
                *_loss_cells(feature.get(method.label)),
                fmt(sec),
                method.settings,
            ]
        )
        data[method.label] = _score_dict(s) | {"seconds_per_frame": sec} | _loss_dict(feature.get(method.label))
    if floor.cuts:
        notes.append(f"scene cut(s) at clip frame(s) {', '.join(map(str, floor.cuts))}: those pairs are left out.")
    notes.extend(cfg.ff_notes)
    if net_note:
        notes.append(net_note)
    notes.append(
        f"The peer stylizes with its own built-in style {peers.PEER_STYLE} (its video mode takes no style image), so its "
        "numbers compare flicker, not looks; its frames pass through its mp4v encoder."
    )
    section = Section(
        title="Temporal quality",
        setup=(
            f"{len(content)} frames at {cfg.size[0]}x{cfg.size[1]}, style {style.name}; warping error (Lai et al. 2018, "
            f"RGB in [0,1], lower is better), long-term error against frame t-{cfg.long_term_gap}, plain temporal "
            "difference; one run each (the metrics are deterministic); s/frame is the whole job's wall time per frame."
        ),
        columns=[
            "method",
            "warping error",
            f"long-term (t-{cfg.long_term_gap})",
            "temporal diff.",
            "style loss",
            "content loss",
            "s/frame",
            "settings",
        ],
        rows=rows,
        notes=notes,
        data=data,
    )
    return section, outputs


JUDGE = "hed-vgg16"


def _feature_losses(
    clips: dict[str, list[np.ndarray]], content: list[np.ndarray], style: Path
) -> tuple[dict[str, tuple[float, float]], str]:
    """(style loss, content loss) of every clip, judged by hed-vgg16 with the Gatys layers."""
    import torch

    from stylecore.errors import WeightsError
    from stylecore.io.imageops import load_image, resize, scaled_size
    from stylecore.nets.loss_nets import load_loss_network
    from stylecore.modes.optimize import RECIPE

    try:
        net = load_loss_network(JUDGE, RECIPE.layers, torch.device("cpu"), pooling=RECIPE.pooling)
    except WeightsError as exc:
        return {}, f"style/content losses not measured: {exc}"
    h, w = content[0].shape[:2]
    image = load_image(style)
    image = resize(image, scaled_size(image.shape[1], image.shape[0], max(h, w)))
    out = {}
    for label, frames in clips.items():
        result = feature_losses(frames, content, net, style=image)
        out[label] = (float(result.style_loss or 0.0), result.content_loss)
    return out, (
        f"style loss and content loss: the normalised losses of `stylecore evaluate` (relative Gram and feature "
        f"errors, Gatys layers) judged by `{JUDGE}` for every method, the style image at the frame's long side, "
        "mean over frames; lower style loss = more of the painting, lower content loss = more of the source. "
        "The content row is the style loss of doing nothing."
    )


def _loss_cells(pair: tuple[float, float] | None) -> list[str]:
    return ["n/a", "n/a"] if pair is None else [fmt(pair[0]), fmt(pair[1])]


def _loss_dict(pair: tuple[float, float] | None) -> dict[str, object]:
    return {} if pair is None else {"style_loss": pair[0], "content_loss": pair[1]}


def _score_dict(s: TemporalScores) -> dict[str, object]:
    def num(v: float) -> float | None:
        return None if math.isnan(v) else v

    return {
        "warping_error": num(s.warping_error),
        "long_term_error": num(s.long_term_error),
        "temporal_difference": num(s.temporal_difference),
        "pairs": s.pairs,
        "long_term_pairs": s.long_term_pairs,
        "cuts": list(s.cuts),
        "per_frame_warping_error": [f.warping_error for f in s.per_frame],
    }
