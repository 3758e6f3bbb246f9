"""The Huang et al. stylizing network: architecture, shapes, conditioning, locality."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stylecore.nets.transformer import (
    CapturedActivation,
    ConditionalInstanceNorm,
    NormStats,
    StyleTransformer,
    TransformerConfig,
    count_parameters,
)


def _perturbed(config: TransformerConfig, seed: int = 0) -> StyleTransformer:
    """A network whose conditioning heads are non-zero (freshly built ones are zero)."""
    torch.manual_seed(seed)
    model = StyleTransformer(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def _convs(model: StyleTransformer) -> list[nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def test_architecture_follows_huang_et_al() -> None:
    model = StyleTransformer(TransformerConfig(conditioned=False))
    convs = _convs(model)
    # 3 down + 5 residual blocks x 2 + 2 up + 1 final.
    assert len(convs) == 3 + 10 + 2 + 1
    assert [c.out_channels for c in convs[:3]] == [16, 32, 48]
    assert [c.stride[0] for c in convs[:3]] == [1, 2, 2]
    assert all(c.in_channels == c.out_channels == 48 for c in convs[3:13])
    assert [c.out_channels for c in convs[13:]] == [32, 16, 3]
    # Resize-convolution, never transposed convolution.
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in model.modules())
    assert 200_000 < count_parameters(model) < 300_000


@pytest.mark.parametrize(("h", "w"), [(17, 23), (33, 31), (64, 48), (9, 13)])
def test_forward_keeps_any_size(h: int, w: int) -> None:
    model = _perturbed(TransformerConfig())
    x = torch.rand(2, 3, h, w)
    with torch.no_grad():
        y = model(x, torch.tensor([0.5, 1.5]))
    assert y.shape == x.shape
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_padding_only_adds_to_the_bottom_right() -> None:
    """An odd-sized frame is the top-left crop of its reflect-padded multiple-of-4 frame."""
    model = _perturbed(TransformerConfig())
    x = torch.rand(1, 3, 30, 42)
    padded = torch.nn.functional.pad(x, (0, 2, 0, 2), mode="reflect")
    with torch.no_grad():
        assert torch.allclose(model(x), model(padded)[:, :, :30, :42], atol=1e-6)


def test_unconditioned_absolute_output_weight_mixes_pixels() -> None:
    """Files from before the residual output: an unconditioned network mixes pixels."""
    model = _perturbed(TransformerConfig(conditioned=False, output="absolute"))
    x = torch.rand(3, 3, 20, 24)
    with torch.no_grad():
        full = model(x, torch.ones(3))
        out = model(x, torch.tensor([0.0, 0.5, 1.0]))
    assert torch.allclose(out[0], x[0], atol=1e-6)
    assert torch.allclose(out[1], 0.5 * (x[1] + full[1]), atol=1e-6)
    assert torch.allclose(out[2], full[2], atol=1e-6)


@pytest.mark.parametrize("conditioned", [True, False])
def test_residual_output_at_style_weight_zero_is_the_input(conditioned: bool) -> None:
    model = _perturbed(TransformerConfig(conditioned=conditioned))
    x = torch.rand(2, 3, 20, 24)
    x[0, :, :2] = 0.0  # saturated pixels survive the logit clamp
    x[1, :, :2] = 1.0
    with torch.no_grad():
        out = model(x, torch.zeros(2))
        styled = model(x, torch.ones(2))
    assert float((out - x).abs().max()) <= 1.01e-3
    assert float((styled - x).abs().mean()) > 0.05  # and a perturbed network does change the frame


def test_residual_output_grows_with_the_weight() -> None:
    """The change of the frame grows continuously with the weight (same network, same frame)."""
    model = _perturbed(TransformerConfig(conditioned=False))
    x = torch.rand(1, 3, 20, 24)
    with torch.no_grad():
        changes = [float((model(x, torch.tensor([w])) - x).abs().mean()) for w in (0.0, 0.01, 0.25, 0.5, 1.0, 2.0)]
    assert changes == sorted(changes) and changes[0] < 1e-3 < changes[1] < 0.05


def test_old_files_without_an_output_entry_rebuild_the_absolute_output() -> None:
    data = TransformerConfig().to_dict()
    del data["output"]
    assert TransformerConfig.from_dict(data).output == "absolute"
    assert TransformerConfig.from_dict(TransformerConfig().to_dict()).output == "residual"


def test_conditioned_weight_changes_the_normalisation_and_is_clamped() -> None:
    model = _perturbed(TransformerConfig(max_style_weight=2.0))
    x = torch.rand(1, 3, 24, 24)
    with torch.no_grad():
        a, b = model(x, torch.tensor([0.2])), model(x, torch.tensor([1.8]))
        assert float((a - b).abs().max()) > 1e-3
        # Beyond the trained range the weight is clamped.
        assert torch.equal(model(x, torch.tensor([2.0])), model(x, torch.tensor([5.0])))
        # Each sample of a batch gets its own weight.
        batch = model(torch.cat([x, x]), torch.tensor([0.2, 1.8]))
    assert torch.allclose(batch[0], a[0], atol=1e-5) and torch.allclose(batch[1], b[0], atol=1e-5)


def test_fresh_conditioned_network_starts_unmodulated() -> None:
    torch.manual_seed(0)
    model = StyleTransformer(TransformerConfig()).eval()
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        # The zero-initialised modulation does not change the network: only the output's
        # strength differs, so delta(x, 0.5) == delta(x, 2.0).
        logit = torch.logit(x, eps=1e-3)
        delta_half = (torch.logit(model(x, torch.tensor([0.5])), eps=1e-6) - logit) / 0.5
        delta_two = (torch.logit(model(x, torch.tensor([2.0])), eps=1e-6) - logit) / 2.0
        assert torch.allclose(delta_half, delta_two, atol=1e-3)


def test_instance_norm_of_a_channels_last_map_on_the_cpu_is_exact() -> None:
    """Channels whose mean is large beside their spread (as after the first convolution):
    PyTorch's channels-last CPU group_norm loses their variance to cancellation on one
    thread (0.07 off here without the centring); the norm must match float64, alone and
    with a per-sample modulation."""
    torch.manual_seed(0)
    x = torch.randn(1, 16, 360, 640) * 0.01 + torch.linspace(-0.5, 0.5, 16)[None, :, None, None]
    x64 = x.double()
    want = (x64 - x64.mean((2, 3), keepdim=True)) / (x64.var((2, 3), unbiased=False, keepdim=True) + 1e-5).sqrt()
    norm = ConditionalInstanceNorm(16, 0)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with torch.no_grad():
            got = norm(x.contiguous(memory_format=torch.channels_last), None, None)
            batch = norm(torch.cat([x, x]).contiguous(memory_format=torch.channels_last), torch.zeros(2, 32), None)
    finally:
        torch.set_num_threads(threads)
    assert got.is_contiguous(memory_format=torch.channels_last)
    # float32 sums over a 640x360 map still leave 1.5e-4.
    assert float((got.double() - want).abs().max()) < 1e-3
    assert float((batch.double() - want).abs().max()) < 1e-3


def test_receptive_radius_bounds_the_influence_of_a_pixel() -> None:
    """With normalisation statistics fixed, changing one pixel changes outputs only within
    ``receptive_radius`` of it (what tiling relies on)."""
    model = _perturbed(TransformerConfig(res_blocks=2))
    x = torch.rand(1, 3, 160, 160)
    stats = NormStats()
    for layer in range(model.num_norms):
        stats.capture = layer
        with pytest.raises(CapturedActivation) as got:
            model(x, None, stats)
        var, mean = torch.var_mean(got.value.activation, dim=(2, 3), unbiased=False)
        stats.mean[layer], stats.var[layer] = mean, var
    stats.capture = None
    reaches = []
    for at in range(80, 84):  # each place on the 4-pixel grid reaches its own distance
        y = x.clone()
        y[0, :, at, at] += 0.5
        with torch.no_grad():
            changed = (model(x, None, stats) - model(y, None, stats)).abs().amax(dim=1)[0] > 0
        rows, cols = torch.nonzero(changed, as_tuple=True)
        reaches.append(int(max((rows - at).abs().max(), (cols - at).abs().max())))
    assert 0 < min(reaches) and max(reaches) <= model.receptive_radius()
    # The bound is tight to within a pixel of rounding.
    assert max(reaches) >= model.receptive_radius() - 1


@pytest.mark.parametrize("conditioned", [True, False])
def test_first_blocks_is_the_network_with_its_later_blocks_skipped(conditioned: bool) -> None:
    """The start of a shallower student: the first ``k`` residual blocks with their own
    norms' conditioning, and the down and up layers with theirs (not their neighbours')."""
    model = _perturbed(TransformerConfig(conditioned=conditioned, res_blocks=4), seed=3)
    x, w = torch.rand(2, 3, 20, 28), torch.tensor([0.4, 1.6])
    with torch.no_grad():
        assert torch.equal(model.first_blocks(4)(x, w), model(x, w))
        shallow = model.first_blocks(2)
        assert shallow.config == TransformerConfig(conditioned=conditioned, res_blocks=2)
        got = shallow(x, w)
        # The deep network itself, its forward pass cut after two blocks; each norm keeps
        # its index, so it still reads its own modulation from the deep network's MLP.
        model.res_convs, model.res_norms = model.res_convs[:2], model.res_norms[:2]
        want = model(x, w)
    assert torch.equal(got, want)
    with pytest.raises(ValueError, match="between 0 and 4"):
        _perturbed(TransformerConfig(res_blocks=4)).first_blocks(5)
