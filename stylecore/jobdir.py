"""The job folder: a parameters fingerprint, atomically written frames, and resume.

A folder holds the frames of exactly one job. ``JOB_FILE`` records the job's fingerprint
(the parameters that decide the pixels); a re-run with the same fingerprint resumes by
skipping frames that exist, and a different one is refused rather than mixed in. Every
file is written to a hidden temp file and renamed, so a frame that exists is whole.
"""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from stylecore import __version__
from stylecore.contract import FRAME_NAME
from stylecore.errors import InputError, JobMismatchError, OutputError
from stylecore.io.imageops import atomic_write_bytes, is_temp_name, load_image, save_image, to_pixels
from stylecore.io.segments import SEGMENT_PREFIX, SegmentWriter, find_segments, segment_span

JOB_FILE = "stylecore-job.json"
# Hidden, so frame scans and image-folder sources never see it; present only while a run holds the folder.
LOCK_FILE = ".stylecore-job.lock"
INPUTS_KEY = "inputs"  # the fingerprint's identities of the input files (JobSpec.fingerprint)
# FRAME_NAME with its number as a group.


def _numbered(template: str) -> re.Pattern[str]:
    """A file-name template with one ``{:06d}`` as a pattern with the number as a group."""
    return re.compile(re.escape(template).replace(re.escape("{:06d}"), r"(\d{6})") + r"\Z")


_FRAME_RE = _numbered(FRAME_NAME)
# A frame as the mode made it, at its processing size, when the written frame was resized
# to the source's size (``write_work_frame``). Hidden: image-sequence readers skip it.
_WORK_PREFIX = ".stylecore-work_"
WORK_FRAME_NAME = _WORK_PREFIX + "{:06d}.png"
_WORK_FRAME_RE = _numbered(WORK_FRAME_NAME)
# Files an OS or file browser drops into any folder; they do not make it "someone else's".
_OS_JUNK = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})


def is_job_file_name(name: str) -> bool:
    """A name the job owns in its folder: a frame, a segment of frames or the job file
    (replaced on ``overwrite``)."""
    return (bool(_FRAME_RE.match(name)) or segment_span(name) is not None or bool(_WORK_FRAME_RE.match(name))
            or name == JOB_FILE)


