"""Train a named style model: what ``stylecore train`` and the worker's ``train`` job run.

A ``TrainJob`` names a style image, the content to learn from (the user's own clip, and
the general data: the sample stills shipped with a checkout plus any folders given or
listed in ``$STYLECORE_TRAINING_DATA``), a quality preset and where the model goes: a
name (-> the user's model folder, where ``stylecore models`` and the add-on find it) or
a ``.safetensors`` path. It writes the model, its metadata and a thumbnail of the style
(``NAME.jpg``). Running the same job again resumes its checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stylecore.catalog import MODEL_SUFFIX, user_models_dir
from stylecore.errors import InputError

from .config import TrainConfig

# Steps per quality preset, at the default crop size: 'draft' shows the style within
# minutes on a GPU, 'best' matches the shipped models' settings.
QUALITY_STEPS = {"draft": 300, "good": 1500, "best": 4000}
DEFAULT_QUALITY = "good"
DATA_ENV = "STYLECORE_TRAINING_DATA"
# Sample content a checkout ships (samples/): a portrait, an animal and a meadow clip.
_SAMPLE_CONTENT = ("astronaut_512x384.jpg", "chelsea_451x300.jpg", "bunny_96f_320x180.mp4")
# Job fields a caller may set, with their TrainConfig counterparts where they differ.
_CONFIG_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig)) - {"style", "data", "out", "resume", "restart"}


@dataclass(frozen=True)
class TrainJob:
    """One training request: see the module docstring. ``options`` are further
    ``TrainConfig`` fields (``size``, ``loss_net``, ``batch_size``, ...)."""

    style: str
    output: str  # a model name, or a path ending in .safetensors
    content: tuple[str, ...] = ()  # the user's own footage (videos, frame folders, stills)
    data: tuple[str, ...] | None = None  # general data; None = the defaults (see general_data)
    quality: str = DEFAULT_QUALITY
    steps: int | None = None  # overrides the preset
    restart: bool = False
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainJob:
        """From a worker request's ``job``: known fields, the rest must be training options."""
        values = dict(values)
        known = {f.name for f in dataclasses.fields(cls)} - {"options"}
        mine = {k: values.pop(k) for k in list(values) if k in known}
        unknown = sorted(set(values) - _CONFIG_FIELDS)
        if unknown:
            raise InputError(f"unknown training option(s): {', '.join(unknown)}")
        for key in ("content", "data"):
            if mine.get(key) is not None:
                mine[key] = tuple(str(p) for p in mine[key])
        if "style" not in mine or "output" not in mine:
            raise InputError("a training job needs `style` and `output`")
        return cls(**mine, options=values)

    def model_path(self) -> Path:
        return model_destination(self.output)

    def config(self) -> TrainConfig:
        if self.quality not in QUALITY_STEPS:
            raise InputError(f"`quality` must be one of {', '.join(QUALITY_STEPS)}, not {self.quality!r}")
        style = Path(self.style).expanduser()
        if not style.is_file():
            raise InputError(f"style image {style} not found; give an existing image as `style`")
        data = [*self.content, *(general_data() if self.data is None else self.data)]
        if not data:
            raise InputError("no training content: give your own footage as `content`, or general data as `data`")
        out = self.model_path()
        values: dict[str, Any] = {
            "steps": self.steps or QUALITY_STEPS[self.quality],
            # The flow cache is shared by every model trained on the same footage.
            "cache_dir": str(user_models_dir().parent / "flow-cache"),
            **self.options,
        }
        return TrainConfig(style=str(style), data=tuple(data), out=str(out), resume=not self.restart,
                           restart=self.restart, **values)


def model_destination(output: str) -> Path:
    """A name -> the user's model folder; a ``.safetensors`` path stays as it is."""
    text = output.strip()
    if not text:
        raise InputError("give the model a name or a .safetensors path as `output`")
    if text.endswith(MODEL_SUFFIX) or os.sep in text or "/" in text:
        path = Path(text).expanduser()
        if path.suffix != MODEL_SUFFIX:
            raise InputError(f"{path}: model files end in {MODEL_SUFFIX}; give a name or a {MODEL_SUFFIX} path as `output`")
        return path.resolve()
    if not re.fullmatch(r"[\w.-]+", text):
        raise InputError(f"model name {text!r}: use letters, digits, '_', '-' and '.' only in `output`")
    return user_models_dir() / f"{text}{MODEL_SUFFIX}"


def name_for_style(style: str | Path) -> str:
    """A model name made from a style image's file name (``The Scream.jpg`` -> ``the_scream``)."""
    return re.sub(r"[^\w.-]+", "_", Path(style).stem).strip("._").lower() or "style"


def general_data() -> list[str]:
    """The general training content: ``$STYLECORE_TRAINING_DATA`` (paths separated by
    ``os.pathsep``) and the sample content of a checkout, where they exist."""
    found = [p for p in os.environ.get(DATA_ENV, "").split(os.pathsep) if p.strip()]
    samples = Path(__file__).resolve().parents[1] / "samples"
    found += [str(samples / name) for name in _SAMPLE_CONTENT if (samples / name).is_file()]
    return found


def run_train_job(
    job: TrainJob,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    log: Callable[[str], None] | None = None,
    command: str = "",
) -> Path:
    """Train (or resume) the job's model; returns its path. Raises ``Cancelled`` when
    ``cancel`` says so (the checkpoint is kept: running the job again resumes)."""
    from stylecore.catalog import write_thumbnail
    from stylecore.io.imageops import load_image

    from .loop import train

    config = job.config()
    out = Path(config.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    emit = on_event or (lambda event: None)
    # First: the style shows in the model list at once (training writes it again at the end).
    write_thumbnail(out, load_image(config.style))
    path = train(config, log=log or (lambda line: None), command=command,
                 on_event=lambda e: emit({**e, "name": out.stem} if e.get("event") == "done" else e), cancel=cancel)
    return path
