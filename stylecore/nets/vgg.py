"""VGG loss networks, defined here (no torchvision): VGG16 and VGG19 with named layers,
an encoder that runs only as deep as the deepest requested layer, ImageNet VGG19 weight
loading (explicit path, env var, torch hub cache, download) and the weights-free
``random-vgg19``. Which network a job uses is decided in ``loss_nets.py``; the HED VGG16
weights are converted in ``hed.py``.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import socket
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import skip_init

from stylecore.errors import InputError, WeightsError, first_line

# VGG16 ("D") and VGG19 ("E") feature extractors: output channels of each 3x3 conv,
# "M" = 2x2 pooling (Simonyan and Zisserman 2015, table 1).
_VGG16_CONFIG: tuple[int | str, ...] = (
    64, 64, "M",
    128, 128, "M",
    256, 256, 256, "M",
    512, 512, 512, "M",
    512, 512, 512, "M",
)  # fmt: skip
_VGG19_CONFIG: tuple[int | str, ...] = (
    64, 64, "M",
    128, 128, "M",
    256, 256, 256, 256, "M",
    512, 512, 512, 512, "M",
    512, 512, 512, 512, "M",
)  # fmt: skip


def _layer_names(config: Sequence[int | str]) -> tuple[str, ...]:
    names: list[str] = []
    block, conv = 1, 1
    for item in config:
        if item == "M":
            names.append(f"pool{block}")
            block, conv = block + 1, 1
        else:
            names += [f"conv{block}_{conv}", f"relu{block}_{conv}"]
            conv += 1
    return tuple(names)


VGG19_LAYERS: tuple[str, ...] = _layer_names(_VGG19_CONFIG)
VGG16_LAYERS: tuple[str, ...] = _layer_names(_VGG16_CONFIG)
_CONFIGS: dict[str, tuple[tuple[int | str, ...], tuple[str, ...]]] = {
    "vgg16": (_VGG16_CONFIG, VGG16_LAYERS),
    "vgg19": (_VGG19_CONFIG, VGG19_LAYERS),
}

# torchvision's ``vgg19().features`` is an ``nn.Sequential`` with exactly one module per
# entry of VGG19_LAYERS, in the same order (conv, ReLU, ..., max-pool), so a layer's
# position in VGG19_LAYERS is its ``features.{index}`` key in a torchvision state dict.
TORCHVISION_FEATURE_INDEX: dict[str, int] = {name: index for index, name in enumerate(VGG19_LAYERS)}
_CONV_LAYERS: tuple[str, ...] = tuple(name for name in VGG19_LAYERS if name.startswith("conv"))

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Caffe-trained VGGs (HED among them) take BGR in [0, 255] minus this per-channel mean
# (B, G, R), without dividing by a standard deviation.
CAFFE_MEAN_BGR = (104.00699, 116.66877, 122.67892)
# How an RGB [0, 1] image becomes the network's input.
PREPROCESSING = ("imagenet", "caffe")

VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
VGG19_FILENAME = "vgg19-dcbb9e9d.pth"
VGG19_HASH_PREFIX = "dcbb9e9d"  # first hex digits of the file's SHA-256 (torch hub convention)
WEIGHTS_ENV = "STYLECORE_VGG_WEIGHTS"
OFFLINE_ENV = "STYLECORE_OFFLINE"
POOLINGS = ("max", "avg")
# Seconds without a byte before a download gives up: fail fast on machines with no network.
DOWNLOAD_TIMEOUT_S = 15.0
# Fixed seed of random-vgg19: the same weights on every machine and every run.
RANDOM_VGG_SEED = 0x5EED_F00D


def vgg_cache_path() -> Path:
    """Where torch hub keeps (and we look for) the downloaded VGG19 weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILENAME


