"""Rebuild the bundled samples from the shared source data (reproducible).

    python samples/make_samples.py [--data /work/shared/data]

Writes, next to this script:
- bunny_96f_320x180.mp4: source frames 205..300 of Big Buck Bunny (640x360, 24 fps), at
  320x180, with the matching 4 s of audio. A slow camera tilt over the meadow, then a
  hard cut (source frame 285, clip frame 80) to the brook.
- starry_night_512.jpg, the_scream_512.jpg: the paintings at long side 512.
- style_clip.mp4: 48 frames at 12 fps, 320x180, a slow zoom and pan across The Starry
  Night, for style-video mode.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import cv2
import numpy as np

from stylecore.io.encode import encode_video
from stylecore.io.sources import open_source
from stylecore.io.imageops import load_image, resize, save_image, scaled_size

HERE = Path(__file__).resolve().parent
BUNNY = "video/big_buck_bunny_640x360_24fps_60s.mp4"
CLIP_START, CLIP_FRAMES = 205, 96  # source frames [205, 301)
CLIP_SIZE = (320, 180)
STYLES = {"starry_night_512.jpg": "styles/van_gogh_starry_night.jpg", "the_scream_512.jpg": "styles/munch_the_scream.jpg"}
STYLE_LONG_SIDE = 512
STYLE_CLIP_FRAMES, STYLE_CLIP_FPS = 48, 12.0
CRF = 23  # small files; the samples are inputs, not showpieces


def make_clip(data: Path) -> None:
    source = data / BUNNY
    with open_source(source) as src, tempfile.TemporaryDirectory() as tmp:
        paths = []
        for k, img in src.iter_frames(range(CLIP_START, CLIP_START + CLIP_FRAMES)):
            path = Path(tmp) / f"{k:06d}.png"
            save_image(path, resize(img, CLIP_SIZE))
            paths.append(path)
        encode_video(
            paths, HERE / "bunny_96f_320x180.mp4", src.info.fps,
            audio_from=str(source), audio_start=CLIP_START / src.info.fps, crf=CRF,
        )


def make_styles(data: Path) -> None:
    for name, rel in STYLES.items():
        img = load_image(data / rel)
        small = resize(img, scaled_size(img.shape[1], img.shape[0], STYLE_LONG_SIDE))
        bgr = (np.clip(small, 0, 1)[:, :, ::-1] * 255 + 0.5).astype(np.uint8)
        cv2.imwrite(str(HERE / name), bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])


def make_style_clip(data: Path) -> None:
    painting = load_image(data / STYLES["starry_night_512.jpg"])
    # Shrink first (area filter) so the moving crop below is only ever mildly resampled.
    painting = resize(painting, scaled_size(painting.shape[1], painting.shape[0], 720))
    ph, pw = painting.shape[:2]
    out_w, out_h = CLIP_SIZE
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for k in range(STYLE_CLIP_FRAMES):
            t = k / (STYLE_CLIP_FRAMES - 1)
            ease = 0.5 - 0.5 * np.cos(np.pi * t)  # smooth start and stop
            crop_w = 480 - 160 * ease  # zoom in from 1.5x to 1x the output width
            crop_h = crop_w * out_h / out_w
            x0 = (pw - crop_w) * (0.05 + 0.6 * ease)  # pan left to right across the sky
            y0 = (ph - crop_h) * (0.15 + 0.2 * ease)
            s = out_w / crop_w
            affine = np.array([[s, 0, -x0 * s], [0, s, -y0 * s]], np.float32)
            frame = cv2.warpAffine(painting, affine, (out_w, out_h), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REFLECT)
            path = Path(tmp) / f"{k:06d}.png"
            save_image(path, frame)
            paths.append(path)
        encode_video(paths, HERE / "style_clip.mp4", STYLE_CLIP_FPS, crf=CRF)


def report_cuts(path: Path) -> list[int]:
    """Clip frames whose mean absolute difference from the previous one jumps (hard cuts)."""
    diffs = [0.0]
    with open_source(path) as src:
        prev = None
        for _, img in src.iter_frames(range(src.info.count)):
            if prev is not None:
                diffs.append(float(np.abs(img - prev).mean()))
            prev = img
    med = float(np.median(diffs))
    return [k for k, d in enumerate(diffs) if d > 0.1 and d > 10 * med]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data"))
    args = parser.parse_args()
    make_clip(args.data)
    make_styles(args.data)
    make_style_clip(args.data)
    print("scene cuts in the bunny clip at frames:", report_cuts(HERE / "bunny_96f_320x180.mp4"))
    for path in sorted(HERE.iterdir()):
        print(f"{path.name:28s} {path.stat().st_size / 1024:7.1f} KiB")


if __name__ == "__main__":
    main()
