"""A stylizing network compiled ahead of time once per frame size and kept between runs.

``torch.compile`` caches inductor's kernels on disk, but every new process still imports
torch's compiler (1.3 s on this project's 2-core CPU), traces the network and rebuilds
the compiled graph around those kernels: 4.2-4.4 s from ``torch.compile`` to the first
640x360 frame with a warm cache, the largest part of a short job's start.
``PrecompiledNetwork`` compiles the network once with AOTInductor instead
(``torch.export``, then inductor's C++ built into a shared library, packaged as a
``.pt2``), one file per network shape, input size and precision, in the user's cache
folder. A later job loads it through torch's C++ runner, without importing the compiler:
in milliseconds, where torch's Python-side ``aot_compile`` files (used here before) took
1.7-1.9 s to load. Building a file costs about as much as a cold ``torch.compile``
(14-15 s at 640x360), once per frame size.

The network's weights are inputs of the compiled function (exported through
``torch.func.functional_call``), not constants in it: every model of one architecture
(all full-size styles, all ``-small`` ones) shares one file per size. Exported with its
weights as constants, AOTInductor folded the last convolution's bias into a kernel, so
another style's weights loaded into that file gave wrong frames. The file's name hashes
everything its code depends on: torch and Python versions, the network's source and
configuration, the input's shape, dtype and layout, the weights' dtypes and layouts, the
CPU's instruction sets and torch's thread count. Anything that fails (the export, the
compiler, a file from another build) falls back to a plain ``torch.compile``, whose own
failure the caller handles as before; a read-only cache still runs compiled, from a
temporary copy. A failure that would come again (not a lack of memory or disk) leaves a
marker beside where the file would be, so that later jobs do not pay for it again for a
day: a build that failed or a package that did not load sends them straight to
``torch.compile``, a ``torch.compile`` that failed too straight to the caller's fallback.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import os
import platform
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from stylecore.devices import is_oom
from stylecore.errors import first_line
from stylecore.io.imageops import atomic_write_bytes

_log = logging.getLogger(__name__)
_NETS = Path(__file__).resolve().parent  # the networks' source: a change there makes new files
# A kept file nobody loaded for this long is removed when a new one is built (a torch
# upgrade or a new stylecore leaves the old ones unused: about 2 MB each).
UNUSED_DAYS = 60
SUFFIX = ".pt2"  # AOTInductor's package; ".bin" files are stop-34 builds' (torch's aot_compile)
# Marks a network that cannot be compiled here (its text: what failed, and why). Its name
# is the package's, so a new torch, stylecore or CPU tries again.
FAILED = ".failed"
RETRY_HOURS = 24  # a marker older than this is ignored: a compiler installed since is found
_OLD_MARKERS = (".unloadable",)  # earlier versions' markers (a package that did not load): removed


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
    """Where the compiled networks are kept: beside inductor's cache."""
    return inductor_cache().parent / "compiled"


def weight_names(model: nn.Module) -> list[str]:
    """The network's parameters and buffers, in the order the compiled function takes them."""
    return [name for name, _ in model.named_parameters()] + [name for name, _ in model.named_buffers()]


def _weights(model: nn.Module) -> list[Tensor]:
    state = dict(model.named_parameters())
    state.update(model.named_buffers())
    return [state[name] for name in weight_names(model)]