class VGGEncoder(nn.Module):
    """VGG features up to the deepest requested layer; returns the requested activations.

    Input: ``N x 3 x H x W`` RGB in ``[0, 1]``; the network's own input normalisation
    (``preprocessing``: ImageNet mean/std, or Caffe's BGR [0, 255] minus the mean) happens
    inside. ``ceil_mode`` pools odd sizes up, as Keras "same" pooling does. Parameters are
    frozen and the module stays in eval mode. Weights start at zero: fill them with
    ``load_state_dict``/``load_vgg19_weights`` or ``randomize_``, or build the encoder
    with ``loss_nets.load_loss_network``.
    """

    def __init__(
        self,
        layers: Sequence[str],
        *,
        arch: str = "vgg19",
        pooling: str = "max",
        preprocessing: str = "imagenet",
        ceil_mode: bool = False,
    ) -> None:
        super().__init__()
        if arch not in _CONFIGS:
            raise InputError(f"unknown VGG architecture {arch!r}; choose one of {', '.join(_CONFIGS)}")
        config, names = _CONFIGS[arch]
        index = {name: i for i, name in enumerate(names)}
        unknown = [name for name in layers if name not in index]
        if not layers or unknown:
            raise InputError(f"unknown {arch.upper()} layer(s) {unknown or list(layers)}; valid names are {', '.join(names)}")
        if pooling not in POOLINGS:
            raise InputError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
        if preprocessing not in PREPROCESSING:
            raise InputError(f"unknown preprocessing {preprocessing!r}; choose one of {', '.join(PREPROCESSING)}")
        self.arch = arch
        self.loss_net = ""  # which --loss-net this is; set by loss_nets.load_loss_network
        self.layers: tuple[str, ...] = tuple(dict.fromkeys(layers))
        self.pooling = pooling
        self.preprocessing = preprocessing
        deepest = max(index[name] for name in self.layers)

        modules: OrderedDict[str, nn.Module] = OrderedDict()
        in_channels = 3
        channels = iter(config)
        for name in names[: deepest + 1]:
            if name.startswith("conv"):
                out_channels = next(channels)
                assert isinstance(out_channels, int)
                # skip_init: no default random init, which would be overwritten anyway and
                # would consume the global RNG (random-vgg19 must not disturb user seeds).
                conv = skip_init(nn.Conv2d, in_channels, out_channels, kernel_size=3, padding=1)
                with torch.no_grad():
                    conv.weight.zero_()
                    conv.bias.zero_()
                modules[name] = conv
                in_channels = out_channels
            elif name.startswith("relu"):
                # Not in place: the conv output must survive when it is itself requested.
                modules[name] = nn.ReLU(inplace=False)
            else:
                next(channels)  # the "M" entry
                pool = nn.MaxPool2d if pooling == "max" else nn.AvgPool2d
                modules[name] = pool(2, 2, ceil_mode=ceil_mode)
        self.features = nn.Sequential(modules)
        # Not persistent: they are constants, and torchvision state dicts do not hold them.
        if preprocessing == "imagenet":
            mean, scale = torch.tensor(IMAGENET_MEAN), 1.0 / torch.tensor(IMAGENET_STD)
            order = [0, 1, 2]
        else:
            mean, scale = torch.tensor(CAFFE_MEAN_BGR) / 255.0, torch.full((3,), 255.0)
            order = [2, 1, 0]
        self.register_buffer("mean", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", scale.view(1, 3, 1, 1), persistent=False)
        self.channel_order = order
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        if self.channel_order != [0, 1, 2]:
            x = x[:, self.channel_order]
        h = (x - self.mean) * self.scale  # a new tensor: the caller's image is untouched
        wanted = set(self.layers)
        out: dict[str, Tensor] = {}
        for name, module in self.features.named_children():
            h = module(h)
            if name in wanted:
                out[name] = h
        return {name: out[name] for name in self.layers}

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Load our own keys (``features.conv1_1.weight``) or torchvision keys
        (``features.0.weight``); classifier keys and layers past the deepest are ignored.
        """
        by_index = {str(index): name for index, name in enumerate(_CONFIGS[self.arch][1])}
        own = set(self.state_dict())
        mapped: dict[str, Any] = {}
        for key, value in state_dict.items():
            parts = key.split(".")
            if len(parts) == 3 and parts[0] == "features" and parts[1] in by_index:
                key = f"features.{by_index[parts[1]]}.{parts[2]}"
            if key in own:
                mapped[key] = value
        return super().load_state_dict(mapped, strict=strict, assign=assign)

    def randomize_(self, seed: int = RANDOM_VGG_SEED) -> VGGEncoder:
        """Fill the convolutions with deterministic random weights (He et al. scaling).

        Weights are drawn from a local generator (the global RNG is neither used nor
        changed) and each filter is scaled to norm exactly ``sqrt(2)``, so that conv + ReLU
        keeps the second moment of its input (``E[y^2] ~= |w|^2 E[x^2] / 2``): activations
        neither vanish nor explode through the 16 layers (RMS stays within ~1-2.5 from
        relu1_1 to relu5_4 on images in [0, 1]). Filters are not made zero-mean: that removes
        the positive mean of post-ReLU inputs and the RMS then decays ~15% per layer.
        Biases are zero.
        """
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for module in self.features:
                if isinstance(module, nn.Conv2d):
                    w = torch.randn(module.weight.shape, generator=generator)
                    w *= math.sqrt(2.0) / w.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
                    module.weight.copy_(w)
                    module.bias.zero_()
        return self


# --------------------------------------------------------------------------- weights


def _check_file(path: Path, source: str) -> Path:
    if not path.is_file():
        raise WeightsError(f"{source} {path}: no such file; point it at a copy of {VGG19_FILENAME} ({VGG19_URL})")
    return path


def _offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes")


def _missing_message(reason: str) -> str:
    return (
        f"VGG19 weights not available ({reason}): on a connected machine download {VGG19_URL} "
        f"and put it at {vgg_cache_path()}, or give its path as `vgg_weights` / set {WEIGHTS_ENV}=PATH; "
        "or choose `loss_net` hed-vgg16 ('stylecore weights get hed-vgg16')"
    )


def resolve_vgg_weights(path: str | None = None, *, download: bool = True, progress: bool = True) -> Path:
    """Find the VGG19 weights file: explicit ``path`` > ``$STYLECORE_VGG_WEIGHTS`` > torch hub
    cache > download into the cache (unless ``download=False`` or ``STYLECORE_OFFLINE=1``).
    """
    if path:
        return _check_file(Path(path).expanduser(), "`vgg_weights`")
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        return _check_file(Path(env).expanduser(), WEIGHTS_ENV)
    cache = vgg_cache_path()
    if cache.is_file():
        return cache
    if not download:
        raise WeightsError(_missing_message(f"not in {cache} and downloading is disabled"))
    if _offline():
        raise WeightsError(_missing_message(f"not in {cache} and {OFFLINE_ENV}=1"))
    cache.parent.mkdir(parents=True, exist_ok=True)
    # torch hub's urlopen has no timeout of its own; without one an offline machine can
    # hang for minutes. The default timeout is process-wide, so put it back afterwards.
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        # Writes a temporary file next to ``cache`` and renames it only once the hash prefix
        # matches, so an interrupted or corrupted download never lands in the cache.
        torch.hub.download_url_to_file(VGG19_URL, str(cache), hash_prefix=VGG19_HASH_PREFIX, progress=progress)
    except Exception as exc:  # noqa: BLE001 - URLError, timeouts, hash mismatch (RuntimeError)
        raise WeightsError(_missing_message(f"download failed: {first_line(exc)}")) from None
    return cache


@functools.lru_cache(maxsize=2)
def _read_feature_state(path: str, mtime_ns: int, size: int) -> dict[str, Tensor]:
    """The ``features.*`` tensors of a torchvision VGG19 file (cached: the file is ~550 MB)."""
    del mtime_ns, size  # part of the cache key only: a replaced file is read again
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - truncated zip, pickle errors, not a torch file
        raise WeightsError(
            f"{path} is not a readable PyTorch weights file ({type(exc).__name__}); delete it and "
            f"download {VGG19_URL} again"
        ) from None
    if not isinstance(state, Mapping):
        raise WeightsError(f"{path} holds a {type(state).__name__}, not a VGG19 state dict; use {VGG19_URL}")
    return {key: value for key, value in state.items() if isinstance(key, str) and key.startswith("features.")}


def load_vgg19_weights(encoder: VGGEncoder, path: Path) -> None:
    """Load a torchvision-format VGG19 file into ``encoder``; any mismatch is a ``WeightsError``."""
    stat = path.stat()
    state = _read_feature_state(str(path), stat.st_mtime_ns, stat.st_size)
    try:
        encoder.load_state_dict(state)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:200]
        raise WeightsError(f"{path} is not a torchvision VGG19 state dict ({detail}); use {VGG19_URL}") from None


def _sha256_prefix(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[: len(VGG19_HASH_PREFIX)]


def describe_vgg19_file(path: Path) -> str:
    if not path.is_file():
        return "not found"
    size_mb = path.stat().st_size / 1e6
    prefix = _sha256_prefix(path)
    verdict = "ok" if prefix == VGG19_HASH_PREFIX else f"MISMATCH, expected {VGG19_HASH_PREFIX}: re-download"
    return f"found, {size_mb:.1f} MB, sha256 {prefix}... {verdict}"
