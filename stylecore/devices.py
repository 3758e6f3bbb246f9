"""Device selection and out-of-memory handling."""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from stylecore.errors import DeviceError

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")

# glibc's mallopt parameters, and the value that keeps every freed block in the heap.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_KEEP_ALL = 2**31 - 1
# Environment variables by which a user tunes glibc's malloc: then it is left alone.
_MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")
_allocator_tuned = False


def resolve_device(name: str = "auto") -> torch.device:
    """Turn ``auto|cpu|cuda|cuda:N|mps`` into a usable ``torch.device``.

    ``auto`` prefers CUDA, then Apple's MPS, then the CPU.
    """
    import torch  # here, not at import: the CLI's --help must not wait for torch

    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(
                f"`device` {name}: no CUDA GPU is visible to this PyTorch build "
                f"(torch {torch.__version__}); use `device` cpu, or install a CUDA build of torch"
            )
        return torch.device(name)
    if name == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise DeviceError("`device` mps: Apple MPS is not available here; use `device` cpu")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise DeviceError(f"unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)}")


def reuse_freed_memory(device: torch.device) -> None:
    """On the CPU, keep the memory a job frees in the process's heap, for its next frame or step.

    glibc's malloc gives every freed block over 32 MB straight back to the kernel (and
    trims the heap's top above 128 KB), so a network at 720p and above has its
    activations mapped, zero-filled and unmapped again on every frame. Measured on this
    project's 2-core CPU: the kernel took a quarter of a compiled 1080p frame (0.25 of
    0.55 s) and half of an eager one (1.9 s -> 0.9 s without it); compiled 720p 0.23 ->
    0.17 s; 640x360 unchanged (its blocks are smaller). The cost is memory: the heap
    fragments (a 36-frame 1080p job peaked at 1592 MiB instead of 1366), and what a job
    freed is kept until the process ends (the Blender worker keeps its largest job's).
    glibc on Linux only; a user's own ``MALLOC_*_`` / ``GLIBC_TUNABLES`` malloc
    settings win. Once per process."""
    global _allocator_tuned
    if _allocator_tuned or device.type != "cpu":
        return
    _allocator_tuned = True
    if any(name in os.environ for name in _MALLOC_ENV) or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - glibc, not another C library that answers to the name
    except (OSError, AttributeError):
        return
    libc.mallopt(_M_MMAP_THRESHOLD, _KEEP_ALL)
    libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_ALL)


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bfloat16 convolutions run faster than float32 (elsewhere they
    are emulated and slower)."""
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def bf16_autocast_pays(device: torch.device) -> bool:
    """Whether bfloat16 autocast of a VGG-like network is faster here than float32: on CUDA
    GPUs with bf16, and on CPUs with native bf16 (AVX512-BF16/AMX)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_has_native_bf16()
    return False


@contextlib.contextmanager
def cudnn_autotune(device: torch.device) -> Iterator[None]:
    """On CUDA, let cuDNN time its convolution algorithms for each new input shape and keep
    the fastest (``cudnn.benchmark``) inside the block; the setting is restored after.

    A video has one frame size, so the one-off timing is repaid from the first batch on.
    cuDNN's untimed choice for the feedforward network's 48-channel convolutions in bfloat16
    is a generic kernel that took 30 % of a 1920x1080 batch on an H200; timed, the network
    ran 162 instead of 113 frames a second there (``bench.gpu_targets``)."""
    import torch

    if device.type != "cuda" or torch.backends.cudnn.benchmark:
        yield
        return
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = False


def is_oom(exc: BaseException) -> bool:
    """True when ``exc`` is an accelerator (or CPU allocator) out-of-memory error."""
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


@contextlib.contextmanager
def oom_guard(what: str) -> Iterator[None]:
    """Re-raise out-of-memory inside the block as a ``DeviceError`` that says what to do."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - filtered by is_oom
        if not is_oom(exc):
            raise
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise DeviceError(
            f"out of memory while {what}; lower `size`, or use `device` cpu"
        ) from None
