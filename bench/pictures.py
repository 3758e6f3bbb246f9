"""Pictures for the README: a contact sheet and a short side-by-side GIF.

The contact sheet shows one frame as content / style / per-frame / temporal, and under
each stylized frame its flicker map: the motion-compensated change from the previous
frame, ``M * ||warp(O_t) - O_t-1||^2`` (the warping error before averaging), so a still
picture shows what the animation shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from stylecore.evaluate import pair_geometry
from stylecore.flow import warp

_LABEL_H = 22
_BG = 255


def to_u8(img: np.ndarray) -> np.ndarray:
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def labelled(img: np.ndarray, label: str) -> np.ndarray:
    """uint8 RGB panel with a white strip and a label above it."""
    h, w = img.shape[:2]
    panel = np.full((h + _LABEL_H, w, 3), _BG, np.uint8)
    panel[_LABEL_H:] = img
    scale = 0.45 if w >= 240 else 0.35
    cv2.putText(panel, label, (4, _LABEL_H - 7), cv2.FONT_HERSHEY_SIMPLEX, scale, (20, 20, 20), 1, cv2.LINE_AA)
    return panel


def _put_fitted(panel: np.ndarray, text: str, *, y: int, width: int) -> None:
    """Draw ``text`` at the left of ``panel``, shrunk until it fits in ``width`` pixels."""
    scale = 0.5
    while scale > 0.25 and cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] > width:
        scale -= 0.05
    cv2.putText(panel, text, (6, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (20, 20, 20), 1, cv2.LINE_AA)


def fit(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Centre-crop to the aspect of ``size`` = (w, h), then resize."""
    w, h = size
    ih, iw = img.shape[:2]
    target = w / h
    if iw / ih > target:
        cw = int(round(ih * target))
        x = (iw - cw) // 2
        img = img[:, x : x + cw]
    else:
        ch = int(round(iw / target))
        y = (ih - ch) // 2
        img = img[y : y + ch]
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)


def flicker_map(
    prev_out: np.ndarray, cur_out: np.ndarray, prev_content: np.ndarray, cur_content: np.ndarray
) -> np.ndarray:
    """Per-pixel ``M * ||warp(O_t) - O_t-1||^2`` in frame t-1 (H x W)."""
    geom = pair_geometry(prev_content, cur_content)
    return geom.mask * ((warp(cur_out, geom.flow) - prev_out) ** 2).sum(axis=-1)


def _heat(values: np.ndarray, vmax: float) -> np.ndarray:
    norm = np.clip(values / max(vmax, 1e-12), 0, 1)
    colour = cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)
    return colour[..., ::-1]  # BGR -> RGB


def contact_sheet(
    path: Path,
    content: Sequence[np.ndarray],
    style: np.ndarray,
    results: dict[str, Sequence[np.ndarray]],
    *,
    frame: int,
) -> Path:
    """Row 1: content, style, each result at ``frame``. Row 2: the flicker maps of the results."""
    h, w = content[frame].shape[:2]
    top = [labelled(to_u8(content[frame]), f"content, frame {frame}"), labelled(to_u8(fit(style, (w, h))), "style")]
    maps = {
        name: flicker_map(frames[frame - 1], frames[frame], content[frame - 1], content[frame])
        for name, frames in results.items()
    }
    # One colour scale for all maps, so brighter means more flicker across panels.
    vmax = float(np.percentile(np.concatenate([m.ravel() for m in maps.values()]), 99.5)) if maps else 1.0
    bottom = [
        labelled(np.full((h, w, 3), _BG, np.uint8), ""),
        labelled(np.full((h, w, 3), _BG, np.uint8), ""),
    ]
    for k, text in enumerate(("flicker maps:", "|warp(O_t) - O_t-1|^2", "brighter = more flicker")):
        _put_fitted(bottom[0], text, y=_LABEL_H + 20 + 22 * k, width=w - 12)
    for name, frames in results.items():
        top.append(labelled(to_u8(frames[frame]), name))
        m = maps[name]
        bottom.append(labelled(_heat(m, vmax), f"mean {float(m.mean()):.2e}"))
    gap = np.full((h + _LABEL_H, 4, 3), _BG, np.uint8)
    rows = [np.concatenate(sum(([p, gap] for p in row), [])[:-1], axis=1) for row in (top, bottom)]
    sheet = np.concatenate([rows[0], np.full((6, rows[0].shape[1], 3), _BG, np.uint8), rows[1]], axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", sheet[..., ::-1])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    path.write_bytes(buf.tobytes())
    return path


def animation(path: Path, panels: dict[str, Sequence[np.ndarray]], *, fps: float, width: int = 240) -> Path:
    """Side-by-side animated GIF of equally long clips, each panel ``width`` pixels wide."""
    from PIL import Image

    names = list(panels)
    count = min(len(v) for v in panels.values())
    frames: list[Image.Image] = []
    for t in range(count):
        row = []
        for name in names:
            img = panels[name][t]
            h = int(round(img.shape[0] * width / img.shape[1]))
            small = cv2.resize(img, (width, h), interpolation=cv2.INTER_AREA)
            row.append(labelled(to_u8(small), name))
            row.append(np.full((h + _LABEL_H, 3, 3), _BG, np.uint8))
        frames.append(Image.fromarray(np.concatenate(row[:-1], axis=1)))
    # One shared palette (from a frame mixing all panels) keeps colours from pumping between frames.
    palette_src = frames[count // 2].quantize(colors=255, method=Image.Quantize.MEDIANCUT)
    quantized = [f.quantize(palette=palette_src, dither=Image.Dither.NONE) for f in frames]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.gif")
    quantized[0].save(
        tmp, save_all=True, append_images=quantized[1:], duration=int(round(1000 / fps)), loop=0, optimize=True
    )
    tmp.replace(path)
    return path


def save_sheet(path: Path, rows: Sequence[np.ndarray]) -> None:
    """Stack equally wide RGB uint8 rows into one JPEG at ``path`` (quality 88)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.concatenate(rows, axis=0)[:, :, ::-1].copy(), [cv2.IMWRITE_JPEG_QUALITY, 88])
    print(f"wrote {path}")
