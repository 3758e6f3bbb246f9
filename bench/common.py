"""Shared pieces of the benchmark suite: the machine, timing, clips, child-process memory."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
BUNNY = REPO.parent / "shared" / "data" / "video" / "big_buck_bunny_640x360_24fps_60s.mp4"
STYLES_DIR = REPO.parent / "shared" / "data" / "styles"
SAMPLES = REPO / "samples"


@dataclass(frozen=True)
class Machine:
    """What every figure is measured on."""

    cpu: str
    cores: int
    torch_threads: int
    memory_gib: float
    gpu: str | None
    python: str
    torch: str
    load_before: float  # 1-minute load average when the suite started (a shared machine)

    def line(self) -> str:
        gpu = f", GPU {self.gpu}" if self.gpu else ", no GPU"
        return (
            f"{self.cpu}, {self.cores} cores (torch uses {self.torch_threads} threads), {self.memory_gib:.0f} GiB RAM{gpu}; "
            f"Python {self.python}, torch {self.torch}; load average {self.load_before:.1f} at start"
        )


def load_average() -> float:
    """1-minute load average (NaN where the OS has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def _memory_gib() -> float:
    """Physical memory; from the OS on POSIX, so a bench starts without the [bench] extras."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (AttributeError, ValueError, OSError):
        try:
            import psutil  # Windows: in the [bench] extras
        except ImportError:
            return float("nan")
        return psutil.virtual_memory().total / 2**30


def describe_machine() -> Machine:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                cpu = text.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    load = load_average()
    return Machine(
        cpu=cpu,
        cores=os.cpu_count() or 1,
        torch_threads=torch.get_num_threads(),
        memory_gib=_memory_gib(),
        gpu=gpu,
        python=platform.python_version(),
        torch=torch.__version__,
        load_before=load,
    )


@dataclass
class Section:
    """One part of the report: a heading, what was measured how, a table, notes, plots."""

    title: str
    setup: str  # machine-independent setup line: sizes, frame counts, runs, settings
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # raw figures for results.json


def write_report(path: Path, report: dict[str, Any]) -> int:
    """Write a bench script's JSON report (creating its folder), say where; exit status 0."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Wall time of one call (``perf_counter``) and its result."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def fmt(value: float | None, digits: int = 3) -> str:
    """Short human number: 3 significant digits, scientific for tiny values."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "n/a"
    if value == 0:
        return "0"
    if abs(value) < 1e-3:
        return f"{value:.2e}"
    return f"{value:.{digits}g}"


# --- clips ----------------------------------------------------------------------------


def ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def extract_clip(
    src: Path, dst: Path, *, start_frame: int, frames: int, size: tuple[int, int], fps: float = 24.0
) -> Path:
    """Cut ``frames`` frames from ``start_frame`` of ``src``, scaled to ``size``, near-lossless H.264.

    Every method of a comparison reads this one file, so they all see identical pixels.
    """
    if dst.exists():
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.stem}.tmp{dst.suffix}")
    w, h = size
    subprocess.run(
        [
            ffmpeg(),
            "-y",
            "-loglevel",
            "error",
            "-ss",
            f"{start_frame / fps:.4f}",
            "-i",
            str(src),
            "-frames:v",
            str(frames),
            "-vf",
            f"scale={w}:{h}:flags=area",
            "-an",
            "-c:v",
            "libx264",
            "-crf",
            "10",
            "-preset",
            "veryfast",
            "-pix_fmt",
            "yuv444p",
            str(tmp),
        ],
        check=True,
    )
    os.replace(tmp, dst)
    return dst


def synthetic_clip(dst: Path, *, frames: int, size: tuple[int, int], fps: float = 24.0, seed: int = 0) -> Path:
    """A textured pan (when the shared video is absent): frame t = window of a big texture at t*(2,1)."""
    import cv2

    if dst.exists():
        return dst
    w, h = size
    rng = np.random.default_rng(seed)
    # The texture repeats horizontally so long clips need no huge image.
    tex_w, tex_h = w + 512, h + frames + 2
    base = cv2.GaussianBlur(rng.random((tex_h, tex_w, 3)).astype(np.float32), (0, 0), 3.0)
    base = ((base - base.min()) / (base.max() - base.min()) * 255).astype(np.uint8)
    tmp = dst.with_name(f".{dst.stem}.tmp{dst.suffix}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            ffmpeg(),
            "-y",
            "-loglevel",
            "error",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-s",
            f"{w}x{h}",
            "-r",
            str(fps),
            "-i",
            "-",
            "-c:v",
            "libx264",
            "-crf",
            "12",
            "-preset",
            "veryfast",
            "-pix_fmt",
            "yuv444p",
            str(tmp),
        ],
        stdin=subprocess.PIPE,
    )
    assert proc.stdin is not None
    for t in range(frames):
        x = (2 * t) % 512
        y = t % (tex_h - h)
        proc.stdin.write(np.ascontiguousarray(base[y : y + h, x : x + w]).tobytes())
    proc.stdin.close()
    if proc.wait() != 0:
        raise RuntimeError("ffmpeg failed to write the synthetic clip")
    os.replace(tmp, dst)
    return dst


def read_frames(path: Path | str) -> list[np.ndarray]:
    """All frames of a short clip (video or folder) as float32 RGB."""
    from stylecore.io.sources import open_source

    with open_source(path) as src:
        return [f for _, f in src.iter_frames(range(src.info.count))]


# --- child processes ------------------------------------------------------------------


@dataclass(frozen=True)
class ChildRun:
    seconds: float
    peak_rss_bytes: int
    returncode: int
    stdout: str
    stderr_tail: str


def vm_hwm_bytes(pid: int | str = "self") -> int | None:
    """Peak resident set size of a process's own address space (Linux ``VmHWM``), or None.

    Unlike ``ru_maxrss``, which on Linux starts from the parent's high-water mark when the
    child is forked and exec'd, ``VmHWM`` belongs to the child's new memory map only.
    """
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def run_child(args: Sequence[str], *, env: dict[str, str] | None = None, timeout: float | None = None) -> ChildRun:
    """Run a command and measure *its own* peak resident set size.

    On Linux ``VmHWM`` of the child is polled every 20 ms while it runs (a high-water mark,
    so only growth in its last 20 ms could be missed). Elsewhere ``wait4``'s ``ru_maxrss``
    is used, which may include the parent's size at the time of the fork.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    # Pipes are drained by threads so a chatty child cannot block on a full pipe.
    out_chunks: list[bytes] = []
    err_chunks: list[bytes] = []
    readers = [
        threading.Thread(target=lambda: out_chunks.append(proc.stdout.read()), daemon=True),  # type: ignore[union-attr]
        threading.Thread(target=lambda: err_chunks.append(proc.stderr.read()), daemon=True),  # type: ignore[union-attr]
    ]
    for reader in readers:
        reader.start()
    deadline = None if timeout is None else start + timeout
    polled: int | None = None
    while True:
        hwm = vm_hwm_bytes(proc.pid)
        if hwm is not None:
            polled = max(polled or 0, hwm)
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if deadline is not None and time.perf_counter() > deadline:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.02)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    for reader in readers:
        reader.join(timeout=5)
    scale = 1 if sys.platform == "darwin" else 1024  # macOS reports bytes, Linux KiB
    return ChildRun(
        seconds=seconds,
        peak_rss_bytes=polled if polled is not None else int(usage.ru_maxrss) * scale,
        returncode=proc.returncode,
        stdout=b"".join(out_chunks).decode(errors="replace"),
        stderr_tail=b"".join(err_chunks).decode(errors="replace")[-2000:],
    )


def child_env() -> dict[str, str]:
    """Environment for a child process that uses as many torch threads as this process."""
    import torch

    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(torch.get_num_threads())
    # ``python -m bench.ff_child`` must resolve wherever the suite was started from.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def python_child(code: str, *extra: str) -> list[str]:
    """Argument vector running ``code`` in a fresh interpreter of this environment."""
    return [sys.executable, "-c", code, *extra]
