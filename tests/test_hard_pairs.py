"""Distillation's ``hard_pairs``: video pairs ranked by the detail a copy leaves out, and
the hardest drawn more often."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_same_weights, pan_frames, smooth_texture, stripe_style, write_image, write_video
from torch.nn import functional as F

from stylecore.errors import InputError, cli_wording
import training.loop as loop
from training import hard_pairs
from training.config import TrainConfig
from training.data import PairSampler
from training.hard_pairs import HardPairs, detail_gap, fine_detail_map
from training.loop import train
from training.pairs import TrainPair, to_uint8


def test_fine_detail_map_is_the_blocks_mean_absolute_high_pass() -> None:
    image = torch.zeros(1, 3, 32, 48)
    image[:, :, 8, 8] = 1.0  # one bright pixel, far from the borders, in the first block
    detail = fine_detail_map(image)
    assert detail.shape == (1, 1, 2, 3)
    # The pixel is 24/25 above its 5x5 mean; each of its 24 neighbours 1/25 below theirs.
    assert float(detail[0, 0, 0, 0]) == pytest.approx((24 / 25 + 24 / 25) / 256, rel=1e-5)
    assert float(detail.flatten()[1:].abs().max()) == 0.0


def test_detail_gap_counts_the_teachers_detail_left_out_relative_to_it() -> None:
    torch.manual_seed(0)
    teacher = torch.rand(2, 3, 64, 64)
    flat = torch.full_like(teacher, 0.5)
    assert detail_gap(teacher, teacher).tolist() == [0.0, 0.0]
    # A flat copy leaves out everything: D_t / (D_t + floor) per block.
    wanted = fine_detail_map(teacher)
    expected = (wanted / (wanted + hard_pairs._FLOOR)).flatten(1).mean(1)
    torch.testing.assert_close(detail_gap(flat, teacher), expected)
    assert float(detail_gap(flat, teacher).min()) > 0.9
    # Detail the copy adds is not a gap; a blurred copy's gap lies between.
    assert detail_gap(teacher, flat).tolist() == [0.0, 0.0]
    blurred = F.avg_pool2d(teacher, 3, 1, 1, count_include_pad=False)
    assert 0.2 < float(detail_gap(blurred, teacher)[0]) < float(detail_gap(flat, teacher)[0])


def _blur(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 5, 1, 2, count_include_pad=False)


def test_the_frames_a_copy_paints_softest_are_ranked_hardest() -> None:
    # Frames 3 and 7 are busy, the rest nearly flat; a copy that blurs everything leaves
    # out most where the teacher (here: the frame itself) has most detail.
    frames = [np.full((40, 60, 3), 0.4 + 0.01 * i, np.float32) for i in range(10)]
    for i in (3, 7):
        frames[i] = smooth_texture(40, 60, seed=i, sigma=0.5)
    ranking = HardPairs([to_uint8(f) for f in frames], lambda x, w: x, 2.0, torch.device("cpu"),
                        lambda: torch.autocast("cpu", enabled=False))
    hardest = ranking.rank(_blur)
    assert len(hardest) == 1 and hardest[0] in (3, 7)
    assert sorted(np.argsort(-ranking.last_gaps)[:2].tolist()) == [3, 7]
    assert ranking.last_gaps[[3, 7]].min() > 5 * np.delete(ranking.last_gaps, [3, 7]).max()
    assert ranking.rank(lambda x, w: x).tolist() == [0]  # a perfect copy: no gap anywhere, ties in order


def _sampler(hard_fraction: float, hard: np.ndarray | None) -> PairSampler:
    pairs = []
    for i in range(20):
        frame = np.full((72, 72, 3), i, np.uint8)
        pairs.append(TrainPair(frame, frame, np.zeros((72, 72, 2), np.float32), np.ones((72, 72), np.float32), frame=frame))
    return PairSampler(pairs, [], 64, synthetic_fraction=0.0, hard_fraction=hard_fraction, hard=hard)


def _drawn(sampler: PairSampler, seed: int, count: int = 400) -> list[int]:
    rng = np.random.default_rng(seed)
    return [int(sampler.draw(rng).cur[0, 0, 0]) for _ in range(count)]


def test_the_hard_share_of_pairs_is_drawn_from_the_hardest() -> None:
    drawn = _drawn(_sampler(0.5, np.array([4, 11])), seed=1)
    share = sum(i in (4, 11) for i in drawn) / len(drawn)
    # Half from the two hardest, the other half from all twenty (a tenth of it those two).
    assert 0.47 < share < 0.63
    assert set(drawn) - {4, 11}  # the rest still drawn
    assert set(_drawn(_sampler(1.0, np.array([4, 11])), seed=2)) == {4, 11}
    # Off, the sampler draws the pairs it drew before the option existed, from the same
    # random stream: per pair, synthetic or not, which pair, the window, the mirror.
    rng = np.random.default_rng(3)
    before = []
    for _ in range(400):
        rng.random()
        before.append(int(rng.integers(20)))
        rng.integers(0, 9), rng.integers(0, 9), rng.random()
    assert _drawn(_sampler(0.0, np.array([4, 11])), seed=3) == before


def _clip_and_style(tmp_path: Path) -> tuple[Path, Path]:
    data = tmp_path / "data"
    data.mkdir()
    write_video(data / "pan.mp4", pan_frames(12, height=80, width=112, step=3))
    return data, write_image(tmp_path / "style.png", stripe_style(64))


def _teacher(tmp_path: Path, data: Path, style: Path, **base: object) -> Path:
    return train(TrainConfig(out=str(tmp_path / "teacher.safetensors"), style=str(style), data=str(data), steps=1,  # type: ignore[arg-type]
                             checkpoint_every=10**6, preview_every=10**6, bf16=False, style_size=64, **base),
                 log=lambda _: None)


def test_hard_pairs_ranks_again_while_training_and_resumes_exactly(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    data, style = _clip_and_style(tmp_path)
    base: dict[str, object] = dict(size=64, batch_size=1, loss_net="random-vgg19", device="cpu", synthetic_fraction=0.0)
    teacher = _teacher(tmp_path, data, style, **base)
    copy: dict[str, object] = dict(style=str(style), data=str(data), teacher=str(teacher), width=0.5, hard_pairs=1.0,
                                   steps=4, checkpoint_every=10**6, preview_every=10**6, log_every=1, bf16=False,
                                   style_size=64, **base)
    monkeypatch.setattr(loop, "HARD_REFRESH", 2)  # ranked before steps 1 and 3
    whole_lines: list[str] = []
    whole = train(TrainConfig(out=str(tmp_path / "whole.safetensors"), **copy), log=whole_lines.append)  # type: ignore[arg-type]
    assert [line.split(":")[0] for line in whole_lines if "drawn more often" in line] == ["ranked at step 0",
                                                                                         "ranked at step 2"]

    def stop_after_three(line: str) -> None:
        if line.startswith("step 3/"):
            raise KeyboardInterrupt

    out = tmp_path / "copy.safetensors"
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(out=str(out), **copy), log=stop_after_three)  # type: ignore[arg-type]
    lines: list[str] = []
    train(TrainConfig(out=str(out), resume=True, **copy), log=lines.append)  # type: ignore[arg-type]
    # Resumed after step 3, between two rankings: it goes on with the ranking it had.
    assert any("resumed" in line for line in lines) and not any("drawn more often" in line for line in lines)
    assert_same_weights(out, whole)


def test_hard_pairs_asks_for_a_teacher_a_share_and_video(tmp_path: Path) -> None:
    data, style = _clip_and_style(tmp_path)
    base: dict[str, object] = dict(style=str(style), data=str(data), size=64, loss_net="random-vgg19")
    with pytest.raises(InputError, match="hard_pairs") as refused:
        TrainConfig(out=str(tmp_path / "x.safetensors"), hard_pairs=0.5, **base)  # type: ignore[arg-type]
    assert "--hard-pairs" in cli_wording(str(refused.value)) and "--teacher" in cli_wording(str(refused.value))
    with pytest.raises(InputError, match="between 0 and 1"):
        TrainConfig(out=str(tmp_path / "x.safetensors"), hard_pairs=1.5, teacher="t", **base)  # type: ignore[arg-type]
    stills = tmp_path / "stills"
    stills.mkdir()
    write_image(stills / "a.png", smooth_texture(96, 128))
    teacher = _teacher(tmp_path, stills, style, size=64, loss_net="random-vgg19")
    no_video = TrainConfig(out=str(tmp_path / "y" / "x.safetensors"), hard_pairs=0.5, teacher=str(teacher),  # type: ignore[arg-type]
                           width=0.5, **{**base, "data": str(stills)})
    with pytest.raises(InputError, match="give a clip in `data`") as refused:
        train(no_video, log=lambda _: None)
    assert "--data" in cli_wording(str(refused.value))
    assert not (tmp_path / "y").exists()  # refused before the output folder was made
