"""Optical flow, warping, occlusion masks and scene cuts on synthetic frames with known motion."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import SHARED
from stylecore import flow

H, W = 96, 128
_MARGIN = 24  # texture border so that moved frames are sampled from real texture
BBB = SHARED / "video" / "big_buck_bunny_640x360_24fps_60s.mp4"


def _texture(seed: int, tint: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Smooth random noise (blurred white noise), HxWx3 in [0, 1], larger than a frame."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((H + 2 * _MARGIN, W + 2 * _MARGIN, 3)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), sigmaX=2.5)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return np.clip(smooth * np.asarray(tint, dtype=np.float32), 0, 1)


def _frame(texture: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    """Frame whose pixel (x, y) shows texture point (map_x, map_y) (frame coordinates)."""
    return cv2.remap(texture, map_x + _MARGIN, map_y + _MARGIN, interpolation=cv2.INTER_CUBIC)


def _grid() -> tuple[np.ndarray, np.ndarray]:
    xs, ys = np.meshgrid(np.arange(W, dtype=np.float32), np.arange(H, dtype=np.float32))
    return xs, ys


def _translated_pair(shift: tuple[float, float], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) with b(p) = a(p - shift): the content moves by ``shift``; flow a->b = +shift."""
    tex = _texture(seed)
    xs, ys = _grid()
    return _frame(tex, xs, ys), _frame(tex, xs - shift[0], ys - shift[1])


def _interior(array: np.ndarray, margin: int = 16) -> np.ndarray:
    return array[margin:-margin, margin:-margin]


@pytest.mark.parametrize("shift", [(3.0, -2.0), (1.5, 0.75)])
def test_compute_flow_recovers_translation(shift: tuple[float, float]) -> None:
    a, b = _translated_pair(shift)
    est = flow.compute_flow(a, b)
    assert est.shape == (H, W, 2) and est.dtype == np.float32
    err = np.linalg.norm(_interior(est) - np.asarray(shift, dtype=np.float32), axis=-1)
    assert np.median(err) < 0.5, np.median(err)
    # And the reverse flow is the opposite shift.
    back = flow.compute_flow(b, a)
    assert np.median(np.linalg.norm(_interior(back) + np.asarray(shift), axis=-1)) < 0.5


def test_compute_flow_recovers_zoom() -> None:
    zoom = 1.04
    tex = _texture(1)
    xs, ys = _grid()
    cx, cy = (W - 1) / 2, (H - 1) / 2
    a = _frame(tex, xs, ys)
    b = _frame(tex, cx + (xs - cx) / zoom, cy + (ys - cy) / zoom)  # zoomed in around the centre
    expected = np.stack([(zoom - 1) * (xs - cx), (zoom - 1) * (ys - cy)], axis=-1)  # a(p) = b(p + flow)
    est = flow.compute_flow(a, b)
    err = np.linalg.norm(_interior(est - expected), axis=-1)
    assert np.median(err) < 0.5, np.median(err)
    assert np.abs(expected).max() > 2.0  # the test does exercise a multi-pixel motion


def test_warp_with_exact_flow_reproduces_frame_and_mask_marks_borders() -> None:
    shift = (3.0, -2.0)  # content moves right 3 px and up 2 px from prev to cur
    prev, cur = _translated_pair(shift)
    flow_bw = np.broadcast_to(-np.asarray(shift, dtype=np.float32), (H, W, 2)).copy()  # cur -> prev
    flow_fw = -flow_bw  # prev -> cur
    warped = flow.warp(prev, flow_bw)
    assert warped.shape == prev.shape
    mask = flow.occlusion_mask(flow_bw, flow_fw)
    expected = np.ones((H, W), np.float32)
    expected[:, :3] = 0  # entered from the left: x - 3 < 0 is outside prev
    expected[-2:, :] = 0  # entered from the bottom: y + 2 > H - 1
    np.testing.assert_array_equal(mask, expected)
    assert np.abs(warped - cur)[mask > 0].max() < 1e-3
    # Where the mask says "occluded" the warp cannot be right (edge replication).
    assert np.abs(warped - cur)[mask == 0].mean() > 10 * np.abs(warped - cur)[mask > 0].mean()


def test_flow_pair_on_real_motion() -> None:
    prev, cur = _translated_pair((3.0, 0.0), seed=2)
    pair = flow.flow_pair(prev, cur)
    assert pair.flow_bw.shape == pair.flow_fw.shape == (H, W, 2)
    assert pair.mask.shape == (H, W) and pair.mask.dtype == np.float32
    assert set(np.unique(pair.mask)) <= {0.0, 1.0}
    assert _interior(pair.mask).mean() > 0.9
    assert pair.mask[:, :2].mean() < 0.2  # the strip that moved in from the left
    err = np.abs(flow.warp(prev, pair.flow_bw) - cur)
    assert err[pair.mask > 0].mean() < 0.02
    with pytest.raises(AttributeError):
        pair.mask = pair.mask  # type: ignore[misc]  # frozen


