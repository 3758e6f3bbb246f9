"""Models by name: shipped and user models, the style image picking its model, `stylecore models`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from stylecore import catalog
from stylecore.cli.main import main
from stylecore.errors import InputError
from stylecore.io.imageops import save_image
from stylecore.jobspec import JobSpec, guess_mode
from stylecore.nets.model_file import ModelInfo, save_model, style_thumbnail_hash
from stylecore.nets.transformer import StyleTransformer, TransformerConfig


@pytest.fixture()
def user_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "my_models"
    folder.mkdir()
    monkeypatch.setenv(catalog.MODELS_ENV, str(folder))
    return folder


def _style(path: Path, seed: int) -> np.ndarray:
    """A style image on disk, returned as read back (8-bit), like training sees it."""
    from conftest import smooth_texture

    from stylecore.io.imageops import load_image

    save_image(path, smooth_texture(80, 112, seed=seed))
    return load_image(path)


def _save(folder: Path, name: str, style: np.ndarray, seed: int = 0) -> Path:
    """A model file as training writes it: weights, metadata and the style's thumbnail."""
    torch.manual_seed(seed)
    model = StyleTransformer(TransformerConfig(res_blocks=1))
    info = ModelInfo(config=model.config, style_name=name, style_thumbnail_sha256=style_thumbnail_hash(style),
                     loss_network="hed-vgg16", training={"steps": 3, "size": 64})
    path = save_model(folder / f"{name}.safetensors", model, info)
    catalog.write_thumbnail(path, style)
    return path


def test_names_resolve_to_user_models_first_then_shipped(user_models: Path, tmp_path: Path) -> None:
    mine = _save(user_models, "pastel", _style(tmp_path / "p.png", 1))
    assert catalog.resolve_model("pastel") == mine
    assert catalog.resolve_model("starry_night") == catalog.shipped_models_dir() / "starry_night.safetensors"
    assert catalog.resolve_model(None) == catalog.default_model_path()
    # A user model with a shipped name shadows the shipped one.
    shadow = _save(user_models, "starry_night", _style(tmp_path / "s.png", 2))
    assert catalog.resolve_model("starry_night") == shadow
    entries = {e.name: e for e in catalog.list_models()}
    assert entries["starry_night"].origin == "user" and entries["pastel"].origin == "user"


def test_unknown_name_lists_the_installed_models(user_models: Path) -> None:
    with pytest.raises(InputError, match=r"no model named 'nope'.*starry_night"):
        catalog.resolve_model("nope")
    with pytest.raises(InputError, match="not found"):
        catalog.resolve_model(str(user_models / "missing.safetensors"))


def test_the_style_image_picks_the_model_trained_on_it(user_models: Path, tmp_path: Path) -> None:
    style = _style(tmp_path / "painting.png", 3)
    mine = _save(user_models, "painting", style)
    # A resized copy of the painting still finds it (thumbnail hash, not file hash).
    import cv2

    save_image(tmp_path / "copy.jpg", cv2.resize(style, (224, 160), interpolation=cv2.INTER_LINEAR))
    assert catalog.model_for(None, ((str(tmp_path / "copy.jpg"), 1.0),)) == mine
    assert catalog.model_for(None, ((str(tmp_path / "painting.png"), 1.0),)) == mine
    _style(tmp_path / "other.png", 4)
    with pytest.raises(InputError, match="no feedforward model was trained on other.png.*`mode` optimization"):
        catalog.model_for(None, ((str(tmp_path / "other.png"), 1.0),))
    # An explicit model wins over the style.
    assert catalog.model_for("starry_night", ((str(tmp_path / "other.png"), 1.0),)).name == "starry_night.safetensors"


def test_job_fingerprint_is_the_same_for_a_name_and_its_file(user_models: Path, tmp_path: Path) -> None:
    mine = _save(user_models, "pastel", _style(tmp_path / "p.png", 1))
    by_name = JobSpec(content="c.mp4", output="o/", mode="feedforward", model="pastel")
    by_path = JobSpec(content="c.mp4", output="o/", mode="feedforward", model=str(mine))
    assert by_name.fingerprint_hash() == by_path.fingerprint_hash()


def test_mode_guess_has_one_home() -> None:
    assert guess_mode((), None, None) == "feedforward"
    assert guess_mode((("s.jpg", 1.0),), None, None) == "optimization"
    assert guess_mode((("s.jpg", 1.0),), None, "scream") == "feedforward"
    assert guess_mode((), "v.mp4", "scream") == "style-video"


def test_models_command_lists_names_and_the_user_folder(user_models: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    _save(user_models, "pastel", _style(tmp_path / "p.png", 1))
    (user_models / "broken.safetensors").write_bytes(b"not a model")
    assert main(["models"]) == 0
    text = capsys.readouterr().out
    assert "pastel" in text and "starry_night" in text and str(user_models) in text
    assert "unreadable" in text and "broken.safetensors" in text
    assert "distilled from scream at 0.5x its width and 3 residual blocks (faster)" in text
    # A shipped model fine-tuned in stages shows all of its training, not its last stage alone.
    # (The Scream: 1000 from scratch, 600 with the monotone term, 300 + 300 with photographs.)
    scream = next(line for line in text.splitlines() if line.startswith("scream "))
    assert "2200 steps in 4 stages (the last 300 at 192 px)" in scream
    assert "pastel" in text and "3 steps at" in text
    # One column for the origin, however long a name (woman_with_a_hat-small is 22 characters).
    columns = {line.index(" shipped ") for line in text.splitlines() if " shipped " in line}
    assert len(columns) == 1 and columns.pop() >= len("woman_with_a_hat-small")
    assert main(["models", "--json"]) == 0
    listed = {e["name"]: e for e in json.loads(capsys.readouterr().out)}
    assert listed["pastel"]["origin"] == "user" and listed["pastel"]["training"]["steps"] == 3
