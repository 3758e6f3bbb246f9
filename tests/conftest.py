"""Shared fixtures: tiny synthetic clips and styles, made on the fly (no downloads).

OpenCV is imported inside the helpers: the bpy 5.0 test environment (add-on tests only)
has no OpenCV and no torch, like Blender's own Python.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

if TYPE_CHECKING:  # the bpy 5.0 environment has no torch, so no training package at import
    from training.config import TrainConfig

# Tests never reach the network: weights that are not on disk must fail fast and clearly.
os.environ.setdefault("STYLECORE_OFFLINE", "1")

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SAMPLES = Path(__file__).resolve().parents[1] / "samples"
# scripts/test.sh installs the HED weights and sets this: there, a test that needs them
# fails instead of skipping.
REQUIRE_HED_ENV = "STYLECORE_TEST_REQUIRE_HED"


@pytest.fixture(scope="session", autouse=True)
def _session_compile_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Compiled networks and inductor's kernels go to a folder of this test session, not
    the user's cache: a network kept there makes short jobs run compiled, so no test's
    outcome may depend on what earlier runs left, and tests do not fill the user's cache.
    A folder the user chose (``TORCHINDUCTOR_CACHE_DIR``) is left as it is."""
    if "TORCHINDUCTOR_CACHE_DIR" in os.environ:
        yield
        return
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(tmp_path_factory.mktemp("torchinductor"))
    yield
    os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)


def require_hed_weights() -> Path:
    """The converted HED VGG16 weights of this machine (``stylecore weights get hed-vgg16``)."""
    from stylecore.nets import hed
    from stylecore.errors import WeightsError

    try:
        return hed.resolve_hed_weights()
    except WeightsError as exc:
        if os.environ.get(REQUIRE_HED_ENV):
            pytest.fail(f"the HED weights should have been installed by scripts/test.sh: {exc}")
        pytest.skip(f"needs the HED weights ('stylecore weights get hed-vgg16'): {exc}")


def smooth_texture(height: int, width: int, seed: int = 0, sigma: float = 3.0) -> np.ndarray:
    """Smooth random colour texture in [0, 1]: good for optical flow, HxWx3 float32."""
    import cv2

    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur(rng.random((height, width, 3)).astype(np.float32), (0, 0), sigma)
    image -= image.min()
    return (image / image.max()).astype(np.float32)


def pan_frames(count: int, height: int = 48, width: int = 64, step: int = 2, seed: int = 0) -> list[np.ndarray]:
    """Frames of a camera panning right by ``step`` px a frame over a wider texture.

    Content at x in frame t+1 was at x + step in frame t, so the exact backward flow
    (t+1 -> t) is (+step, 0) everywhere; the right border strip is newly revealed.
    """
    texture = smooth_texture(height, width + step * count, seed)
    return [texture[:, t * step : t * step + width].copy() for t in range(count)]


def write_png_folder(folder: Path, frames: list[np.ndarray]) -> Path:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"f{i:03d}.png"), cv2.cvtColor((frame * 255).round().astype(np.uint8), cv2.COLOR_RGB2BGR))
    return folder


def write_video(path: Path, frames: list[np.ndarray], fps: float = 12.0) -> Path:
    import cv2

    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for frame in frames:
        writer.write(cv2.cvtColor((frame * 255).round().astype(np.uint8), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def stripe_style(size: int = 64, colour: tuple[float, float, float] = (1.0, 0.2, 0.1), period: int = 8) -> np.ndarray:
    """A strongly textured style image: coloured diagonal stripes."""
    yy, xx = np.mgrid[0:size, 0:size]
    stripes = (((xx + yy) // (period // 2)) % 2).astype(np.float32)[..., None]
    return (stripes * np.array(colour, np.float32) + (1 - stripes) * 0.1).astype(np.float32)


def write_image(path: Path, image: np.ndarray) -> Path:
    import cv2

    cv2.imwrite(str(path), cv2.cvtColor((image * 255).round().astype(np.uint8), cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture()
def style_png(tmp_path: Path) -> Path:
    return write_image(tmp_path / "style.png", stripe_style())


@pytest.fixture()
def pan_folder(tmp_path: Path) -> Path:
    return write_png_folder(tmp_path / "pan", pan_frames(5))


def stream_duration(path: Path, kind: str) -> float:
    """Duration in seconds of the first stream of ``kind`` ("Audio"/"Video"), from ffmpeg's probe."""
    from stylecore.io.ffmpeg import ffmpeg_exe

    exe = ffmpeg_exe()
    assert exe is not None
    out = subprocess.run(
        [exe, "-hide_banner", "-i", str(path), "-map", f"0:{kind[0].lower()}:0", "-f", "null", "-"],
        check=False, capture_output=True, text=True,
    ).stderr
    times = re.findall(r"time=(\d+):(\d+):([\d.]+)", out)
    h, m, s = times[-1]
    return int(h) * 3600 + int(m) * 60 + float(s)


def write_video_with_sound(path: Path) -> Path:
    """A 2 s H.264 clip of 64x48 at 24 fps with a 440 Hz tone (ffmpeg's test sources)."""
    from stylecore.io.ffmpeg import ffmpeg_exe

    subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=24",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", "2",
         "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(path)],
        check=True,
    )
    return path


def assert_same_weights(model: Path, other: Path) -> None:
    """Two model files hold the same weights (to float rounding): a resumed training is the
    uninterrupted one."""
    import torch

    from stylecore.nets.model_file import load_model

    first, _ = load_model(model, "cpu")
    second, _ = load_model(other, "cpu")
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def tiny_train_config(tmp_path: Path, out: str, **kw: object) -> TrainConfig:
    """A training run small enough for a test: two 80 px stills, a stripe style, 64 px crops,
    the random loss network, three steps of one pair; ``kw`` overrides any setting."""
    from training.config import TrainConfig

    data = tmp_path / "data"
    if not data.is_dir():
        data.mkdir()
        for i in range(2):
            write_image(data / f"s{i}.png", smooth_texture(80, 80, seed=i, sigma=2.0))
        write_image(tmp_path / "style.png", stripe_style(64))
    base: dict[str, object] = dict(
        style=str(tmp_path / "style.png"), data=str(data), out=str(tmp_path / out), steps=3, size=64, batch_size=1,
        loss_net="random-vgg19", device="cpu", checkpoint_every=10**6, preview_every=10**6, log_every=1, bf16=False,
        style_size=64,
    )
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]