class JobDir:
    """One job's output folder. ``fingerprint`` is a JSON-ready dict of the job's parameters.

    Opening it takes an inter-process lock on the folder, held until ``close`` (or the end
    of a ``with`` block): two runs never write one folder at once.
    """

    # Told of each frame once it is on disk: ``(number, RGB uint8 pixels)``; it must not
    # raise (``io.live_encode.LiveEncode.offer`` encodes the job's video as frames come).
    frame_listener: Callable[[int, np.ndarray], None] | None = None
    # Where frames go instead of PNGs when the job's product is a video (``io.segments``;
    # ``record_as_segments``). Frames already on disk count in either form.
    segments: SegmentWriter | None = None

    @property
    def writes_in_order(self) -> bool:
        """Whether frames must be written in their order (into video segments, or to a
        live encoder); PNG frames may be written by several threads at once."""
        return self.segments is not None or self.frame_listener is not None

    @classmethod
    def attached(cls, folder: str | Path) -> JobDir:
        """The folder of a job that another process holds open (a farm task's view): no
        lock, no claim, no clean-up of temp files (other tasks' frames are in flight)."""
        jobdir = cls.__new__(cls)
        jobdir._attach(folder)
        return jobdir

    def _attach(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.fingerprint = {}
        self._lock = None
        self._created = False
        self._had_segments = bool(find_segments(self.folder))

    def __init__(self, folder: str | Path, fingerprint: dict[str, Any], *, overwrite: bool = False) -> None:
        self.folder = Path(folder)
        # JSON round trip so tuples and lists (and int/float keys) compare as they are stored.
        self.fingerprint: dict[str, Any] = json.loads(json.dumps(fingerprint, sort_keys=True))
        self._lock: FolderLock | None = None
        self._created = False
        self._had_segments = False
        if self.folder.exists() and not self.folder.is_dir():
            raise InputError(f"`output` {self.folder} is a file; give a folder for the frames")
        if not self.folder.exists():
            try:
                self.folder.mkdir(parents=True)
            except FileExistsError:
                pass  # another run made it just now; the lock sorts out who works in it
            except OSError as exc:
                raise OutputError(f"cannot create the output folder {self.folder}: {exc.strerror}") from None
            else:
                self._created = True
        self._lock = FolderLock(self.folder / LOCK_FILE)
        try:
            self._remove_stale_temps()
            self._claim(overwrite)
            self._had_segments = bool(find_segments(self.folder))
        except BaseException:
            self.discard_if_empty()
            raise

    def __enter__(self) -> JobDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the folder's lock (the frames stay)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __del__(self) -> None:  # a JobDir dropped without close() must not keep the folder locked
        self.close()

    def discard_if_empty(self) -> None:
        """Undo the opening when no frame was made: a job that failed before its first frame
        leaves no folder (or, in a folder that was there before, no job file) behind."""
        try:
            if self.completed():
                return
            self._remove_work_frames()
            (self.folder / JOB_FILE).unlink(missing_ok=True)
            self.close()
            if self._created:
                self.folder.rmdir()  # fails, harmlessly, when the folder holds anything else
        except OSError:
            pass
        finally:
            self.close()

    # ------------------------------------------------------------ opening

    def _remove_stale_temps(self) -> None:
        """Delete half-written files of a run that was killed (ours only, by name)."""
        for entry in self.folder.iterdir():
            name = entry.name
            if is_temp_name(name) and name.startswith((".frame_", f".{SEGMENT_PREFIX}", f".{_WORK_PREFIX}",
                                                       f".{JOB_FILE}")):
                entry.unlink(missing_ok=True)

    def _claim(self, overwrite: bool) -> None:
        job_file = self.folder / JOB_FILE
        if job_file.exists():
            stored = self._read_job_file()
            old = stored.get("fingerprint") if stored is not None else None
            if old == self.fingerprint:
                return  # same job: resume
            if not self.completed():
                pass  # a job that made no frame yet holds nothing to protect: take it over
            elif not overwrite:
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
                if e.name not in _OS_JUNK and e.name != LOCK_FILE and not is_temp_name(e.name)
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
        for number in self._frame_files():
            self.frame_path(number).unlink(missing_ok=True)
        for _, _, path in find_segments(self.folder):
            path.unlink(missing_ok=True)
        self._remove_work_frames()
        (self.folder / JOB_FILE).unlink(missing_ok=True)

    def _remove_work_frames(self) -> None:
        if self.folder.is_dir():
            for entry in self.folder.iterdir():
                if _WORK_FRAME_RE.match(entry.name):
                    entry.unlink(missing_ok=True)

    def _read_job_file(self) -> dict[str, Any] | None:
        try:
            data = json.loads((self.folder / JOB_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _write_job_file(self, fields: dict[str, Any]) -> None:
        data = {"stylecore_version": __version__, **fields}
        try:
            atomic_write_bytes(self.folder / JOB_FILE, json.dumps(data, indent=2, sort_keys=True).encode("utf-8"))
        except OSError as exc:
            raise self._write_error(exc) from None

    def _write_error(self, exc: OSError) -> OutputError:
        """A failed write as one line that says what is safe and what to do."""
        if exc.errno == errno.ENOSPC:
            done = len(self.completed())
            return OutputError(
                f"the disk holding {self.folder} is full: {done} finished frame{'s' if done != 1 else ''} "
                "are safe there; free some space and run the same job again to resume"
            )
        return OutputError(f"cannot write in the output folder {self.folder} ({exc.strerror or exc}); "
                           "choose another `output` or fix the folder's permissions")

    # ------------------------------------------------------------ frames

    def frame_path(self, number: int) -> Path:
        """Path of output frame ``number`` (1-based, as in Blender)."""
        if number < 1:
            raise ValueError(f"output frames are numbered from 1, got {number}")
        return self.folder / FRAME_NAME.format(number)

    def has_frame(self, number: int) -> bool:
        if self.frame_path(number).is_file():
            return True
        # Segments are looked for only in a folder that had some when opened or makes them:
        # a listing per call would make a long PNG job's frame checks quadratic.
        return (self._had_segments or self.segments is not None) and any(
            first <= number <= last for first, last, _ in find_segments(self.folder))

    def has_segments(self) -> bool:
        """True when frames of this job are kept as video segments."""
        return bool(find_segments(self.folder))

    def record_as_segments(self, suffix: str, fps: float) -> None:
        """From now on, frames go into video segments of ``suffix`` at ``fps`` (``io.segments``):
        for a job whose product is a video, made from them at the end (``segments.close()`` first)."""
        self.segments = SegmentWriter(self.folder, suffix, fps)

    def write_frame(self, number: int, img: np.ndarray) -> Path:
        """Write frame ``number`` atomically (a PNG, or into the segment in progress) and
        return its path (the segment's planned path: it appears when the segment closes)."""
        pixels = to_pixels(img)
        try:
            if self.segments is not None:
                self.segments.write(number, pixels)
                return self.folder
            path = self.frame_path(number)
            save_image(path, pixels)
        except OSError as exc:
            raise self._write_error(exc) from None
        if self.frame_listener is not None:
            self.frame_listener(number, pixels)
        return path

    def read_frame(self, number: int) -> np.ndarray:
        return load_image(self.frame_path(number))

    def write_work_frame(self, number: int, img: np.ndarray) -> None:
        """Keep frame ``number`` as the mode made it, before it was resized to the source's
        size, for the next frame to start from (``read_work_frame``). Write it before the
        frame itself: a frame on disk then always has its work frame."""
        try:
            save_image(self.folder / WORK_FRAME_NAME.format(number), img)
        except OSError as exc:
            raise self._write_error(exc) from None

    def read_work_frame(self, number: int) -> np.ndarray | None:
        """Frame ``number`` as ``write_work_frame`` kept it; None when it was not kept (a
        frame written at its processing size, or a folder from an earlier version)."""
        path = self.folder / WORK_FRAME_NAME.format(number)
        return load_image(path) if path.is_file() else None

    def completed(self) -> list[int]:
        """Numbers of the frames on disk (as PNGs or in whole segments), ascending."""
        numbers = set(self._frame_files())
        for first, last, _ in find_segments(self.folder):
            numbers.update(range(first, last + 1))
        return sorted(numbers)

    def _frame_files(self) -> list[int]:
        """Numbers of the frames on disk as PNGs."""
        numbers = []
        if not self.folder.is_dir():
            return []
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
        self.close()
        try:
            self.folder.rmdir()  # fails, harmlessly, when the folder holds anything else
        except OSError:
            pass

    # ------------------------------------------------------------ completion

    def mark_done(self, total: int) -> None:
        """Record that all ``total`` frames are made (the job file keeps its fingerprint);
        the work frames, needed only to go on, go."""
        self._remove_work_frames()
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
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and k != INPUTS_KEY)
    old_inputs, new_inputs = old.get(INPUTS_KEY), new.get(INPUTS_KEY)
    if old_inputs != new_inputs:
        if isinstance(old_inputs, dict) and isinstance(new_inputs, dict):
            keys += [_input_name(k) for k in sorted(set(old_inputs) | set(new_inputs))
                     if old_inputs.get(k) != new_inputs.get(k) and k in old_inputs and k in new_inputs]
        else:
            keys.append("the input files")
    return keys or ["unknown"]


def _input_name(key: str) -> str:
    """A key of the fingerprint's ``inputs`` as the refusal names it."""
    if key.startswith("style:"):
        return f"the style image {Path(key[len('style:'):]).name} (changed on disk)"
    return {"content": "the content (changed on disk)", "style_video": "the style video (changed on disk)",
            "model": "the model file (changed on disk)"}.get(key, key)


class FolderLock:
    """An exclusive lock on a job folder between processes, held through an open lock file.

    The OS drops the lock when its holder dies, so a crashed run leaves no stale lock:
    the lock file's text (pid, host) only serves to name the holder in the refusal.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        while True:
            try:
                handle = open(path, "a+b")
            except OSError as exc:
                raise OutputError(f"cannot write in the output folder {path.parent} ({exc.strerror}); "
                                  "choose another `output` or fix the folder's permissions") from None
            if not _try_lock(handle):
                holder = _read_holder(handle)
                handle.close()
                raise OutputError(
                    f"{path.parent} is in use by another stylecore run ({holder}); wait for it to finish "
                    "or stop it, then run again"
                )
            # The previous holder may have deleted the file between our open and our lock:
            # then we hold a lock on a file nobody else can see, so start over.
            try:
                same = os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
            except OSError:
                same = False
            if same:
                break
            _unlock(handle)
            handle.close()
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": _now()}).encode())
        handle.flush()
        self._handle: Any = handle

    def release(self) -> None:
        """Delete the lock file and let go (deleting first: see the check in ``__init__``)."""
        if self._handle is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass
        _unlock(self._handle)
        self._handle.close()
        self._handle = None


def _read_holder(handle: Any) -> str:
    try:
        handle.seek(0)
        data = json.loads(handle.read().decode("utf-8") or "{}")
        pid, host = data.get("pid"), data.get("host")
    except (OSError, ValueError, AttributeError):
        return "process unknown"
    if host and host != socket.gethostname():
        return f"process {pid} on {host}"
    return f"process {pid}" if pid != os.getpid() else f"this process, pid {pid}"


if os.name == "nt":
    import msvcrt

    def _try_lock(handle: Any) -> bool:
        try:
            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _unlock(handle: Any) -> None:
        try:
            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
        except OSError:
            pass

else:
    import fcntl

    def _try_lock(handle: Any) -> bool:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            return False

    def _unlock(handle: Any) -> None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
