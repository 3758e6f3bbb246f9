"""The optimization-mode calibration sheet: contents x styles at the default settings.

    python -m bench.calibration                       # docs/images/calibration.jpg, 512 px, defaults
    python -m bench.calibration --size 256 --set style_weight=3 --out /tmp/sweep.png

Each cell is a real job (``stylecore.stylize`` on one image, optimization mode), so the
sheet shows exactly what a user gets; ``--set FIELD=VALUE`` overrides a job field to try
other settings. Cells are kept in ``bench/results/calibration/`` and reused, so an
interrupted run resumes. A last row shows ``preserve_colors`` none / luminance /
histogram for one content and style. Beside the picture, the style and content loss of
every cell (with the job's own loss network) are printed and written as JSON.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from .common import BUNNY, REPO, SAMPLES, load_average

WORK = REPO / "bench" / "results" / "calibration"
# Contents: a landscape and a dark close-up from Big Buck Bunny, a portrait, an animal close-up.
BUNNY_SECONDS = {"bbb_meadow": 9.0, "bbb_burrow": 45.0}
STILLS = {"astronaut": SAMPLES / "astronaut_512x384.jpg", "chelsea": SAMPLES / "chelsea_451x300.jpg"}
# The committed sheet: three contents (about 4 minutes a cell at 512 px on 2 CPU cores).
DEFAULT_CONTENTS = ("bbb_meadow", "bbb_burrow", "astronaut")
STYLES = {
    "starry_night": SAMPLES / "starry_night_512.jpg",
    "the_scream": SAMPLES / "the_scream_512.jpg",
    "the_shipwreck": SAMPLES / "the_shipwreck_512.jpg",
    "woman_with_a_hat": SAMPLES / "woman_with_a_hat_512.jpg",
}
COLOUR_ROW = ("bbb_meadow", "the_scream")
TILE_H = 216


def content_images(folder: Path) -> dict[str, Path]:
    """The contents as PNG files (Big Buck Bunny frames from the shared clip, or the sample)."""
    from stylecore.io.sources import open_source
    from stylecore.io.imageops import save_image

    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    clip = BUNNY if BUNNY.is_file() else SAMPLES / "bunny_96f_320x180.mp4"
    with open_source(str(clip)) as src:
        for name, seconds in BUNNY_SECONDS.items():
            index = min(int(seconds * src.info.fps), src.info.count - 1) if clip == BUNNY else 40
            path = folder / f"{name}.png"
            if not path.is_file():
                save_image(path, src.read(index))
            out[name] = path
    out.update(STILLS)
    return out


def run_cell(content: Path, style: Path, options: dict[str, Any]) -> tuple[np.ndarray, float]:
    """Stylize one image with ``options`` (cached by their hash); returns it and the seconds."""
    import stylecore
    from stylecore.io.imageops import load_image

    key = json.dumps({"content": str(content), "style": str(style), **options}, sort_keys=True)
    folder = WORK / hashlib.sha256(key.encode()).hexdigest()[:12]
    frame = folder / "frame_000001.png"
    seconds = 0.0
    if not frame.is_file():
        started = time.perf_counter()
        stylecore.stylize(str(content), str(folder), style=str(style), mode="optimization", **options)
        seconds = time.perf_counter() - started
        (folder / "seconds.txt").write_text(f"{seconds:.1f}\n")
    elif (folder / "seconds.txt").is_file():
        seconds = float((folder / "seconds.txt").read_text())
    return load_image(frame), seconds


@functools.lru_cache(maxsize=2)
def _judge(loss_net: str) -> Any:
    """The loss network that judges every cell (loaded once)."""
    import torch

    from stylecore.nets.loss_nets import load_loss_network
    from stylecore.modes.optimize import RECIPE

    return load_loss_network(loss_net, RECIPE.layers, torch.device("cpu"), pooling=RECIPE.pooling)


def losses_of(image: np.ndarray, content: np.ndarray, style: np.ndarray, loss_net: str, long_side: int
              ) -> tuple[float, float]:
    """Style and content loss of one result (the normalised losses, Gatys layers)."""
    from stylecore.evaluate import feature_losses
    from stylecore.io.imageops import resize, scaled_size

    net = _judge(loss_net)
    # Judged at the processing size: the written-back result is upscaled to the source's.
    h, w = content.shape[:2]
    size = scaled_size(w, h, min(long_side, max(h, w)))
    image, content = resize(image, size), resize(content, size)
    style = resize(style, scaled_size(style.shape[1], style.shape[0], max(size)))
    result = feature_losses([image], [content], net, style=style)
    return float(result.style_loss or 0.0), float(result.content_loss)


def _tile(image: np.ndarray, label: str | None = None) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    tile = cv2.resize(image, (round(w * TILE_H / h), TILE_H), interpolation=cv2.INTER_AREA)
    if label:
        cv2.putText(tile, label, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(tile, label, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (1, 1, 1), 1, cv2.LINE_AA)
    return tile


def _row(tiles: list[np.ndarray], widths: list[int]) -> np.ndarray:
    cells = []
    for tile, width in zip(tiles, widths):
        pad = np.ones((TILE_H, width, 3), np.float32)
        pad[:, : min(width, tile.shape[1])] = tile[:, :width]
        cells.append(pad)
        cells.append(np.ones((TILE_H, 4, 3), np.float32))
    return np.concatenate(cells[:-1], axis=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.calibration", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO / "docs" / "images" / "calibration.jpg"))
    parser.add_argument("--size", type=int, default=512, help="long side (default 512)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a job field, e.g. style_weight=2 (repeatable)")
    parser.add_argument("--contents", nargs="*", default=list(DEFAULT_CONTENTS),
                        help=f"contents (default {' '.join(DEFAULT_CONTENTS)}; also chelsea)")
    parser.add_argument("--styles", nargs="*", help="subset of styles (default all)")
    parser.add_argument("--no-colour-row", action="store_true", help="skip the preserve-colours row")
    args = parser.parse_args(argv)

    from stylecore.io.imageops import load_image, save_image

    options: dict[str, Any] = {"size": args.size}
    for item in args.set:
        field, _, value = item.partition("=")
        options[field] = json.loads(value) if value[:1] in "0123456789-[{tf" or value in ("null",) else value
    contents = content_images(WORK / "contents")
    contents = {k: v for k, v in contents.items() if k in args.contents}
    styles = {k: v for k, v in STYLES.items() if not args.styles or k in args.styles}
    print(f"calibration at {options}; load average {load_average():.1f} at start", flush=True)

    style_images = {name: load_image(path) for name, path in styles.items()}
    widths = [max(_tile(load_image(p)).shape[1] for p in contents.values())] * (len(styles) + 1)
    header = _row([np.ones((TILE_H, widths[0], 3), np.float32)] + [_tile(im, name) for name, im in style_images.items()],
                  widths)
    rows = [header]
    table: list[dict[str, Any]] = []
    loss_net = None
    for cname, cpath in contents.items():
        content = load_image(cpath)
        tiles = [_tile(content, cname)]
        for sname, spath in styles.items():
            image, seconds = run_cell(cpath, spath, options)
            if loss_net is None:
                from stylecore.nets.loss_nets import resolve_loss_net

                loss_net = resolve_loss_net(str(options.get("loss_net", "auto")))
            style_l, content_l = losses_of(image, content, style_images[sname], loss_net, args.size)
            table.append(dict(content=cname, style=sname, style_loss=style_l, content_loss=content_l, seconds=seconds))
            print(f"{cname:>12} x {sname:<18} style {style_l:.3f}  content {content_l:.3f}  {seconds:.0f} s", flush=True)
            tiles.append(_tile(image))
        rows.append(_row(tiles, widths))
    if not args.no_colour_row and COLOUR_ROW[0] in contents:
        cpath, spath = contents[COLOUR_ROW[0]], STYLES[COLOUR_ROW[1]]
        tiles = [_tile(load_image(cpath), "content"), _tile(load_image(spath), COLOUR_ROW[1])]
        for mode in ("none", "luminance", "histogram"):
            colour = {} if mode == "none" else {"preserve_colors": mode}  # "none" is the grid's own cell
            image, _ = run_cell(cpath, spath, {**options, **colour})
            tiles.append(_tile(image, f"colours: {mode}"))
        rows.append(_row(tiles, widths))
    width = max(r.shape[1] for r in rows)
    sheet = np.concatenate(
        [np.pad(r, ((2, 2), (0, width - r.shape[1]), (0, 0)), constant_values=1.0) for r in rows], axis=0
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_image(out, sheet)
    out.with_suffix(".json").write_text(json.dumps({"options": options, "loss_net": loss_net, "cells": table}, indent=1))
    print(f"wrote {out}; load average {load_average():.1f} at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
