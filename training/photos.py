"""Photographs for training, from the package index: ``python -m training.photos DIR``.

A model trained on one cartoon clip meets photographs only in the two bundled samples, and
paints them worse than the clip (The Scream's Style Weight was not monotone on them: see
docs/training.md). scikit-image's wheel carries a few public-domain photographs; this
fetches that wheel with pip (the only download this project makes, and through the
package index like every other) and writes four of them as JPEG files into ``DIR``:
a motorcycle, a photographer on a lawn, grass and gravel (the last three grey, kept as
grey RGB: texture without colour). Nothing is installed. The bundled samples
(``samples/astronaut_512x384.jpg``, ``samples/chelsea_451x300.jpg``) are the other two.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import cv2
import numpy as np

from stylecore.errors import InputError
from stylecore.io.imageops import atomic_write_bytes

# Pinned, so that every run writes the same pictures.
WHEEL = "scikit-image==0.26.0"
PHOTOS = ("motorcycle_left.png", "camera.png", "grass.png", "gravel.png")
_JPEG_QUALITY = 95


def extract_photos(wheel: Path, out: Path, names: tuple[str, ...] = PHOTOS) -> list[Path]:
    """Writes ``skimage/data/NAME`` of ``wheel`` as ``out/STEM.jpg`` (3-channel) for each name."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with zipfile.ZipFile(wheel) as archive:
        members = set(archive.namelist())
        for name in names:
            member = f"skimage/data/{name}"
            if member not in members:
                raise InputError(f"{wheel.name} has no {member}: pass a scikit-image wheel that bundles it")
            image = cv2.imdecode(np.frombuffer(archive.read(member), np.uint8), cv2.IMREAD_COLOR)
            target = out / f"{Path(name).stem}.jpg"
            ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
            if not ok:
                raise InputError(f"could not encode {member} as JPEG")
            atomic_write_bytes(target, encoded.tobytes())  # a cut-off run leaves no half file
            written.append(target)
    return written


def download_wheel(folder: Path) -> Path:
    """Fetches ``WHEEL`` (no dependencies) into ``folder`` with this Python's pip."""
    run = subprocess.run(
        [sys.executable, "-m", "pip", "download", WHEEL, "--no-deps", "--only-binary=:all:", "-q", "-d", str(folder)],
        capture_output=True, text=True,
    )
    wheels = sorted(folder.glob("scikit_image-*.whl"))
    if run.returncode != 0 or not wheels:
        last = (run.stderr.strip().splitlines() or ["no wheel was written"])[-1]
        raise InputError(f"could not download {WHEEL} from the package index ({last}); "
                         "on a machine without it, pass a downloaded wheel with --wheel")
    return wheels[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.photos",
        description="Writes the training photographs of the shipped models into DIR (from scikit-image's "
                    "wheel, fetched with pip; nothing is installed). Give DIR to training with --data DIR.")
    parser.add_argument("dir", type=Path, help="folder to write the photographs into")
    parser.add_argument("--wheel", type=Path, default=None, help="a scikit-image wheel already on disk (no download)")
    args = parser.parse_args(argv)
    try:
        if args.wheel is not None:
            if not args.wheel.is_file():
                raise InputError(f"--wheel {args.wheel}: no such file")
            written = extract_photos(args.wheel, args.dir)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                written = extract_photos(download_wheel(Path(tmp)), args.dir)
    except (InputError, zipfile.BadZipFile, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {len(written)} photographs to {args.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
