"""Per-frame style-weight schedules: ``--style-weight 5`` or ``--style-weight ramp.json``.

A schedule file gives one weight per output frame (frames numbered from 1):

- a JSON list ``[1.0, 1.5, ...]``, one weight per frame;
- a JSON object ``{"1": 1.0, "48": 10.0}`` of keyframes, linearly interpolated between
  keys and held constant before the first and after the last;
- a text/CSV file of ``frame,weight`` lines (keyframes, as the object), or of one weight
  per line (as the list). Blank lines, ``#`` comments and a header line are skipped.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from stylecore.errors import InputError


def parse_style_weight(text: str) -> float | Path:
    """A style weight from the command line: a non-negative number, or an existing schedule file."""
    try:
        value = float(text)
    except ValueError:
        path = Path(text)
        if path.is_file():
            return path
        raise InputError(
            f"`style_weight` {text!r} is neither a number nor an existing schedule file (.json or .csv)"
        ) from None
    _check_weight(value, f"`style_weight` {text}")
    return value


def load_schedule(path: str | Path, count: int) -> tuple[float, ...]:
    """Weights for output frames ``1..count`` from a schedule file."""
    path = Path(path)
    if count < 1:
        raise InputError(f"a schedule needs at least one frame, got {count}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError:
        raise InputError(f"cannot read the style-weight schedule {path}; check the path") from None
    if path.suffix.lower() == ".json" or text.lstrip()[:1] in ("[", "{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"schedule {path} is not valid JSON ({exc.msg}, line {exc.lineno})") from None
        return _from_json(data, count, path)
    return _from_lines(text, count, path)


def _from_json(data: Any, count: int, path: Path) -> tuple[float, ...]:
    if isinstance(data, list):
        return _from_list([_number(v, path, f"item {i + 1}") for i, v in enumerate(data)], count, path)
    if isinstance(data, dict):
        keys = {}
        for key, value in data.items():
            try:
                frame = int(str(key).strip())
            except ValueError:
                raise InputError(f"schedule {path}: key {key!r} is not a frame number") from None
            keys[frame] = _number(value, path, f"frame {key}")
        return _interpolate(keys, count, path)
    raise InputError(f"schedule {path} must hold a JSON list of weights or an object {{\"frame\": weight}}")


def _from_lines(text: str, count: int, path: Path) -> tuple[float, ...]:
    rows: list[tuple[int, list[str]]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if line:
            rows.append((lineno, [f for f in re.split(r"[,;\s]+", line) if f]))
    if rows and not _is_number(rows[0][1][0]):
        rows = rows[1:]  # a header such as "frame,weight"
    if not rows:
        raise InputError(f"schedule {path} holds no weights; write one 'frame,weight' per line")
    widths = {len(fields) for _, fields in rows}
    if widths == {1}:
        return _from_list([_number(f[0], path, f"line {n}") for n, f in rows], count, path)
    if widths != {2}:
        raise InputError(f"schedule {path}: each line must be 'frame,weight' (or all lines one weight)")
    keys: dict[int, float] = {}
    for lineno, (frame_text, weight_text) in rows:
        try:
            frame = int(frame_text)
        except ValueError:
            raise InputError(f"schedule {path}, line {lineno}: {frame_text!r} is not a frame number") from None
        if frame in keys:
            raise InputError(f"schedule {path}, line {lineno}: frame {frame} is given twice")
        keys[frame] = _number(weight_text, path, f"line {lineno}")
    return _interpolate(keys, count, path)


def _from_list(weights: list[float], count: int, path: Path) -> tuple[float, ...]:
    # A longer list is fine (a schedule made for the whole clip); a shorter one would
    # leave frames without a weight.
    if len(weights) < count:
        raise InputError(
            f"schedule {path} has {len(weights)} weights but the job has {count} frames; "
            "give one per frame, or keyframes as {\"frame\": weight}"
        )
    return tuple(weights[:count])


def _interpolate(keys: dict[int, float], count: int, path: Path) -> tuple[float, ...]:
    if not keys:
        raise InputError(f"schedule {path} holds no keyframes")
    if min(keys) < 1:
        raise InputError(f"schedule {path}: frame numbers start at 1, got {min(keys)}")
    frames = sorted(keys)
    # np.interp holds the end values outside the keys, as the schedule format promises.
    values = np.interp(np.arange(1, count + 1), frames, [keys[f] for f in frames])
    return tuple(float(v) for v in values)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _number(value: Any, path: Path, where: str) -> float:
    if isinstance(value, bool):
        raise InputError(f"schedule {path}, {where}: {value!r} is not a number")
    try:
        weight = float(value)
    except (TypeError, ValueError):
        raise InputError(f"schedule {path}, {where}: {value!r} is not a number") from None
    _check_weight(weight, f"schedule {path}, {where}")
    return weight


def _check_weight(value: float, where: str) -> None:
    if not math.isfinite(value) or value < 0:
        raise InputError(f"{where}: a style weight must be a finite number >= 0, got {value}")
