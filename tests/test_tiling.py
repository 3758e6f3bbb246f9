"""Tiled inference: tile layout, seam blending, shared normalisation statistics."""

from __future__ import annotations

import pytest
import torch

from stylecore.nets.tiling import BLEND, _ramp, default_overlap, min_tile, spans, stylize_tiled, tile_grid
from stylecore.nets.transformer import StyleTransformer, TransformerConfig


def _model(conditioned: bool = True) -> StyleTransformer:
    torch.manual_seed(3)
    model = StyleTransformer(TransformerConfig(res_blocks=1, conditioned=conditioned)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.mark.parametrize(("length", "tile", "overlap"), [(200, 120, 28), (204, 120, 28), (1000, 512, 64), (64, 512, 64)])
def test_cores_partition_the_axis_on_the_4_pixel_grid(length: int, tile: int, overlap: int) -> None:
    out = spans(length, tile, overlap)
    assert out[0].core[0] == 0 and out[-1].core[1] == length
    for a, b in zip(out, out[1:]):
        assert a.core[1] == b.core[0]
    for s in out:
        assert s.core[0] % 4 == 0
        assert s.window == (max(0, s.core[0] - overlap), min(length, s.core[1] + overlap))
        assert s.window[1] - s.window[0] <= tile + 4


def test_blend_ramps_sum_to_one() -> None:
    length = 300
    total = torch.zeros(length)
    for s in spans(length, 120, 28):
        total[s.window[0] : s.window[1]] += _ramp(s, length, BLEND, torch.device("cpu"))
    assert torch.allclose(total, torch.ones(length))


def test_tiled_matches_untiled() -> None:
    """Shared statistics + overlap beyond the receptive radius: the same image, seams included."""
    model = _model()
    x = torch.rand(2, 3, 203, 301)
    w = torch.tensor([0.3, 1.5])
    tile = min_tile(model)
    assert len(tile_grid(204, 304, tile, default_overlap(model))) > 4
    with torch.no_grad():
        whole = model(x, w)
    tiled = stylize_tiled(model, x, w, tile)
    assert tiled.shape == whole.shape
    assert float((tiled - whole).abs().max()) < 1e-4


def test_per_tile_statistics_would_show_seams() -> None:
    """Why statistics are shared: normalising each tile by itself changes its colours."""
    model = _model()
    x = torch.rand(1, 3, 128, 128)
    x[:, :, :, 64:] *= 0.3  # a dark right half: very different tile statistics
    with torch.no_grad():
        whole = model(x, torch.ones(1))
        naive_left = model(x[:, :, :, :96], torch.ones(1))
    shared = stylize_tiled(model, x, torch.ones(1), tile=min_tile(model))
    inner = (slice(None), slice(None), slice(40, 88), slice(20, 40))
    assert float((shared - whole)[inner].abs().max()) < 1e-4
    assert float((naive_left[:, :, :, :96] - whole[:, :, :, :96])[inner].abs().max()) > 1e-3
