"""VGG19 encoder: layer names, truncation, shapes, random network, weight loading and errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from torch import nn

from stylecore.nets import loss_nets, vgg
from stylecore.errors import InputError, WeightsError

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _isolated_weights_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may see (or download into) the user's real torch hub cache."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv(vgg.WEIGHTS_ENV, raising=False)
    monkeypatch.setenv(vgg.OFFLINE_ENV, "1")


def _image(n: int = 1, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # Smooth-ish image in [0, 1]: upsampled noise, closer to natural statistics than white noise.
    small = torch.rand(n, 3, max(h // 4, 1), max(w // 4, 1), generator=g)
    return nn.functional.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)


@pytest.fixture(scope="module")
def torchvision_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, vgg.VGGEncoder]:
    """A full-size VGG19 file in torchvision's key format (random weights), and its source."""
    reference = vgg.VGGEncoder(["pool5"]).randomize_(seed=123)
    state = {f"features.{vgg.TORCHVISION_FEATURE_INDEX[key.split('.')[1]]}.{key.split('.')[2]}": value
             for key, value in reference.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(4, 4)  # torchvision files carry the classifier too
    path = tmp_path_factory.mktemp("weights") / "vgg19-test.pth"
    torch.save(state, path)
    return path, reference


def test_layer_names_and_torchvision_indices() -> None:
    layers = vgg.VGG19_LAYERS
    assert len(layers) == 16 * 2 + 5
    assert layers[:6] == ("conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1", "conv2_1")
    assert layers[-3:] == ("conv5_4", "relu5_4", "pool5")
    assert sum(name.startswith("conv") for name in layers) == 16
    # Well-known torchvision indices: conv4_2 (Gatys content layer) is features.21,
    # relu5_1 is features.29, the last pooling is features.36.
    assert vgg.TORCHVISION_FEATURE_INDEX["conv1_1"] == 0
    assert vgg.TORCHVISION_FEATURE_INDEX["conv4_2"] == 21
    assert vgg.TORCHVISION_FEATURE_INDEX["relu5_1"] == 29
    assert vgg.TORCHVISION_FEATURE_INDEX["pool5"] == 36


def test_encoder_stops_at_deepest_layer() -> None:
    enc = vgg.VGGEncoder(["relu2_1", "relu1_1"])
    names = [name for name, _ in enc.features.named_children()]
    assert names == ["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1", "conv2_1", "relu2_1"]
    assert sum(isinstance(m, nn.Conv2d) for m in enc.modules()) == 3
    full = vgg.VGGEncoder(["pool5"])
    assert len(full.features) == len(vgg.VGG19_LAYERS)
    assert [m for m in full.features if isinstance(m, nn.Conv2d)][-1].out_channels == 512


def test_output_shapes_order_and_frozen() -> None:
    enc = vgg.VGGEncoder(["relu3_1", "relu1_1", "pool5"]).randomize_()
    x = _image(2, 32, 64)
    before = x.clone()
    out = enc(x)
    assert list(out) == ["relu3_1", "relu1_1", "pool5"]
    assert out["relu1_1"].shape == (2, 64, 32, 64)
    assert out["relu3_1"].shape == (2, 256, 8, 16)
    assert out["pool5"].shape == (2, 512, 1, 2)
    torch.testing.assert_close(x, before, rtol=0, atol=0)  # normalisation is not in place
    assert not enc.training
    assert all(not p.requires_grad for p in enc.parameters())
    # Gradients still reach the image being optimised.
    img = x.clone().requires_grad_(True)
    enc(img)["relu3_1"].sum().backward()
    assert img.grad is not None and img.grad.abs().sum() > 0


def test_normalisation_uses_imagenet_statistics() -> None:
    # With conv1_1 the identity on each channel and zero bias, conv1_1's output is the
    # normalised input itself: (x - mean) / std.
    enc = vgg.VGGEncoder(["conv1_1"])
    conv = enc.features.conv1_1
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        for c in range(3):
            conv.weight[c, c, 1, 1] = 1.0
    x = _image(1, 8, 8)
    expected = (x - torch.tensor(vgg.IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(vgg.IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(enc(x)["conv1_1"][:, :3], expected)


def test_pooling_choice() -> None:
    assert isinstance(vgg.VGGEncoder(["pool1"], pooling="avg").features.pool1, nn.AvgPool2d)
    assert isinstance(vgg.VGGEncoder(["pool1"]).features.pool1, nn.MaxPool2d)
    with pytest.raises(InputError):
        vgg.VGGEncoder(["pool1"], pooling="median")


def test_bad_layer_and_network_names() -> None:
    with pytest.raises(InputError, match="relu9_9"):
        vgg.VGGEncoder(["relu9_9"])
    with pytest.raises(InputError, match="random-vgg19"):
        loss_nets.load_loss_network("resnet", ["relu1_1"], CPU)
    with pytest.raises(InputError, match="relu5_4"):
        vgg.VGGEncoder(["relu5_4"], arch="vgg16")  # VGG16 has three convs in block 5


def test_random_network_is_deterministic_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(1)
    state = torch.get_rng_state()
    a = loss_nets.load_loss_network("random-vgg19", ["relu2_1"], CPU)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(999)
    b = loss_nets.load_loss_network("random-vgg19", ["relu2_1"], CPU)
    assert a.loss_net == b.loss_net == "random-vgg19"
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    # A deeper encoder shares the same weights for the shared layers.
    c = loss_nets.load_loss_network("random-vgg19", ["relu5_1"], CPU)
    assert torch.equal(c.features.conv2_1.weight, a.features.conv2_1.weight)


def test_random_network_activations_keep_their_scale() -> None:
    layers = [name for name in vgg.VGG19_LAYERS if name.startswith("relu")]
    enc = loss_nets.load_loss_network("random-vgg19", layers, CPU)
    out = enc(_image(1, 64, 64, seed=3))
    rms = {name: out[name].pow(2).mean().sqrt().item() for name in layers}
    # Neither vanishing nor exploding through 16 conv layers.
    assert all(0.1 < value < 10.0 for value in rms.values()), rms
    assert 0.1 < rms["relu5_1"] / rms["relu1_1"] < 10.0, rms
    # And the deep features still depend on the input.
    other = enc(_image(1, 64, 64, seed=4))["relu5_1"]
    assert (other - out["relu5_1"]).abs().mean() > 0.01 * out["relu5_1"].abs().mean()


def test_native_state_dict_round_trip() -> None:
    src = vgg.VGGEncoder(["relu3_1"]).randomize_(seed=7)
    dst = vgg.VGGEncoder(["relu3_1"])
    dst.load_state_dict(src.state_dict())
    x = _image(1, 16, 16)
    torch.testing.assert_close(dst(x)["relu3_1"], src(x)["relu3_1"])
    assert "mean" not in src.state_dict()  # constants are not weights


def test_load_torchvision_format_by_path(torchvision_file: tuple[Path, vgg.VGGEncoder]) -> None:
    path, reference = torchvision_file
    enc = loss_nets.load_loss_network("vgg19", ["relu1_1", "relu4_2"], CPU, weights_path=str(path))
    assert enc.loss_net == "vgg19"
    assert len(enc.features) == vgg.TORCHVISION_FEATURE_INDEX["relu4_2"] + 1
    for name in ("conv1_1", "conv3_4", "conv4_2"):
        assert torch.equal(getattr(enc.features, name).weight, getattr(reference.features, name).weight)
        assert torch.equal(getattr(enc.features, name).bias, getattr(reference.features, name).bias)
    x = _image(1, 32, 32)
    torch.testing.assert_close(enc(x)["relu4_2"], reference.features[: len(enc.features)]((x - enc.mean) * enc.scale))


def test_weights_lookup_order(torchvision_file: tuple[Path, vgg.VGGEncoder], tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = torchvision_file
    cache = vgg.vgg_cache_path()
    assert cache == tmp_path / "torch_home" / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"cache")
    assert vgg.resolve_vgg_weights() == cache
    monkeypatch.setenv(vgg.WEIGHTS_ENV, str(path))
    assert vgg.resolve_vgg_weights() == path  # env var beats the cache
    explicit = tmp_path / "explicit.pth"
    explicit.write_bytes(b"x")
    assert vgg.resolve_vgg_weights(str(explicit)) == explicit  # explicit path beats both
    with pytest.raises(WeightsError, match="`vgg_weights`"):
        vgg.resolve_vgg_weights(str(tmp_path / "missing.pth"))
    monkeypatch.setenv(vgg.WEIGHTS_ENV, str(tmp_path / "missing.pth"))
    with pytest.raises(WeightsError, match=vgg.WEIGHTS_ENV):
        vgg.resolve_vgg_weights()


def test_missing_weights_offline_says_what_to_do() -> None:
    for kwargs in ({}, {"download": False}):
        with pytest.raises(WeightsError) as info:
            loss_nets.load_loss_network("vgg19", ["relu1_1"], CPU, **kwargs)
        message = str(info.value)
        assert "\n" not in message
        for needed in (vgg.VGG19_URL, str(vgg.vgg_cache_path()), "`vgg_weights`", vgg.WEIGHTS_ENV, "hed-vgg16"):
            assert needed in message
    assert not vgg.vgg_cache_path().exists()


def test_network_failure_is_a_weights_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(vgg.OFFLINE_ENV)
    # Port 9 on localhost: nothing listens, the connection is refused at once.
    monkeypatch.setattr(vgg, "VGG19_URL", "http://127.0.0.1:9/vgg19-dcbb9e9d.pth")
    with pytest.raises(WeightsError, match="download failed.*hed-vgg16"):
        vgg.resolve_vgg_weights(progress=False)
    assert not vgg.vgg_cache_path().exists()


def test_download_checks_hash_prefix(torchvision_file: tuple[Path, vgg.VGGEncoder],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    path, reference = torchvision_file
    monkeypatch.delenv(vgg.OFFLINE_ENV)
    monkeypatch.setattr(vgg, "VGG19_URL", path.as_uri())
    # The real prefix does not match this file: the download is refused and nothing is cached.
    with pytest.raises(WeightsError, match="download failed.*hash"):
        vgg.resolve_vgg_weights(progress=False)
    assert not vgg.vgg_cache_path().exists()
    assert list(vgg.vgg_cache_path().parent.iterdir()) == []  # no partial file left behind
    # With the matching prefix the file lands in the cache and loads from there.
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setattr(vgg, "VGG19_HASH_PREFIX", digest[:8])
    assert vgg.resolve_vgg_weights(progress=False) == vgg.vgg_cache_path()
    enc = loss_nets.load_loss_network("vgg19", ["relu1_1"], CPU)
    assert torch.equal(enc.features.conv1_1.weight, reference.features.conv1_1.weight)


def test_corrupt_and_wrong_files(torchvision_file: tuple[Path, vgg.VGGEncoder], tmp_path: Path) -> None:
    path, reference = torchvision_file
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a zip file" * 100)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(path.read_bytes()[: 1 << 20])
    not_a_dict = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), not_a_dict)
    wrong_keys = tmp_path / "wrong_keys.pth"
    torch.save({"conv.weight": torch.zeros(3)}, wrong_keys)
    wrong_shape = tmp_path / "wrong_shape.pth"
    state = {f"features.{vgg.TORCHVISION_FEATURE_INDEX[k.split('.')[1]]}.{k.split('.')[2]}": v
             for k, v in reference.state_dict().items()}
    state["features.0.weight"] = torch.zeros(32, 3, 3, 3)
    torch.save(state, wrong_shape)
    for bad, pattern in ((garbage, "not a readable"), (truncated, "not a readable"), (not_a_dict, "Tensor"),
                         (wrong_keys, "not a torchvision VGG19"), (wrong_shape, "not a torchvision VGG19")):
        with pytest.raises(WeightsError, match=pattern):
            loss_nets.load_loss_network("vgg19", ["relu1_1"], CPU, weights_path=str(bad))


def test_weights_report(torchvision_file: tuple[Path, vgg.VGGEncoder], monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = torchvision_file
    monkeypatch.setattr(loss_nets, "resolve_loss_net", _no_network)
    report = loss_nets.weights_report()
    assert vgg.VGG19_URL in report and str(vgg.vgg_cache_path()) in report
    assert "not found" in report and "random-vgg19" in report
    monkeypatch.setenv(vgg.WEIGHTS_ENV, str(path))
    report = loss_nets.weights_report()
    assert str(path) in report
    # Our test file is not the real one: its hash prefix is reported as a mismatch.
    assert "MISMATCH" in report and f"{path.stat().st_size / 1e6:.1f} MB" in report


def _no_network(name: str, weights_path: str | None = None) -> str:
    raise WeightsError("none")


def test_vgg16_layout_and_caffe_preprocessing() -> None:
    enc = vgg.VGGEncoder(["relu5_3"], arch="vgg16", preprocessing="caffe", ceil_mode=True)
    names = [name for name, _ in enc.features.named_children()]
    assert names == [n for n in vgg.VGG16_LAYERS if n != "pool5"]
    assert sum(isinstance(m, nn.Conv2d) for m in enc.modules()) == 13
    assert all(m.ceil_mode for m in enc.modules() if isinstance(m, nn.MaxPool2d))
    # Odd sizes pool up, as Keras "same" pooling does: 33 -> 17 -> 9 -> 5 -> 3.
    assert enc(_image(1, 33, 33))["relu5_3"].shape == (1, 512, 3, 3)
    # Identity conv1_1 exposes the input transform: BGR, [0, 255], minus the Caffe mean.
    first = vgg.VGGEncoder(["conv1_1"], arch="vgg16", preprocessing="caffe")
    with torch.no_grad():
        for c in range(3):
            first.features.conv1_1.weight[c, c, 1, 1] = 1.0
    x = _image(1, 8, 8)
    bgr = x[:, [2, 1, 0]] * 255.0 - torch.tensor(vgg.CAFFE_MEAN_BGR).view(1, 3, 1, 1)
    torch.testing.assert_close(first(x)["conv1_1"][:, :3], bgr, rtol=1e-5, atol=1e-3)