class _WeightsAsInputs(nn.Module):
    """``forward(image, style_weight, *weights)``: the network with its weights as inputs,
    so that ``torch.export`` makes them arguments of the compiled function."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self._network = (model,)  # in a tuple, not a submodule: export lifts none of its weights
        self._names = weight_names(model)

    def forward(self, image: Tensor, style_weight: Tensor, *weights: Tensor) -> Tensor:
        return torch.func.functional_call(self._network[0], dict(zip(self._names, weights)), (image, style_weight))


@functools.cache  # read once a process: the files do not change under a running job
def _source_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(_NETS.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


@functools.cache
def _cpu_features() -> tuple[str, ...]:
    """The CPU's instruction-set flags (the compiled kernels use the widest the CPU has).
    Read from ``/proc/cpuinfo``, not from inductor: importing inductor costs 1.3 s."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith(("flags", "Features")):
                    return tuple(sorted(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return (platform.machine(), platform.processor(), torch.backends.cpu.get_cpu_capability())


def file_name(model: nn.Module, image: Tensor, style_weight: Tensor) -> str:
    """The compiled network's file for these inputs: a hash of all its code depends on."""
    config = getattr(model, "config", None)
    described = dict(
        torch=torch.__version__, python=sys.version, source=_source_digest(), cpu=list(_cpu_features()),
        # Inductor's CPU kernels specialise on the thread count (how deep loops run in parallel).
        threads=torch.get_num_threads(),
        network=type(model).__qualname__, config=asdict(config) if config is not None else None,
        image=[list(image.shape), str(image.dtype), image.device.type,
               image.is_contiguous(memory_format=torch.channels_last)],
        weights=[[str(w.dtype), list(w.stride())] for w in _weights(model)],
        style_weight=[list(style_weight.shape), str(style_weight.dtype)],
    )
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()[:24] + SUFFIX


class PrecompiledNetwork:
    """``network(image, style_weight)`` compiled for each input shape it meets, loaded from
    the cache folder when an earlier run compiled that shape, else compiled and saved.

    Safe to share between threads (the worker's jobs share a loaded model, which is never
    changed after it is made: its weights are read once). ``before_build`` runs before a
    compilation (the caller's settings for inductor, which only a build imports).
    """

    def __init__(self, model: nn.Module, folder: Path | None = None, *,
                 before_build: Callable[[], None] | None = None) -> None:
        self.model = model
        self.folder = folder
        self.before_build = before_build
        self._functions: dict[tuple[Any, ...], Callable[[Tensor, Tensor], Tensor]] = {}
        self._lock = threading.Lock()
        self.loaded: list[Path] = []  # files this object loaded (for the tests and the log)
        self.saved: list[Path] = []  # files it compiled and wrote

    def __call__(self, image: Tensor, style_weight: Tensor) -> Tensor:
        key = (tuple(image.shape), image.dtype, image.device.type, image.stride(), tuple(style_weight.shape))
        function = self._functions.get(key)
        if function is None:
            with self._lock:
                function = self._functions.get(key) or self._function_for(image, style_weight)
                self._functions[key] = function
        return function(image, style_weight)

    def is_kept(self, image: Tensor, style_weight: Tensor) -> bool:
        """Whether an earlier run kept the compiled network for inputs like these."""
        return self._path(image, style_weight).is_file()

    def _path(self, image: Tensor, style_weight: Tensor) -> Path:
        return (self.folder or precompiled_folder()) / file_name(self.model, image, style_weight)

    def _function_for(self, image: Tensor, style_weight: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
        path = self._path(image, style_weight)
        marker = path.with_suffix(FAILED)
        failed = _read_marker(marker)
        if failed.startswith(_COMPILE):  # torch.compile failed here before: the caller falls back
            raise RuntimeError(_remembered(failed.removeprefix(_COMPILE), marker))
        if failed:  # built (or loaded) here before, and it failed
            return self._plain_compile(marker)
        try:
            runner = self._load(path)
            if runner is None:
                runner = self._build(path, image, style_weight)
        except Exception as exc:  # noqa: BLE001 - any failure of export or AOTInductor: compile as usual
            _log.info("no precompiled network (%s); compiling in this process", first_line(exc))
            if _lasting(exc):
                _write_marker(marker, f"{_BUILD}{first_line(exc)}")
            return self._plain_compile(marker)
        weights = _weights(self.model)
        return lambda x, w: runner.run([x, w, *weights])[0]

    def _load(self, path: Path) -> Any:
        """The runner of the package at ``path``, if it is there and loads."""
        if not path.is_file():
            return None
        try:
            runner = _open(path)
        except Exception as exc:  # noqa: BLE001 - a damaged or foreign file is compiled afresh
            _log.warning("ignoring the precompiled network %s (%s); compiling it again", path, first_line(exc))
            return None
        try:
            os.utime(path)  # in use: kept by the clean-up in ``_build``
        except OSError:
            pass
        self.loaded.append(path)
        return runner

    def _build(self, path: Path, image: Tensor, style_weight: Tensor) -> Any:
        """Compile for these inputs, save the package (when the cache folder is writable)
        and load it."""
        if self.before_build is not None:
            self.before_build()
        import torch._inductor  # the compiler: imported only to build

        package = io.BytesIO()
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # export's own deprecation notices
            inputs = [t.clone() if t.is_inference() else t for t in (image, style_weight)]
            program = torch.export.export(_WeightsAsInputs(self.model), (*inputs, *_weights(self.model)))
            torch._inductor.aoti_compile_and_package(program, package_path=package)
        data = package.getvalue()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _remove_unused(path.parent)
            atomic_write_bytes(path, data)
            self.saved.append(path)
        except OSError as exc:  # a read-only or full cache: this job still runs compiled
            _log.warning("cannot keep the compiled network in %s (%s)", path.parent, exc.strerror or exc)
            # Loaded from a temporary copy (the runner unpacks what it needs as it loads).
            with tempfile.TemporaryDirectory(prefix="stylecore-") as tmp:
                copy = Path(tmp) / path.name
                copy.write_bytes(data)
                return _open(copy)
        try:
            return _open(path)
        except Exception as exc:
            # A package built here that does not load here (the runner unpacks its library
            # into the temporary folder: one mounted noexec cannot load it) would be built
            # again by every job: the caller's marker sends later jobs straight to torch.compile.
            _log.warning("the compiled network does not load here (%s); later jobs compile it as they "
                         "start (if the temporary folder is mounted noexec, set TMPDIR to another)", first_line(exc))
            try:
                path.unlink()
            except OSError:
                pass
            raise

    def _plain_compile(self, marker: Path) -> Callable[[Tensor, Tensor], Tensor]:
        if self.before_build is not None:
            self.before_build()
        compiled = torch.compile(self.model, dynamic=False)
        # torch.compile compiles on the first call: a failure there that would come again is
        # remembered, by later jobs (the marker) and by this object's later calls (the
        # worker's next job shares it), which then fail at once.
        state = {"first": True, "failed": ""}

        def run(image: Tensor, style_weight: Tensor) -> Tensor:
            if state["failed"]:
                raise RuntimeError(state["failed"])
            # Dynamo's guards refuse inference tensors (their dispatch keys differ): copies
            # (0.2 ms a 640x360 frame, 1 ms at 1080p).
            with torch.inference_mode(False), torch.no_grad():
                image = image.clone() if image.is_inference() else image
                style_weight = style_weight.clone() if style_weight.is_inference() else style_weight
                try:
                    out = compiled(image, style_weight)
                except Exception as exc:
                    if state["first"] and _lasting(exc):
                        reason = f"torch.compile: {first_line(exc)}"
                        _write_marker(marker, _COMPILE + reason)
                        state["failed"] = _remembered(reason, marker)
                    raise
            state["first"] = False
            return out

        return run


# A marker's first word: which step failed (the package's build or load, or torch.compile).
_BUILD, _COMPILE = "build: ", "compile: "


def _lasting(exc: BaseException) -> bool:
    """Whether a compilation's failure would come again: not a lack of memory or of disk
    space, which the next job may not meet."""
    return not (isinstance(exc, (OSError, MemoryError)) or is_oom(exc) or "No space left" in str(exc))


def _remembered(reason: str, marker: Path) -> str:
    return f"{reason}; remembered in {marker} for {RETRY_HOURS} h, delete it to try again"


def _read_marker(marker: Path) -> str:
    """What failed for this network here in the last ``RETRY_HOURS`` ("" when nothing did)."""
    try:
        if marker.stat().st_mtime < time.time() - RETRY_HOURS * 3600:
            return ""
        return marker.read_text(encoding="utf-8").strip()
    except OSError:  # none, or unreadable: as if nothing had failed
        return ""


def _write_marker(marker: Path, text: str) -> None:
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        # Whole or absent: a job starting beside this one reads the step that failed.
        atomic_write_bytes(marker, (text + "\n").encode())
    except OSError:  # a read-only cache: later jobs try again
        pass


def _open(path: Path) -> Any:
    """torch's C++ runner for the package at ``path`` (one runner: calls take turns)."""
    runner = torch._C._aoti.AOTIModelPackageLoader(str(path), "model", False, 1, -1)
    if runner.get_constant_fqns():
        raise RuntimeError("its weights are constants in it, not inputs")
    return runner


def _remove_unused(folder: Path) -> None:
    """Remove kept files not loaded for ``UNUSED_DAYS`` (loading refreshes a file's time)
    and markers as old (ignored after a day already), and the files of
    earlier formats (``.bin``, ``.unloadable``), which no version reads any more."""
    cutoff = time.time() - UNUSED_DAYS * 86400
    markers = [old for suffix in (FAILED, *_OLD_MARKERS) for old in folder.glob("*" + suffix)]
    for old in [*folder.glob("*" + SUFFIX), *markers, *folder.glob("*.bin")]:
        try:
            if old.suffix in (".bin", *_OLD_MARKERS) or old.stat().st_mtime < cutoff:
                old.unlink()
        except OSError:  # another process removed or is replacing it
            continue
