"""The job: every parameter of one stylization run, as a frozen dataclass.

A ``JobSpec`` is what the CLI builds from its arguments, what the Blender add-on sends
to the worker as JSON (``JobSpec.from_dict``), and what the job folder fingerprints so
that a re-run with the same parameters resumes and a different one never mixes in.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from collections.abc import Sequence
from typing import Any

from .errors import InputError
from .loss_nets import DEFAULT_LOSS_NET, LOSS_NETS

MODES = ("optimization", "style-video", "feedforward")
PRESERVE_COLORS = ("none", "luminance", "histogram")
STYLE_SYNC = ("index", "time")
STYLE_END = ("loop", "pingpong", "hold")
OPTIMIZERS = ("lbfgs", "adam")

# Fields that change what the frames look like. Anything else (device, output path,
# progress, batch size) may change between runs of one job without invalidating frames.
_NOT_FINGERPRINTED = frozenset(
    {"output", "device", "batch_size", "audio", "compile", "tile", "keep_frames", "extra", "farm", "chunk"}
)


@dataclass(frozen=True)
class JobSpec:
    """All parameters of one stylization job. Paths are strings so the spec is JSON."""

    content: str
    output: str
    mode: str = "optimization"
    # Style images with blend weights: ((path, weight), ...). Weights are normalised.
    styles: tuple[tuple[str, float], ...] = ()
    style_video: str | None = None
    model: str | None = None
    # Source frame range [start, end) of 0-based indices; end -1 = to the end; None = all.
    frames: tuple[int, int] | None = None
    # Explicit source frame index for each output frame (output k+1 <- frame_map[k]);
    # the Blender add-on uses it to honour strip offsets and retiming. Overrides frames.
    frame_map: tuple[int, ...] | None = None
    size: int | None = None  # long side in pixels; None = mode default
    iterations: int = 150  # later frames (warm-started)
    first_iterations: int = 300  # at most: L-BFGS stops earlier once the loss stops falling
    optimizer: str = "lbfgs"
    scales: int = 0  # coarse-to-fine levels; 0 = automatic from the frame size
    content_weight: float = 1.0
    style_weight: float = 1.0
    # Per-output-frame style weights (overrides style_weight frame by frame); a file path
    # given on the command line is read into this tuple by ``schedule.load_schedule``.
    style_weights: tuple[float, ...] | None = None
    tv_weight: float = 1.0
    temporal_weight: float = 1.0
    preserve_colors: str = "none"
    style_scale: float = 1.0
    # "auto" is resolved to the concrete network when the job runs; the job folder records
    # the concrete one, so results of different networks never mix.
    loss_net: str = DEFAULT_LOSS_NET
    vgg_weights: str | None = None
    seed: int = 0
    device: str = "auto"
    # Style-video mapping.
    style_sync: str = "index"
    style_rate: float = 1.0
    style_offset: int = 0
    style_end: str = "loop"
    # Feedforward.
    batch_size: int = 4
    tile: int = 0  # tile size in pixels; 0 = untiled unless memory runs out
    compile: bool = False
    # Video output: frames are made in a job folder beside the video, then encoded.
    audio: bool = True
    keep_frames: bool = False
    # Spread the job over a Ray cluster (``farm.py``): "auto" (a running cluster, or a local
    # one), "ray://HOST:PORT" or "HOST:PORT"; None runs it in this process. Long shots are
    # split into chunks of ``chunk`` frames.
    farm: str | None = None
    chunk: int = 48
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_choice("mode", self.mode, MODES)
        _check_choice("loss_net", self.loss_net, LOSS_NETS)
        _check_choice("preserve_colors", self.preserve_colors, PRESERVE_COLORS)
        _check_choice("style_sync", self.style_sync, STYLE_SYNC)
        _check_choice("style_end", self.style_end, STYLE_END)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        if self.mode == "optimization" and not self.styles:
            raise InputError("optimization mode needs a style image: `style` PATH")
        if self.mode == "style-video" and not self.style_video:
            raise InputError("style-video mode needs a style video: `style_video` PATH")
        if self.frames is not None and self.frames[1] != -1 and self.frames[1] <= self.frames[0]:
            raise InputError(
                f"`frames` {self.frames[0]}:{self.frames[1]} selects no frame; END must be larger than START"
            )
        if self.frame_map is not None and len(self.frame_map) == 0:
            raise InputError("the job's frame_map is empty: there is no frame to stylize")
        if self.size is not None and self.size < 16:
            raise InputError(f"`size` {self.size} is too small; use at least 16 pixels")
        if self.chunk < 1:
            raise InputError(f"`chunk` {self.chunk} must be at least 1 frame")
        if self.iterations < 0 or self.first_iterations < 1:
            raise InputError("`iterations` must be >= 0 and `first_iterations` >= 1")

    def style_weight_at(self, number: int) -> float:
        """Style weight for output frame ``number`` (1-based)."""
        if self.style_weights:
            k = min(max(number - 1, 0), len(self.style_weights) - 1)
            return float(self.style_weights[k])
        return float(self.style_weight)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        """Build from JSON; unknown keys are an error so typos never pass silently."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise InputError(f"unknown job field(s): {', '.join(unknown)}")
        values = dict(data)
        if values.get("styles") is not None:
            values["styles"] = tuple((str(p), float(w)) for p, w in values["styles"])
        for key in ("frames", "frame_map", "style_weights"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        try:
            return cls(**values)
        except TypeError as exc:
            raise InputError(f"malformed job: {exc}") from None

    def fingerprint(self) -> dict[str, Any]:
        """The parameters that decide the pixels of a frame (see ``_NOT_FINGERPRINTED``)."""
        data = {k: v for k, v in self.to_dict().items() if k not in _NOT_FINGERPRINTED}
        if self.mode == "feedforward":  # the model alone decides its pixels
            data.pop("loss_net")
            data.pop("vgg_weights")
        if self.mode == "feedforward":
            # A model's name and its file are the same job.
            from .catalog import model_for

            data["model"] = str(model_for(self.model, self.styles))
        if self.farm is not None and self.mode != "feedforward" and self.temporal_weight > 0:
            # Each chunk starts its own temporal chain: the chunk size decides the pixels.
            data["chunk"] = self.chunk
        # The same file named relatively or absolutely is the same job.
        for key in ("content", "style_video", "model", "vgg_weights"):
            if data.get(key):
                data[key] = os.path.abspath(data[key])
        data["styles"] = [[os.path.abspath(p), w] for p, w in data["styles"]]
        return data

    def fingerprint_hash(self) -> str:
        text = json.dumps(self.fingerprint(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def guess_mode(styles: Sequence[object], style_video: str | None, model: str | None) -> str:
    """The mode when none is asked for: style-video with a style video, feedforward with a
    model, optimization with style images, else the default feedforward model."""
    if style_video:
        return "style-video"
    if model:
        return "feedforward"
    return "optimization" if styles else "feedforward"


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InputError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
