"""Metrics of stylecore.evaluate against known answers on synthetic clips."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from stylecore import flow as flowlib
from stylecore.errors import InputError
from stylecore.evaluate import (
    PairGeometry,
    TemporalConfig,
    feature_losses,
    frame_difference,
    noise_stability,
    pair_warping_error,
    temporal_scores,
    warping_error,
)

H, W = 72, 96
STEP = (2, 1)  # the pan moves the view by (dx, dy) pixels per frame


def _texture(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth random RGB texture: random noise blurred, so DIS flow finds it well."""
    import cv2

    rng = np.random.default_rng(seed)
    img = rng.random((h, w, 3)).astype(np.float32)
    img = cv2.GaussianBlur(img, (0, 0), 2.0)
    img = (img - img.min()) / (img.max() - img.min())
    return (0.1 + 0.8 * img).astype(np.float32)


def _pan(big: np.ndarray, n: int) -> list[np.ndarray]:
    """Frame t is the window at offset t*STEP: frame_t(x) = big(x + t*STEP)."""
    dx, dy = STEP
    return [big[t * dy : t * dy + H, t * dx : t * dx + W].copy() for t in range(n)]


def _stylize_consistent(img: np.ndarray) -> np.ndarray:
    """A pointwise 'style' (colour remap): applied to the scene, so consistent by construction."""
    return np.clip(np.stack([img[..., 1] ** 0.5, 1.0 - img[..., 0], img[..., 2] * 0.7 + 0.2], axis=-1), 0, 1).astype(
        np.float32
    )


def _exact_geometry(gap: int) -> PairGeometry:
    """Exact flow earlier -> later for the pan: earlier(x) = later(x - gap*STEP)."""
    flow = np.empty((H, W, 2), np.float32)
    flow[..., 0] = -STEP[0] * gap
    flow[..., 1] = -STEP[1] * gap
    back = -flow
    return PairGeometry(flow=flow, mask=flowlib.occlusion_mask(flow, back))


@pytest.fixture(scope="module")
def clips() -> dict[str, list[np.ndarray]]:
    n = 8
    big = _texture(H + STEP[1] * n, W + STEP[0] * n, seed=1)
    content = _pan(big, n)
    consistent = _pan(_stylize_consistent(big), n)
    rng = np.random.default_rng(2)
    # Flicker: each frame gets its own brightness offset and a fresh noise pattern.
    flicker = [
        np.clip(f + rng.uniform(-0.1, 0.1) + rng.normal(0, 0.05, f.shape), 0, 1).astype(np.float32) for f in consistent
    ]
    return {"content": content, "consistent": consistent, "flicker": flicker}


def test_exact_geometry_masks_only_the_border() -> None:
    geom = _exact_geometry(1)
    # Pixels whose match leaves the frame (the first dy rows / dx columns) are unreliable.
    assert geom.mask[: STEP[1], :].sum() == 0
    assert geom.mask[:, : STEP[0]].sum() == 0
    assert geom.mask[STEP[1] :, STEP[0] :].min() == 1.0


def test_pair_warping_error_formula() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((10, 12, 3)).astype(np.float32)
    b = rng.random((10, 12, 3)).astype(np.float32)
    mask = (rng.random((10, 12)) > 0.5).astype(np.float32)
    geom = PairGeometry(flow=np.zeros((10, 12, 2), np.float32), mask=mask)
    expected = (mask * ((b - a) ** 2).sum(-1)).sum() / mask.sum()
    assert pair_warping_error(a, b, geom) == pytest.approx(expected, rel=1e-5)
    assert frame_difference(a, b) == pytest.approx(((b - a) ** 2).sum(-1).mean(), rel=1e-5)
    assert math.isnan(pair_warping_error(a, b, PairGeometry(geom.flow, np.zeros_like(mask))))


def test_consistent_pan_is_near_zero_and_flicker_is_high(clips: dict[str, list[np.ndarray]]) -> None:
    scores = temporal_scores(
        {"consistent": clips["consistent"], "flicker": clips["flicker"]},
        clips["content"],
        TemporalConfig(long_term_gap=3),
    )
    good, bad = scores["consistent"], scores["flicker"]
    assert good.cuts == () and good.pairs == 7 and good.long_term_pairs == 5
    assert good.warping_error < 1e-4
    assert good.long_term_error < 1e-4
    # Flicker: brightness offsets ~U(-0.1, 0.1) per frame and noise of sigma 0.05 per pixel.
    assert bad.warping_error > 20 * good.warping_error
    assert bad.warping_error > 0.01
    # The plain difference of a moving clip is large even when consistent.
    assert good.temporal_difference > 10 * good.warping_error