def test_warp_tensor_agrees_with_warp_and_is_differentiable() -> None:
    image = _texture(3)[:H, :W]
    rng = np.random.default_rng(4)
    # Smooth flow with a few pixels pointing outside the frame (border replication).
    fl = cv2.GaussianBlur(rng.standard_normal((H, W, 2)).astype(np.float32) * 40, (0, 0), 8) * 3
    fl[:4, :4] = -10.0
    expected = flow.warp(image, fl)
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None].contiguous()
    for as_given in (fl, torch.from_numpy(fl), torch.from_numpy(fl).permute(2, 0, 1)[None]):
        out = flow.warp_tensor(tensor, as_given)
        got = out[0].permute(1, 2, 0).numpy()
        # cv2.remap quantises sample positions to 1/32 px, hence the tolerance.
        assert np.abs(got - expected).max() < 5e-3
    src = tensor.clone().requires_grad_(True)
    flow.warp_tensor(src, fl).sum().backward()
    assert src.grad is not None and src.grad.abs().sum() > 0


def test_warp_handles_any_channel_count() -> None:
    rng = np.random.default_rng(5)
    shift = np.broadcast_to(np.float32([1.0, 0.0]), (8, 10, 2))
    for shape in ((8, 10), (8, 10, 1), (8, 10, 2), (8, 10, 6)):
        img = rng.random(shape, dtype=np.float32)
        out = flow.warp(img, shift)
        assert out.shape == img.shape
        np.testing.assert_allclose(out[:, :-1], img[:, 1:], atol=1e-6)  # out(x) = img(x + 1)
        np.testing.assert_allclose(out[:, -1], img[:, -1], atol=1e-6)  # border replicated


def test_consistency_check_threshold() -> None:
    # w = (-10, 0) everywhere; w' = (10 + d, 0): |w + w~'|^2 = d^2 against
    # 0.01 (100 + (10 + d)^2) + 0.5, i.e. d=1: 1 <= 2.71 (reliable), d=2: 4 > 2.94 (occluded).
    h, w = 16, 32
    w_bw = np.zeros((h, w, 2), np.float32)
    w_bw[..., 0] = -10
    for d, reliable in ((1.0, 1.0), (2.0, 0.0)):
        w_fw = np.zeros((h, w, 2), np.float32)
        w_fw[..., 0] = 10 + d
        mask = flow.occlusion_mask(w_bw, w_fw)
        assert (mask[:, :10] == 0).all()  # x - 10 < 0: outside the previous frame
        assert (mask[:, 10:] == reliable).all()


def test_consistency_check_marks_disagreeing_region() -> None:
    h, w = 20, 40
    w_bw = np.zeros((h, w, 2), np.float32)
    w_bw[..., 0] = -4
    w_fw = -w_bw.copy()
    w_fw[5:10, 10:20] = 0.0  # forward flow lost this block (e.g. it became occluded)
    mask = flow.occlusion_mask(w_bw, w_fw)
    expected = np.ones((h, w), np.float32)
    expected[:, :4] = 0
    # Pixels x whose x - 4 lands in columns 10..19 (bilinear: also 9 < x-4 < 10) see w~' != -w.
    expected[5:10, 14:24] = 0
    np.testing.assert_array_equal(mask, expected)


def test_motion_boundaries_on_a_step() -> None:
    # u jumps from 0 to 1 at column 8. Forward flow built consistently, so only the
    # motion-boundary test (central differences: columns 7 and 8) and the frame edge fire.
    h, w = 12, 20
    w_bw = np.zeros((h, w, 2), np.float32)
    w_bw[:, 8:, 0] = 1.0
    w_fw = np.zeros((h, w, 2), np.float32)
    w_fw[:, 9:, 0] = -1.0
    mask = flow.occlusion_mask(w_bw, w_fw)
    expected = np.ones((h, w), np.float32)
    expected[:, [7, 8, w - 1]] = 0  # last column: x + 1 > w - 1
    np.testing.assert_array_equal(mask, expected)


