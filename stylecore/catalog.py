"""Feedforward models by name: the ones shipped in the package and the user's own.

A model is found by name (``scream``), by file path (``my_style.safetensors``), or by the
style image it was trained on (its 32 px thumbnail hash, so a re-saved or resized copy of
the painting still finds its model). The user's models live in one folder:
``$STYLECORE_MODELS``, else the platform's data folder (``~/.local/share/stylecore/models``
on Linux, ``~/Library/Application Support/stylecore/models`` on macOS,
``%APPDATA%\\stylecore\\models`` on Windows). A user model of the same name as a shipped
one takes precedence. Each model may have a style thumbnail beside it (``NAME.jpg``).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stylecore.errors import InputError, WeightsError

MODEL_SUFFIX = ".safetensors"
THUMBNAIL_SUFFIX = ".jpg"
THUMBNAIL_SIDE = 256
MODELS_ENV = "STYLECORE_MODELS"
# Mean difference (8-bit levels) below which two 32 px style thumbnails are the same
# painting: re-encoding and resizing move them by 1-2 levels, different paintings by tens.
_SAME_STYLE = 4.0
# The model used when neither a model nor a style is given.
DEFAULT_MODEL = "starry_night"


@dataclass(frozen=True)
class ModelEntry:
    """One model file and what its metadata says."""

    name: str
    path: Path
    origin: str  # "shipped" or "user"
    style_name: str
    style_thumbnail_sha256: str
    loss_network: str
    training: dict[str, object]

    @property
    def teacher(self) -> str | None:
        """The model a distilled ("-small") model learnt to reproduce; None for the others."""
        record = self.training.get("teacher")
        return str(record.get("model")) if isinstance(record, dict) else None

    @property
    def thumbnail(self) -> Path | None:
        """The style image's thumbnail beside the model, when there is one."""
        path = self.path.with_suffix(THUMBNAIL_SUFFIX)
        return path if path.is_file() else None


def write_thumbnail(model_path: str | Path, style_image: np.ndarray) -> Path:
    """Save the style's thumbnail (``THUMBNAIL_SIDE`` px long side) beside a model."""
    from stylecore.io.imageops import resize, save_image, scaled_size

    h, w = style_image.shape[:2]
    path = Path(model_path).with_suffix(THUMBNAIL_SUFFIX)
    save_image(path, resize(style_image, scaled_size(w, h, min(THUMBNAIL_SIDE, max(w, h)))))
    return path


def shipped_models_dir() -> Path:
    return Path(__file__).resolve().parent / "models"


def user_models_dir() -> Path:
    """Where trained models go (not created here)."""
    if os.environ.get(MODELS_ENV):
        return Path(os.environ[MODELS_ENV]).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "stylecore" / "models"


def default_model_path() -> Path:
    """The shipped model used when neither ``model`` nor a style is given."""
    return shipped_models_dir() / f"{DEFAULT_MODEL}{MODEL_SUFFIX}"


def list_models() -> list[ModelEntry]:
    """Every readable model: the user's first, then the shipped ones not shadowed by name.

    Unreadable files in the user's folder are left out (``stylecore models`` reports them
    through ``broken_models``)."""
    from stylecore.nets.model_file import read_info

    entries: dict[str, ModelEntry] = {}
    for origin, folder in (("user", user_models_dir()), ("shipped", shipped_models_dir())):
        for path in sorted(folder.glob(f"*{MODEL_SUFFIX}")) if folder.is_dir() else []:
            if path.stem in entries:
                continue
            try:
                info = read_info(path)
            except (InputError, WeightsError):
                continue
            entries[path.stem] = ModelEntry(
                name=path.stem,
                path=path,
                origin=origin,
                style_name=info.style_name,
                style_thumbnail_sha256=info.style_thumbnail_sha256,
                loss_network=info.loss_network,
                training=info.training,
            )
    return sorted(entries.values(), key=lambda e: (e.origin != "user", e.name))


def broken_models() -> list[tuple[Path, str]]:
    """Model files in the user's folder that cannot be read, with the reason."""
    from stylecore.nets.model_file import read_info

    folder = user_models_dir()
    broken: list[tuple[Path, str]] = []
    for path in sorted(folder.glob(f"*{MODEL_SUFFIX}")) if folder.is_dir() else []:
        try:
            read_info(path)
        except (InputError, WeightsError) as exc:
            broken.append((path, str(exc)))
    return broken


def resolve_model(model: str | Path | None) -> Path:
    """The file of ``model``: a path to a ``.safetensors`` file, or a model's name.

    ``None`` is the default shipped model."""
    if model is None or str(model) == "":
        path = default_model_path()
        if not path.is_file():
            raise WeightsError(f"the shipped model {path} is missing; reinstall stylecore")
        return path
    text = str(model)
    path = Path(text).expanduser()
    looks_like_path = path.suffix == MODEL_SUFFIX or os.sep in text or (os.altsep or os.sep) in text
    if looks_like_path:
        if not path.is_file():
            raise InputError(f"model file {path} not found; give an existing {MODEL_SUFFIX} file or a model name "
                             f"from `stylecore models` as `model`")
        return path
    for folder in (user_models_dir(), shipped_models_dir()):
        candidate = folder / f"{text}{MODEL_SUFFIX}"
        if candidate.is_file():
            return candidate
    names = ", ".join(e.name for e in list_models()) or "none"
    raise InputError(f"no model named {text!r} as `model`; installed models: {names} (see `stylecore models`)")


def model_for(model: str | Path | None, styles: tuple[tuple[str, float], ...] = ()) -> Path:
    """The model file a feedforward job uses: ``model`` if given, else the model trained on
    the one style image, else the default model."""
    if model or not styles:
        return resolve_model(model)
    if len(styles) > 1:
        raise InputError("a feedforward model renders one style; give one style image, or use `mode` optimization "
                         "to blend several")
    entry = find_by_style(styles[0][0])
    if entry is None:
        raise InputError(
            f"no feedforward model was trained on {Path(styles[0][0]).name}; train one "
            f"('stylecore train --style {styles[0][0]} -o NAME'), choose a `model` from 'stylecore models', "
            f"or use `mode` optimization, which takes any style image"
        )
    return entry.path


def find_by_style(style_image: str | Path) -> ModelEntry | None:
    """The model trained on this style image, user models first, full models before the
    distilled ("-small") copies of them (those are chosen by name, for speed).

    The same file matches by its thumbnail hash; a re-saved or resized copy matches by the
    model's style thumbnail (``NAME.jpg``), when the two 32 px thumbnails differ by less
    than ``_SAME_STYLE`` on average."""
    from stylecore.io.imageops import load_image
    from stylecore.nets.model_file import style_thumbnail, style_thumbnail_hash

    image = load_image(style_image)
    wanted = style_thumbnail_hash(image)
    entries = sorted(list_models(), key=lambda e: (e.teacher is not None, e.origin != "user", e.name))
    for entry in entries:
        if entry.style_thumbnail_sha256 == wanted:
            return entry
    small = style_thumbnail(image).astype(np.float32)
    best: tuple[float, ModelEntry] | None = None
    for entry in entries:
        if entry.thumbnail is None:
            continue
        distance = float(np.abs(style_thumbnail(load_image(entry.thumbnail)).astype(np.float32) - small).mean())
        if distance < _SAME_STYLE and (best is None or distance < best[0]):
            best = (distance, entry)
    return best[1] if best else None
