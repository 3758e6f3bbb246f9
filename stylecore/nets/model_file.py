"""Feedforward model files: safetensors weights plus JSON metadata. No pickle.

A model is ``NAME.safetensors``. Its JSON metadata (architecture, style, loss network,
training settings, format version) is stored inside the safetensors header under the
key ``"stylecore"``, so the weights file is self-describing, and a readable copy is
written beside it as ``NAME.json``. Loading parses only JSON and raw tensors: a model
file from a stranger cannot run code. The network is rebuilt from the validated
architecture and every tensor must match its expected name, shape and dtype.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_save

from stylecore import __version__
from stylecore.errors import InputError, WeightsError, first_line
from stylecore.io.imageops import atomic_write_bytes
from stylecore.nets.transformer import StyleTransformer, TransformerConfig

FORMAT_NAME = "stylecore-feedforward"
FORMAT_VERSION = 1
METADATA_KEY = "stylecore"
_THUMBNAIL_SIDE = 32
# Limits on architecture numbers read from a file: a hostile header must not make us
# allocate absurd networks.
_MAX_CHANNELS = 1024
_MAX_RES_BLOCKS = 64


@dataclass(frozen=True)
class ModelInfo:
    """Everything a model file says about itself besides its weights."""

    config: TransformerConfig
    style_name: str = ""
    style_thumbnail_sha256: str = ""
    loss_network: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    stylecore_version: str = __version__
    created: str = ""
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "format_version": self.format_version,
            "stylecore_version": self.stylecore_version,
            "created": self.created,
            "architecture": {"name": "huang2017", **self.config.to_dict()},
            "style": {"name": self.style_name, "thumbnail_sha256": self.style_thumbnail_sha256},
            "loss_network": self.loss_network,
            "training": self.training,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: Path) -> ModelInfo:
        if data.get("format") != FORMAT_NAME:
            raise WeightsError(f"{source} is not a stylecore feedforward model (format {data.get('format')!r})")
        version = int(data.get("format_version", 0))
        if version > FORMAT_VERSION:
            raise WeightsError(
                f"{source} uses model format {version}, newer than this stylecore ({FORMAT_VERSION}); update stylecore"
            )
        try:
            arch = dict(data["architecture"])
            arch.pop("name", None)
            config = TransformerConfig.from_dict(arch)
            style = dict(data.get("style") or {})
            info = cls(
                config=config,
                style_name=str(style.get("name", "")),
                style_thumbnail_sha256=str(style.get("thumbnail_sha256", "")),
                loss_network=str(data.get("loss_network", "")),
                training=dict(data.get("training") or {}),
                stylecore_version=str(data.get("stylecore_version", "")),
                created=str(data.get("created", "")),
                format_version=version,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise WeightsError(f"{source} has malformed metadata ({exc}); re-export or re-train the model") from None
        channels = (*config.down_channels, *config.up_channels)
        if min(channels) < 1 or max(channels) > _MAX_CHANNELS or config.res_blocks > _MAX_RES_BLOCKS:
            raise WeightsError(f"{source} declares an implausible network ({config}); the file is corrupt")
        return info


def sidecar_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def style_thumbnail(style: np.ndarray) -> np.ndarray:
    """The 32x32 8-bit thumbnail that identifies a style image."""
    thumb = cv2.resize(np.asarray(style, dtype=np.float32), (_THUMBNAIL_SIDE, _THUMBNAIL_SIDE), interpolation=cv2.INTER_AREA)
    return np.clip(thumb * 255.0 + 0.5, 0, 255).astype(np.uint8)


def style_thumbnail_hash(style: np.ndarray) -> str:
    """SHA-256 of the 32x32 thumbnail: the same painting in another file format or at
    another size often hashes the same (``catalog.find_by_style`` also compares pictures)."""
    return hashlib.sha256(style_thumbnail(style).tobytes()).hexdigest()


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def save_model(path: str | Path, model: StyleTransformer, info: ModelInfo) -> Path:
    """Write ``path`` (safetensors, atomically) and its ``.json`` copy of the metadata."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise InputError(f"model files end in .safetensors, not {path.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().to("cpu", torch.float32).contiguous() for name, t in model.state_dict().items()}
    meta_json = json.dumps(info.to_dict(), sort_keys=True)
    atomic_write_bytes(path, safetensors_save(tensors, metadata={METADATA_KEY: meta_json}))
    atomic_write_bytes(sidecar_path(path), (json.dumps(info.to_dict(), indent=2, sort_keys=True) + "\n").encode())
    return path


def read_info(path: str | Path) -> ModelInfo:
    """The metadata of a model file (from its header, else from its ``.json`` copy)."""
    path = _existing(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"cannot read model {path}: {first_line(exc)}; the file is not a valid .safetensors model") from None
    text = header.get(METADATA_KEY)
    if text is None and sidecar_path(path).is_file():
        text = sidecar_path(path).read_text(encoding="utf-8")
    if text is None:
        raise WeightsError(f"{path} has no stylecore metadata; it was not written by stylecore's training")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WeightsError(f"{path} has corrupt metadata ({exc.msg}); re-train or re-download the model") from None
    if not isinstance(data, dict):
        raise WeightsError(f"{path} has corrupt metadata (not a JSON object)")
    return ModelInfo.from_dict(data, path)


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[StyleTransformer, ModelInfo]:
    """Rebuild the network a model file describes and load its weights (eval mode)."""
    path = _existing(path)
    info = read_info(path)
    model = StyleTransformer(info.config)
    expected = model.state_dict()
    state: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(path), framework="pt") as fh:
            names = set(fh.keys())
            missing = sorted(set(expected) - names)
            extra = sorted(names - set(expected))
            if missing or extra:
                raise WeightsError(
                    f"{path} does not match its declared network (missing {missing[:3]}, unexpected {extra[:3]}); the file is corrupt"
                )
            for name in expected:
                tensor = fh.get_tensor(name)
                if tensor.shape != expected[name].shape or not tensor.dtype.is_floating_point:
                    raise WeightsError(
                        f"{path}: tensor {name} has shape {tuple(tensor.shape)}, expected {tuple(expected[name].shape)}; the file is corrupt"
                    )
                state[name] = tensor.float()
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"cannot read model {path}: {first_line(exc)}; the file is corrupt") from None
    if not all(bool(torch.isfinite(t).all()) for t in state.values()):
        raise WeightsError(f"{path} holds non-finite weights (NaN or inf); re-train the model")
    model.load_state_dict(state)
    model.eval().requires_grad_(False)
    return model.to(device), info


def _existing(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"model file {path} not found; pass an existing .safetensors model to `model`")
    return path
