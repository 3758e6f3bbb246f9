"""Distillation's ``frame_stats``: crops normalised as their whole frames are."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import smooth_texture, stripe_style, write_image

from stylecore.errors import InputError, cli_wording
from stylecore.io.imageops import resize
from stylecore.nets.transformer import NormStats, StyleTransformer, TransformerConfig
from training.config import TrainConfig
from training.data import PairSampler
from training.frame_stats import frame_stats
from training.loop import distill_batch_loss, train
from training.objective import DISTILL_LAYERS, DistillLoss
from training.pairs import TrainPair, collate, to_float, to_uint8


def _model(seed: int = 3, width: float = 1.0) -> StyleTransformer:
    torch.manual_seed(seed)
    model = StyleTransformer(TransformerConfig(res_blocks=1).scaled(width))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def _busy_frame_with_a_flat_corner(size: int = 160) -> np.ndarray:
    frame = smooth_texture(size, size, seed=1, sigma=1.0)
    frame[: size // 2, : size // 2] = (0.9, 0.8, 0.6)  # a flat sky in a busy frame
    return frame


def test_a_crop_with_its_frames_recorded_statistics_is_painted_as_the_frame_paints_it() -> None:
    """One recording pass gives every layer's statistics of the whole frame (the output
    itself unchanged); a crop normalised with them is the whole output's region beyond
    the network's reach, where the crop's own statistics paint another picture."""
    model = _model().eval()
    frame = torch.from_numpy(_busy_frame_with_a_flat_corner()).permute(2, 0, 1)[None].contiguous()
    weight = torch.tensor([1.0])
    stats = NormStats(record=True)
    with torch.no_grad():
        whole = model(frame, weight)
        recorded = model(frame, weight, stats)
    assert sorted(stats.mean) == list(range(model.num_norms))
    assert float((recorded - whole).abs().max()) < 1e-5
    stats.record = False
    crop = frame[:, :, :80, :80]
    reach = model.receptive_radius()
    with torch.no_grad():
        fixed = model(crop, weight, stats)
        own = model(crop, weight)
    region = whole[:, :, : 80 - reach, : 80 - reach]
    assert float((fixed[:, :, : 80 - reach, : 80 - reach] - region).abs().max()) < 1e-4
    assert float((own[:, :, : 80 - reach, : 80 - reach] - region).abs().mean()) > 0.01


def test_renormalised_statistics_give_the_fixed_value_and_the_maps_own_gradient() -> None:
    """Batch renormalisation: the value of the fixed statistics; the gradient of the map's
    own, so a shift of the whole map (a convolution's bias before a norm) is normalised
    away and learns nothing, as at inference, where fixed statistics would teach it."""
    model = _model()
    frame = torch.from_numpy(_busy_frame_with_a_flat_corner()).permute(2, 0, 1)[None].contiguous()
    weight = torch.tensor([1.0])
    measured = NormStats(record=True)
    with torch.no_grad():
        model(frame, weight, measured)
    crop = frame[:, :, :96, :96]
    grads = {}
    for name, renormalise in (("fixed", False), ("renormalised", True)):
        stats = NormStats(renormalise=renormalise)
        stats.mean, stats.var = measured.mean, measured.var
        model.zero_grad()
        out = model(crop, weight, stats)
        out.square().mean().backward()
        grads[name] = (out.detach(), model.down[0].conv.bias.grad.clone())
    assert float((grads["fixed"][0] - grads["renormalised"][0]).abs().max()) < 1e-5
    assert float(grads["fixed"][1].abs().max()) > 1e-6
    assert float(grads["renormalised"][1].abs().max()) < 1e-6 * float(grads["fixed"][1].abs().max()) + 1e-9
    # With the crop's own statistics renormalisation is plain instance normalisation.
    own = NormStats(record=True)
    with torch.no_grad():
        model(crop, weight, own)
    own_renorm = NormStats(renormalise=True)
    own_renorm.mean, own_renorm.var = own.mean, own.var
    model.zero_grad()
    model(crop, weight, own_renorm).square().mean().backward()
    renorm_grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    model(crop, weight).square().mean().backward()
    plain_grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    assert len(renorm_grads) == len(plain_grads)
    for a, b in zip(renorm_grads, plain_grads):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-6)


def test_crops_carry_their_whole_frame_and_its_scale() -> None:
    image = to_uint8(smooth_texture(120, 160, seed=2, sigma=2.0))
    pair = TrainPair(image, image, np.zeros((120, 160, 2), np.float32), np.ones((120, 160), np.float32), frame=image)
    crop = pair.crop(20, 40, 32).flipped().compact().enlarged(64)
    assert crop.frame is image and crop.frame_scale == 2.0
    # The crop shows the frame enlarged by frame_scale (mirrored here): its pixels, away
    # from the resampling's edges.
    big = resize(to_float(image), (320, 240))[40:104, 80:144, :][:, ::-1]
    assert float(np.abs(to_float(crop.cur)[4:-4, 4:-4] - big[4:-4, 4:-4]).mean()) < 0.02
    sampler = PairSampler(clip_pairs=[], stills=[image], size=64, synthetic_fraction=1.0, zoom=3.0)
    rng = np.random.default_rng(0)
    drawn = [sampler.draw(rng) for _ in range(20)]
    assert all(p.frame is image for p in drawn)
    scales = [p.frame_scale for p in drawn]
    assert min(scales) >= 1.0 and max(scales) <= 3.0 + 1e-6 and max(scales) > 1.5
    batch = collate(drawn[:3])
    assert [s for _, s in batch.frames] == scales[:3]
    assert collate([TrainPair(image, image, pair.flow_bw, pair.mask)]).frames == ()


def _encoder(x: torch.Tensor) -> dict[str, torch.Tensor]:
    return dict.fromkeys(DISTILL_LAYERS, x)


def test_a_crop_that_is_its_whole_frame_distils_as_without_frame_stats() -> None:
    """With the frame the crop itself, the loss and the student's gradient are the plain
    ones; with a larger frame the statistics, and so the loss, are the frame's."""
    teacher, student = _model(3).eval(), _model(4, width=0.5)
    image = to_uint8(_busy_frame_with_a_flat_corner(64))
    zero_flow, ones = np.zeros((64, 64, 2), np.float32), np.ones((64, 64), np.float32)
    batch = collate([TrainPair(image, image, zero_flow, ones, frame=image)])
    loss = DistillLoss(_encoder, pixel=1.0, feature=0.0, temporal=1.0, monotone=1.0)  # type: ignore[arg-type]
    weights = torch.tensor([0.8])
    results = []
    for whole in (False, True):
        student.zero_grad()
        total, _ = distill_batch_loss(student, teacher, batch, weights, loss, twin_weight=1.5, whole_frames=whole)
        total.backward()
        results.append((float(total.detach()), student.up[0].conv.weight.grad.clone()))
    assert results[1][0] == pytest.approx(results[0][0], rel=1e-4)
    assert torch.allclose(results[1][1], results[0][1], rtol=1e-3, atol=1e-7)
    # The same crop cut from a frame twice as large, the rest of which is busy.
    large = to_uint8(_busy_frame_with_a_flat_corner(128))
    inside = TrainPair(large, large, np.zeros((128, 128, 2), np.float32), np.ones((128, 128), np.float32), frame=large)
    cut = collate([inside.crop(0, 0, 64)])
    plain, _ = distill_batch_loss(student, teacher, cut, weights, loss, whole_frames=False)
    framed, _ = distill_batch_loss(student, teacher, cut, weights, loss, whole_frames=True)
    stats = frame_stats(teacher, cut.frames, weights, lambda: torch.autocast("cpu", enabled=False))
    with torch.no_grad():
        expected = teacher(torch.from_numpy(to_float(large)).permute(2, 0, 1)[None], weights)[:, :, :40, :40]
        painted = teacher(cut.cur, weights, stats)[:, :, :40, :40]
    assert float((painted - expected).abs().max()) < 1e-4
    assert abs(float(framed.detach()) - float(plain.detach())) > 1e-4


def test_frame_stats_trains_a_copy_and_asks_for_a_teacher(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        write_image(data / f"s{i}.png", smooth_texture(96, 128, seed=i, sigma=2.0))
    write_image(tmp_path / "style.png", stripe_style(64))
    base: dict[str, object] = dict(
        style=str(tmp_path / "style.png"), data=str(data), steps=2, size=64, batch_size=2, zoom=2.0,
        loss_net="random-vgg19", device="cpu", checkpoint_every=10**6, preview_every=10**6, log_every=1, bf16=False,
        style_size=64,
    )
    teacher = train(TrainConfig(out=str(tmp_path / "teacher.safetensors"), **base), log=lambda _: None)  # type: ignore[arg-type]
    lines: list[str] = []
    copy = train(TrainConfig(out=str(tmp_path / "copy.safetensors"), teacher=str(teacher), width=0.5,  # type: ignore[arg-type]
                             frame_stats=True, distill_monotone_weight=1.0, **base), log=lines.append)
    assert copy.is_file() and sum(line.startswith("step ") for line in lines) == 2
    with pytest.raises(InputError, match="frame_stats") as refused:
        TrainConfig(out=str(tmp_path / "x.safetensors"), frame_stats=True, **base)  # type: ignore[arg-type]
    assert "--frame-stats" in cli_wording(str(refused.value)) and "--teacher" in cli_wording(str(refused.value))
