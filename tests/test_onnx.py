"""ONNX export: the exported graph matches torch at any size and carries the metadata."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from stylecore.nets import onnx_export
from stylecore.errors import InputError
from stylecore.nets.model_file import METADATA_KEY, ModelInfo, save_model
from stylecore.nets.transformer import StyleTransformer, TransformerConfig

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[StyleTransformer, Path]:
    folder = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(4)
    model = StyleTransformer(TransformerConfig(res_blocks=2)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    path = save_model(folder / "m.safetensors", model, ModelInfo(config=model.config, style_name="stripes"))
    from stylecore.cli.main import main

    assert main(["export", str(path), str(folder / "m.onnx")]) == 0
    return model, folder / "m.onnx"


@pytest.mark.slow
@pytest.mark.parametrize(("n", "h", "w"), [(1, 45, 61), (3, 32, 40), (2, 19, 83)])
def test_onnx_output_matches_torch(exported: tuple[StyleTransformer, Path], n: int, h: int, w: int) -> None:
    model, path = exported
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    image = torch.rand(n, 3, h, w)
    weight = torch.linspace(0.1, 1.9, n)
    with torch.no_grad():
        expected = model(image, weight).numpy()
    got = session.run(None, {"image": image.numpy(), "style_weight": weight.numpy()})[0]
    assert got.shape == expected.shape
    assert float(np.abs(got - expected).max()) < 1e-4


@pytest.mark.slow
def test_onnx_carries_the_model_metadata(exported: tuple[StyleTransformer, Path]) -> None:
    _, path = exported
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(props[METADATA_KEY])["style"]["name"] == "stripes"


def test_export_refuses_a_wrong_suffix(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=".onnx"):
        onnx_export.export_onnx(tmp_path / "m.safetensors", tmp_path / "m.txt")


def test_missing_onnx_package_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = onnx_export.importlib.util.find_spec
    monkeypatch.setattr(onnx_export.importlib.util, "find_spec", lambda name: None if name == "onnx" else real(name))
    with pytest.raises(InputError, match="pip install"):
        onnx_export.export_onnx(tmp_path / "m.safetensors", tmp_path / "m.onnx")
