"""Losses against their formulas, computed independently with loops / NumPy on tiny tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stylecore import losses


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_gram_matrix_matches_explicit_sums() -> None:
    feats = _rand(2, 3, 4, 5)
    gram = losses.gram_matrix(feats)
    f = feats.numpy()
    n, c, h, w = f.shape
    expected = np.zeros((n, c, c))
    for b in range(n):
        for i in range(c):
            for j in range(c):
                expected[b, i, j] = sum(f[b, i, y, x] * f[b, j, y, x] for y in range(h) for x in range(w)) / (c * h * w)
    assert gram.shape == (n, c, c)
    np.testing.assert_allclose(gram.numpy(), expected, rtol=1e-12)


def test_gram_matrix_gradient_is_the_formulas() -> None:
    """The one-product backward against finite differences of the forward."""
    feats = _rand(2, 3, 4, 5).requires_grad_(True)
    assert torch.autograd.gradcheck(losses.gram_matrix, (feats,))
    weights = _rand(2, 3, 3, seed=1)  # not symmetric: the backward must symmetrise dG
    (losses.gram_matrix(feats) * weights).sum().backward()
    f = feats.detach()
    expected = torch.einsum("nij,njm->nim", weights + weights.transpose(1, 2), f.reshape(2, 3, 20)) / (3 * 4 * 5)
    torch.testing.assert_close(feats.grad.reshape(2, 3, 20), expected)


def test_gram_matrix_of_bfloat16_features_is_float32() -> None:
    """A bfloat16 loss network's features: the Gram as from upcast features, the gradient
    in bfloat16 and within its rounding of the float32 one."""
    feats = torch.rand(1, 8, 30, 40, generator=torch.Generator().manual_seed(2)).bfloat16()
    wide = feats.float().requires_grad_(True)
    narrow = feats.clone().requires_grad_(True)
    gram = losses.gram_matrix(narrow)
    assert gram.dtype == torch.float32
    torch.testing.assert_close(gram, losses.gram_matrix(wide), rtol=1e-6, atol=0)
    weights = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(3))
    (gram * weights).sum().backward()
    (losses.gram_matrix(wide) * weights).sum().backward()
    assert narrow.grad.dtype == torch.bfloat16
    torch.testing.assert_close(narrow.grad.float(), wide.grad, rtol=2e-2, atol=0)


def test_gram_matrix_is_size_independent_for_a_tiled_pattern() -> None:
    # Normalising by C*H*W means repeating the same texture gives the same Gram matrix.
    feats = _rand(1, 3, 4, 4)
    tiled = feats.repeat(1, 1, 3, 2)
    torch.testing.assert_close(losses.gram_matrix(tiled), losses.gram_matrix(feats))


def test_content_loss_is_relative_squared_error_per_image() -> None:
    a, b = _rand(2, 2, 3, 3, seed=1), _rand(2, 2, 3, 3, seed=2)
    an, bn = a.numpy(), b.numpy()
    expected = np.mean([((an[i] - bn[i]) ** 2).sum() / (bn[i] ** 2).sum() for i in range(2)])
    assert losses.content_loss(a, b).item() == pytest.approx(expected, rel=1e-12)
    assert losses.content_loss(a, a).item() == 0.0
    # Features 10x larger (another network's scale) give the same loss.
    assert losses.content_loss(a * 10, b * 10).item() == pytest.approx(expected, rel=1e-12)


def test_style_loss_is_relative_gram_error() -> None:
    feats = _rand(2, 3, 4, 4, seed=3)
    target_feats = _rand(1, 3, 4, 4, seed=4) * 3.0
    g = losses.gram_matrix(feats).numpy()
    t = losses.gram_matrix(target_feats)
    tn = t.numpy()[0]
    expected = np.mean([((g[i] - tn) ** 2).sum() / (tn**2).sum() for i in range(2)])
    assert losses.style_loss(feats, t).item() == pytest.approx(expected, rel=1e-12)
    # A (C, C) target broadcasts the same way.
    assert losses.style_loss(feats, t[0]).item() == pytest.approx(expected, rel=1e-12)
    assert losses.style_loss(target_feats, t).item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("factor", [1e-3, 0.5, 255.0, 1e4])
def test_losses_are_scale_invariant(factor: float) -> None:
    # Multiplying a layer's features (and so its target) by a constant, as another network's
    # activation scale does, leaves both normalised losses unchanged.
    feats, target_feats = _rand(1, 4, 5, 5, seed=20), _rand(1, 4, 5, 5, seed=21)
    gram = losses.gram_matrix(target_feats)
    style = losses.style_loss(feats, gram).item()
    content = losses.content_loss(feats, target_feats).item()
    assert style > 0.01 and content > 0.01
    scaled_gram = losses.gram_matrix(target_feats * factor)
    assert losses.style_loss(feats * factor, scaled_gram).item() == pytest.approx(style, rel=1e-6)
    assert losses.content_loss(feats * factor, target_feats * factor).item() == pytest.approx(content, rel=1e-6)


def test_zero_target_stays_finite() -> None:
    feats = _rand(1, 2, 3, 3, seed=22)
    zero = torch.zeros(1, 2, 3, 3, dtype=torch.float64)
    assert torch.isfinite(losses.content_loss(feats, zero))
    assert torch.isfinite(losses.style_loss(feats, losses.gram_matrix(zero)))


def test_tv_loss_on_known_image() -> None:
    # A horizontal ramp 0,1,2,3 in each row: horizontal diffs are all 1, vertical all 0.
    img = torch.arange(4, dtype=torch.float64).repeat(1, 1, 3, 1)
    assert losses.tv_loss(img).item() == pytest.approx(1.0)
    # Checkerboard of 0/1: every neighbour difference is +-1 in both directions.
    yy, xx = np.mgrid[0:4, 0:5]
    checker = torch.from_numpy(((yy + xx) % 2).astype(np.float64))[None, None]
    assert losses.tv_loss(checker).item() == pytest.approx(2.0)
    assert losses.tv_loss(torch.ones(1, 3, 4, 4)).item() == 0.0


def test_tv_loss_matches_loops() -> None:
    img = _rand(1, 2, 3, 4, seed=5).numpy()
    _, c, h, w = img.shape
    hor = [(img[0, k, y, x + 1] - img[0, k, y, x]) ** 2 for k in range(c) for y in range(h) for x in range(w - 1)]
    ver = [(img[0, k, y + 1, x] - img[0, k, y, x]) ** 2 for k in range(c) for y in range(h - 1) for x in range(w)]
    expected = np.mean(hor) + np.mean(ver)
    assert losses.tv_loss(torch.from_numpy(img)).item() == pytest.approx(expected, rel=1e-12)


def test_temporal_loss_with_partial_mask() -> None:
    image = _rand(1, 3, 2, 3, seed=6)
    warped = _rand(1, 3, 2, 3, seed=7)
    mask = torch.tensor([[[[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]]]], dtype=torch.float64)
    x, p, m = image.numpy()[0], warped.numpy()[0], mask.numpy()[0, 0]
    total = 0.0
    for k in range(3):
        for y in range(2):
            for xx in range(3):
                total += m[y, xx] * (x[k, y, xx] - p[k, y, xx]) ** 2
    expected = total / (3 * 2 * 3)
    assert losses.temporal_loss(image, warped, mask).item() == pytest.approx(expected, rel=1e-12)
    # Masked-out pixels do not count however different they are.
    far = warped.clone()
    far[..., 0, 1] += 100.0
    assert losses.temporal_loss(image, far, mask).item() == pytest.approx(expected, rel=1e-12)


def test_blend_grams_normalises_weights() -> None:
    a = {"relu1_1": torch.full((1, 2, 2), 1.0), "relu2_1": torch.full((1, 3, 3), 4.0)}
    b = {"relu1_1": torch.full((1, 2, 2), 3.0), "relu2_1": torch.full((1, 3, 3), 0.0)}
    out = losses.blend_grams([a, b], [1.0, 3.0])  # -> 0.25, 0.75
    torch.testing.assert_close(out["relu1_1"], torch.full((1, 2, 2), 0.25 * 1 + 0.75 * 3))
    torch.testing.assert_close(out["relu2_1"], torch.full((1, 3, 3), 0.25 * 4.0))
    single = losses.blend_grams([a], [5.0])
    torch.testing.assert_close(single["relu2_1"], a["relu2_1"])
    with pytest.raises(ValueError):
        losses.blend_grams([a, b], [1.0])
    with pytest.raises(ValueError):
        losses.blend_grams([a, b], [0.0, 0.0])


def test_modules_sum_weighted_layers() -> None:
    feats = {"relu1_1": _rand(1, 2, 4, 4, seed=8), "relu2_1": _rand(1, 3, 2, 2, seed=9)}
    target = {"relu1_1": _rand(1, 2, 4, 4, seed=10), "relu2_1": _rand(1, 3, 2, 2, seed=11)}
    layers = {"relu1_1": 0.3, "relu2_1": 0.7}

    # Expected values from the formulas, in NumPy: not from the functions the wrappers call.
    def relative(a: np.ndarray, b: np.ndarray) -> float:
        return float(((a - b) ** 2).sum() / (b**2).sum())

    def gram(f: np.ndarray) -> np.ndarray:
        c = f.shape[0]
        flat = f.reshape(c, -1)
        return flat @ flat.T / flat.size

    f = {k: v.numpy()[0] for k, v in feats.items()}
    t = {k: v.numpy()[0] for k, v in target.items()}
    expected_c = sum(w * relative(f[k], t[k]) for k, w in layers.items())
    assert losses.ContentLoss(target, layers)(feats).item() == pytest.approx(expected_c, rel=1e-12)
    grams = {k: losses.gram_matrix(v) for k, v in target.items()}
    expected_s = sum(w * relative(gram(f[k]), gram(t[k])) for k, w in layers.items())
    assert losses.StyleLoss(grams, layers)(feats).item() == pytest.approx(expected_s, rel=1e-12)

    img, prev = _rand(1, 3, 4, 4, seed=12), _rand(1, 3, 4, 4, seed=13)
    mask = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    mask[..., :2] = 1.0  # only the left half counts
    x = img.numpy()[0]
    tv = np.mean((x[:, :, 1:] - x[:, :, :-1]) ** 2) + np.mean((x[:, 1:, :] - x[:, :-1, :]) ** 2)
    assert losses.TVLoss()(img).item() == pytest.approx(tv, rel=1e-12)
    diff = (img - prev).numpy()[0] ** 2  # Ruder et al.: sum(c * (x - w)^2) / (C * H * W)
    assert losses.TemporalLoss()(img, prev, mask).item() == pytest.approx(float((diff * mask.numpy()[0]).mean()),
                                                                         rel=1e-12)


def test_style_loss_gradient_flows_to_features() -> None:
    feats = _rand(1, 2, 3, 3, seed=14).requires_grad_(True)
    target = losses.gram_matrix(_rand(1, 2, 3, 3, seed=15))
    losses.style_loss(feats, target).backward()
    assert feats.grad is not None and feats.grad.abs().sum() > 0


def test_default_layer_weights() -> None:
    assert losses.GATYS_CONTENT_LAYERS == {"relu4_2": 1.0}
    assert len(set(losses.GATYS_STYLE_LAYERS.values())) == 1  # equally weighted, as the paper says
    assert losses.GATYS_RUDER.layers == ("relu4_2", "relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    assert sum(losses.GATYS_STYLE_LAYERS.values()) == pytest.approx(1.0)
    assert sum(losses.HUANG.style_layers.values()) == pytest.approx(1.0)
    assert list(losses.HUANG.style_layers) == ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]
