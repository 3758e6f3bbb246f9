"""Image I/O, conversions, resizing and colour preservation."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from stylecore.io import imageops
from stylecore.errors import InputError
from stylecore.io.imageops import (
    load_image,
    luminance_transfer,
    match_color,
    resize,
    save_image,
    scaled_size,
    to_numpy,
    to_tensor,
)


def _rgb_to_yiq(img: np.ndarray) -> np.ndarray:
    """Independent YIQ (FCC NTSC) reference for the colour tests."""
    m = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    return img.astype(np.float64) @ m.T


# ------------------------------------------------------------------ load / save


def test_save_load_round_trip_is_8bit_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    img = rng.random((17, 23, 3), dtype=np.float32)
    save_image(tmp_path / "a.png", img)
    back = load_image(tmp_path / "a.png")
    assert back.dtype == np.float32 and back.shape == (17, 23, 3)
    np.testing.assert_allclose(back, np.round(img * 255) / 255, atol=1e-6)


def test_load_gives_rgb_order(tmp_path: Path) -> None:
    bgr = np.zeros((4, 5, 3), np.uint8)
    bgr[..., 2] = 255  # red in OpenCV's BGR order
    cv2.imwrite(str(tmp_path / "red.png"), bgr)
    img = load_image(tmp_path / "red.png")
    np.testing.assert_array_equal(img[0, 0], [1.0, 0.0, 0.0])


def test_load_grey_alpha_and_16bit(tmp_path: Path) -> None:
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    cv2.imwrite(str(tmp_path / "grey.png"), grey)
    img = load_image(tmp_path / "grey.png")
    assert img.shape == (3, 4, 3)
    np.testing.assert_allclose(img[..., 1], grey / 255.0, atol=1e-7)
    np.testing.assert_array_equal(img[..., 0], img[..., 2])

    bgra = np.zeros((2, 2, 4), np.uint8)
    bgra[..., 1] = 200  # green
    bgra[..., 3] = 0  # fully transparent: colour is kept, alpha dropped
    cv2.imwrite(str(tmp_path / "rgba.png"), bgra)
    np.testing.assert_allclose(load_image(tmp_path / "rgba.png")[0, 0], [0, 200 / 255, 0], atol=1e-7)

    deep = np.full((2, 2, 3), 1000, np.uint16)  # not representable in 8 bits
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    np.testing.assert_allclose(load_image(tmp_path / "deep.png"), 1000 / 65535, atol=1e-7)


def test_load_exr_is_encoded_to_srgb(tmp_path: Path) -> None:
    linear = np.zeros((2, 3, 3), np.float32)
    linear[..., 0] = 0.5  # written BGR: this is blue
    linear[..., 2] = 2.0  # over-bright red clips to 1
    if not cv2.imwrite(str(tmp_path / "render.exr"), linear):
        pytest.skip("this OpenCV build cannot write EXR")
    img = load_image(tmp_path / "render.exr")
    srgb_half = 1.055 * 0.5 ** (1 / 2.4) - 0.055  # IEC 61966-2-1
    np.testing.assert_allclose(img[0, 0], [1.0, 0.0, srgb_half], atol=1e-3)


def test_load_missing_or_garbage_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nope.png"):
        load_image(tmp_path / "nope.png")
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    with pytest.raises(InputError, match="junk.png"):
        load_image(tmp_path / "junk.png")


def test_save_is_atomic_and_leaves_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "frame.png"
    save_image(target, np.zeros((4, 4, 3), np.float32))
    assert sorted(os.listdir(tmp_path)) == ["frame.png"]

    # A failure at the rename (e.g. the process dies) must leave the old file whole
    # and remove the temp file.
    def boom(src: str, dst: str) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(imageops.os, "replace", boom)
    with pytest.raises(OSError):
        save_image(target, np.ones((4, 4, 3), np.float32))
    assert sorted(os.listdir(tmp_path)) == ["frame.png"]
    np.testing.assert_array_equal(load_image(target), 0.0)


def test_temp_names_are_hidden_and_recognised(tmp_path: Path) -> None:
    tmp = imageops.temp_path_for(tmp_path / "frame_000001.png")
    assert tmp.name.startswith(".") and tmp.parent == tmp_path
    assert imageops.is_temp_name(tmp.name)
    assert not imageops.is_temp_name("frame_000001.png")
    assert not imageops.is_temp_name(".hidden.png")


# ------------------------------------------------------------------ tensors


def test_tensor_round_trip_and_no_shared_memory() -> None:
    img = np.random.default_rng(1).random((5, 7, 3), dtype=np.float32)
    t = to_tensor(img)
    assert t.shape == (1, 3, 5, 7) and t.dtype == torch.float32
    assert float(t[0, 1, 2, 3]) == pytest.approx(float(img[2, 3, 1]))
    t.add_(10)  # must not touch the input array
    assert img.max() <= 1.0
    np.testing.assert_array_equal(to_numpy(t), 1.0)  # clamped
    np.testing.assert_array_equal(to_numpy(to_tensor(img)), img)


def test_to_numpy_takes_first_of_batch() -> None:
    batch = torch.stack([torch.zeros(3, 2, 2), torch.full((3, 2, 2), 0.5)])
    assert to_numpy(batch).shape == (2, 2, 3)
    np.testing.assert_array_equal(to_numpy(batch), 0.0)


# ------------------------------------------------------------------ sizes


@pytest.mark.parametrize(
    ("w", "h", "long", "mult", "expected"),
    [
        (640, 360, 320, 1, (320, 180)),
        (360, 640, 320, 1, (180, 320)),
        (640, 360, None, 1, (640, 360)),
        (640, 360, 100, 4, (100, 56)),  # 56.25 -> 56
        (641, 359, None, 8, (640, 360)),
        (1000, 10, 100, 4, (100, 4)),  # never below one multiple
    ],
)
def test_scaled_size(w: int, h: int, long: int | None, mult: int, expected: tuple[int, int]) -> None:
    assert scaled_size(w, h, long, mult) == expected


def test_scaled_size_rejects_non_positive() -> None:
    with pytest.raises(InputError):
        scaled_size(640, 360, 0)


def test_resize_takes_width_height_and_keeps_range() -> None:
    img = np.zeros((40, 60, 3), np.float32)
    img[:, ::2] = 1.0  # stripes: cubic enlarging overshoots without the clip
    small = resize(img, (30, 20))
    assert small.shape == (20, 30, 3)
    np.testing.assert_allclose(small, 0.5, atol=1e-6)  # area average of the stripes
    big = resize(img, (97, 61))
    assert big.shape == (61, 97, 3) and big.dtype == np.float32
    assert big.min() >= 0.0 and big.max() <= 1.0
    assert resize(img, (60, 40)) is img


# ------------------------------------------------------------------ colour


def test_luminance_transfer_keeps_content_chroma() -> None:
    rng = np.random.default_rng(2)
    content = 0.5 + 0.1 * (rng.random((16, 16, 3), dtype=np.float32) - 0.5)
    stylized = 0.3 + 0.4 * rng.random((16, 16, 3), dtype=np.float32)
    out = luminance_transfer(stylized, content)
    y_out, y_sty, y_con = _rgb_to_yiq(out), _rgb_to_yiq(stylized), _rgb_to_yiq(content)
    # The stylized luminance pattern, brought to the content's brightness and contrast.
    ys, yc = y_sty[..., 0], y_con[..., 0]
    expected = (ys - ys.mean()) / ys.std() * yc.std() + yc.mean()
    np.testing.assert_allclose(y_out[..., 0], expected, atol=2e-3)
    assert abs(y_out[..., 0].mean() - yc.mean()) < 2e-3 and np.corrcoef(y_out[..., 0].ravel(), ys.ravel())[0, 1] > 0.99
    np.testing.assert_allclose(y_out[..., 1:], y_con[..., 1:], atol=2e-3)
    # A grey content gives a grey result.
    grey = luminance_transfer(stylized, np.full_like(content, 0.5))
    np.testing.assert_allclose(grey[..., 0], grey[..., 1], atol=1e-5)


def test_luminance_transfer_resizes_content() -> None:
    out = luminance_transfer(np.full((8, 12, 3), 0.5, np.float32), np.full((16, 24, 3), 0.5, np.float32))
    assert out.shape == (8, 12, 3)


def test_match_color_matches_content_statistics() -> None:
    rng = np.random.default_rng(3)
    mix_c = np.array([[1.0, 0.5, 0.2], [0.0, 0.8, 0.3], [0.0, 0.0, 0.6]])
    mix_s = np.array([[0.4, 0.0, 0.0], [0.3, 0.9, 0.0], [-0.2, 0.1, 0.5]])
    content = (0.5 + 0.08 * rng.standard_normal((64 * 64, 3)) @ mix_c).reshape(64, 64, 3)
    style = (0.4 + 0.1 * rng.standard_normal((48 * 80, 3)) @ mix_s).reshape(48, 80, 3)
    out = match_color(style.astype(np.float32), content.astype(np.float32))
    assert out.shape == style.shape and out.dtype == np.float32
    flat_o, flat_c = out.reshape(-1, 3).astype(np.float64), content.reshape(-1, 3)
    np.testing.assert_allclose(flat_o.mean(0), flat_c.mean(0), atol=2e-3)
    np.testing.assert_allclose(np.cov(flat_o, rowvar=False), np.cov(flat_c, rowvar=False), atol=3e-4)
    # The statistics changed: the style's own covariance was far from the content's.
    assert np.abs(np.cov(style.reshape(-1, 3), rowvar=False) - np.cov(flat_c, rowvar=False)).max() > 3e-3


def test_match_color_handles_flat_style() -> None:
    out = match_color(np.full((8, 8, 3), 0.2, np.float32), np.full((8, 8, 3), 0.7, np.float32))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, 0.7, atol=1e-4)
