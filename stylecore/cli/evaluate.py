"""``stylecore evaluate``: temporal and perceptual metrics of a stylized clip.

Reads the frames, calls the metric functions of ``stylecore.evaluate`` and prints a
table (or JSON); per-frame values optionally go to a CSV file.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from stylecore.devices import DEVICE_CHOICES
from stylecore.errors import InputError, WeightsError

if TYPE_CHECKING:  # the metrics load torch and OpenCV: only when a command runs
    from stylecore.evaluate import FeatureLosses, NoiseStability, TemporalConfig, TemporalScores
from stylecore.nets.loss_nets import DEFAULT_LOSS_NET, LOSS_NETS

_DESCRIPTION = """\
Measure how stable and how faithful a stylized clip is.

  warping error        Lai et al. (ECCV 2018): optical flow between consecutive CONTENT
                       frames, a forward-backward occlusion mask M, and
                       sum(M * |warp(O_t) - O_t-1|^2) / sum(M) averaged over frame pairs
                       (RGB in [0,1], channels summed). Lower = less flicker. Pairs across a
                       scene cut are left out.
  long-term error      the same between frame t and frame t-k (--long-term K).
  temporal difference  mean |O_t - O_t-1|^2 without motion compensation (a baseline: it is
                       high for any moving clip).
  content/style loss   Gatys et al. losses of the stylized frames under the loss network.
  noise amplification  with --model: how much the feedforward model's output moves per
                       unit of small input noise (lower = more stable).

Frame k of STYLIZED is compared with content frame START+k (--frames START:END).
"""

_EPILOG = """\
examples:
  stylecore evaluate out/ --content clip.mp4 --style starry_night.jpg
  stylecore evaluate out.mp4 --content clip.mp4 --frames 100:148 --json
  stylecore evaluate out/ --content clip.mp4 --per-frame metrics.csv --no-losses
  stylecore evaluate out/ --content clip.mp4 --model my_style.safetensors
