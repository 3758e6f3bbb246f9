"""Training: synthetic motion, data discovery, flow cache, checkpoints, and that training
actually learns (loss goes down; the temporal loss lowers the warping error)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import (
    assert_same_weights,
    pan_frames,
    smooth_texture,
    stripe_style,
    write_image,
    write_png_folder,
    write_video,
)

from stylecore.errors import Cancelled, InputError, cli_wording
from stylecore.flow import warp
from stylecore.nets.model_file import load_model
from stylecore.nets.transformer import StyleTransformer, TransformerConfig
from training import flow_cache as flow_cache_module
from training.checkpoint import RandomState, load_checkpoint, save_checkpoint
from training.config import TrainConfig
from training.data import PairSampler, scan_data
from training.flow_cache import FlowCache
from training.loop import SAME_TEACHER, _stage_record, _uninterrupted, build_distill_loss, build_loss, settings_changes, train
from training.pairs import TrainPair, collate, random_window, to_float
from training.synthetic import MotionRange, synthetic_pair
from training.train import build_parser, config_from_args


def _consistency(pair: TrainPair) -> tuple[float, float]:
    """Mean |cur - warp(prev, flow)| on reliable pixels, and mean |cur - prev| there."""
    prev, cur = (np.asarray(x, np.float32) / (255.0 if x.dtype == np.uint8 else 1.0) for x in (pair.prev, pair.cur))
    mask = np.asarray(pair.mask, np.float32) > 0.5
    warped = warp(prev, np.asarray(pair.flow_bw, np.float32))
    return float(np.abs(cur - warped)[mask].mean()), float(np.abs(cur - prev)[mask].mean())


def test_synthetic_motion_has_exact_flow() -> None:
    image = smooth_texture(160, 200, seed=1, sigma=2.0)
    rng = np.random.default_rng(0)
    for _ in range(5):
        pair = synthetic_pair(image, 96, rng, MotionRange(shift=0.08, zoom=0.05, rotation_deg=4.0))
        assert pair.prev.shape == pair.cur.shape == (96, 96, 3) and pair.flow_bw.shape == (96, 96, 2)
        warped_err, moved = _consistency(pair)
        assert 0.3 < pair.mask.mean() <= 1.0
        assert warped_err < 0.01 and warped_err < moved / 5


def test_crops_and_flips_keep_the_flow_consistent() -> None:
    image = smooth_texture(120, 120, seed=2, sigma=2.0)
    pair = synthetic_pair(image, 100, np.random.default_rng(3), MotionRange(shift=0.06))
    for variant in (pair.flipped(), pair.crop(10, 20, 64), random_window(pair, 64, np.random.default_rng(4)), pair.compact()):
        warped_err, moved = _consistency(variant)
        assert warped_err < 0.012 and warped_err < moved / 4


def test_an_enlarged_crop_shows_its_content_larger_with_the_flow_scaled_alike() -> None:
    image = smooth_texture(120, 120, seed=5, sigma=2.0)
    pair = synthetic_pair(image, 48, np.random.default_rng(6), MotionRange(shift=0.06))
    big = pair.enlarged(144)
    assert big.prev.shape == big.cur.shape == (144, 144, 3) and big.mask.shape == (144, 144)
    # A 3x larger picture moves 3x as many pixels: the flow grew with it and still holds.
    assert np.abs(big.flow_bw).mean() == pytest.approx(3.0 * np.abs(pair.flow_bw).mean(), rel=0.05)
    warped_err, moved = _consistency(big)
    assert warped_err < 0.012 and warped_err < moved / 4
    # The content is the same, seen larger: shrinking it back gives the small crop.
    small = cv2.resize(to_float(big.cur), (48, 48), interpolation=cv2.INTER_AREA)
    assert np.abs(small - to_float(pair.cur)).mean() < 0.02


def test_a_zooming_sampler_draws_crops_of_content_up_to_that_much_larger() -> None:
    # A still of 16 px stripes: the larger a crop shows it, the wider its stripes.
    stripes = np.repeat(np.tile(np.repeat(np.array([0.1, 0.9], np.float32), 16), 8)[None, :, None], 256, axis=0)
    image = np.repeat(stripes, 3, axis=2)

    def mean_stripe_width(sampler: PairSampler) -> float:
        rng, widths = np.random.default_rng(7), []
        for _ in range(40):
            row = to_float(sampler.draw(rng).cur)[32, :, 0] > 0.5
            widths.append(64 / max(1, int(np.count_nonzero(row[1:] != row[:-1]))))
        return float(np.mean(widths))

    plain = mean_stripe_width(PairSampler([], [image], 64, 1.0, MotionRange(0, 0, 0)))
    zoomed = mean_stripe_width(PairSampler([], [image], 64, 1.0, MotionRange(0, 0, 0), zoom=4.0))
    assert plain == pytest.approx(16, rel=0.25)
    # Log-uniform over 1x-4x: 2.2x wider on average, never more than 4x (counted on 64 px,
    # the widest stripes read narrower than they are: 1.7x here).
    assert 1.4 * plain < zoomed <= 4 * plain
    with pytest.raises(InputError, match="zoom"):
        TrainConfig(style="s", data="d", out="o.safetensors", zoom=0.5)


def test_still_fraction_sets_how_often_the_photos_are_seen_beside_a_long_clip() -> None:
    # One dark still beside 50 bright video pairs: by default the still is one frame of 51 in
    # the synthetic pool (seen in 0.25 / 51 of the pairs); --still-fraction 0.5 shows it in half.
    bright = np.full((80, 80, 3), 230, np.uint8)
    pair = TrainPair(bright, bright, np.zeros((80, 80, 2), np.float32), np.ones((80, 80), np.float32))
    still = np.full((80, 80, 3), 25, np.uint8)

    def share_from_still(fraction: float | None) -> float:
        sampler = PairSampler([pair] * 50, [still], 64, 0.25, MotionRange(0, 0, 0), still_fraction=fraction)
        rng = np.random.default_rng(3)
        return float(np.mean([to_float(sampler.draw(rng).cur).mean() < 0.5 for _ in range(2000)]))

    assert share_from_still(None) < 0.02
    assert share_from_still(0.5) == pytest.approx(0.5, abs=0.04)
    assert share_from_still(1.0) == 1.0
    args = build_parser().parse_args(["--style", "s.jpg", "--data", "d", "--out", "o.safetensors", "--still-fraction", "0.5"])
    assert config_from_args(args).still_fraction == 0.5
    with pytest.raises(InputError, match="still_fraction"):
        TrainConfig(style="s", data="d", out="o.safetensors", still_fraction=1.5)


def test_scan_data_finds_videos_sequences_and_stills(tmp_path: Path) -> None:
    frames = pan_frames(4)
    write_video(tmp_path / "a.mp4", frames)
    write_png_folder(tmp_path / "seq", frames)
    write_image(tmp_path / "still.png", frames[0])
    (tmp_path / "notes.txt").write_text("ignored")
    found = scan_data(tmp_path)
    assert {p.name for p in found.clips} == {"a.mp4", "seq"}
    assert [p.name for p in found.stills] == ["still.png"]
    assert scan_data(tmp_path / "a.mp4").clips == (tmp_path / "a.mp4",)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no videos"):
        scan_data(tmp_path / "empty")
    with pytest.raises(InputError, match="`data` .* does not exist"):
        scan_data(tmp_path / "missing")


def test_flow_is_computed_once_and_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = flow_cache_module.flow_pair

    def counting(prev: np.ndarray, cur: np.ndarray, **kw: object):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(prev, cur, **kw)

    monkeypatch.setattr(flow_cache_module, "flow_pair", counting)
    a, b = pan_frames(2, height=40, width=56, step=3)
    source = tmp_path / "clip.mp4"
    source.write_bytes(b"x")
    cache = FlowCache(tmp_path / "cache")
    flow1, mask1 = cache.get(source, 0, 1, a, b)
    flow2, mask2 = FlowCache(tmp_path / "cache").get(source, 0, 1, a, b)
    assert len(calls) == 1
    assert np.array_equal(flow1, flow2) and np.array_equal(mask1, mask2)
    # The pan is 3 px: the cached backward flow says so where it is reliable.
    reliable = mask1 > 0
    assert abs(float(np.median(flow1[..., 0][reliable])) - 3.0) < 0.3
    cache.get(source, 1, 2, a, b)  # another pair is another entry
    assert len(calls) == 2


def test_command_line_options_reach_the_config() -> None:
    args = build_parser().parse_args(
        ["--style", "s.jpg", "--data", "d", "--out", "m.safetensors", "--steps", "7", "--size", "128", "--batch-size", "3",
         "--loss-net", "random-vgg19", "--device", "cpu", "--temporal-weight", "0.5", "--noise-weight", "0.2", "--unconditioned",
         "--zoom", "4", "--texture-weight", "2"]
    )
    config = config_from_args(args)
    assert (config.style, config.data, config.out) == ("s.jpg", ("d",), "m.safetensors")
    assert (config.steps, config.size, config.batch_size, config.loss_net, config.device) == (7, 128, 3, "random-vgg19", "cpu")
    assert (config.temporal_weight, config.noise_weight, config.conditioned, config.zoom, config.texture_weight) == (0.5, 0.2, False, 4.0, 2.0)
    with pytest.raises(InputError):
        TrainConfig(style="s", data="d", out="o.safetensors", size=30)
    distil = config_from_args(build_parser().parse_args(
        ["--style", "s.jpg", "--data", "d", "--out", "m.safetensors", "--teacher", "t", "--frame-stats", "--hard-pairs", "0.5",
         "--clip-grad", "3"]))
    assert (distil.teacher, distil.frame_stats, distil.hard_pairs, distil.clip_grad) == ("t", True, 0.5, 3.0)
    assert config.clip_grad == 0.0  # off unless asked for


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = StyleTransformer(TransformerConfig(res_blocks=1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.rand(1, 3, 16, 16)).mean().backward()
    opt.step()
    rng = np.random.default_rng(9)
    rng.random(3)
    save_checkpoint(tmp_path / "c.ckpt", model, opt, 17, RandomState.now(rng), {"size": 64})
    expected_next = rng.random()

    torch.manual_seed(1)
    other = StyleTransformer(TransformerConfig(res_blocks=1))
    other_opt = torch.optim.Adam(other.parameters(), lr=1e-3)
    other_rng = np.random.default_rng(0)
    step, settings = load_checkpoint(tmp_path / "c.ckpt", other, other_opt, other_rng)
    assert step == 17 and settings == {"size": 64}
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    assert other_opt.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
    assert other_rng.random() == expected_next


def _setup(tmp_path: Path) -> tuple[Path, Path]:
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        write_image(data / f"s{i}.png", smooth_texture(96, 96, seed=i, sigma=2.0))
    return write_image(tmp_path / "style.png", stripe_style(64)), data


def _config(style: Path, data: Path, out: Path, **kw: object) -> TrainConfig:
    base: dict[str, object] = dict(
        style=str(style), data=str(data), out=str(out), steps=20, size=64, batch_size=2, loss_net="random-vgg19",
        device="cpu", checkpoint_every=10**6, preview_every=10**6, log_every=10**6, bf16=False, style_size=64,
    )
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def _correlations(inputs: torch.Tensor, outputs: torch.Tensor) -> list[float]:
    """Pearson correlation of each output's pixels with its input's (0 for a flat output)."""
    a, b = (x.reshape(x.shape[0], -1) for x in (inputs, outputs))
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return ((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + 1e-12)).tolist()


@pytest.mark.slow
def test_tiny_training_lowers_the_loss(tmp_path: Path) -> None:
    """25 steps take a network towards the style and keep each output its input's picture.

    On a fixed batch at style weight 1 the trained network's style loss is clearly below an
    untrained network's and the input's own (a network that learnt nothing fails), and every
    output still follows its input (one that draws the same picture for any input fails).
    """
    style, data = _setup(tmp_path)
    config = _config(style, data, tmp_path / "m.safetensors", steps=25, preview_every=25)
    train(config, log=lambda _: None)
    loss_fn, _ = build_loss(config, torch.device("cpu"), lambda: torch.autocast("cpu", enabled=False))
    sampler = PairSampler([], [np.asarray(smooth_texture(96, 96, seed=i, sigma=2.0)) for i in range(3)], 64, 1.0)
    rng = np.random.default_rng(123)
    inputs = collate([sampler.draw(rng) for _ in range(4)]).cur
    weights = torch.ones(inputs.shape[0])
    trained, _ = load_model(config.out)
    torch.manual_seed(0)
    fresh = StyleTransformer(trained.config).eval()
    with torch.no_grad():
        outputs = trained(inputs, weights)
        style_loss = {name: loss_fn(inputs, out, weights)[1]["style"]
                      for name, out in (("trained", outputs), ("untrained", fresh(inputs, weights)), ("input", inputs))}
    assert style_loss["trained"] < 0.8 * min(style_loss["untrained"], style_loss["input"]), style_loss
    assert min(_correlations(inputs, outputs)) > 0.4
    # The style image's own texture, whatever the input, is the lowest style loss of all: this bar rejects it.
    texture = torch.from_numpy(stripe_style(64)).permute(2, 0, 1).expand_as(inputs)
    assert max(_correlations(inputs, texture)) < 0.2
    assert (tmp_path / "m_previews" / "step_000025.png").is_file()
    assert not (tmp_path / "m.ckpt").exists()  # the finished model supersedes it


def _warping_error(path: Path) -> float:
    """Mean squared difference between each output and the previous output moved along a
    2 px pan (exact flow), outside the newly revealed strip."""
    model, _ = load_model(path)
    frames = pan_frames(6, height=64, width=64, step=2, seed=7)
    with torch.no_grad():
        outs = [model(torch.from_numpy(f).permute(2, 0, 1)[None], torch.ones(1))[0].permute(1, 2, 0).numpy() for f in frames]
    flow = np.zeros((64, 64, 2), np.float32)
    flow[..., 0] = 2.0
    return float(np.mean([((b - warp(a, flow))[:, :-2] ** 2).mean() for a, b in zip(outs, outs[1:])]))


@pytest.mark.slow
def test_temporal_loss_lowers_warping_error_on_a_pan(tmp_path: Path) -> None:
    style, data = _setup(tmp_path)
    with_temporal = _config(style, data, tmp_path / "t.safetensors", temporal_weight=5.0)
    without = _config(style, data, tmp_path / "n.safetensors", temporal_weight=0.0)
    train(with_temporal, log=lambda _: None)
    train(without, log=lambda _: None)
    assert _warping_error(tmp_path / "t.safetensors") < 0.5 * _warping_error(tmp_path / "n.safetensors")


def test_interrupted_run_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    style, data = _setup(tmp_path)
    out = tmp_path / "m.safetensors"
    config = _config(style, data, out, steps=4, size=64, log_every=1)

    def stop_at_two(line: str) -> None:
        if line.startswith("step 2/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config, log=stop_at_two)
    assert (tmp_path / "m.ckpt").is_file() and not out.exists()
    with pytest.raises(InputError, match="`resume`"):
        train(config, log=lambda _: None)
    # A resume with other pixel-deciding settings would mix two trainings: refused in one line.
    with pytest.raises(InputError, match=r"other settings \(`style_weight` 1.0 -> 3.0\).*`restart`"):
        train(_config(style, data, out, steps=4, log_every=1, resume=True, style_weight=3.0), log=lambda _: None)
    lines: list[str] = []
    train(_config(style, data, out, steps=4, log_every=1, resume=True), log=lines.append)
    assert any("resumed" in line and "step 2" in line for line in lines)
    assert [line.split()[1] for line in lines if line.startswith("step ")] == ["3/4", "4/4"]
    assert out.is_file() and not (tmp_path / "m.ckpt").exists()

    # The resumed training is the uninterrupted one: same weights at the end.
    whole = tmp_path / "whole.safetensors"
    train(_config(style, data, whole, steps=4, log_every=1), log=lambda _: None)
    assert_same_weights(out, whole)


def test_a_ctrl_c_during_the_weight_update_waits_for_its_end() -> None:
    before = signal.getsignal(signal.SIGINT)
    finished = []
    with pytest.raises(KeyboardInterrupt):
        with _uninterrupted():
            signal.raise_signal(signal.SIGINT)
            finished.append(True)  # the update runs to its end
    assert finished == [True] and signal.getsignal(signal.SIGINT) is before


def test_training_emits_events_and_cancel_keeps_a_checkpoint(tmp_path: Path) -> None:
    style, data = _setup(tmp_path)
    out = tmp_path / "m.safetensors"
    events: list[dict] = []

    def cancel_after_two() -> bool:
        return sum(e["event"] == "step" for e in events) >= 2

    with pytest.raises(Cancelled):
        train(_config(style, data, out, steps=5, preview_every=1), log=lambda _: None, on_event=events.append,
              cancel=cancel_after_two)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds.count("step") == 2 and "done" not in kinds
    step = next(e for e in events if e["event"] == "step")
    assert step["steps"] == 5 and {"total", "content", "style"} <= set(step["losses"]) and step["eta_seconds"] > 0
    previews = [e["path"] for e in events if e["event"] == "preview"]
    assert previews == [str(tmp_path / "m_previews" / "step_000001.png"), str(tmp_path / "m_previews" / "step_000002.png")]
    assert (tmp_path / "m.ckpt").is_file() and not out.exists()

    events.clear()
    train(_config(style, data, out, steps=5, preview_every=100, resume=True), log=lambda _: None, on_event=events.append)
    assert events[0]["event"] == "start" and events[0]["step"] == 2
    assert [e["step"] for e in events if e["event"] == "step"] == [3, 4, 5]
    assert events[-1] == {"event": "done", "model": str(out), "steps": 5}


def test_resume_with_other_settings_is_refused_naming_the_changes(tmp_path: Path) -> None:
    style, data = _setup(tmp_path)
    out = tmp_path / "m.safetensors"
    with pytest.raises(Cancelled):
        train(_config(style, data, out, steps=4), log=lambda _: None, cancel=iter([False, True]).__next__)
    with pytest.raises(InputError) as refused:
        train(_config(style, data, out, steps=8, size=96, resume=True, log_every=3), log=lambda _: None)
    message = cli_wording(str(refused.value))
    assert "--steps 4 -> 8" in message and "--size 64 -> 96" in message and "--restart" in message
    assert "log" not in message  # settings that do not change what is learnt may differ
    train(_config(style, data, out, steps=4, resume=True, log_every=3, device="cpu"), log=lambda _: None)
    assert out.is_file()


def test_a_full_disk_during_training_is_one_line_naming_the_safe_checkpoint(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk fills between two checkpoints: the run stops with one line, the earlier
    checkpoint is whole, and `--resume` finishes the model once there is space again."""
    import errno

    from stylecore.errors import OutputError
    from training import checkpoint as checkpoint_module

    style, data = _setup(tmp_path)
    out = tmp_path / "m.safetensors"
    real_write = checkpoint_module.atomic_write_bytes
    writes: list[Path] = []

    def fills_up(path: Path, payload: bytes) -> None:
        writes.append(path)
        if len(writes) >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, payload)

    monkeypatch.setattr(checkpoint_module, "atomic_write_bytes", fills_up)
    with pytest.raises(OutputError) as stopped:
        train(_config(style, data, out, steps=6, checkpoint_every=2), log=lambda _: None)
    message = cli_wording(str(stopped.value))
    assert "\n" not in message and "is full" in message and "m.ckpt from step 2 is safe" in message
    assert "--resume" in message and "free some space" in message
    assert len(writes) == 2 and not out.exists()
    assert torch.load(tmp_path / "m.ckpt", weights_only=True)["step"] == 2  # whole, not cut off

    # `stylecore train` and Blender resume by themselves: they are told to run the job again.
    writes.clear()
    with pytest.raises(OutputError) as stopped:
        train(_config(style, data, tmp_path / "r.safetensors", steps=6, checkpoint_every=2, resume=True),
              log=lambda _: None)
    assert "r.ckpt from step 2 is safe: free some space and run the same command again" in str(stopped.value)

    monkeypatch.setattr(checkpoint_module, "atomic_write_bytes", real_write)  # space again
    train(_config(style, data, out, steps=6, checkpoint_every=2, resume=True), log=lambda _: None)
    assert out.is_file() and not (tmp_path / "m.ckpt").exists()

    # Full before any checkpoint (here at the finished model's write): nothing to resume from, said so.
    from training import loop as loop_module

    def no_space(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(loop_module, "save_model", no_space)
    with pytest.raises(OutputError, match=r"is full \(writing n\.safetensors\); no checkpoint was saved yet"):
        train(_config(style, data, tmp_path / "n.safetensors", steps=2), log=lambda _: None)


def test_a_flow_cache_that_cannot_be_written_does_not_stop_training(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    def no_space(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(flow_cache_module, "atomic_write_bytes", no_space)
    a, b = pan_frames(2, height=40, width=56, step=3)
    source = tmp_path / "clip.mp4"
    source.write_bytes(b"x")
    said: list[str] = []
    cache = FlowCache(tmp_path / "cache", warn=said.append)
    flow, mask = cache.get(source, 0, 1, a, b)
    assert flow.shape == (40, 56, 2) and mask.shape == (40, 56) and not list((tmp_path / "cache").iterdir())
    cache.get(source, 0, 1, a, b)  # the second failure is not said again
    assert len(said) == 1 and "No space left on device" in said[0] and "--cache-dir" in said[0]
    assert str(tmp_path / "cache") in said[0]


def test_a_flow_cache_folder_that_cannot_be_made_is_said_once_and_training_goes_on(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"x")  # a file where the cache's parent folder should be
    said: list[str] = []
    cache = FlowCache(blocker / "cache", warn=said.append)
    a, b = pan_frames(2, height=40, width=56, step=3)
    flow, _ = cache.get(tmp_path / "clip.mp4", 0, 1, a, b)
    assert flow.shape == (40, 56, 2) and len(said) == 1 and "cannot be written" in said[0]


def test_a_checkpoint_from_before_a_setting_existed_resumes_at_that_settings_default() -> None:
    current = TrainConfig(style="s", data="d", out="o.safetensors").to_dict()
    older = {key: value for key, value in current.items() if key != "zoom"}
    assert settings_changes(older, current) == []
    assert settings_changes(older, {**current, "zoom": 4.0}) == ["`zoom` 1.0 -> 4.0"]


def test_training_makes_its_out_folder_and_refuses_one_that_cannot_exist_before_any_step(tmp_path: Path) -> None:
    """`--out models/new/x.safetensors` makes the folder (its first checkpoint is written
    there, steps into the run); a folder that cannot be made is one line at the start, not
    a traceback at the first checkpoint."""
    from stylecore.errors import OutputError

    style, data = _setup(tmp_path)
    out = tmp_path / "models" / "new" / "m.safetensors"
    with pytest.raises(Cancelled):
        train(_config(style, data, out, steps=4, checkpoint_every=1), log=lambda _: None,
              cancel=iter([False, True]).__next__)
    assert (out.parent / "m.ckpt").is_file(), list(out.parent.iterdir())
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    steps: list[object] = []
    with pytest.raises(OutputError, match="cannot write model files in .*a_file.*`out`"):
        train(_config(style, data, blocker / "m.safetensors"), log=lambda _: None, on_event=steps.append)
    assert not steps  # refused before the run began
    # A run refused for its inputs (here a missing painting) makes no folder.
    with pytest.raises(InputError):
        train(_config(tmp_path / "missing.jpg", data, tmp_path / "other" / "m.safetensors"), log=lambda _: None)
    assert not (tmp_path / "other").exists()


def test_progress_bar_shows_loss_terms(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from training.progress import TrainingBar

    bar = TrainingBar(disabled=False)
    bar({"event": "start", "step": 0, "steps": 4})
    bar({"event": "step", "step": 2, "steps": 4, "losses": {"total": 1.5, "style": 0.25}, "eta_seconds": 3.0,
         "seconds_per_step": 1.5})
    bar.log("a log line")
    bar.close()
    err = capsys.readouterr().err
    assert "2/4" in err and "total 1.5" in err and "style 0.25" in err and "<" in err  # tqdm's elapsed<remaining


def test_stylecore_train_makes_a_named_model_with_thumbnail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from stylecore import catalog
    from stylecore.cli.main import main as cli

    monkeypatch.setenv("STYLECORE_MODELS", str(tmp_path / "models"))
    style, data = _setup(tmp_path)
    clip = write_png_folder(tmp_path / "clip", pan_frames(4, height=72, width=80))
    args = ["train", "--style", str(style), "--content", str(clip), "--data", str(data), "-o", "stripes",
            "--steps", "3", "--size", "64", "--loss-net", "random-vgg19", "--device", "cpu", "--quiet"]
    assert cli(args) == 0
    model = tmp_path / "models" / "stripes.safetensors"
    assert model.is_file() and model.with_suffix(".jpg").is_file()
    assert "--model stripes" in capsys.readouterr().out
    entry = catalog.find_by_style(style)
    assert entry is not None and entry.name == "stripes" and entry.thumbnail == model.with_suffix(".jpg")
    assert load_model(model)[1].training["steps"] == 3
    assert cli(["models", "--json"]) == 0 and "stripes" in capsys.readouterr().out
    # Feedforward with this style image now finds this model.
    assert catalog.model_for(None, ((str(style), 1.0),)) == model


def test_train_job_defaults_and_bad_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from training.job import QUALITY_STEPS, TrainJob, general_data, model_destination, name_for_style

    monkeypatch.setenv("STYLECORE_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("STYLECORE_TRAINING_DATA", str(tmp_path / "mine"))
    style, _ = _setup(tmp_path)
    assert general_data()[0] == str(tmp_path / "mine")
    assert any(p.endswith("astronaut_512x384.jpg") for p in general_data())  # the checkout's samples
    config = TrainJob(style=str(style), output="x", content=("clip.mp4",)).config()
    assert config.steps == QUALITY_STEPS["good"] and config.data[0] == "clip.mp4" and config.resume
    assert config.out == str(tmp_path / "models" / "x.safetensors")
    assert model_destination(str(tmp_path / "a.safetensors")) == tmp_path / "a.safetensors"
    assert name_for_style("/p/The Scream (1893).jpg") == "the_scream_1893"
    with pytest.raises(InputError, match="letters, digits"):
        model_destination("my model!")
    with pytest.raises(InputError, match="quality"):
        TrainJob(style=str(style), output="x", quality="ultra").config()


def test_style_rotate_targets_both_orientations_of_the_painting(tmp_path: Path) -> None:
    """With ``style_rotate`` each target is the mean of the painting's Gram matrix and the
    quarter-turned painting's; without it, the painting's alone."""
    from stylecore.nets.loss_nets import load_loss_network
    from training.loop import _style_grams
    from training.objective import LOSS_LAYERS

    image = smooth_texture(40, 56, seed=3)
    image[::4] = 0.0  # horizontal stripes: a strongly oriented style
    write_image(tmp_path / "a.png", image)
    write_image(tmp_path / "b.png", np.ascontiguousarray(np.rot90(image)))
    encoder = load_loss_network("random-vgg19", LOSS_LAYERS, torch.device("cpu"))

    def grams(name: str, rotate: bool) -> dict[str, torch.Tensor]:
        config = TrainConfig(style=str(tmp_path / name), data="d", out="o.safetensors", style_rotate=rotate)
        return _style_grams(config, encoder, torch.device("cpu"))[0]

    plain_a, plain_b, both = grams("a.png", False), grams("b.png", False), grams("a.png", True)
    for k in both:
        assert not torch.allclose(plain_a[k], plain_b[k], rtol=1e-2)  # orientation matters to a Gram
        assert torch.allclose(both[k], (plain_a[k] + plain_b[k]) / 2, rtol=1e-4, atol=1e-7)

@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04 a broken zip"])
def test_a_bad_checkpoint_on_resume_is_one_line(tmp_path: Path, content: bytes) -> None:
    style, data = _setup(tmp_path)
    out = tmp_path / "m.safetensors"
    (tmp_path / "m.ckpt").write_bytes(content)
    with pytest.raises(InputError, match=r"cannot resume from .*m\.ckpt.*`restart` starts over") as info:
        train(_config(style, data, out, steps=2, resume=True), log=lambda _: None)
    assert "\n" not in str(info.value) and "; --restart starts over" in cli_wording(str(info.value))


def test_distill_loss_follows_its_formula() -> None:
    """pixel * PIXEL_SCALE * mean|S - T| + feature * sum_l content_loss + temporal, each term alone."""
    from stylecore import losses
    from training.objective import DISTILL_LAYERS, PIXEL_SCALE, DistillLoss, temporal_term

    def encoder(x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: x * (k + 1) + k for k, name in enumerate(DISTILL_LAYERS)}

    torch.manual_seed(0)
    student, teacher = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    flow, mask = torch.rand(1, 2, 8, 8), torch.ones(1, 1, 8, 8)
    total, terms = DistillLoss(encoder, pixel=2.0, feature=3.0, temporal=0.5)(  # type: ignore[arg-type]
        student, teacher, temporal=(student[1:], student[:1], flow, mask))
    assert terms["pixel"] == pytest.approx(2.0 * PIXEL_SCALE * float((student - teacher).abs().mean()))
    feature = sum(float(losses.content_loss(encoder(student)[n], encoder(teacher)[n])) for n in DISTILL_LAYERS)
    assert terms["feature"] == pytest.approx(3.0 * feature, rel=1e-5)
    assert terms["temporal"] == pytest.approx(0.5 * float(temporal_term(student[1:], student[:1], flow, mask)), rel=1e-5)
    assert float(total) == pytest.approx(sum(terms.values()), rel=1e-5)
    _, same = DistillLoss(encoder, 1.0, 1.0, 0.0)(teacher, teacher)  # type: ignore[arg-type]
    assert same == {"pixel": 0.0, "feature": 0.0}


def test_the_distill_texture_term_matches_each_teacher_images_grams_wherever_its_strokes_lie() -> None:
    """texture * TEXTURE_SCALE * sum_l mean_i |G(S_i) - G(T_i)|^2 / |G(T_i)|^2, with
    G(F) = F F^T / (C H W): the teacher's strokes moved elsewhere cost nothing."""
    from training.objective import DISTILL_LAYERS, TEXTURE_SCALE, DistillLoss

    def encoder(x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: x * (k + 1) + k for k, name in enumerate(DISTILL_LAYERS)}

    def gram(f: torch.Tensor) -> torch.Tensor:
        c, h, w = f.shape
        flat = f.reshape(c, h * w).double()
        return flat @ flat.T / (c * h * w)

    torch.manual_seed(1)
    student, teacher = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    _, terms = DistillLoss(encoder, pixel=0.0, feature=0.0, temporal=0.0, texture=2.0)(student, teacher)  # type: ignore[arg-type]
    expected = 0.0
    for name in DISTILL_LAYERS:
        fs, ft = encoder(student)[name], encoder(teacher)[name]
        expected += sum(float(((gram(fs[i]) - gram(ft[i])) ** 2).sum() / (gram(ft[i]) ** 2).sum()) for i in range(2)) / 2
    assert terms["texture"] == pytest.approx(2.0 * TEXTURE_SCALE * expected, rel=1e-4)
    moved = torch.roll(teacher, shifts=(3, 2), dims=(2, 3))
    _, placed_elsewhere = DistillLoss(encoder, pixel=1.0, feature=0.0, temporal=0.0, texture=1.0)(moved, teacher)  # type: ignore[arg-type]
    assert placed_elsewhere["texture"] < 1e-6 < placed_elsewhere["pixel"]
    # Image by image: the other image's texture is not this one's.
    _, swapped = DistillLoss(encoder, pixel=0.0, feature=0.0, temporal=0.0, texture=1.0)(teacher.flip(0), teacher)  # type: ignore[arg-type]
    assert swapped["texture"] > 1e-3


def test_the_distill_colour_term_sees_a_colour_cast_and_not_strokes_moved_within_a_block() -> None:
    """colour * COLOUR_SCALE * mean|pool(S) - pool(T)|, pool the mean over COLOUR_BLOCK
    pixels square: a cast costs its size; pixels moved within their blocks cost nothing."""
    from training.objective import COLOUR_BLOCK, COLOUR_SCALE, DISTILL_LAYERS, DistillLoss

    def encoder(x: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict.fromkeys(DISTILL_LAYERS, x)

    torch.manual_seed(2)
    b = COLOUR_BLOCK
    teacher = torch.rand(2, 3, 2 * b, 3 * b) * 0.8
    _, cast = DistillLoss(encoder, pixel=0.0, feature=0.0, temporal=0.0, colour=2.0)(teacher + 0.1, teacher)  # type: ignore[arg-type]
    assert cast["colour"] == pytest.approx(2.0 * COLOUR_SCALE * 0.1, rel=1e-4)
    # Each block's pixels in another order: the same colours, strokes elsewhere.
    blocks = teacher.reshape(2, 3, 2, b, 3, b).permute(0, 1, 2, 4, 3, 5).reshape(2, 3, 2, 3, b * b)
    moved = blocks.flip(-1).reshape(2, 3, 2, 3, b, b).permute(0, 1, 2, 4, 3, 5).reshape(teacher.shape)
    _, terms = DistillLoss(encoder, pixel=1.0, feature=0.0, temporal=0.0, colour=1.0)(moved, teacher)  # type: ignore[arg-type]
    assert terms["colour"] < 1e-5 < terms["pixel"]
    with pytest.raises(InputError, match="loss weights"):
        TrainConfig(style="s", data="d", out="o.safetensors", colour_weight=-1.0)
    # From the command line to the loss a distillation run builds.
    args = build_parser().parse_args(["--style", "s.jpg", "--data", "d", "--out", "o.safetensors", "--colour-weight", "2",
                                      "--loss-net", "random-vgg19"])
    loss = build_distill_loss(config_from_args(args), torch.device("cpu"), contextlib.nullcontext)
    _, built = loss(teacher + 0.1, teacher)
    assert built["colour"] == pytest.approx(2.0 * COLOUR_SCALE * 0.1, rel=1e-4)


def test_a_stage_names_its_start_s_teacher_instead_of_repeating_it() -> None:
    teacher = {"model": "scream", "training": {"steps": 600, "init": {"model": "stage1", "training": {"steps": 1000}}}}
    start = {"steps": 500, "teacher": teacher, "init": {"model": "small5", "training": {"steps": 1500}}}
    kept = _stage_record(start, teacher)
    assert kept is not None and kept["teacher"] == {"model": "scream", "training": SAME_TEACHER}
    assert kept["steps"] == 500 and kept["init"] == start["init"] and start["teacher"] is teacher
    # A copy that follows a retrained teacher keeps the record of the one it learnt before.
    retrained = {"model": "scream", "training": {"steps": 300}}
    assert _stage_record(start, retrained) == start
    assert _stage_record(start, None) == start and _stage_record(None, teacher) is None
    plain = {"steps": 600}
    assert _stage_record(plain, teacher) == plain


def test_a_second_distillation_stage_records_its_teacher_once(tmp_path: Path) -> None:
    """Through ``train``: a stage started from a copy of the same teacher names that teacher
    in its ``init`` record; its own ``teacher`` record stays whole."""
    style, data = _setup(tmp_path)
    teacher = train(_config(style, data, tmp_path / "t.safetensors", steps=1), log=lambda _: None)
    first = train(_config(style, data, tmp_path / "first.safetensors", steps=1, teacher=str(teacher), width=0.5),
                  log=lambda _: None)
    second = train(_config(style, data, tmp_path / "second.safetensors", steps=1, teacher=str(teacher), width=0.5,
                           init=str(first)), log=lambda _: None)
    record = load_model(second)[1].training
    assert record["teacher"] == load_model(first)[1].training["teacher"]  # type: ignore[index]
    assert record["teacher"]["training"]["steps"] == 1  # type: ignore[index]
    assert record["init"]["training"]["teacher"] == {"model": "t", "training": SAME_TEACHER}  # type: ignore[index]


@pytest.mark.slow
def test_a_distilled_half_width_model_learns_its_teacher(tmp_path: Path) -> None:
    """A student at half the channels, trained on a teacher's outputs, comes much closer to
    them than an untrained student; its file says what it was distilled from, and a style
    image still finds the full model, not its small copy."""
    from stylecore.catalog import find_by_style

    style, data = _setup(tmp_path)
    models = tmp_path / "models"
    teacher_path = train(_config(style, data, models / "stripes.safetensors", steps=10), log=lambda _: None)
    student_path = train(_config(style, data, models / "stripes-small.safetensors", steps=40, teacher=str(teacher_path),
                                 width=0.5, learning_rate=3e-3), log=lambda _: None)
    teacher, _ = load_model(teacher_path)
    student, info = load_model(student_path)
    assert student.config.down_channels == (8, 16, 24) and student.config.up_channels == (16, 8)
    assert info.training["teacher"]["model"] == "stripes"  # type: ignore[index]
    assert info.style_thumbnail_sha256 == load_model(teacher_path)[1].style_thumbnail_sha256
    sampler = PairSampler([], [np.asarray(smooth_texture(96, 96, seed=i, sigma=2.0)) for i in range(3)], 64, 1.0)
    inputs = collate([sampler.draw(np.random.default_rng(5)) for _ in range(4)]).cur
    weights = torch.tensor([0.0, 0.5, 1.0, 2.0])
    torch.manual_seed(0)
    fresh = StyleTransformer(student.config).eval()
    with torch.no_grad():
        target = teacher(inputs, weights)
        trained_error = float((student(inputs, weights) - target).abs().mean())
        fresh_error = float((fresh(inputs, weights) - target).abs().mean())
    assert trained_error < 0.5 * fresh_error, (trained_error, fresh_error)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STYLECORE_MODELS", str(models))
        found = find_by_style(style)
    assert found is not None and found.name == "stripes" and found.teacher is None


def test_a_shallower_network_starts_from_the_first_blocks_of_a_deeper_init(tmp_path: Path) -> None:
    """``--res-blocks 2 --init DEEPER`` (how the NAME-small models lost two blocks): the new
    network has two blocks and starts from the deeper model's first two, not from scratch;
    a deeper network than the init's is refused in one line."""
    style, data = _setup(tmp_path)
    deep_path = train(_config(style, data, tmp_path / "deep.safetensors", steps=2), log=lambda _: None)
    # One step at a tiny learning rate: the weights stay where they started.
    path = train(_config(style, data, tmp_path / "shallow.safetensors", steps=1, res_blocks=2, init=str(deep_path),
                         learning_rate=1e-7), log=lambda _: None)
    deep, _ = load_model(deep_path)
    shallow, info = load_model(path)
    assert shallow.config == deep.config.with_res_blocks(2) and deep.config.res_blocks == 5
    start = deep.first_blocks(2).state_dict()
    for name, value in shallow.state_dict().items():
        assert float((value - start[name]).abs().max()) < 1e-5, name
    assert info.training["res_blocks"] == 2 and info.training["init"]["model"] == "deep.safetensors"  # type: ignore[index]
    with pytest.raises(InputError, match="is a different network"):
        train(_config(style, data, tmp_path / "deeper.safetensors", steps=1, res_blocks=6, init=str(deep_path)),
              log=lambda _: None)


def test_distillation_refuses_a_painting_its_teacher_did_not_learn(tmp_path: Path) -> None:
    style, data = _setup(tmp_path)
    teacher_path = train(_config(style, data, tmp_path / "t.safetensors", steps=1), log=lambda _: None)
    other = write_image(tmp_path / "other.png", smooth_texture(64, 64, seed=9, sigma=3.0))
    with pytest.raises(InputError) as caught:
        train(_config(other, data, tmp_path / "s.safetensors", steps=1, teacher=str(teacher_path), width=0.5),
              log=lambda _: None)
    assert "is not the painting `teacher` t was trained on" in str(caught.value)
    assert "--teacher" in cli_wording(str(caught.value)) and "--style" in cli_wording(str(caught.value))


def test_training_photos_come_out_of_a_scikit_image_wheel_as_rgb_jpegs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from training import photos

    grey = (np.arange(64 * 48, dtype=np.uint32).reshape(48, 64) % 256).astype(np.uint8)
    wheel = tmp_path / "scikit_image-0.26.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("skimage/data/camera.png", cv2.imencode(".png", grey)[1].tobytes())
    written = photos.extract_photos(wheel, tmp_path / "out", ("camera.png",))
    assert [p.name for p in written] == ["camera.jpg"]
    image = cv2.imread(str(written[0]), cv2.IMREAD_UNCHANGED)
    assert image.shape == (48, 64, 3)  # grey kept as three equal channels, as training reads RGB
    assert np.abs(image[..., 0].astype(int) - grey).mean() < 3
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["camera.jpg"]  # no temporary files left
    # A wheel without the picture, or no package index: one line that says what to do.
    assert photos.main([str(tmp_path / "more"), "--wheel", str(wheel)]) == 1
    assert "has no skimage/data/motorcycle_left.png" in capsys.readouterr().err


def test_training_photos_says_how_to_go_on_without_the_package_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from training import photos

    failed = subprocess.CompletedProcess([], 1, "", "ERROR: Could not find a version that satisfies the requirement\n")
    monkeypatch.setattr(photos.subprocess, "run", lambda *a, **k: failed)
    assert photos.main([str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Could not find a version" in err and "--wheel" in err
    assert not (tmp_path / "out").exists()
