"""A stylizing network compiled once per frame size and kept between runs.

``torch.compile`` caches inductor's kernels on disk, but every new process still traces
the network with dynamo and rebuilds the compiled graph around those kernels: measured
on this project's 2-core CPU, 4.2-4.4 s from ``torch.compile`` to the first 640x360
frame with a warm cache, the largest part of a short job's start. ``PrecompiledNetwork``
keeps the whole compiled function instead (torch's ahead-of-time ``aot_compile``, its
kernels included), one file per network shape, input size and precision, in the
user's cache folder: a later job loads it in 1.5-1.8 s and its first frame takes 0.1 s,
with frames identical to ``torch.compile``'s. Building the file costs about as much as
a cold ``torch.compile`` (12-15 s), once per frame size.

The network's weights are inputs of the compiled function, not part of it: every model
of one architecture (all full-size styles, all ``-small`` ones) shares one file per
size. The file's name hashes everything its code depends on: torch and Python versions,
the network's source and configuration, the input's shape, dtype and layout, the CPU's
instruction sets and torch's thread count. Anything that fails (the experimental API moved, a file from another
build, a read-only cache) falls back to a plain ``torch.compile``, whose own failure the
caller handles as before.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from stylecore.errors import first_line

_log = logging.getLogger(__name__)
_NETS = Path(__file__).resolve().parent  # the networks' source: a change there makes new files
# A kept file nobody loaded for this long is removed when a new one is built (a torch
# upgrade or a new stylecore leaves the old ones unused: about 1.6 MB each).
UNUSED_DAYS = 60


def cache_root() -> Path:
    """stylecore's folder in the user's cache (``$XDG_CACHE_HOME``, else ``~/.cache``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "stylecore"


def inductor_cache() -> Path:
    """Inductor's cache folder: the user's choice (``TORCHINDUCTOR_CACHE_DIR``), else ours."""
    return Path(os.environ.get("TORCHINDUCTOR_CACHE_DIR") or cache_root() / "torchinductor")


def keep_compile_cache() -> None:
    """Point inductor's cache at the user's cache folder (unless the user chose one): its
    default lies in the temporary folder, which is cleared, and a warm cache turns a 13 s
    compilation into 2.5 s."""
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(inductor_cache())


def precompiled_folder() -> Path:
    """Where the compiled functions are kept: beside inductor's cache."""
    return inductor_cache().parent / "compiled"


def _stylize(model: nn.Module, image: Tensor, style_weight: Tensor) -> Tensor:
    """What is compiled: the network as an argument, so its weights are inputs."""
    return model(image, style_weight)


def _source_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(_NETS.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _cpu_features() -> list[str]:
    try:
        from torch._inductor import cpu_vec_isa

        return sorted(cpu_vec_isa.x86_isa_checker())
    except Exception:  # noqa: BLE001 - not x86, or inductor's internals moved
        import platform

        return [platform.machine()]


def file_name(model: nn.Module, image: Tensor, style_weight: Tensor) -> str:
    """The compiled function's file for these inputs: a hash of all its code depends on."""
    config = getattr(model, "config", None)
    described = dict(
        torch=torch.__version__, python=sys.version, source=_source_digest(), cpu=_cpu_features(),
        # Inductor's CPU kernels specialise on the thread count (how deep loops run in parallel).
        threads=torch.get_num_threads(),
        network=type(model).__qualname__, config=asdict(config) if config is not None else None,
        image=[list(image.shape), str(image.dtype), image.device.type,
               image.is_contiguous(memory_format=torch.channels_last)],
        weights=str(next(model.parameters()).dtype),
        style_weight=[list(style_weight.shape), str(style_weight.dtype)],
    )
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()[:24] + ".bin"


class PrecompiledNetwork:
    """``network(image, style_weight)`` compiled for each input shape it meets, loaded from
    the cache folder when an earlier run compiled that shape, else compiled and saved.

    Safe to share between threads (the worker's jobs share a loaded model). Calls run
    under ``torch.no_grad`` on ordinary tensors, even from inside ``torch.inference_mode``:
    the compiled function's guards refuse inference tensors (their dispatch keys differ),
    so those are copied first (0.2 ms a 640x360 frame, 1 ms at 1080p).
    """

    def __init__(self, model: nn.Module, folder: Path | None = None) -> None:
        self.model = model
        self.folder = folder
        self._functions: dict[tuple[Any, ...], Callable[..., Tensor]] = {}
        self._lock = threading.Lock()
        self.loaded: list[Path] = []  # files this object loaded (for the tests and the log)
        self.saved: list[Path] = []  # files it compiled and wrote

    def __call__(self, image: Tensor, style_weight: Tensor) -> Tensor:
        with torch.inference_mode(False), torch.no_grad():
            image = image.clone() if image.is_inference() else image
            style_weight = style_weight.clone() if style_weight.is_inference() else style_weight
            key = (tuple(image.shape), image.dtype, image.device.type, image.stride(), tuple(style_weight.shape))
            function = self._functions.get(key)
            if function is None:
                with self._lock:
                    function = self._functions.get(key) or self._function_for(image, style_weight)
                    self._functions[key] = function
            return function(image, style_weight)

    def _function_for(self, image: Tensor, style_weight: Tensor) -> Callable[..., Tensor]:
        folder = self.folder or precompiled_folder()
        path = folder / file_name(self.model, image, style_weight)
        try:
            function = self._load(path, image, style_weight)
            if function is None:
                function = self._build(path, image, style_weight)
        except Exception as exc:  # noqa: BLE001 - any failure of the experimental API: compile as usual
            _log.info("no precompiled network (%s); compiling in this process", first_line(exc))
            return torch.compile(self.model, dynamic=False)
        model = self.model
        return lambda x, w: function(model, x, w)

    def _load(self, path: Path, image: Tensor, style_weight: Tensor) -> Callable[..., Tensor] | None:
        """The function saved at ``path``, if it is there and its guards accept these inputs."""
        if not path.is_file():
            return None
        try:
            with path.open("rb") as file:
                function = torch.compiler.load_compiled_function(file, f_globals=globals())
            if not function.guard_check(self.model, image, style_weight):
                raise RuntimeError("its guards refuse these inputs")
        except Exception as exc:  # noqa: BLE001 - a damaged or foreign file is compiled afresh
            _log.warning("ignoring the precompiled network %s (%s); compiling it again", path, first_line(exc))
            return None
        try:
            os.utime(path)  # in use: kept by the clean-up in ``_build``
        except OSError:
            pass
        self.loaded.append(path)
        return function

    def _build(self, path: Path, image: Tensor, style_weight: Tensor) -> Callable[..., Tensor]:
        """Compile for these inputs and save the result (when the cache folder is writable)."""
        import torch._dynamo

        with torch._dynamo.config.patch(enable_aot_compile=True):
            compiled = torch.compile(_stylize, fullgraph=True, dynamic=False)
            function = compiled.aot_compile(((self.model, image, style_weight), {}))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _remove_unused(path.parent)
            function.save_compiled_function(str(path))  # written to a temp file and renamed
            self.saved.append(path)
        except OSError as exc:  # a read-only or full cache: this job still runs compiled
            _log.warning("cannot keep the compiled network in %s (%s)", path.parent, exc.strerror or exc)
        return function


def _remove_unused(folder: Path) -> None:
    """Remove kept files not loaded for ``UNUSED_DAYS`` (loading refreshes a file's time)."""
    cutoff = time.time() - UNUSED_DAYS * 86400
    for old in folder.glob("*.bin"):
        try:
            if old.stat().st_mtime < cutoff:
                old.unlink()
        except OSError:  # another process removed or is replacing it
            continue
