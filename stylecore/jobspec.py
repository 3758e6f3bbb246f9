"""The job: every parameter of one stylization run, as a frozen dataclass.

A ``JobSpec`` is what the CLI builds from its arguments, what the Blender add-on sends
to the worker as JSON (``JobSpec.from_dict``), and what the job folder fingerprints so
that a re-run with the same parameters resumes and a different one never mixes in.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Sequence
from typing import Any

from stylecore.contract import MODES, PRESERVE_COLORS, UNHASHED_FIELDS, VIDEO_SUFFIXES
from stylecore.errors import InputError
from stylecore.nets.loss_nets import DEFAULT_LOSS_NET, LOSS_NETS

# Media formats a user may mean but that stylecore does not write: refused, never made a folder.
NOT_WRITTEN_SUFFIXES = frozenset({
    ".gif", ".apng", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".exr", ".webp", ".avif", ".heic",
    ".ts", ".mts", ".m2ts", ".flv", ".wmv", ".mpg", ".mpeg", ".ogv", ".ogg", ".3gp", ".mxf", ".vob", ".f4v",
})
# Inputs up to this size are identified by their bytes' hash (style images, models, short
# clips, rendered frames: milliseconds), larger ones by size and modification time.
_HASH_UP_TO = 16 << 20
# Larger than any frame a GPU can stylize; a bigger `size` is a typo, not a wish.
MAX_SIZE = 32768
STYLE_SYNC = ("index", "time")
STYLE_END = ("loop", "pingpong", "hold")
OPTIMIZERS = ("lbfgs", "adam")

# Fields left out of the fingerprint: those that never change the pixels, and the farm's,
# whose chunk ``fingerprint`` puts back where it starts temporal chains.
_NOT_FINGERPRINTED = UNHASHED_FIELDS | {"farm", "chunk"}


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
    iterations: int = 150  # later frames (warm-started), at most: see optimize.LATER_TOLERANCE
    first_iterations: int = 300  # at most: L-BFGS stops earlier once the loss stops falling
    optimizer: str = "lbfgs"
    # Optimization and style-video: run the loss network in bfloat16. None = where that is
    # faster (CUDA, CPUs with AVX512-BF16/AMX); see ``optimize._features``.
    bf16: bool | None = None
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
    # torch.compile the network: None = when the job is long enough to repay it (on a CPU).
    compile: bool | None = None
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
        _check_fields(self)
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
        if self.size is not None and self.size > MAX_SIZE:
            raise InputError(f"`size` {self.size} is too large; use at most {MAX_SIZE} pixels")
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
            values["styles"] = _style_pairs(values["styles"])
        for key in ("frames", "frame_map", "style_weights"):
            if values.get(key) is not None:
                if not isinstance(values[key], (list, tuple)):
                    raise InputError(f"`{key}` must be a list, not {_shown(values[key])}")
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
            from stylecore.catalog import model_for

            data["model"] = str(model_for(self.model, self.styles))
        if self.farm is not None and self.mode != "feedforward" and self.temporal_weight > 0:
            # Each chunk starts its own temporal chain: the chunk size decides the pixels.
            data["chunk"] = self.chunk
        # The same file named relatively or absolutely is the same job.
        for key in ("content", "style_video", "model", "vgg_weights"):
            if data.get(key):
                data[key] = os.path.abspath(data[key])
        data["styles"] = [[os.path.abspath(p), w] for p, w in data["styles"]]
        # A path names a file, not its pixels: a clip re-rendered to the same path is
        # another job. (A schedule file is read into `style_weights`, so its values are here.)
        inputs = {"content": input_identity(data["content"])}
        if data.get("style_video"):
            inputs["style_video"] = input_identity(data["style_video"])
        if self.mode == "feedforward":
            inputs["model"] = input_identity(data["model"])
        for path, _ in data["styles"]:
            inputs[f"style:{path}"] = input_identity(path)
        data["inputs"] = inputs
        return data

    def fingerprint_hash(self) -> str:
        text = json.dumps(self.fingerprint(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def input_identity(path: str) -> str:
    """What a content, style, style video or model path holds, cheaply: the bytes' hash
    for files up to ``_HASH_UP_TO`` (a copy or a touch that changes nothing is the same
    input), else size and modification time; for an image folder or pattern, of each
    image. ``"missing"`` when nothing is there (the job then fails on its own)."""
    p = Path(path)
    try:
        if p.is_file():
            return _file_identity(p)
        if p.is_dir():
            from stylecore.contract import IMAGE_EXTENSIONS

            files = sorted(e for e in p.iterdir() if e.suffix.lower() in IMAGE_EXTENSIONS and e.is_file()
                           and not e.name.startswith("."))
        else:
            from stylecore.io.sources import pattern_files

            files = pattern_files(path)
    except (OSError, InputError):
        return "missing"
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.name}\0{_file_identity(file)}\0".encode())
    return f"files:{len(files)}:{digest.hexdigest()[:32]}"


def _file_identity(path: Path) -> str:
    try:
        stat = path.stat()
        if stat.st_size > _HASH_UP_TO:
            return f"stat:{stat.st_size}:{stat.st_mtime_ns}"
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return "sha256:" + digest.hexdigest()[:32]
    except OSError:
        return "missing"


def guess_mode(styles: Sequence[object], style_video: str | None, model: str | None) -> str:
    """The mode when none is asked for: style-video with a style video, feedforward with a
    model, optimization with style images, else the default feedforward model."""
    if style_video:
        return "style-video"
    if model:
        return "feedforward"
    return "optimization" if styles else "feedforward"


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise InputError(f"{name} must be one of {', '.join(choices)}, not {value!r}")


# Field checks shared by every caller (CLI, Python API, worker): each number is of its
# kind and finite, so a NaN or a string never reaches the pixels.
_INTS = {  # name: (smallest allowed, why)
    "iterations": 0, "first_iterations": 1, "scales": 0, "seed": None, "style_offset": None,
    "batch_size": 1, "tile": 0, "chunk": 1,
}
_FLOATS = {  # name: (smallest allowed, whether the smallest itself is allowed)
    "content_weight": (0.0, True), "style_weight": (0.0, True), "tv_weight": (0.0, True),
    "temporal_weight": (0.0, True), "style_scale": (0.0, False), "style_rate": (0.0, True),
}
_PATHS = ("content", "output")
_OPTIONAL_PATHS = ("style_video", "model", "vgg_weights")
_BOOLS = ("audio", "keep_frames")
_OPTIONAL_BOOLS = ("compile", "bf16")  # None = automatic


def _check_fields(spec: JobSpec) -> None:
    """Types and ranges of every field; floats are normalised to ``float`` so that a
    weight sent as 1 and one sent as 1.0 fingerprint alike."""
    for name in _PATHS:
        value = getattr(spec, name)
        if not isinstance(value, str) or not value:
            raise InputError(f"`{name}` must be a path, not {_shown(value)}")
    for name in _OPTIONAL_PATHS:
        value = getattr(spec, name)
        if value is not None and (not isinstance(value, str) or not value):
            raise InputError(f"`{name}` must be a path or empty, not {_shown(value)}")
    for name in _BOOLS:
        if not isinstance(getattr(spec, name), bool):
            raise InputError(f"`{name}` must be true or false, not {_shown(getattr(spec, name))}")
    for name in _OPTIONAL_BOOLS:
        if getattr(spec, name) is not None and not isinstance(getattr(spec, name), bool):
            raise InputError(f"`{name}` must be true, false or empty (automatic), not {_shown(getattr(spec, name))}")
    if not isinstance(spec.extra, dict):
        raise InputError(f"`extra` must be a JSON object, not {_shown(spec.extra)}")
    if spec.farm is not None and (not isinstance(spec.farm, str) or not spec.farm):
        raise InputError(f"`farm` must be 'auto' or a Ray address, not {_shown(spec.farm)}")
    for name, low in _INTS.items():
        value = getattr(spec, name)
        _check_int(name, value)
        if low is not None and value < low:
            raise InputError(f"`{name}` {value} must be at least {low}")
    if spec.size is not None:
        _check_int("size", spec.size)
    for name, (low, inclusive) in _FLOATS.items():
        value = _finite(name, getattr(spec, name))
        if value < low or (value == low and not inclusive):
            raise InputError(f"`{name}` {value:g} must be {'>=' if inclusive else '>'} {low:g}")
        object.__setattr__(spec, name, value)
    if not isinstance(spec.styles, tuple):
        raise InputError(f"`style` must be a list of (path, weight) pairs, not {_shown(spec.styles)}")
    object.__setattr__(spec, "styles", _style_pairs(spec.styles))
    if spec.styles and sum(w for _, w in spec.styles) <= 0:
        raise InputError("style blend weights must not all be zero (`style` a.jpg:0.7 `style` b.jpg:0.3)")
    if spec.frames is not None:
        if not isinstance(spec.frames, tuple) or len(spec.frames) != 2:
            raise InputError(f"`frames` must be a START:END pair, not {_shown(spec.frames)}")
        for value in spec.frames:
            _check_int("frames", value)
        if spec.frames[0] < 0 or spec.frames[1] < -1:
            raise InputError(f"`frames` {spec.frames[0]}:{spec.frames[1]} must count from 0")
    if spec.frame_map is not None:
        if not isinstance(spec.frame_map, tuple):
            raise InputError(f"frame_map must be a list of source frame numbers, not {_shown(spec.frame_map)}")
        for value in spec.frame_map:
            _check_int("frame_map", value)
            if value < 0:
                raise InputError(f"frame_map holds {value}; source frames count from 0")
    if spec.style_weights is not None:
        if not isinstance(spec.style_weights, tuple) or not spec.style_weights:
            raise InputError(f"`style_weight` schedule must be a non-empty list, not {_shown(spec.style_weights)}")
        weights = tuple(_finite("style_weight", w) for w in spec.style_weights)
        if min(weights) < 0:
            raise InputError(f"`style_weight` {min(weights):g} in the schedule must be >= 0")
        object.__setattr__(spec, "style_weights", weights)


def _style_pairs(styles: Any) -> tuple[tuple[str, float], ...]:
    """``[[path, weight], ...]`` -> ``((path, weight), ...)``, refusing anything else."""
    if not isinstance(styles, (list, tuple)):
        raise InputError(f"`style` must be a list of (path, weight) pairs, not {_shown(styles)}")
    pairs = []
    for item in styles:
        if not isinstance(item, (list, tuple)) or len(item) != 2 or not isinstance(item[0], str) or not item[0]:
            raise InputError(f"each `style` must be a (path, weight) pair, not {_shown(item)}")
        weight = _finite("style", item[1])
        if weight < 0:
            raise InputError(f"`style` {item[0]} has weight {weight:g}; blend weights must be >= 0")
        pairs.append((item[0], weight))
    return tuple(pairs)


def _check_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"`{name}` must be a whole number, not {_shown(value)}")


def _finite(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"`{name}` must be a finite number, not {_shown(value)}")
    return float(value)


def _shown(value: Any) -> str:
    """A value as a one-line message quotes it: short, and never multi-line."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
