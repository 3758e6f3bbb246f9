"""Job folders: fingerprints, atomic frames, resume, overwrite and stale temp files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stylecore import __version__
from stylecore.errors import InputError, JobMismatchError, OutputError
from stylecore.jobdir import FRAME_NAME, JOB_FILE, LOCK_FILE, JobDir

FP = {"content": "clip.mp4", "style_weight": 1.0, "size": 256, "frames": (0, 10)}


def _img(value: float) -> np.ndarray:
    return np.full((6, 8, 3), value, np.float32)


def test_new_job_writes_job_file_and_frames(tmp_path: Path) -> None:
    job = JobDir(tmp_path / "out" / "nested", FP)
    data = json.loads((job.folder / JOB_FILE).read_text())
    assert data["fingerprint"] == {**FP, "frames": [0, 10]}
    assert data["stylecore_version"] == __version__ and data["created"]
    path = job.write_frame(3, _img(0.5))
    assert path == job.folder / "frame_000003.png" == job.frame_path(3)
    assert job.has_frame(3) and not job.has_frame(1)
    np.testing.assert_allclose(job.read_frame(3), 128 / 255, atol=1e-6)
    job.write_frame(1, _img(0.1))
    assert job.completed() == [1, 3]
    assert job.missing(4) == [2, 4]
    job.close()  # the lock file goes with the lock
    assert sorted(p.name for p in job.folder.iterdir()) == sorted([JOB_FILE, "frame_000001.png", "frame_000003.png"])
    with pytest.raises(ValueError):
        job.frame_path(0)


def test_same_fingerprint_resumes(tmp_path: Path) -> None:
    JobDir(tmp_path, FP).write_frame(1, _img(0.2))
    # Key order and tuple-vs-list do not make a different job.
    again = JobDir(tmp_path, {"frames": [0, 10], "size": 256, "style_weight": 1.0, "content": "clip.mp4"})
    assert again.completed() == [1]


def test_different_fingerprint_is_refused_naming_changes(tmp_path: Path) -> None:
    JobDir(tmp_path, FP).write_frame(1, _img(0.2))
    changed = {**FP, "style_weight": 5.0, "size": 512}
    with pytest.raises(JobMismatchError, match=r"changed: size, style_weight\).*`overwrite`"):
        JobDir(tmp_path, changed)
    assert (tmp_path / "frame_000001.png").exists()  # refused without touching anything


def test_overwrite_removes_only_the_jobs_files(tmp_path: Path) -> None:
    with JobDir(tmp_path, FP) as job:
        job.write_frame(1, _img(0.2))
        job.write_frame(2, _img(0.2))
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "frame_1.png").write_bytes(b"not ours: other naming")
    changed = {**FP, "size": 128}
    fresh = JobDir(tmp_path, changed, overwrite=True)
    assert fresh.completed() == []
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert (tmp_path / "frame_1.png").exists()
    assert json.loads((tmp_path / JOB_FILE).read_text())["fingerprint"]["size"] == 128


def test_foreign_folder_is_refused_unless_overwrite(tmp_path: Path) -> None:
    (tmp_path / "holiday.jpg").write_bytes(b"x")
    (tmp_path / ".DS_Store").write_bytes(b"x")  # OS clutter alone would not count
    with pytest.raises(JobMismatchError, match="not a stylecore job folder.*holiday.jpg"):
        JobDir(tmp_path, FP)
    assert not (tmp_path / JOB_FILE).exists()
    # Frames without a job file are of an unknown job: refused too, replaced on overwrite.
    frames_only = tmp_path / "frames_only"
    frames_only.mkdir()
    (frames_only / FRAME_NAME.format(1)).write_bytes(b"old")
    with pytest.raises(JobMismatchError):
        JobDir(frames_only, FP)
    with JobDir(frames_only, FP, overwrite=True) as job:
        assert job.completed() == []
    JobDir(tmp_path, FP, overwrite=True).close()
    assert (tmp_path / "holiday.jpg").exists()


def test_os_clutter_alone_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "Thumbs.db").write_bytes(b"x")
    JobDir(tmp_path, FP)
    assert (tmp_path / JOB_FILE).exists()


def test_stale_temp_files_are_removed_on_open(tmp_path: Path) -> None:
    with JobDir(tmp_path, FP) as job:
        job.write_frame(1, _img(0.3))
    stale = [tmp_path / ".frame_000002.png.k3j2_x.tmp.png", tmp_path / f".{JOB_FILE}.abc.tmp.json"]
    for path in stale:
        path.write_bytes(b"half a frame")
    (tmp_path / ".keepme.tmp.png").write_bytes(b"someone else's hidden file")
    JobDir(tmp_path, FP)
    assert not any(p.exists() for p in stale)
    assert (tmp_path / ".keepme.tmp.png").exists()
    assert (tmp_path / "frame_000001.png").exists()


def test_unreadable_job_file(tmp_path: Path) -> None:
    (tmp_path / JOB_FILE).write_text("{ not json")
    (tmp_path / FRAME_NAME.format(1)).write_bytes(b"a frame of an unknown job")
    with pytest.raises(JobMismatchError, match="unreadable"):
        JobDir(tmp_path, FP)
    assert JobDir(tmp_path, FP, overwrite=True).completed() == []


def test_output_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "out.mp4").write_bytes(b"x")
    with pytest.raises(InputError, match="is a file"):
        JobDir(tmp_path / "out.mp4", FP)


def test_mark_done_and_is_done(tmp_path: Path) -> None:
    job = JobDir(tmp_path, FP)
    for n in (1, 2):
        job.write_frame(n, _img(0.1))
    assert not job.is_done()
    job.mark_done(2)
    assert job.is_done()
    job.close()
    assert JobDir(tmp_path, FP).is_done()  # marking done keeps the fingerprint: resume still matches
    job.frame_path(2).unlink()
    assert not job.is_done()


def test_remove_deletes_only_the_job(tmp_path: Path) -> None:
    job = JobDir(tmp_path / "a", FP)
    job.write_frame(1, _img(0.1))
    job.remove()
    assert not (tmp_path / "a").exists()
    del job
    shared = JobDir(tmp_path / "b", FP)
    shared.write_frame(1, _img(0.1))
    (tmp_path / "b" / "video.mp4").write_bytes(b"the product")
    shared.remove()
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["video.mp4"]


def test_a_job_without_frames_is_never_a_conflict(tmp_path: Path) -> None:
    """A run that stopped before its first frame leaves nothing to protect: the corrected
    command takes the folder over without `overwrite`."""
    JobDir(tmp_path, FP).close()
    with JobDir(tmp_path, {**FP, "size": 512}) as job:
        assert job.fingerprint["size"] == 512
    assert json.loads((tmp_path / JOB_FILE).read_text())["fingerprint"]["size"] == 512


def test_discard_if_empty_removes_a_folder_it_made(tmp_path: Path) -> None:
    JobDir(tmp_path / "new", FP).discard_if_empty()
    assert not (tmp_path / "new").exists()
    (tmp_path / "mine").mkdir()
    JobDir(tmp_path / "mine", FP).discard_if_empty()
    assert (tmp_path / "mine").is_dir() and not any((tmp_path / "mine").iterdir())


def test_a_second_run_on_the_folder_is_refused_naming_the_holder(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    # Another process holds the folder (it opens the job and waits for our word).
    code = ("import sys; from stylecore.jobdir import JobDir\n"
            f"job = JobDir({str(tmp_path)!r}, {{'a': 1}})\n"
            "print('held', flush=True); sys.stdin.readline(); job.close()")
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputError, match=rf"in use by another stylecore run \(process {holder.pid}\)"):
            JobDir(tmp_path, {"a": 1})
        with pytest.raises(OutputError, match="in use"):  # overwrite does not push it aside either
            JobDir(tmp_path, {"a": 2}, overwrite=True)
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait(timeout=60)
    with JobDir(tmp_path, {"a": 1}) as job:  # free again
        assert job.completed() == []
    # A crashed holder's lock file is left behind, but its lock died with it.
    killed = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert killed.stdout is not None and killed.stdout.readline().strip() == "held"
    killed.kill()
    killed.wait(timeout=60)
    assert (tmp_path / LOCK_FILE).exists()
    with JobDir(tmp_path, {"a": 1}) as job:
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()


def test_a_second_jobdir_in_this_process_is_refused_too(tmp_path: Path) -> None:
    with JobDir(tmp_path, FP):
        with pytest.raises(OutputError, match="this process"):
            JobDir(tmp_path, FP)


def test_read_only_folder_and_full_disk_are_one_line(tmp_path: Path, monkeypatch) -> None:
    import errno

    from stylecore import jobdir as jobdir_module

    with JobDir(tmp_path / "full", FP) as job:
        job.write_frame(1, _img(0.1))
        job.write_frame(2, _img(0.1))

        def no_space(path, img):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(jobdir_module, "save_image", no_space)
        with pytest.raises(OutputError, match="is full: 2 finished frames are safe"):
            job.write_frame(3, _img(0.1))
    # A read-only folder (simulated: the tests may run as root, who writes anywhere).
    def read_only(path, data):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(jobdir_module, "atomic_write_bytes", read_only)
    with pytest.raises(OutputError, match=r"cannot write in the output folder .*\(Permission denied\)"):
        JobDir(tmp_path / "readonly", FP)
