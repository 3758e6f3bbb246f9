"""Training data: videos, image sequences and still images found under ``--data``.

``--data`` is a video file, or a folder holding any mix of
- video files (``.mp4``, ``.mov``, ...): consecutive frame pairs, flow computed once and cached;
- sub-folders of images: each is an image sequence, used like a video;
- image files directly in the folder: still images, turned into pairs by synthetic motion.
Video frames also feed synthetic motion (``synthetic_fraction`` of the pairs), whose
flow is exact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stylecore.errors import InputError
from stylecore.contract import IMAGE_EXTENSIONS
from stylecore.io.sources import open_source
from stylecore.io.imageops import load_image, resize

from .flow_cache import FlowCache
from .pairs import TrainPair, random_window, to_float, to_uint8
from .synthetic import MotionRange, synthetic_pair

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg"})
# Frames are stored with their short side this much larger than the crop, so crops vary.
_MARGIN = 1.15
# Pairs whose flow is reliable on less than this share of pixels are scene cuts or fades.
_MIN_RELIABLE = 0.3
# Nearly black frames (fade-ins) teach nothing about style.
_MIN_MEAN = 0.04
# The smallest window an enlarged crop is taken from: below it a crop holds too little.
_MIN_WINDOW = 32


@dataclass(frozen=True)
class DataSources:
    clips: tuple[Path, ...] = ()  # videos and image-sequence folders
    stills: tuple[Path, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.clips and not self.stills


def scan_data(paths: str | Path | tuple[str | Path, ...] | list[str | Path]) -> DataSources:
    """Classify what the ``--data`` paths hold (see the module docstring)."""
    if isinstance(paths, (str, Path)):
        return _scan_one(paths)
    clips: list[Path] = []
    stills: list[Path] = []
    for path in paths:
        found = _scan_one(path)
        clips += [c for c in found.clips if c not in clips]
        stills += [s for s in found.stills if s not in stills]
    if not clips and not stills:
        raise InputError("no `data` was given; give a folder of videos, image sequences or images")
    return DataSources(tuple(clips), tuple(stills))


def _scan_one(path: str | Path) -> DataSources:
    root = Path(path).expanduser()
    if root.is_file():
        if root.suffix.lower() in IMAGE_EXTENSIONS:
            return DataSources(stills=(root,))
        return DataSources(clips=(root,))
    if not root.is_dir():
        raise InputError(f"`data` {root} does not exist; give a folder of videos, image sequences or images")
    clips: list[Path] = []
    stills: list[Path] = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        suffix = entry.suffix.lower()
        if entry.is_file() and suffix in VIDEO_EXTENSIONS:
            clips.append(entry)
        elif entry.is_file() and suffix in IMAGE_EXTENSIONS:
            stills.append(entry)
        elif entry.is_dir() and any(f.suffix.lower() in IMAGE_EXTENSIONS for f in entry.iterdir()):
            clips.append(entry)
    found = DataSources(tuple(clips), tuple(stills))
    if found.empty:
        raise InputError(
            f"`data` {root} holds no videos, image-sequence folders or images; "
            f"add some ({', '.join(sorted(VIDEO_EXTENSIONS))} or images)"
        )
    return found


def _working_size(width: int, height: int, crop: int) -> tuple[int, int]:
    """Scale so the short side is ``crop * _MARGIN`` (never below the crop)."""
    scale = crop * _MARGIN / min(width, height)
    return max(crop, round(width * scale)), max(crop, round(height * scale))


def load_clip_pairs(
    path: Path, crop: int, max_pairs: int, gap: int, cache: FlowCache, log: Callable[[str], None]
) -> list[TrainPair]:
    """Up to ``max_pairs`` frame pairs ``(i, i + gap)`` spread evenly over a clip."""
    with open_source(path) as source:
        count = source.info.count
        if count <= gap:
            log(f"  {path.name}: only {count} frame(s), skipped")
            return []
        firsts = np.unique(np.linspace(0, count - 1 - gap, num=min(max_pairs, count - gap)).round().astype(int))
        wanted = sorted({int(i) for i in firsts} | {int(i) + gap for i in firsts})
        size = _working_size(source.info.width, source.info.height, crop)
        frames: dict[int, np.ndarray] = {}
        for index, frame in source.iter_frames(wanted):
            frames[index] = to_uint8(resize(frame, size))  # uint8: 4x less memory
    pairs: list[TrainPair] = []
    for first in firsts:
        prev, cur = frames[int(first)], frames[int(first) + gap]
        if min(prev.mean(), cur.mean()) < _MIN_MEAN * 255:
            continue
        flow, mask = cache.get(path, int(first), int(first) + gap, to_float(prev), to_float(cur))
        if mask.mean() < _MIN_RELIABLE:
            continue
        pairs.append(TrainPair(prev, cur, flow, mask, frame=cur))
    log(f"  {path.name}: {len(pairs)} frame pairs at {size[0]}x{size[1]}")
    return pairs


def load_still(path: Path, crop: int) -> np.ndarray:
    img = load_image(path)
    return to_uint8(resize(img, _working_size(img.shape[1], img.shape[0], crop)))


@dataclass
class PairSampler:
    """Draws training pairs: real video pairs, or synthetic motion on stills / video frames."""

    clip_pairs: list[TrainPair]
    stills: list[np.ndarray]
    size: int
    synthetic_fraction: float
    motion: MotionRange = field(default_factory=MotionRange)
    # Crops show their content enlarged by up to this factor (log-uniform; 1 = as stored):
    # footage larger than the training crops, e.g. HD, reaches the network at that scale.
    zoom: float = 1.0
    # Share of pairs drawn from ``stills`` when there are clip pairs too; None = draw
    # synthetic motion uniformly over stills and video frames alike.
    still_fraction: float | None = None
    # Share of the clip pairs drawn from ``hard`` (indices into ``clip_pairs``: the pairs a
    # copy paints least like its teacher, training.hard_pairs) instead of from all of them.
    hard_fraction: float = 0.0
    hard: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not self.clip_pairs and not self.stills:
            raise InputError("no usable training frames were found in `data` (all clips too short, too dark or without texture to follow)")

    def draw(self, rng: np.random.Generator) -> TrainPair:
        if self.zoom <= 1.0:
            return self._draw(self.size, rng)
        scale = float(np.exp(rng.uniform(0.0, np.log(self.zoom))))
        return self._draw(max(_MIN_WINDOW, round(self.size / scale)), rng).enlarged(self.size)

    def _draw(self, size: int, rng: np.random.Generator) -> TrainPair:
        """A ``size x size`` pair from the stored frames."""
        stills = self.stills
        if self.still_fraction is not None and stills and self.clip_pairs:
            # A still with probability still_fraction; otherwise the video alone, as if
            # there were no stills.
            if rng.random() >= self.still_fraction:
                stills = []
            else:
                return self._moved(stills[int(rng.integers(len(stills)))], size, rng)
        use_synthetic = not self.clip_pairs or rng.random() < self.synthetic_fraction
        if not use_synthetic:
            return random_window(self.clip_pairs[self._clip_index(rng)], size, rng)
        pool = len(stills) + len(self.clip_pairs)
        k = int(rng.integers(pool))
        image = stills[k] if k < len(stills) else self.clip_pairs[k - len(stills)].cur
        return self._moved(image, size, rng)

    def _clip_index(self, rng: np.random.Generator) -> int:
        # No draw for the hard share unless it is asked for: runs without it keep their
        # random stream (and the shipped stages their pairs).
        if self.hard_fraction > 0 and self.hard is not None and len(self.hard) and rng.random() < self.hard_fraction:
            return int(self.hard[int(rng.integers(len(self.hard)))])
        return int(rng.integers(len(self.clip_pairs)))

    def _moved(self, image: np.ndarray, size: int, rng: np.random.Generator) -> TrainPair:
        """A pair made by synthetic motion of ``image``, played forwards or backwards."""
        pair = synthetic_pair(image, size, rng, self.motion)
        return pair.flipped() if rng.random() < 0.5 else pair


def build_sampler(
    sources: DataSources, size: int, synthetic_fraction: float, max_pairs: int, gap: int, cache: FlowCache,
    log: Callable[[str], None], zoom: float = 1.0, still_fraction: float | None = None, hard_fraction: float = 0.0,
) -> PairSampler:
    log(f"data: {len(sources.clips)} clip(s), {len(sources.stills)} still image(s)")
    clip_pairs: list[TrainPair] = []
    for clip in sources.clips:
        clip_pairs += load_clip_pairs(clip, size, max_pairs, gap, cache, log)
    stills = [load_still(p, size) for p in sources.stills]
    return PairSampler(clip_pairs, stills, size, synthetic_fraction, zoom=zoom, still_fraction=still_fraction,
                       hard_fraction=hard_fraction)