"""


@dataclass(frozen=True)
class LossOptions:
    """Which loss network judges the style and content losses."""

    loss_net: str = DEFAULT_LOSS_NET
    vgg_weights: str | None = None
    style: str | None = None
    style_scale: float = 1.0


@dataclass(frozen=True)
class NoiseOptions:
    """Noise-stability measurement of a feedforward model."""

    model: str  # path, or "default" for the shipped model
    sigma: float = 0.02
    frames: int = 8


@dataclass(frozen=True)
class EvaluationReport:
    """Everything ``stylecore evaluate`` measured."""

    stylized: str
    content: str
    content_indices: tuple[int, ...]
    width: int
    height: int
    temporal: TemporalScores
    losses: FeatureLosses | None
    loss_net: str | None
    noise: NoiseStability | None
    losses_note: str | None = None  # why the losses were skipped


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="warping error, long-term consistency, style/content loss of a stylized clip",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("stylized", help="stylized clip: video file, image folder or printf pattern")
    p.add_argument("--content", required=True, help="the source it was made from (video, folder or pattern)")
    p.add_argument("--style", help="style image, for the style loss (omit to skip the style loss)")
    p.add_argument(
        "--frames",
        metavar="START:END",
        help="content frames the stylized clip covers, 0-based, END exclusive (default: from 0, as "
        "many as the stylized clip has)",
    )
    p.add_argument(
        "--long-term",
        type=int,
        default=10,
        metavar="K",
        help="long-term consistency: frame t against t-K (default 10; 0 = off)",
    )
    p.add_argument("--no-cuts", action="store_true", help="do not detect scene cuts (score every pair)")
    p.add_argument(
        "--flow-preset",
        choices=("ultrafast", "fast", "medium"),
        default="medium",
        help="DIS optical flow preset for the content flow (default medium)",
    )
    p.add_argument("--no-losses", action="store_true", help="skip the style and content losses (no loss network)")
    p.add_argument(
        "--loss-net",
        choices=LOSS_NETS,
        default=DEFAULT_LOSS_NET,
        help="loss network for style/content loss (default auto: vgg19 or hed-vgg16, whichever is here; "
        "without either the losses are skipped with a note; see 'stylecore weights')",
    )
    p.add_argument("--vgg-weights", metavar="PATH", help="local vgg19-dcbb9e9d.pth; also $STYLECORE_VGG_WEIGHTS")
    p.add_argument(
        "--style-scale",
        type=float,
        default=1.0,
        help="the style image is resized to this times the frame's long side (default 1.0)",
    )
    p.add_argument(
        "--model",
        metavar="FILE|default",
        help="feedforward model to measure noise stability on the content frames ('default': shipped)",
    )
    p.add_argument("--noise-sigma", type=float, default=0.02, help="input noise standard deviation (default 0.02)")
    p.add_argument("--noise-frames", type=int, default=8, help="content frames used for noise stability (default 8)")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="for the loss network and the model")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--per-frame", metavar="FILE.csv", help="write per-frame values to this CSV file")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from stylecore.evaluate import TemporalConfig
    from stylecore.io.ranges import parse_frame_range

    losses = (
        None
        if args.no_losses
        else LossOptions(
            loss_net=args.loss_net, vgg_weights=args.vgg_weights, style=args.style, style_scale=args.style_scale
        )
    )
    if args.no_losses and args.style:
        raise InputError("--style is only used for the style loss; drop --no-losses or --style")
    noise = NoiseOptions(model=args.model, sigma=args.noise_sigma, frames=args.noise_frames) if args.model else None
    return evaluate_command(
        args.stylized,
        args.content,
        frames=parse_frame_range(args.frames) if args.frames else None,
        temporal=TemporalConfig(
            long_term_gap=args.long_term, flow_preset=args.flow_preset, detect_cuts=not args.no_cuts
        ),
        losses=losses,
        noise=noise,
        device=args.device,
        as_json=bool(args.json),
        per_frame=args.per_frame,
    )


def evaluate_command(
    stylized: str,
    content: str,
    *,
    frames: tuple[int, int] | None,
    temporal: TemporalConfig,
    losses: LossOptions | None,
    noise: NoiseOptions | None,
    device: str,
    as_json: bool,
    per_frame: str | None,
) -> int:
    """Evaluate, print the table or JSON, and write the CSV when asked."""
    report = evaluate_clip(
        stylized, content, frames=frames, temporal=temporal, losses=losses, noise=noise, device=device
    )
    if per_frame:
        from stylecore.io.imageops import atomic_write_bytes

        atomic_write_bytes(per_frame, per_frame_csv(report).encode())
    print(json.dumps(report_to_dict(report), indent=2) if as_json else format_table(report))
    return 0


def evaluate_clip(
    stylized: str,
    content: str,
    *,
    frames: tuple[int, int] | None = None,
    temporal: TemporalConfig | None = None,
    losses: LossOptions | None = None,
    noise: NoiseOptions | None = None,
    device: str = "auto",
) -> EvaluationReport:
    """Read the clips and run every requested metric."""
    from stylecore.devices import resolve_device
    from stylecore.evaluate import TemporalConfig, feature_losses, noise_stability, temporal_scores
    from stylecore.io.sources import open_source

    temporal = temporal or TemporalConfig()
    dev = resolve_device(device)
    with open_source(stylized) as out_src, open_source(content) as src:
        n_out = out_src.info.count
        indices = _content_indices(frames, n_out, src.info.count)
        if n_out < 2:
            raise InputError(f"{stylized} holds {n_out} frame; temporal metrics need at least 2 frames")

        def out_frames() -> Iterator[np.ndarray]:
            return (f for _, f in out_src.iter_frames(range(n_out)))

        def content_frames() -> Iterator[np.ndarray]:
            return (f for _, f in src.iter_frames(indices))

        # Losses first: a missing loss network fails in a second, not after the flow.
        loss_result = None
        loss_net = None
        note = None
        if losses is not None:
            loss_net, note = _choose_network(losses)
        if loss_net is not None and losses is not None:
            network = _loss_network(replace(losses, loss_net=loss_net), dev)
            style_img = _style_image(losses, out_src.info.width, out_src.info.height)
            loss_result = feature_losses(out_frames(), content_frames(), network, style=style_img, device=dev)
        temporal_result = temporal_scores({"stylized": out_frames()}, content_frames(), temporal)["stylized"]
        noise_result = None
        if noise is not None:
            model = _load_model(noise.model, dev)
            step = max(1, len(indices) // max(noise.frames, 1))
            picked = list(indices)[::step][: noise.frames]
            noise_result = noise_stability(
                model, (f for _, f in src.iter_frames(picked)), sigma=noise.sigma, device=dev
            )
    return EvaluationReport(
        stylized=stylized,
        content=content,
        content_indices=tuple(indices),
        width=out_src.info.width,
        height=out_src.info.height,
        temporal=temporal_result,
        losses=loss_result,
        loss_net=loss_net if loss_result is not None else None,
        noise=noise_result,
        losses_note=note,
    )


def _choose_network(opts: LossOptions) -> tuple[str | None, str | None]:
    """The concrete loss network; with ``auto`` and none on this machine, no network and a
    note (the temporal metrics need none). A network asked for by name must be there."""
    from stylecore.nets.loss_nets import AUTO, resolve_loss_net

    try:
        return resolve_loss_net(opts.loss_net, opts.vgg_weights), None
    except WeightsError:
        if opts.loss_net != AUTO:
            raise
        return None, "skipped: no loss network weights here ('stylecore weights get hed-vgg16' installs one)"


def _content_indices(frames: tuple[int, int] | None, n_out: int, n_content: int) -> range:
    start = 0 if frames is None else frames[0]
    end = start + n_out if frames is None or frames[1] == -1 else frames[1]
    if end - start != n_out:
        raise InputError(
            f"--frames {start}:{end} selects {end - start} content frames but the stylized clip has {n_out}; "
            f"use --frames {start}:{start + n_out}"
        )
    if end > n_content:
        raise InputError(
            f"the stylized clip needs content frames {start}..{end - 1} but the content has {n_content} frames; "
            "check --content and --frames"
        )
    return range(start, end)


def _loss_network(opts: LossOptions, device: Any) -> Any:
    from stylecore.losses import GATYS_RUDER
    from stylecore.nets.loss_nets import load_loss_network

    # The losses optimization mode minimises: the Gatys layers and pooling.
    try:
        return load_loss_network(opts.loss_net, GATYS_RUDER.layers, device, weights_path=opts.vgg_weights,
                                 pooling=GATYS_RUDER.pooling)
    except WeightsError as exc:
        raise WeightsError(f"{exc}; or skip the losses with --no-losses") from None


def _style_image(opts: LossOptions, width: int, height: int) -> np.ndarray | None:
    from stylecore.io.imageops import load_image, resize, scaled_size

    if opts.style is None:
        return None
    if opts.style_scale <= 0:
        raise InputError(f"--style-scale {opts.style_scale} must be positive")
    img = load_image(opts.style)
    long_side = max(16, int(round(max(width, height) * opts.style_scale)))
    return resize(img, scaled_size(img.shape[1], img.shape[0], long_side))


def _load_model(path: str, device: Any) -> Any:
    """A feedforward model as a callable ``1x3xHxW -> 1x3xHxW`` on ``device``."""
    from stylecore.catalog import default_model_path
    from stylecore.nets.model_file import load_model

    model, _info = load_model(default_model_path() if path == "default" else path, device)
    return model


# --- output ---------------------------------------------------------------------------


def _num(value: float | None) -> float | None:
    """JSON has no NaN: undefined values become null."""
    if value is None or math.isnan(value):
        return None
    return float(value)


def report_to_dict(report: EvaluationReport) -> dict[str, Any]:
    t = report.temporal
    data: dict[str, Any] = {
        "stylized": report.stylized,
        "content": report.content,
        "content_frames": [report.content_indices[0], report.content_indices[-1] + 1],
        "frames": t.frames,
        "width": report.width,
        "height": report.height,
        "warping_error": _num(t.warping_error),
        "pairs": t.pairs,
        "scene_cuts": [report.content_indices[i] for i in t.cuts],
        "long_term_gap": t.long_term_gap,
        "long_term_error": _num(t.long_term_error),
        "long_term_pairs": t.long_term_pairs,
        "temporal_difference": _num(t.temporal_difference),
    }
    if report.losses_note:
        data["losses_skipped"] = report.losses_note
    if report.losses is not None:
        data["loss_net"] = report.loss_net
        data["content_loss"] = report.losses.content_loss
        data["style_loss"] = report.losses.style_loss
    if report.noise is not None:
        data["noise_amplification"] = report.noise.amplification
        data["noise_output_change"] = report.noise.output_change
        data["noise_sigma"] = report.noise.sigma
        data["noise_frames"] = report.noise.frames
    return data


def _fmt(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"


def format_table(report: EvaluationReport) -> str:
    t = report.temporal
    first, last = report.content_indices[0], report.content_indices[-1] + 1
    cuts = f", {len(t.cuts)} scene cut(s) left out" if t.cuts else ""
    rows = [
        ("warping error (t-1)", _fmt(t.warping_error), f"{t.pairs} pairs{cuts}"),
    ]
    if t.long_term_gap:
        rows.append((f"long-term error (t-{t.long_term_gap})", _fmt(t.long_term_error), f"{t.long_term_pairs} pairs"))
    rows.append(("temporal difference", _fmt(t.temporal_difference), "no motion compensation"))
    if report.losses_note:
        rows.append(("content/style loss", "n/a", report.losses_note))
    if report.losses is not None:
        rows.append(("content loss", _fmt(report.losses.content_loss), f"{report.loss_net}, mean over frames"))
        style_note = str(report.loss_net) if report.losses.style_loss is not None else "no --style given"
        rows.append(("style loss", _fmt(report.losses.style_loss), style_note))
    if report.noise is not None:
        n = report.noise
        rows.append(
            ("noise amplification", _fmt(n.amplification), f"sigma {n.sigma}, {n.frames} frames; lower = stabler")
        )
    head = (
        f"{report.stylized}: {t.frames} frames, {report.width}x{report.height}, "
        f"against {report.content} frames {first}:{last}"
    )
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    lines = [head] + [f"  {name:<{width}}  {value:>{vwidth}}   {note}".rstrip() for name, value, note in rows]
    return "\n".join(lines)


def per_frame_csv(report: EvaluationReport) -> str:
    """One row per stylized frame; empty cells where a value is undefined."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    header = ["frame", "content_index", "scene_cut", "warping_error", "long_term_error", "temporal_difference"]
    losses = report.losses
    if losses is not None:
        header.append("content_loss")
        if losses.per_frame_style is not None:
            header.append("style_loss")
    writer.writerow(header)

    def cell(v: float | None) -> str:
        return "" if v is None or math.isnan(v) else f"{v:.6g}"

    for k, row in enumerate(report.temporal.per_frame):
        values = [
            str(k),
            str(report.content_indices[k]),
            "1" if row.cut else "0",
            cell(row.warping_error),
            cell(row.long_term_error),
            cell(row.temporal_difference),
        ]
        if losses is not None:
            values.append(cell(losses.per_frame_content[k]))
            if losses.per_frame_style is not None:
                values.append(cell(losses.per_frame_style[k]))
        writer.writerow(values)
    return buf.getvalue()