def test_estimate_agrees_with_exact_flow(clips: dict[str, list[np.ndarray]]) -> None:
    for name in ("consistent", "flicker"):
        frames = clips[name]
        exact = np.mean(
            [pair_warping_error(frames[t - 1], frames[t], _exact_geometry(1)) for t in range(1, len(frames))]
        )
        estimated = warping_error(frames, clips["content"], TemporalConfig(long_term_gap=0)).warping_error
        if name == "consistent":
            assert exact < 1e-6  # integer shifts: bilinear warping is exact
            assert estimated == pytest.approx(exact, abs=1e-4)
        else:
            assert estimated == pytest.approx(exact, rel=0.1)


def test_static_brightness_flicker_matches_formula() -> None:
    """Static scene, frame t = base + c_t: E(t) = 3 (c_t - c_{t-1})^2 (3 channels)."""
    base = _texture(H, W, seed=3) * 0.6 + 0.2
    offsets = [0.0, 0.1, -0.05, 0.05, 0.05]
    frames = [np.clip(base + c, 0, 1).astype(np.float32) for c in offsets]
    scores = warping_error(frames, [base] * len(frames), TemporalConfig(long_term_gap=2))
    expected = np.mean([3 * (offsets[t] - offsets[t - 1]) ** 2 for t in range(1, len(offsets))])
    assert scores.warping_error == pytest.approx(expected, rel=1e-3)
    assert scores.temporal_difference == pytest.approx(expected, rel=1e-3)
    expected_long = np.mean([3 * (offsets[t] - offsets[t - 2]) ** 2 for t in range(2, len(offsets))])
    assert scores.long_term_error == pytest.approx(expected_long, rel=1e-3)
    per = [f.warping_error for f in scores.per_frame]
    assert per[0] is None
    assert per[2] == pytest.approx(3 * 0.15**2, rel=1e-3)


def test_scene_cut_pairs_are_left_out(clips: dict[str, list[np.ndarray]]) -> None:
    n = 8
    other_big = _texture(H + STEP[1] * n, W + STEP[0] * n, seed=9)[..., ::-1] * 0.3  # darker, different shot
    other = _pan(np.ascontiguousarray(other_big), n)
    content = clips["content"][:4] + other[:4]
    stylized = clips["consistent"][:4] + _pan(_stylize_consistent(np.ascontiguousarray(other_big)), n)[:4]
    scores = warping_error(stylized, content, TemporalConfig(long_term_gap=2))
    assert scores.cuts == (4,)
    assert scores.pairs == 6  # 7 pairs minus the cut
    assert scores.per_frame[4].cut and scores.per_frame[4].warping_error is None
    assert scores.warping_error < 1e-4
    # Long-term pairs (t-2, t) spanning the cut (t = 4, 5) are left out: t = 2, 3, 6, 7.
    assert scores.long_term_pairs == 4
    assert scores.per_frame[5].long_term_error is None
    undetected = warping_error(stylized, content, TemporalConfig(long_term_gap=0, detect_cuts=False))
    assert undetected.warping_error > 0.01