@pytest.mark.parametrize(("slope", "boundary_columns"), [(0.04, []), (0.05, [0, 1, 2, 3, 4])])
def test_motion_boundary_threshold_on_a_linear_flow(slope: float, boundary_columns: list[int]) -> None:
    # u = a x: |grad|^2 = a^2 vs 0.01 a^2 x^2 + 0.002. a=0.04: 0.0016 never exceeds 0.002;
    # a=0.05: 0.0025 > 0.002 + 0.000025 x^2 only for x^2 < 20, i.e. x <= 4.
    h, w = 8, 40
    xs = np.arange(w, dtype=np.float32)
    w_bw = np.zeros((h, w, 2), np.float32)
    w_bw[..., 0] = slope * xs
    w_fw = np.zeros((h, w, 2), np.float32)
    w_fw[..., 0] = -slope * xs / (1 + slope)  # exact inverse: p = x (1 + a) -> x
    mask = flow.occlusion_mask(w_bw, w_fw)
    inside = xs * (1 + slope) <= w - 1
    expected = np.ones((h, w), np.float32)
    expected[:, ~inside] = 0
    expected[:, boundary_columns] = 0
    np.testing.assert_array_equal(mask, expected)


def test_reliable_fraction() -> None:
    mask = np.zeros((4, 5), np.float32)
    mask[:2, :4] = 1  # 8 of 20 pixels
    assert flow.reliable_fraction(mask) == pytest.approx(0.4)


def test_explained_fraction_counts_matching_reliable_pixels() -> None:
    prev, cur = _translated_pair((3.0, 0.0), seed=12)
    flow_bw = np.zeros((H, W, 2), np.float32)
    flow_bw[..., 0] = -3.0
    mask = np.ones((H, W), np.float32)
    mask[:, :3] = 0
    exact = flow.FramePair(flow_bw=flow_bw, flow_fw=-flow_bw, mask=mask)
    assert flow.explained_fraction(prev, cur, exact) == pytest.approx(mask.mean())
    # A fade (gain change) does not matter: frames are normalised before comparing.
    assert flow.explained_fraction(prev * 0.3, cur, exact) == pytest.approx(mask.mean())
    # The wrong flow explains almost nothing even when the mask trusts every pixel.
    wrong = flow.FramePair(flow_bw=-flow_bw, flow_fw=flow_bw, mask=np.ones((H, W), np.float32))
    assert flow.explained_fraction(prev, cur, wrong) < 0.5


def test_histogram_distance() -> None:
    a, b = _translated_pair((2.0, 1.0), seed=6)
    assert flow.histogram_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert flow.histogram_distance(a, b) < 0.1  # small pan: same colours
    assert flow.histogram_distance(a, a * 0.5) < 0.1  # exposure change / fade
    red, blue = _texture(7, (1.0, 0.3, 0.2)), _texture(8, (0.2, 0.4, 1.0))
    assert flow.histogram_distance(red, blue) > 0.9
    assert flow.histogram_distance(a, np.zeros_like(a)) > 0.9  # cut to black


def test_scene_cut_on_synthetic_cut_and_pan() -> None:
    prev, cur = _translated_pair((2.0, 1.0), seed=9)
    assert not flow.is_scene_cut(prev, cur)
    other = _texture(10, (1.0, 0.6, 0.3))[:H, :W]
    assert flow.is_scene_cut(prev, other)
    # Each criterion alone: unrelated structure with the same colours fails the flow test ...
    same_colours = _texture(11)[:H, :W]
    pair = flow.flow_pair(prev, same_colours)
    assert flow.explained_fraction(prev, same_colours, pair) < flow.DEFAULT_CUT_RELIABLE
    assert flow.explained_fraction(prev, same_colours, pair) <= flow.reliable_fraction(pair.mask)
    assert flow.is_scene_cut(prev, same_colours, pair, histogram_threshold=1.0)
    # ... and a colour change fails the histogram test even when the flow test is off.
    assert flow.is_scene_cut(prev, other, threshold=0.0)
    assert not flow.is_scene_cut(prev, cur, threshold=0.0)


@pytest.mark.skipif(not BBB.is_file(), reason="shared Big Buck Bunny clip not available")
def test_scene_cut_on_big_buck_bunny() -> None:
    # Frame 285 is a hard cut; 283 -> 284 and 285 -> 286 are ordinary motion.
    cap = cv2.VideoCapture(str(BBB))
    frames: dict[int, np.ndarray] = {}
    for index in range(287):
        ok, bgr = cap.read()
        assert ok
        if index >= 283:
            frames[index] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32) / 255
    cap.release()
    assert flow.is_scene_cut(frames[284], frames[285])
    assert not flow.is_scene_cut(frames[283], frames[284])
    assert not flow.is_scene_cut(frames[285], frames[286])
