"""The job folder: a parameters fingerprint, atomically written frames, and resume.

A folder holds the frames of exactly one job. ``JOB_FILE`` records the job's fingerprint
(the parameters that decide the pixels); a re-run with the same fingerprint resumes by
skipping frames that exist, and a different one is refused rather than mixed in. Every
file is written to a hidden temp file and renamed, so a frame that exists is whole.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .errors import InputError, JobMismatchError
from .imageops import atomic_write_bytes, is_temp_name, load_image, save_image

FRAME_NAME = "frame_{:06d}.png"
JOB_FILE = "stylecore-job.json"
_FRAME_RE = re.compile(r"frame_(\d{6})\.png\Z")
# Files an OS or file browser drops into any folder; they do not make it "someone else's".
_OS_JUNK = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})


class JobDir:
    """One job's output folder. ``fingerprint`` is a JSON-ready dict of the job's parameters."""

    def __init__(self, folder: str | Path, fingerprint: dict[str, Any], *, overwrite: bool = False) -> None:
        self.folder = Path(folder)
        # JSON round trip so tuples and lists (and int/float keys) compare as they are stored.
        self.fingerprint: dict[str, Any] = json.loads(json.dumps(fingerprint, sort_keys=True))
        if self.folder.exists() and not self.folder.is_dir():
            raise InputError(f"`output` {self.folder} is a file; give a folder for the frames")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create the output folder {self.folder}: {exc.strerror}") from None
        self._remove_stale_temps()
        self._claim(overwrite)

    # ------------------------------------------------------------ opening

    def _remove_stale_temps(self) -> None:
        """Delete half-written files of a run that was killed (ours only, by name)."""
        for entry in self.folder.iterdir():
            name = entry.name
            if is_temp_name(name) and name.startswith((".frame_", f".{JOB_FILE}")):
                entry.unlink(missing_ok=True)

    def _claim(self, overwrite: bool) -> None:
        job_file = self.folder / JOB_FILE
        if job_file.exists():
            stored = self._read_job_file()
            old = stored.get("fingerprint") if stored is not None else None
            if old == self.fingerprint:
                return  # same job: resume
            if not overwrite:
                if old is None:
                    raise JobMismatchError(
                        f"{self.folder} holds an unreadable {JOB_FILE}; use another `output` folder or `overwrite`"
                    )
                changed = ", ".join(_changed_keys(old, self.fingerprint))
                raise JobMismatchError(
                    f"{self.folder} holds frames of a different job (changed: {changed}); "
                    "use another `output` folder or `overwrite`"
                )
            self._clear()
        else:
            foreign = [
                e.name for e in self.folder.iterdir()
                if e.name not in _OS_JUNK and not is_temp_name(e.name)
            ]
            if foreign and not overwrite:
                shown = ", ".join(sorted(foreign)[:3]) + (", ..." if len(foreign) > 3 else "")
                raise JobMismatchError(
                    f"{self.folder} is not empty and is not a stylecore job folder ({shown}); "
                    "use an empty or new `output` folder, or `overwrite` to replace its frame_NNNNNN.png files"
                )
            if foreign:
                self._clear()
        self._write_job_file({"fingerprint": self.fingerprint, "created": _now(), "done": None})

    def _clear(self) -> None:
        """Remove this job's frames and job file; any other file in the folder is left alone."""
        for number in self.completed():
            self.frame_path(number).unlink(missing_ok=True)
        (self.folder / JOB_FILE).unlink(missing_ok=True)

    def _read_job_file(self) -> dict[str, Any] | None:
        try:
            data = json.loads((self.folder / JOB_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _write_job_file(self, fields: dict[str, Any]) -> None:
        data = {"stylecore_version": __version__, **fields}
        atomic_write_bytes(self.folder / JOB_FILE, json.dumps(data, indent=2, sort_keys=True).encode("utf-8"))

    # ------------------------------------------------------------ frames

    def frame_path(self, number: int) -> Path:
        """Path of output frame ``number`` (1-based, as in Blender)."""
        if number < 1:
            raise ValueError(f"output frames are numbered from 1, got {number}")
        return self.folder / FRAME_NAME.format(number)

    def has_frame(self, number: int) -> bool:
        return self.frame_path(number).is_file()

    def write_frame(self, number: int, img: np.ndarray) -> Path:
        """Write frame ``number`` atomically and return its path."""
        path = self.frame_path(number)
        save_image(path, img)
        return path

    def read_frame(self, number: int) -> np.ndarray:
        return load_image(self.frame_path(number))

    def completed(self) -> list[int]:
        """Numbers of the frames on disk, ascending."""
        numbers = []
        for entry in self.folder.iterdir():
            m = _FRAME_RE.match(entry.name)
            if m and int(m.group(1)) >= 1:
                numbers.append(int(m.group(1)))
        return sorted(numbers)

    def missing(self, total: int) -> list[int]:
        """Frame numbers in ``1..total`` still to be made."""
        have = set(self.completed())
        return [n for n in range(1, total + 1) if n not in have]

    def remove(self) -> None:
        """Delete this job's frames and job file, and the folder if nothing else is left in it.

        For jobs whose product is a video: once it is encoded the frames are not needed.
        """
        self._remove_stale_temps()
        self._clear()
        try:
            self.folder.rmdir()  # fails, harmlessly, when the folder holds anything else
        except OSError:
            pass

    # ------------------------------------------------------------ completion

    def mark_done(self, total: int) -> None:
        """Record that all ``total`` frames are made (the job file keeps its fingerprint)."""
        stored = self._read_job_file() or {}
        self._write_job_file(
            {
                "fingerprint": self.fingerprint,
                "created": stored.get("created", _now()),
                "done": {"frames": total, "finished": _now()},
            }
        )

    def is_done(self) -> bool:
        """True when the job was marked done and all its frames are still on disk."""
        stored = self._read_job_file() or {}
        done = stored.get("done")
        if not isinstance(done, dict) or not isinstance(done.get("frames"), int):
            return False
        return not self.missing(done["frames"])


def _changed_keys(old: Any, new: dict[str, Any]) -> list[str]:
    if not isinstance(old, dict):
        return sorted(new)
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k)) or ["unknown"]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