def test_resizes_content_and_rejects_length_mismatch(clips: dict[str, list[np.ndarray]]) -> None:
    import cv2

    half = [cv2.resize(f, (W // 2, H // 2), interpolation=cv2.INTER_AREA) for f in clips["consistent"]]
    scores = warping_error(half, clips["content"], TemporalConfig(long_term_gap=0))
    assert scores.warping_error < 1e-3
    with pytest.raises(InputError, match="ends after 3 frames"):
        warping_error(clips["consistent"][:3], clips["content"][:5], TemporalConfig(long_term_gap=0))


def test_a_bad_long_term_gap_is_named_as_argument_or_flag(tmp_path, capsys) -> None:
    from stylecore.cli.main import main

    with pytest.raises(InputError, match="`long_term_gap` -1 must be >= 0"):
        TemporalConfig(long_term_gap=-1)
    args = ["evaluate", str(tmp_path / "out"), "--content", str(tmp_path / "src"), "--long-term", "1"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "--long-term 1 repeats the warping error" in err and "`" not in err


def test_noise_stability_known_models() -> None:
    frames = [np.full((16, 16, 3), 0.5, np.float32), _texture(16, 16, seed=4)]
    ident = noise_stability(lambda x: x, frames, sigma=0.01)
    assert ident.amplification == pytest.approx(1.0, rel=1e-6)
    half = noise_stability(lambda x: 0.5 * x, frames, sigma=0.01)
    assert half.amplification == pytest.approx(0.5, rel=1e-6)
    assert half.output_change == pytest.approx(0.25 * ident.output_change, rel=1e-6)
    const = noise_stability(lambda x: torch.zeros_like(x), frames, sigma=0.01)
    assert const.amplification == 0.0
    # Averaging 3x3 neighbourhoods damps white noise about 3x.
    blur = noise_stability(
        lambda x: torch.nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False), frames, sigma=0.01
    )
    assert 0.2 < blur.amplification < 0.5


class _Toy(torch.nn.Module):
    """Two-layer stand-in for a loss network, with named layer outputs."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.b = torch.nn.Conv2d(4, 6, 3, padding=1, stride=2)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        fa = torch.relu(self.a(x))
        return {"l1": fa, "l2": torch.relu(self.b(fa))}


def test_feature_losses_zero_when_identical_and_match_formula() -> None:
    net = _Toy()
    content = [_texture(24, 32, seed=s) for s in (5, 6)]
    style = _texture(24, 32, seed=7)
    layers = {"l1": 0.5, "l2": 0.5}
    same = feature_losses(content, content, net, style=style, style_layers=layers, content_layers={"l2": 1.0})
    assert same.content_loss == pytest.approx(0.0, abs=1e-12)
    styled = [style, style]
    res = feature_losses(styled, content, net, style=style, style_layers=layers, content_layers={"l2": 1.0})
    assert res.style_loss == pytest.approx(0.0, abs=1e-12)
    with torch.no_grad():
        f_out = net(torch.from_numpy(style).permute(2, 0, 1)[None])
        f_ref = net(torch.from_numpy(content[1]).permute(2, 0, 1)[None])
    # The normalised content loss: relative squared error of the l2 features.
    expected = float(((f_out["l2"] - f_ref["l2"]) ** 2).sum() / (f_ref["l2"] ** 2).sum())
    assert res.per_frame_content[1] == pytest.approx(expected, rel=1e-5)
    none = feature_losses(content, content, net, style=None, content_layers={"l2": 1.0})
    assert none.style_loss is None and none.per_frame_style is None


# --- the command --------------------------------------------------------------------------


def _write_folder(folder, frames) -> None:
    from stylecore.io.imageops import save_image

    folder.mkdir()
    for k, f in enumerate(frames, start=1):
        save_image(folder / f"frame_{k:06d}.png", f)


def test_cli_json_and_per_frame_csv(tmp_path, capsys, clips: dict[str, list[np.ndarray]]) -> None:
    import csv
    import json

    from stylecore.cli.main import main

    content = [np.zeros((H, W, 3), np.float32)] * 2 + clips["content"]  # the stylized clip starts at frame 2
    _write_folder(tmp_path / "content", content)
    _write_folder(tmp_path / "flicker", clips["flicker"])
    csv_path = tmp_path / "per_frame.csv"
    code = main(
        [
            "evaluate",
            str(tmp_path / "flicker"),
            "--content",
            str(tmp_path / "content"),
            "--frames",
            "2:10",
            "--long-term",
            "3",
            "--no-losses",
            "--json",
            "--per-frame",
            str(csv_path),
        ]
    )
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    direct = warping_error(clips["flicker"], clips["content"], TemporalConfig(long_term_gap=3))
    # PNG stores 8 bits per channel: the values agree up to that quantisation.
    assert data["warping_error"] == pytest.approx(direct.warping_error, rel=0.05)
    assert data["content_frames"] == [2, 10] and data["pairs"] == 7 and data["scene_cuts"] == []
    assert data["long_term_pairs"] == 5
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["content_index"] for r in rows] == [str(i) for i in range(2, 10)]
    assert rows[0]["warping_error"] == ""
    per_pair = [float(r["warping_error"]) for r in rows[1:]]
    assert np.mean(per_pair) == pytest.approx(data["warping_error"], rel=1e-4)


def test_cli_table_with_losses_and_errors(tmp_path, capsys, clips: dict[str, list[np.ndarray]]) -> None:
    from stylecore.cli.main import main
    from stylecore.io.imageops import save_image

    small = [f[:32, :48] for f in clips["consistent"][:3]]
    _write_folder(tmp_path / "out", small)
    _write_folder(tmp_path / "src", [f[:32, :48] for f in clips["content"][:3]])
    save_image(tmp_path / "style.png", clips["flicker"][0])
    code = main(
        [
            "evaluate",
            str(tmp_path / "out"),
            "--content",
            str(tmp_path / "src"),
            "--style",
            str(tmp_path / "style.png"),
            "--loss-net",
            "random-vgg19",
            "--long-term",
            "2",
            "--device",
            "cpu",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    for label in ("warping error (t-1)", "long-term error (t-2)", "temporal difference", "content loss", "style loss"):
        assert label in out
    # A stylized clip longer than the content range is refused with a one-line message.
    code = main(
        ["evaluate", str(tmp_path / "out"), "--content", str(tmp_path / "src"), "--frames", "1:3", "--no-losses"]
    )
    err = capsys.readouterr().err
    assert code == 1 and "--frames 1:3 selects 2 content frames but the stylized clip has 3" in err


def test_cli_noise_stability_of_a_model_file(tmp_path, capsys, clips: dict[str, list[np.ndarray]]) -> None:
    import json

    from stylecore.cli.main import main
    from stylecore.nets.model_file import ModelInfo, load_model, save_model
    from stylecore.nets.transformer import StyleTransformer, TransformerConfig

    config = TransformerConfig(down_channels=(4, 8, 8), res_blocks=1, up_channels=(8, 4))
    torch.manual_seed(0)
    path = save_model(tmp_path / "tiny.safetensors", StyleTransformer(config), ModelInfo(config=config))
    small = [f[:32, :48] for f in clips["content"][:4]]
    _write_folder(tmp_path / "src", small)
    code = main(
        [
            "evaluate",
            str(tmp_path / "src"),
            "--content",
            str(tmp_path / "src"),
            "--no-losses",
            "--long-term",
            "0",
            "--model",
            str(path),
            "--noise-frames",
            "2",
            "--device",
            "cpu",
            "--json",
        ]
    )
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["noise_frames"] == 2 and data["noise_sigma"] == 0.02
    # The command measures the same number as the function on the frames it picked (0 and 2).
    model, _ = load_model(path, "cpu")
    from stylecore.io.imageops import load_image

    frames = [load_image(tmp_path / "src" / f"frame_{k:06d}.png") for k in (1, 3)]
    direct = noise_stability(model, frames, sigma=0.02)
    assert data["noise_amplification"] == pytest.approx(direct.amplification, rel=1e-5)
    assert data["noise_amplification"] > 0


def test_cli_without_any_loss_network_skips_the_losses_with_a_note(
    tmp_path, capsys, monkeypatch, clips: dict[str, list[np.ndarray]]
) -> None:
    from stylecore.nets import hed, vgg
    from stylecore.cli.main import main

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv(vgg.WEIGHTS_ENV, raising=False)
    monkeypatch.delenv(hed.HED_WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(hed, "installed_h5", lambda: None)
    _write_folder(tmp_path / "out", [f[:32, :48] for f in clips["consistent"][:3]])
    _write_folder(tmp_path / "src", [f[:32, :48] for f in clips["content"][:3]])
    args = ["evaluate", str(tmp_path / "out"), "--content", str(tmp_path / "src"), "--long-term", "0"]
    assert main(args) == 0  # auto: temporal metrics still, losses skipped
    out = capsys.readouterr().out
    assert "warping error (t-1)" in out and "stylecore weights get hed-vgg16" in out
    assert "content loss " not in out
    # A network asked for by name must be there: one line that says how to get it.
    assert main([*args, "--loss-net", "hed-vgg16"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "stylecore weights get hed-vgg16" in err and "--no-losses" in err


def test_fine_detail_is_the_mean_absolute_laplacian_of_the_luminance() -> None:
    from stylecore.evaluate import fine_detail

    flat = np.full((10, 12, 3), 0.4, np.float32)
    assert fine_detail(flat) == 0.0
    dot = flat.copy()
    dot[5, 6] = 1.0  # +0.6 at one pixel: -4 * 0.6 there, +0.6 at its four neighbours
    assert fine_detail(dot) == pytest.approx(8 * 0.6 / (10 * 12), rel=1e-5)
    texture = np.random.default_rng(0).random((32, 32, 3)).astype(np.float32)
    assert fine_detail(cv2.GaussianBlur(texture, (0, 0), 1.5)) < 0.5 * fine_detail(texture)
