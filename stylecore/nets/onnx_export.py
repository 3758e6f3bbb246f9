"""ONNX export of a trained feedforward model (``stylecore export``), checked against torch.

The exported graph takes ``image`` (``N x 3 x H x W`` float32 RGB in [0, 1], any size)
and ``style_weight`` (``N`` float32) and returns ``stylized`` (same shape as ``image``).
The model file's metadata is copied into the ONNX model's metadata (key ``stylecore``).
Needs the optional packages ``onnx`` and ``onnxscript`` (torch's exporter) and, for the
check, ``onnxruntime``: ``pip install "stylecore[onnx]"``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from stylecore.errors import InputError, StylecoreError
from stylecore.nets.model_file import METADATA_KEY, load_model
from stylecore.nets.transformer import StyleTransformer

OPSET = 18
# Largest |onnx - torch| accepted by the check (float32 both sides; observed ~1e-6).
TOLERANCE = 1e-4
# Test inputs of the check: odd sizes exercise the pad-to-4 / crop path.
_CHECK_SHAPES = ((1, 37, 50), (2, 64, 90))


@dataclass(frozen=True)
class ExportReport:
    path: Path
    max_abs_diff: float | None  # None when onnxruntime is not installed (no check)


class _Graph(nn.Module):
    """The exported signature: ``(image, style_weight) -> stylized``."""

    def __init__(self, model: StyleTransformer) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor, style_weight: Tensor) -> Tensor:
        return self.model(image, style_weight)


def _require(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise InputError(f"ONNX export needs the '{module}' package; install it with: pip install \"stylecore[onnx]\"")


def export_onnx(model_path: str | Path, out_path: str | Path, *, check: bool = True) -> ExportReport:
    """Export ``model_path`` to ``out_path`` (written atomically) and compare with torch."""
    _require("onnx")
    _require("onnxscript")
    import onnx

    out = Path(out_path)
    if out.suffix.lower() != ".onnx":
        raise InputError(f"the export target should end in .onnx, not {out.name!r}")
    if not out.parent.is_dir():
        raise InputError(f"the output folder {out.parent} does not exist")
    model, info = load_model(model_path, "cpu")
    graph = _Graph(model.float().eval())
    # A batch of 2: torch.export specialises a dimension whose example size is 1, which
    # would pin the exported batch (and the style_weight vector) to one frame.
    example = (torch.rand(2, 3, 64, 64), torch.ones(2))
    batch = torch.export.Dim("batch", min=1)
    height = torch.export.Dim("height", min=8)
    width = torch.export.Dim("width", min=8)
    fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        # The exporter narrates each step on stdout and warns about torchvision; neither
        # is for the user.
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _quiet_logger("torch.onnx"):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                graph,
                example,
                str(tmp),
                input_names=["image", "style_weight"],
                output_names=["stylized"],
                dynamic_shapes={"image": {0: batch, 2: height, 3: width}, "style_weight": {0: batch}},
                opset_version=OPSET,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
        proto = onnx.load(str(tmp))
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(info.to_dict(), sort_keys=True)
        onnx.save(proto, str(tmp))
        diff = compare_with_torch(tmp, model) if check else None
        if diff is not None and diff > TOLERANCE:
            raise StylecoreError(
                f"the exported ONNX model differs from torch by {diff:.2e} (> {TOLERANCE:.0e}); "
                "please report this with your torch and onnx versions"
            )
        os.chmod(tmp, 0o644)  # mkstemp makes it private; an export is meant to be shared
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return ExportReport(out, diff)


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def compare_with_torch(onnx_path: str | Path, model: StyleTransformer) -> float | None:
    """Largest |onnxruntime - torch| over a few random inputs; ``None`` without onnxruntime."""
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    for n, h, w in _CHECK_SHAPES:
        image = torch.rand(n, 3, h, w, generator=generator)
        weight = torch.rand(n, generator=generator) * model.config.max_style_weight
        with torch.inference_mode():
            expected = model.float()(image, weight).numpy()
        got = session.run(None, {"image": image.numpy(), "style_weight": weight.numpy()})[0]
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst
