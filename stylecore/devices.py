"""Device selection and out-of-memory handling."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from stylecore.errors import DeviceError

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


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
