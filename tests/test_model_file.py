"""Model files: safetensors + JSON metadata, round trip, and refusal of bad files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from stylecore.errors import InputError, WeightsError
from stylecore.nets.model_file import (
    FORMAT_VERSION,
    METADATA_KEY,
    ModelInfo,
    load_model,
    read_info,
    save_model,
    style_thumbnail_hash,
)
from stylecore.nets.transformer import StyleTransformer, TransformerConfig


def _model(config: TransformerConfig | None = None) -> StyleTransformer:
    torch.manual_seed(1)
    model = StyleTransformer(config or TransformerConfig(res_blocks=2))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def _info(model: StyleTransformer) -> ModelInfo:
    return ModelInfo(
        config=model.config,
        style_name="stripes",
        style_thumbnail_sha256="ab" * 32,
        loss_network="random-vgg19",
        training={"steps": 3, "size": 64},
        created="2026-01-01T00:00:00Z",
    )


def test_round_trip_keeps_weights_and_metadata(tmp_path: Path) -> None:
    model = _model()
    path = save_model(tmp_path / "m.safetensors", model, _info(model))
    loaded, info = load_model(path)
    x = torch.rand(1, 3, 21, 30)
    with torch.no_grad():
        assert torch.equal(model(x, torch.tensor([0.7])), loaded(x, torch.tensor([0.7])))
    assert info == _info(model)
    # The readable copy beside the weights says the same thing.
    sidecar = json.loads((tmp_path / "m.json").read_text())
    assert sidecar == _info(model).to_dict()
    assert sidecar["format_version"] == FORMAT_VERSION


def test_unconditioned_round_trip(tmp_path: Path) -> None:
    model = _model(TransformerConfig(conditioned=False, res_blocks=1))
    loaded, info = load_model(save_model(tmp_path / "u.safetensors", model, _info(model)))
    assert not info.config.conditioned and loaded.cond is None


def test_metadata_travels_inside_the_weights_file(tmp_path: Path) -> None:
    model = _model()
    path = save_model(tmp_path / "m.safetensors", model, _info(model))
    (tmp_path / "m.json").unlink()
    assert read_info(path).style_name == "stripes"


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_model(tmp_path / "nope.safetensors")


def test_pickle_is_refused_without_unpickling(tmp_path: Path) -> None:
    """A torch.save (pickle) file is not read as a model: no code can run."""
    marker = tmp_path / "ran"
    path = tmp_path / "evil.safetensors"

    class Payload:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (marker.write_text, ("pwned",))

    torch.save({"x": Payload()}, path)
    with pytest.raises(WeightsError):
        load_model(path)
    assert not marker.exists()


def test_truncated_file_is_a_weights_error(tmp_path: Path) -> None:
    model = _model()
    path = save_model(tmp_path / "m.safetensors", model, _info(model))
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(WeightsError):
        load_model(path)


def test_tensor_mismatch_is_a_weights_error(tmp_path: Path) -> None:
    model = _model()
    meta = {METADATA_KEY: json.dumps(_info(model).to_dict())}
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    name = "down.0.conv.weight"
    state[name] = torch.zeros(5, 3, 3, 3)
    save_file(state, str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(WeightsError, match="shape"):
        load_model(tmp_path / "bad.safetensors")
    state.pop(name)
    save_file(state, str(tmp_path / "missing.safetensors"), metadata=meta)
    with pytest.raises(WeightsError, match="missing"):
        load_model(tmp_path / "missing.safetensors")


def test_foreign_or_newer_metadata_is_refused(tmp_path: Path) -> None:
    model = _model()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    newer = {**_info(model).to_dict(), "format_version": FORMAT_VERSION + 1}
    save_file(state, str(tmp_path / "new.safetensors"), metadata={METADATA_KEY: json.dumps(newer)})
    with pytest.raises(WeightsError, match="update stylecore"):
        load_model(tmp_path / "new.safetensors")
    save_file(state, str(tmp_path / "plain.safetensors"))
    with pytest.raises(WeightsError, match="no stylecore metadata"):
        load_model(tmp_path / "plain.safetensors")
    huge = _info(model).to_dict()
    huge["architecture"]["res_blocks"] = 10_000
    save_file(state, str(tmp_path / "huge.safetensors"), metadata={METADATA_KEY: json.dumps(huge)})
    with pytest.raises(WeightsError, match="implausible"):
        load_model(tmp_path / "huge.safetensors")


def test_non_finite_weights_are_refused(tmp_path: Path) -> None:
    model = _model()
    with torch.no_grad():
        model.final.conv.bias[0] = float("nan")
    path = save_model(tmp_path / "nan.safetensors", model, _info(model))
    with pytest.raises(WeightsError, match="non-finite"):
        load_model(path)


def test_thumbnail_hash_ignores_resolution_but_not_content() -> None:
    rng = np.random.default_rng(0)
    base = np.kron(rng.random((32, 32, 3)), np.ones((4, 4, 1))).astype(np.float32)  # 128x128, 4x4 blocks
    half = base[::2, ::2]  # the same picture at half size
    assert style_thumbnail_hash(base) == style_thumbnail_hash(half)
    assert style_thumbnail_hash(base) != style_thumbnail_hash(1.0 - base)


def test_shipped_models_load_and_are_listed_by_name() -> None:
    from stylecore.catalog import list_models, shipped_models_dir

    from stylecore.catalog import default_model_path

    path = default_model_path()
    assert path.is_file(), "the package must ship its default model"
    shipped = {e.name: e for e in list_models() if e.origin == "shipped"}
    assert set(shipped) >= {"starry_night", "scream", "shipwreck", "woman_with_a_hat"}
    for entry in shipped.values():
        assert entry.path.parent == shipped_models_dir() and entry.thumbnail is not None
        assert entry.loss_network == "hed-vgg16" and entry.training.get("command")
        assert entry.path.stat().st_size < 2_000_000
    model, info = load_model(path)
    assert info.config.conditioned
    with torch.no_grad():
        out = model(torch.rand(1, 3, 36, 52), torch.ones(1))
    assert out.shape == (1, 3, 36, 52)
