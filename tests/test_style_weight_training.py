"""Training the Style Weight control: the monotone term (a stronger weight must give a
lower style loss on the same frame), a distilled copy's own (a stronger weight must move
the frame further) and fine-tuning a model from another (``--init``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_train_config

from stylecore.errors import InputError, cli_wording
from stylecore.nets.model_file import load_model
from training.loop import _TWIN_MIN_GAP, distill_batch_loss, draw_twin_weight, train
from training.objective import (CHANGE_MARGIN, CHANGE_SCALE, DISTILL_LAYERS, MONOTONE_MARGIN, DistillLoss, change_from,
                                monotone_hinge, rising_hinge)
from training.pairs import PairBatch


def test_monotone_hinge_is_its_formula() -> None:
    stronger = torch.tensor([1.0, 0.5, 0.97, 2.0])
    weaker = torch.tensor([0.8, 1.0, 1.0, 1.0])
    expected = np.mean([max(0.0, s - (1 - MONOTONE_MARGIN) * w) for s, w in zip(stronger.tolist(), weaker.tolist())])
    assert float(monotone_hinge(stronger, weaker)) == pytest.approx(expected)
    # A strict fall by the margin costs nothing; equal losses do.
    assert float(monotone_hinge(torch.tensor([0.9]), torch.tensor([1.0]))) == 0.0
    assert float(monotone_hinge(torch.tensor([1.0]), torch.tensor([1.0]))) == pytest.approx(MONOTONE_MARGIN)


def test_monotone_hinge_moves_only_the_stronger_output() -> None:
    stronger = torch.tensor([2.0], requires_grad=True)
    weaker = torch.tensor([1.0], requires_grad=True)
    monotone_hinge(stronger, weaker).backward()
    assert float(stronger.grad) > 0 and weaker.grad is None


def test_rising_hinge_is_its_formula_and_moves_only_the_stronger_output() -> None:
    stronger = torch.tensor([0.2, 0.1, 0.101, 0.3], requires_grad=True)
    weaker = torch.tensor([0.1, 0.2, 0.1, 0.3], requires_grad=True)
    expected = np.mean([max(0.0, (1 + CHANGE_MARGIN) * w - s) for s, w in zip(stronger.tolist(), weaker.tolist())])
    hinge = rising_hinge(stronger, weaker)
    assert float(hinge.detach()) == pytest.approx(expected)
    # Further by the margin costs nothing; as far costs the margin.
    assert float(rising_hinge(torch.tensor([0.2]), torch.tensor([0.1]))) == 0.0
    assert float(rising_hinge(torch.tensor([0.1]), torch.tensor([0.1]))) == pytest.approx(CHANGE_MARGIN * 0.1, rel=1e-5)
    hinge.backward()
    assert float(stronger.grad[1]) < 0 and weaker.grad is None  # type: ignore[index]


class _Painter(torch.nn.Module):
    """Paints ``frame + gain(weight) * 0.1``: the change from the frame is ``|gain| * 0.1``."""

    def __init__(self, gain: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.gain = gain
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor, weights: torch.Tensor, stats: object = None) -> torch.Tensor:
        return x + self.scale * self.gain(weights)[:, None, None, None] * 0.1


def test_the_distill_monotone_term_asks_a_stronger_weight_to_move_the_frame_further() -> None:
    """monotone * CHANGE_SCALE * rising_hinge(change(stronger), change(weaker)), whichever
    side of the pair's weight the twin's lies: zero for a copy whose change rises with the
    weight, the hinge's formula for one whose change falls."""
    def encoder(x: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict.fromkeys(DISTILL_LAYERS, x)

    torch.manual_seed(3)
    frames = torch.rand(2, 3, 8, 8) * 0.5
    batch = PairBatch(frames[:1], frames[1:], torch.zeros(1, 2, 8, 8), torch.ones(1, 1, 8, 8))
    loss = DistillLoss(encoder, pixel=1.0, feature=0.0, temporal=0.0, monotone=2.0)  # type: ignore[arg-type]
    rising, falling = _Painter(lambda w: w), _Painter(lambda w: 2.0 - w)
    weight = torch.tensor([1.0])
    for twin in (0.5, 1.5):
        _, terms = distill_batch_loss(rising, rising, batch, weight, loss, twin_weight=twin)  # type: ignore[arg-type]
        assert terms["monotone"] == 0.0
        total, terms = distill_batch_loss(falling, rising, batch, weight, loss, twin_weight=twin)  # type: ignore[arg-type]
        strong, weak = (twin, 1.0) if twin > 1.0 else (1.0, twin)
        expected = 2.0 * CHANGE_SCALE * ((1 + CHANGE_MARGIN) * (2.0 - weak) - (2.0 - strong)) * 0.1
        assert terms["monotone"] == pytest.approx(expected, rel=1e-4)
        total.backward()
        assert float(falling.scale.grad) != 0.0  # type: ignore[arg-type]
    _, without = distill_batch_loss(falling, rising, batch, weight, loss)  # type: ignore[arg-type]
    assert "monotone" not in without
    assert float(change_from(frames, frames + 0.1)[0]) == pytest.approx(0.1)


def test_distillation_logs_its_monotone_term_only_when_asked(tmp_path: Path) -> None:
    teacher = train(tiny_train_config(tmp_path, "teacher.safetensors", steps=1), log=lambda _: None)
    lines: list[str] = []
    train(tiny_train_config(tmp_path, "on-small.safetensors", teacher=str(teacher), width=0.5, distill_monotone_weight=1.0),
          log=lines.append)
    assert all("monotone" in line for line in lines if line.startswith("step "))
    lines.clear()
    train(tiny_train_config(tmp_path, "off-small.safetensors", teacher=str(teacher), width=0.5), log=lines.append)
    assert not any("monotone" in line for line in lines)
    # A teacher without a Style Weight input: a twin's output would be the same frame, and
    # the hinge would only push the copy away from its teacher. No term.
    flat = train(tiny_train_config(tmp_path, "flat.safetensors", steps=1, conditioned=False), log=lambda _: None)
    train(tiny_train_config(tmp_path, "flat-small.safetensors", teacher=str(flat), width=0.5, distill_monotone_weight=1.0),
          log=lines.append)
    assert not any("monotone" in line for line in lines)
    with pytest.raises(InputError, match="loss weights"):
        tiny_train_config(tmp_path, "bad.safetensors", distill_monotone_weight=-1.0)


def test_twin_weights_cover_the_range_away_from_their_frame() -> None:
    rng = np.random.default_rng(0)
    for weight in (0.0, 0.1, 1.0, 1.9, 2.0):
        twins = np.array([draw_twin_weight(weight, 2.0, rng) for _ in range(400)])
        assert ((twins >= 0) & (twins <= 2.0)).all()
        assert (np.abs(twins - weight) >= _TWIN_MIN_GAP - 1e-9).all()
        # Both sides of the frame's weight are drawn where there is room on both.
        if 0.5 <= weight <= 1.5:
            assert (twins < weight).any() and (twins > weight).any()


def test_training_logs_the_monotone_term_and_off_means_absent(tmp_path: Path) -> None:
    lines: list[str] = []
    train(tiny_train_config(tmp_path, "on.safetensors"), log=lines.append)
    assert all("monotone" in line for line in lines if line.startswith("step "))
    lines.clear()
    train(tiny_train_config(tmp_path, "off.safetensors", monotone_weight=0.0), log=lines.append)
    assert not any("monotone" in line for line in lines)


def test_init_starts_from_the_given_model_and_records_its_recipe(tmp_path: Path) -> None:
    first = train(tiny_train_config(tmp_path, "first.safetensors"), log=lambda _: None, command="first command")
    # Zero steps of learning rate: the fine-tuned model must be the starting model.
    tuned = train(tiny_train_config(tmp_path, "tuned.safetensors", init=str(first), learning_rate=0.0), log=lambda _: None)
    a, _ = load_model(first)
    b, info = load_model(tuned)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(x, y, msg=name)
    meta = json.loads(tuned.with_suffix(".json").read_text())
    assert meta["training"]["init"]["model"] == "first.safetensors"
    assert meta["training"]["init"]["training"]["command"] == "first command"
    assert info.training["init"]["training"]["steps"] == 3


def test_init_with_another_network_is_refused_in_one_line(tmp_path: Path) -> None:
    first = train(tiny_train_config(tmp_path, "first.safetensors"), log=lambda _: None)
    with pytest.raises(InputError) as refused:
        train(tiny_train_config(tmp_path, "other.safetensors", init=str(first), conditioned=False), log=lambda _: None)
    message = cli_wording(str(refused.value))
    assert "--init" in message and "\n" not in message and not (tmp_path / "other.safetensors").exists()


def test_the_command_line_reaches_the_monotone_weight_and_init() -> None:
    from training.train import build_parser, config_from_args

    args = build_parser().parse_args(["--style", "s.jpg", "--data", "d", "--out", "m.safetensors",
                                      "--monotone-weight", "2.5", "--init", "first.safetensors",
                                      "--distill-monotone-weight", "1.5"])
    config = config_from_args(args)
    assert (config.monotone_weight, config.init, config.distill_monotone_weight) == (2.5, "first.safetensors", 1.5)
    assert config_from_args(build_parser().parse_args(["--style", "s", "--data", "d", "--out", "m.safetensors"])).init is None
