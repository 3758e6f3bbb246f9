"""VGG19 loss network, defined here (no torchvision): named layers, truncated encoder,
weight loading (explicit path, env var, torch hub cache, download) and a weights-free
``random-vgg19`` variant.
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

from .errors import InputError, WeightsError

# VGG19 ("E") feature extractor: output channels of each 3x3 conv, "M" = 2x2 pooling.
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

# torchvision's ``vgg19().features`` is an ``nn.Sequential`` with exactly one module per
# entry of VGG19_LAYERS, in the same order (conv, ReLU, ..., max-pool), so a layer's
# position in VGG19_LAYERS is its ``features.{index}`` key in a torchvision state dict.
TORCHVISION_FEATURE_INDEX: dict[str, int] = {name: index for index, name in enumerate(VGG19_LAYERS)}
_CONV_LAYERS: tuple[str, ...] = tuple(name for name in VGG19_LAYERS if name.startswith("conv"))

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
VGG19_FILENAME = "vgg19-dcbb9e9d.pth"
VGG19_HASH_PREFIX = "dcbb9e9d"  # first hex digits of the file's SHA-256 (torch hub convention)
WEIGHTS_ENV = "STYLECORE_VGG_WEIGHTS"
OFFLINE_ENV = "STYLECORE_OFFLINE"
LOSS_NETWORKS = ("vgg19", "random-vgg19")
POOLINGS = ("max", "avg")
# Seconds without a byte before a download gives up: fail fast on machines with no network.
DOWNLOAD_TIMEOUT_S = 15.0
# Fixed seed of random-vgg19: the same weights on every machine and every run.
RANDOM_VGG_SEED = 0x5EED_F00D


def vgg_cache_path() -> Path:
    """Where torch hub keeps (and we look for) the downloaded VGG19 weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILENAME


class VGGEncoder(nn.Module):
    """VGG19 features up to the deepest requested layer; returns the requested activations.

    Input: ``N x 3 x H x W`` RGB in ``[0, 1]``; ImageNet normalisation happens inside.
    Parameters are frozen and the module stays in eval mode. Weights start at zero: fill
    them with ``load_state_dict``/``load_vgg19_weights`` or ``randomize_``, or build the
    encoder with ``load_loss_network``.
    """

    normalized_style: bool

    def __init__(self, layers: Sequence[str], *, pooling: str = "max") -> None:
        super().__init__()
        unknown = [name for name in layers if name not in TORCHVISION_FEATURE_INDEX]
        if not layers or unknown:
            raise InputError(f"unknown VGG19 layer(s) {unknown or list(layers)}; valid names are {', '.join(VGG19_LAYERS)}")
        if pooling not in POOLINGS:
            raise InputError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
        self.layers: tuple[str, ...] = tuple(dict.fromkeys(layers))
        self.pooling = pooling
        self.normalized_style = False
        deepest = max(TORCHVISION_FEATURE_INDEX[name] for name in self.layers)

        modules: OrderedDict[str, nn.Module] = OrderedDict()
        in_channels = 3
        config = iter(_VGG19_CONFIG)
        for name in VGG19_LAYERS[: deepest + 1]:
            if name.startswith("conv"):
                out_channels = next(config)
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
                next(config)  # the "M" entry
                modules[name] = nn.MaxPool2d(2, 2) if pooling == "max" else nn.AvgPool2d(2, 2)
        self.features = nn.Sequential(modules)
        # Not persistent: they are constants, and torchvision state dicts do not hold them.
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        h = (x - self.mean) / self.std  # a new tensor: the caller's image is untouched
        wanted = set(self.layers)
        out: dict[str, Tensor] = {}
        for name, module in self.features.named_children():
            h = module(h)
            if name in wanted:
                out[name] = h
        return {name: out[name] for name in self.layers}

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Load our own keys (``features.conv1_1.weight``) or torchvision VGG19 keys
        (``features.0.weight``); classifier keys and layers past the deepest are ignored.
        """
        by_index = {str(index): name for name, index in TORCHVISION_FEATURE_INDEX.items()}
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
        f"and put it at {vgg_cache_path()}, or pass --vgg-weights PATH / set {WEIGHTS_ENV}=PATH; "
        "or use --loss-net random-vgg19 (no weights needed, lower quality)"
    )


def resolve_vgg_weights(path: str | None = None, *, download: bool = True, progress: bool = True) -> Path:
    """Find the VGG19 weights file: explicit ``path`` > ``$STYLECORE_VGG_WEIGHTS`` > torch hub
    cache > download into the cache (unless ``download=False`` or ``STYLECORE_OFFLINE=1``).
    """
    if path:
        return _check_file(Path(path).expanduser(), "--vgg-weights")
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
        raise WeightsError(_missing_message(f"download failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")) from None
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


def load_loss_network(
    name: str,
    layers: Sequence[str],
    device: torch.device,
    *,
    weights_path: str | None = None,
    download: bool = True,
    pooling: str = "max",
) -> VGGEncoder:
    """A frozen encoder for ``--loss-net`` ``vgg19`` (pretrained) or ``random-vgg19``.

    ``random-vgg19`` needs no file and sets ``normalized_style`` so callers use per-layer
    normalised Gram losses.
    """
    if name not in LOSS_NETWORKS:
        raise InputError(f"unknown loss network {name!r}; choose one of {', '.join(LOSS_NETWORKS)}")
    encoder = VGGEncoder(layers, pooling=pooling)
    if name == "vgg19":
        load_vgg19_weights(encoder, resolve_vgg_weights(weights_path, download=download))
    else:
        encoder.randomize_()
        encoder.normalized_style = True
    return encoder.to(device)


def _sha256_prefix(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[: len(VGG19_HASH_PREFIX)]


def _describe(path: Path) -> str:
    if not path.is_file():
        return "not found"
    size_mb = path.stat().st_size / 1e6
    prefix = _sha256_prefix(path)
    verdict = "ok" if prefix == VGG19_HASH_PREFIX else f"MISMATCH, expected {VGG19_HASH_PREFIX}: re-download"
    return f"found, {size_mb:.1f} MB, sha256 {prefix}... {verdict}"


def weights_report() -> str:
    """Human-readable account of where the VGG19 weights are looked for and what was found."""
    env = os.environ.get(WEIGHTS_ENV)
    cache = vgg_cache_path()
    lines = [
        "VGG19 loss-network weights (--loss-net vgg19), looked for in this order:",
        "  1. --vgg-weights PATH (command line)",
        f"  2. ${WEIGHTS_ENV}: " + (f"{env} ({_describe(Path(env).expanduser())})" if env else "not set"),
        f"  3. torch hub cache: {cache} ({_describe(cache)})",
        f"  4. download from {VGG19_URL} "
        + (f"(disabled: {OFFLINE_ENV}=1)" if _offline() else f"(into the cache; set {OFFLINE_ENV}=1 to disable)"),
        "Offline: download the URL on a connected machine and copy the file to the cache path above,",
        f"  or anywhere and pass --vgg-weights PATH / set {WEIGHTS_ENV}=PATH.",
        "Without weights: --loss-net random-vgg19 (no download, lower quality).",
    ]
    return "\n".join(lines)
