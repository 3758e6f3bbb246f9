"""Gradient clipping relative to the run's recent gradient norms (``training.clipping``),
and that a clipped run resumes exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import assert_same_weights, tiny_train_config

from stylecore.errors import InputError
from training import clipping
from training.clipping import WARMUP, WINDOW, RelativeClip
from training.config import TrainConfig
from training.loop import train


def _grad(value: float) -> torch.Tensor:
    """A parameter whose gradient has norm ``value`` (3-4-0 triangle, scaled)."""
    p = torch.zeros(3, requires_grad=True)
    p.grad = torch.tensor([0.6, 0.8, 0.0]) * value
    return p


def test_no_clipping_during_the_warm_up() -> None:
    clip = RelativeClip(3.0)
    for _ in range(WARMUP - 1):
        clip([_grad(1.0)])
    big = _grad(1000.0)
    assert clip([big]) == pytest.approx(1000.0)
    assert big.grad.norm().item() == pytest.approx(1000.0) and clip.take_clipped() == 0


def test_a_spike_is_clipped_to_the_factor_times_the_median() -> None:
    clip = RelativeClip(3.0)
    for value in [1.0, 2.0, 3.0] * 10:  # median 2
        clip([_grad(value)])
    spike = _grad(600.0)
    assert clip([spike]) == pytest.approx(600.0)  # the norm before clipping
    assert spike.grad.norm().item() == pytest.approx(6.0, rel=1e-4)
    # The direction is kept: only the length changes.
    assert torch.allclose(spike.grad / spike.grad.norm(), torch.tensor([0.6, 0.8, 0.0]), atol=1e-6)
    ordinary = _grad(5.0)
    clip([ordinary])
    assert ordinary.grad.norm().item() == pytest.approx(5.0)  # under 3 x the median: untouched
    assert clip.take_clipped() == 1 and clip.take_clipped() == 0


def test_the_limit_follows_the_median_of_the_last_window_steps() -> None:
    clip = RelativeClip(2.0)
    for _ in range(WINDOW):
        clip([_grad(100.0)])
    # Spikes do not raise the limit: the median ignores them while they are a minority.
    for _ in range(WINDOW // 3):
        clip([_grad(1e5)])
    assert clip.limit() == pytest.approx(200.0)
    # Gradients that shrink for good bring it down once they fill most of the window.
    for _ in range(WINDOW):
        clip([_grad(10.0)])
    assert clip.limit() == pytest.approx(20.0)
    # A broken step (infinite norm) is not part of the history.
    clip([_grad(float("inf"))])
    assert len(clip.norms) == WINDOW and all(n == 10.0 for n in clip.norms)


def test_the_history_round_trips() -> None:
    clip = RelativeClip(3.0)
    for value in range(1, 40):
        clip([_grad(float(value))])
    again = RelativeClip(3.0)
    again.restore(clip.state())
    assert list(again.norms) == list(clip.norms) and again.limit() == clip.limit() == 3.0 * 20.0


def test_a_factor_of_one_or_less_is_refused_in_one_line() -> None:
    with pytest.raises(InputError, match=r"`clip_grad` 0.5: .*above 1.*or 0 for no clipping"):
        TrainConfig(style="s", data="d", out="o.safetensors", clip_grad=0.5)


def _config(tmp_path: Path, out: str, **kw: object) -> TrainConfig:
    return tiny_train_config(tmp_path, out, **{"steps": 8, "batch_size": 2, "clip_grad": 1.05, **kw})


def _clipped_per_step(lines: list[str]) -> list[int]:
    """The "N clipped" of each log line (one per step in these runs)."""
    return [int(line.split(" clipped")[0].rsplit(", ", 1)[1]) for line in lines if line.startswith("step ")]


def test_a_clipped_run_clips_and_resumes_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A short window and warm-up, and a limit just above the median, so that this short
    # run clips, and a resume that forgot the history would clip other steps.
    monkeypatch.setattr(clipping, "WARMUP", 2)
    monkeypatch.setattr(clipping, "WINDOW", 3)
    whole = tmp_path / "whole.safetensors"
    lines: list[str] = []
    train(_config(tmp_path, whole.name), log=lines.append)
    clipped = _clipped_per_step(lines)
    assert len(clipped) == 8 and sum(clipped) >= 1 and clipped[:2] == [0, 0]  # none in the warm-up

    # Without clipping the same run learns other weights: the clipping acted.
    plain = tmp_path / "plain.safetensors"
    train(_config(tmp_path, plain.name, clip_grad=0.0), log=lambda _: None)
    with pytest.raises(AssertionError):
        assert_same_weights(whole, plain)

    out = tmp_path / "m.safetensors"

    def stop_at_five(line: str) -> None:
        if line.startswith("step 5/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(_config(tmp_path, out.name), log=stop_at_five)
    train(_config(tmp_path, out.name, resume=True), log=lambda _: None)
    assert_same_weights(out, whole)


def test_a_run_cut_in_the_middle_of_a_step_resumes_as_if_never_cut(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # A Ctrl-C mostly lands inside a step, after its crops and style weights were drawn and
    # its gradient norm recorded: the checkpoint must hold the state from before them. Cut
    # in step 7: in this run step 8 is clipped, at a limit that step 7's norm, recorded
    # twice, would change (and step 7's crops drawn twice would change both steps).
    monkeypatch.setattr(clipping, "WARMUP", 2)
    monkeypatch.setattr(clipping, "WINDOW", 3)
    whole = tmp_path / "whole.safetensors"
    lines: list[str] = []
    train(_config(tmp_path, whole.name), log=lines.append)
    # The premise: a step after the cut is clipped, so a wrong history would show.
    assert _clipped_per_step(lines)[7] == 1

    out = tmp_path / "m.safetensors"
    record = clipping.RelativeClip.__call__
    calls = 0

    def cut_in_step_seven(self: clipping.RelativeClip, parameters: object) -> float:
        nonlocal calls
        calls += 1
        norm = record(self, parameters)
        if calls == 7:
            raise KeyboardInterrupt
        return norm

    monkeypatch.setattr(clipping.RelativeClip, "__call__", cut_in_step_seven)
    with pytest.raises(KeyboardInterrupt):
        train(_config(tmp_path, out.name), log=lambda _: None)
    monkeypatch.setattr(clipping.RelativeClip, "__call__", record)
    lines.clear()
    train(_config(tmp_path, out.name, resume=True), log=lines.append)
    assert any("resumed" in line and "step 6" in line for line in lines)
    assert_same_weights(out, whole)
