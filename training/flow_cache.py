"""On-disk cache of the optical flow of video training pairs: computed once, reused by
every later run (and by a resumed run)."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from stylecore.flow import flow_pair
from stylecore.io.imageops import atomic_write_bytes

FLOW_PRESET = "medium"
_CACHE_VERSION = 1


class FlowCache:
    """Backward flow (cur -> prev) and occlusion mask of frame pairs, keyed by the source
    file's identity (path, size, mtime), the two frame indices and the working size."""

    def __init__(self, folder: str | Path, warn: Callable[[str], None] | None = None) -> None:
        self.folder = Path(folder)
        self._warn = warn
        self._warned = False
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._cannot_write(exc)

    def _cannot_write(self, exc: OSError) -> None:
        """The cache is only a speed-up: a full disk or a read-only folder must not stop
        training (its checkpoints say so when they cannot be written), but the run gets
        slower, so the user hears it once, with what to do."""
        if self._warned or self._warn is None:
            return
        self._warned = True
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        self._warn(f"warning: the flow cache {self.folder} cannot be written ({reason}); training goes on, "
                   "computing each pair's optical flow again whenever it is drawn (slower): free space there "
                   "or pass --cache-dir")

    def _path(self, source: Path, first: int, second: int, size: tuple[int, int]) -> Path:
        stat = source.stat() if source.exists() else None
        ident = f"{source.resolve()}|{stat.st_size if stat else 0}|{stat.st_mtime_ns if stat else 0}"
        key = f"v{_CACHE_VERSION}|{ident}|{first}|{second}|{size[0]}x{size[1]}|{FLOW_PRESET}"
        return self.folder / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".npz")

    def get(
        self, source: Path, first: int, second: int, prev: np.ndarray, cur: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(flow_bw float16 HxWx2, mask uint8 HxW)`` for the pair, computing it if needed."""
        size = (int(cur.shape[1]), int(cur.shape[0]))
        path = self._path(source, first, second, size)
        if path.is_file():
            try:
                with np.load(path) as data:
                    return data["flow_bw"], data["mask"]
            except (OSError, ValueError, KeyError):
                pass  # a damaged entry is simply recomputed
        pair = flow_pair(prev, cur, preset=FLOW_PRESET)
        flow = pair.flow_bw.astype(np.float16)
        mask = (pair.mask > 0.5).astype(np.uint8)
        buf = io.BytesIO()
        np.savez(buf, flow_bw=flow, mask=mask)
        try:
            atomic_write_bytes(path, buf.getvalue())
        except OSError as exc:
            self._cannot_write(exc)
        return flow, mask
