"""Feedforward inference: stream frames through a trained stylizing network.

Decoding, stylizing and writing overlap: a reader thread decodes and resizes frames into
batches, the calling thread runs the network, and writer threads encode and write PNGs,
so the network does not wait on I/O (OpenCV releases the GIL while it decodes and
encodes). 8-bit frames that need no resizing travel as pixels both ways and are
converted to and from floats on the device (a quarter of the bytes, and no float passes
on the CPU). On CUDA the network runs on whole batches in bfloat16 (float16 where bf16 is
missing), channels-last, under ``torch.inference_mode``, fed from pinned memory with
non-blocking copies, with cuDNN timing its convolution algorithms once per frame size
(``cudnn_autotune``); results come back through pinned memory, and several writers encode
PNGs at once (one PNG of 1920x1080 takes ten times longer to encode than the GPU takes to
stylize it). On the CPU it runs one frame at a time, channels-last, in float32;
``torch.compile`` fuses the normalisation and activation passes and, where the CPU has
native bfloat16 (AVX512-BF16 / AMX), runs in bfloat16: 2-3x the eager frame rate, after a
compilation of 15-20 s once per frame size, kept in the user's cache folder
(``nets.compiled``: compiled ahead of time, later jobs load it in milliseconds without
importing the compiler; inductor's check of the CPU's instruction sets, done when
compiling, is remembered too: ``skip_repeated_isa_probe``). ``JobSpec.compile`` None (the
default) compiles on a CPU when the job is long enough to repay it (``wants_compile``),
and runs compiled whenever the network is kept compiled for its frame size
(``Stylizer.has_kept_network``); a compilation that fails falls back to eager. A frame
that does not fit in memory is stylized in overlapping tiles (``tiling.py``),
automatically on out-of-memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from stylecore.devices import cpu_has_native_bf16, cudnn_autotune, is_oom, resolve_device, reuse_freed_memory
from stylecore.errors import Cancelled, DeviceError, InputError, StylecoreError, first_line
from stylecore.io.sources import FrameSource
from stylecore.io.imageops import luminance_transfer, match_color, pixels_to_float, resize, scaled_size
from stylecore.jobdir import JobDir
from stylecore.catalog import resolve_model
from stylecore.modes.frame_loop import CancelCheck, Emit, FeedforwardLoopConfig
from stylecore.nets.compiled import PrecompiledNetwork, keep_compile_cache
from stylecore.nets.model_file import ModelInfo, load_model
from stylecore.nets.tiling import min_tile, stylize_tiled
from stylecore.nets.transformer import StyleTransformer

# Automatic compilation (``compile`` None) on a CPU: at least this many frames x pixels.
# Measured on this project's 2-core CPU (AMD EPYC with AVX512-BF16, quiet): compiling
# takes 13 s cold, and the compiled bf16 network saves ~0.04 s a frame at 640x360 and
# ~0.8 s at 1920x1080, so a cold compilation is repaid after ~300 and ~19 frames; 40 M
# pixel-frames is 7 s of 640x360 video at 24 fps, 2 s of 720p, under a second of 1080p.
AUTO_COMPILE_PIXEL_FRAMES = 40_000_000
# Tile sizes tried, largest first, when a whole frame does not fit.
_AUTO_TILES = (2048, 1024, 512, 256)
_QUEUE_BATCHES = 2  # decoded batches waiting ahead of the network
# PNG writers on a GPU job (a CPU job keeps one: its network needs the cores). At 1920x1080
# a PNG takes 50-85 ms to encode on one core, so 60 fps needs many: on an H200 host with 16
# cores, 8 writers made 55 fps end to end and 12 made 80 (bench.gpu_targets); the reader
# thread, the network's thread and the decoder keep the other cores.
_MAX_GPU_WRITERS = 12
_log = logging.getLogger(__name__)


def inference_dtype(device: torch.device, compiled: bool) -> torch.dtype:
    """The precision this device runs fastest: bf16 on CUDA (fp16 on older GPUs). On the CPU
    bf16 pays only when compiled on a CPU with native bf16: eager bf16 normalisation and
    activation kernels are slower than float32 ones, which outweighs the faster
    convolutions."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and compiled and cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


def cpp_compiler() -> str | None:
    """The C++ compiler inductor would use (``CXX``, else the first on the PATH), or None."""
    found = (shutil.which(name) for name in (os.environ.get("CXX", ""), "g++", "c++", "clang++") if name)
    return next((path for path in found if path), None)


def has_cpp_compiler() -> bool:
    """Inductor compiles C++ for the CPU: without a compiler ``torch.compile`` cannot run."""
    return cpp_compiler() is not None


def wants_compile(setting: bool | None, device: torch.device, frames: int, size: tuple[int, int]) -> bool:
    """Whether a job compiles its network: ``setting`` when given, else on a CPU with a C++
    compiler when ``frames`` of ``size`` (w, h) repay a compilation. ``frames`` is the whole
    job's count, not what is left to make, so a resumed job and a farm chunk decide (and
    round) exactly as the uninterrupted single-machine job did."""
    if setting is not None:
        return setting
    return device.type == "cpu" and frames * size[0] * size[1] >= AUTO_COMPILE_PIXEL_FRAMES and has_cpp_compiler()


def skip_repeated_isa_probe() -> None:
    """Let inductor trust its last check of the CPU's vector instruction sets.

    In every new process inductor checks that the C++ compiler builds, and a fresh Python
    loads, a test library for each vector instruction set the CPU reports: compiler and
    Python subprocesses that cost 1.2 s of each compiled job's start (measured here). The
    answer stays the same while torch, the CPU's instruction sets and the compiler do, so
    once every set has passed, a marker in the compile cache says so and later processes
    set ``cpp.vec_isa_ok`` instead of checking. Where a set fails, inductor keeps checking
    (and picks a lesser set) every time; ``TORCHINDUCTOR_VEC_ISA_OK`` still overrides."""
    try:
        from torch._inductor import config as inductor_config
        from torch._inductor import cpu_vec_isa

        if inductor_config.cpp.vec_isa_ok is not None:  # the user decided
            return
        reported = cpu_vec_isa.x86_isa_checker()
        claimed = [isa for isa in cpu_vec_isa.supported_vec_isa_list if all(f in reported for f in str(isa).split())]
        compiler = cpp_compiler()
        cache = os.environ.get("TORCHINDUCTOR_CACHE_DIR")  # set by keep_compile_cache
        if not claimed or compiler is None or not cache:
            return
        stat = Path(compiler).resolve().stat()
        key = hashlib.sha256(json.dumps([torch.__version__, reported, str(Path(compiler).resolve()),
                                         stat.st_size, stat.st_mtime_ns]).encode()).hexdigest()[:16]
        marker = Path(cache) / f"stylecore-vec-isa-{key}.ok"
        if not marker.is_file():
            if len(cpu_vec_isa.valid_vec_isa_list()) != len(claimed):  # inductor's own check, once
                return
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(" ".join(str(isa) for isa in claimed) + "\n")
    except Exception:  # noqa: BLE001 - inductor's internals moved, or the cache is read-only: check as usual
        return
    inductor_config.cpp.vec_isa_ok = True


class _Loaded:
    """A model placed on its device (and compiled): what the worker reuses across jobs.
    Never changed after it is made, so jobs may share it."""

    def __init__(self, model: StyleTransformer, info: ModelInfo, device: torch.device, *,
                 dtype: torch.dtype | None = None, compile: bool = False) -> None:
        self.info = info
        self.device = device
        self.dtype = inference_dtype(device, compile) if dtype is None else dtype
        self.channels_last = device.type in ("cuda", "cpu")
        reuse_freed_memory(device)
        model = model.to(device=device, dtype=self.dtype).eval().requires_grad_(False)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        # Static shapes: a video has one frame size; the last batch is padded to full.
        self.compiled: Callable[..., Tensor] | None = None
        if compile:
            keep_compile_cache()
            if device.type == "cpu":
                # Compiled ahead of time and kept between runs (``nets.compiled``): a later
                # job loads it without importing the compiler. Untried on GPUs: they
                # compile per process.
                self.compiled = PrecompiledNetwork(model, before_build=skip_repeated_isa_probe)
            else:
                skip_repeated_isa_probe()
                self.compiled = torch.compile(model, dynamic=False)


class Stylizer:
    """A loaded model on one device: ``stylizer(frames, weights) -> frames`` (float32, CPU).

    Falls back to tiles when a batch runs out of memory and stays tiled afterwards: that
    state is this object's, one per job; the loaded model underneath may be shared.
    """

    def __init__(
        self,
        model: StyleTransformer | _Loaded,
        info: ModelInfo | None = None,
        device: torch.device | None = None,
        *,
        dtype: torch.dtype | None = None,
        compile: bool = False,
        tile: int = 0,
    ) -> None:
        if not isinstance(model, _Loaded):
            assert info is not None and device is not None
            model = _Loaded(model, info, device, dtype=dtype, compile=compile)
        self._loaded = model
        self.info = model.info
        self.device = model.device
        self.dtype = model.dtype
        self.channels_last = model.channels_last
        self.model = model.model
        self.compiled = model.compiled
        self._compiled_batch = 0
        if 0 < tile < min_tile(self.model):
            raise InputError(f"`tile` {tile} is too small for this model; use at least {min_tile(self.model)} "
                             "(or 0 = automatic)")
        self.tile = tile

    def has_kept_network(self, size: tuple[int, int]) -> bool:
        """Whether the compiled network for single frames of ``size`` (w, h), as a CPU
        runs them, is kept from an earlier job (it then loads in milliseconds)."""
        if not isinstance(self.compiled, PrecompiledNetwork):
            return False
        frame = self._prepare(torch.zeros(1, 3, size[1], size[0]))  # laid out as ``_stylize`` feeds it
        return self.compiled.is_kept(frame, torch.zeros(1))

    @property
    def conditioned(self) -> bool:
        return self.model.config.conditioned

    def _prepare(self, frames: Tensor) -> Tensor:
        x = frames.to(self.device, non_blocking=True)
        if x.dtype == torch.uint8:  # 8-bit pixels: to [0, 1] exactly as a source's floats are
            x = x.to(torch.float32).div_(255.0)
        x = x.to(self.dtype)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    @torch.inference_mode()
    def __call__(self, frames: Tensor, weights: Sequence[float], *, pixels: bool = False) -> Tensor:
        """``frames``: ``N x 3 x H x W`` float32 in [0, 1], or uint8 pixels (pinned on CUDA);
        one weight per frame. Returns float32 ``N x 3 x H x W`` on the CPU, or with
        ``pixels`` the 8-bit ``N x H x W x 3`` RGB that ``save_image`` would write,
        quantised on the device."""
        if self.device.type == "cpu":
            # One frame at a time on the CPU: there is no launch overhead to amortise, and a
            # single frame's activations stay in cache (measured faster than batches of 4).
            return torch.cat([self._run(frames[i : i + 1], weights[i : i + 1], pixels)
                              for i in range(frames.shape[0])])
        return self._run(frames, weights, pixels)

    def _run(self, frames: Tensor, weights: Sequence[float], pixels: bool = False) -> Tensor:
        with cudnn_autotune(self.device):
            out = self._stylize(frames, weights)
        return _to_host(_quantize(out) if pixels else out.float())

    def _stylize(self, frames: Tensor, weights: Sequence[float]) -> Tensor:
        """The network's output on the device (or on the CPU, when tiled)."""
        n = frames.shape[0]
        # One weight for a uniform batch: the network then fuses it into its normalisation.
        values = [float(weights[0])] if len(set(weights)) == 1 else [float(v) for v in weights]
        w = torch.tensor(values, dtype=torch.float32).to(self.device, non_blocking=True)
        if self.tile:
            return self._tiled(frames, w)
        try:
            if self.compiled is None:
                return self.model(self._prepare(frames), w)
            # Compiled for static shapes: pad a short last batch to the first batch's size.
            self._compiled_batch = self._compiled_batch or n
            pad = self._compiled_batch - n
            if pad > 0:
                frames = torch.cat([frames, frames[-1:].expand(pad, -1, -1, -1)])
                if w.numel() > 1:
                    w = torch.cat([w, w[-1:].expand(pad)])
            return self.compiled(self._prepare(frames), w)[:n]
        except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled here
            if not is_oom(exc):
                raise
        self._release()
        return self._tiled(frames[:n], w[:n] if w.numel() > 1 else w)

    def _tiled(self, frames: Tensor, w: Tensor) -> Tensor:
        """Stylized in tiles: float32 on the CPU."""
        smallest = min_tile(self.model)
        sizes = [self.tile] if self.tile else [t for t in _AUTO_TILES if t > smallest] + [smallest]
        for size in sizes:
            try:
                out = stylize_tiled(self.model, self._prepare(frames), w, size)
                self.tile = size  # later frames start at the size that worked
                return out
            except Exception as exc:  # noqa: BLE001
                if not is_oom(exc):
                    raise
                self._release()
        hint = "use `batch_size` 1, a smaller `size`" if frames.shape[0] > 1 else "use a smaller `size`"
        raise DeviceError(f"out of memory on {self.device} even in {sizes[-1]}px tiles; {hint}, or `device` cpu")

    def _release(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def _to_host(result: Tensor) -> Tensor:
    """A result on the CPU; from a GPU through pinned memory (about twice the bandwidth of a
    copy into pageable memory, which the driver stages through a pinned buffer anyway)."""
    if result.device.type != "cuda":
        return result
    host = torch.empty(result.shape, dtype=result.dtype, pin_memory=True)
    host.copy_(result, non_blocking=True)
    torch.cuda.current_stream(result.device).synchronize()
    return host


def _quantize(images: Tensor) -> Tensor:
    """``N x 3 x H x W`` in [0, 1] -> ``N x H x W x 3`` uint8, rounded as ``to_pixels`` rounds.
    A channels-last result is already laid out as N x H x W x 3: the permute then costs no copy."""
    pixels = images.float().clamp_(0.0, 1.0).mul_(255.0).add_(0.5).to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).contiguous()


_CACHE: dict[tuple[Any, ...], _Loaded] = {}
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 4


def get_stylizer(path: str | Path | None, device: torch.device, *, compile: bool = False, tile: int = 0) -> Stylizer:
    """A new stylizer for one job, on the model at ``path`` loaded once and reused (the
    Blender worker runs many jobs)."""
    model_path = resolve_model(path)
    try:
        stat = model_path.stat()
        stamp: tuple[int, int] = (stat.st_mtime_ns, stat.st_size)
    except OSError:
        stamp = (0, 0)  # load_model raises the proper error
    key = (str(model_path.resolve()), stamp, str(device), compile)
    with _CACHE_LOCK:
        if key not in _CACHE:
            model, info = load_model(model_path, "cpu")
            while len(_CACHE) >= _CACHE_SIZE:  # models are ~1 MB; compiled ones are slow to make
                _CACHE.pop(next(iter(_CACHE)))
            _CACHE[key] = _Loaded(model, info, device, compile=compile)
        loaded = _CACHE[key]
    return Stylizer(loaded, tile=tile)


# ---------------------------------------------------------------------------------------
# Streaming


@dataclass(frozen=True)
class _Batch:
    numbers: list[int]  # output frame numbers (1-based)
    indices: list[int]  # source frame indices
    # N x 3 x H x W, channels-last in memory (pinned on CUDA): float32 in [0, 1], or uint8
    # pixels when the frames need no resizing
    frames: Tensor
    contents: list[np.ndarray] | None  # the frames as read (float32), for colour preservation


@dataclass(frozen=True)
class _Written:
    number: int
    index: int
    path: str
    seconds: float


class _Stop:
    """End-of-stream marker; carries the exception that ended the stream, if any."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


def _chunks(items: Sequence[tuple[int, int]], size: int) -> Iterator[Sequence[tuple[int, int]]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _read_batches(
    source: FrameSource,
    todo: Sequence[tuple[int, int]],
    batch_size: int,
    size: tuple[int, int],
    pin: bool,
    keep_contents: bool,
    out: queue.Queue[_Batch | _Stop],
    stop: threading.Event,
) -> None:
    """Reader thread: decode, resize and stack frames into batches."""
    try:
        # 8-bit frames at their own size go to the network as pixels (converted there).
        as_pixels = source.eight_bit and size == (source.info.width, source.info.height)
        wanted = [index for _, index in todo]
        frames = source.iter_pixels(wanted) if as_pixels else source.iter_frames(wanted)
        for chunk in _chunks(todo, batch_size):
            images = []
            for _ in chunk:
                if stop.is_set():
                    break
                _, image = next(frames)
                images.append(image if as_pixels else resize(image, size))
            if stop.is_set():
                break
            # N x H x W x 3 in memory is the channels-last layout the network takes: the
            # NCHW view costs no copy. A GPU's batch is stacked straight into pinned memory.
            stacked = torch.empty((len(images), *images[0].shape), dtype=torch.uint8 if as_pixels else torch.float32,
                                  pin_memory=pin)
            np.stack(images, out=stacked.numpy())
            contents = None
            if keep_contents:
                contents = [pixels_to_float(im) for im in images] if as_pixels else images
            batch = _Batch([n for n, _ in chunk], [i for _, i in chunk], stacked.permute(0, 3, 1, 2), contents)
            _offer(out, batch, stop)
        _offer(out, _Stop(), stop)
    except BaseException as exc:  # noqa: BLE001 - handed to the main thread
        _offer(out, _Stop(exc), stop)


def _offer(out: queue.Queue[Any], item: Any, stop: threading.Event) -> None:
    """Put ``item`` unless the consumer has stopped listening (then nobody needs it)."""
    while not stop.is_set():
        try:
            out.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def _write_frames(jobdir: JobDir, jobs: queue.Queue[tuple[int, int, np.ndarray, float] | _Stop], done: queue.Queue[_Written | _Stop]) -> None:
    """Writer thread: encode PNGs (atomically, via JobDir) and report what was written; an
    error ends the thread and goes to ``done``."""
    try:
        while True:
            job = jobs.get()
            if isinstance(job, _Stop):
                return
            number, index, image, seconds = job
            began = time.perf_counter()
            path = jobdir.write_frame(number, image)
            done.put(_Written(number, index, str(path), seconds + time.perf_counter() - began))
    except BaseException as exc:  # noqa: BLE001 - handed to the main thread
        done.put(_Stop(exc))


def writer_count(device: torch.device, in_order: bool) -> int:
    """PNG writer threads for a job: one where frames must reach the disk in order
    (``JobDir.writes_in_order``) or the CPU's cores run the network, else several."""
    if device.type == "cpu" or in_order:
        return 1
    return max(1, min(_MAX_GPU_WRITERS, (os.cpu_count() or 1) - 3))


def _finish_colors(stylized: np.ndarray, content: np.ndarray, mode: str) -> np.ndarray:
    if mode == "luminance":
        return luminance_transfer(stylized, content)
    if mode == "histogram":
        # A trained model has its style's colours baked in; matching the output's colour
        # statistics to the frame's is the feedforward counterpart of colour matching.
        return match_color(stylized, content)
    return stylized


def run_feedforward(
    config: FeedforwardLoopConfig,
    source: FrameSource,
    indices: Sequence[int],
    jobdir: JobDir,
    emit: Emit,
    cancel: CancelCheck,
) -> None:
    """Stylize ``indices[k]`` into output frame ``k + 1`` with the job's model.

    Frames already on disk are skipped (resume). ``cancel()`` is checked between
    frames (batches on a GPU); a cancelled job keeps every frame already written and raises ``Cancelled``.
    """
    device = resolve_device(config.device)
    info = source.info
    work_size = scaled_size(info.width, info.height, config.size) if config.size else (info.width, info.height)
    if min(work_size) < 8:
        raise InputError(f"frames of {work_size[0]}x{work_size[1]} are too small to stylize; use a larger `size`")
    compiled = wants_compile(config.compile, device, len(indices), work_size)
    if not compiled and config.compile is None and device.type == "cpu" and has_cpp_compiler():
        # Too short to repay a compilation, but an earlier job kept this network compiled
        # for this frame size: loading it costs milliseconds, so the short job runs it too.
        compiled = get_stylizer(config.model, device, compile=True).has_kept_network(work_size)
    out_size = (info.width, info.height)

    todo: list[tuple[int, int]] = []
    for number, index in enumerate(indices, start=1):
        if jobdir.has_frame(number):  # per frame: a farm task's folder answers for its own frames only
            emit(dict(event="frame", number=number, index=index, path=str(jobdir.frame_path(number)), seconds=0.0, skipped=True))
        else:
            todo.append((number, index))
    if not todo:
        return

    batch_size = max(1, int(config.batch_size))
    batches: queue.Queue[_Batch | _Stop] = queue.Queue(maxsize=_QUEUE_BATCHES)
    writer_threads = writer_count(device, jobdir.writes_in_order)
    writes: queue.Queue[tuple[int, int, np.ndarray, float] | _Stop] = queue.Queue(maxsize=2 * max(batch_size, writer_threads))
    written: queue.Queue[_Written | _Stop] = queue.Queue()
    stop = threading.Event()
    keep_contents = config.preserve_colors != "none"
    reader = threading.Thread(
        target=_read_batches,
        args=(source, todo, batch_size, work_size, device.type == "cuda", keep_contents, batches, stop),
        name="stylecore-reader",
        daemon=True,
    )
    writers = [threading.Thread(target=_write_frames, args=(jobdir, writes, written), name=f"stylecore-writer-{k}", daemon=True)
               for k in range(writer_threads)]
    reader.start()
    for writer in writers:
        writer.start()

    def report() -> None:
        """Emit the frames the writer has finished (events come from this thread only)."""
        while True:
            try:
                item = written.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Stop):  # a writer failed
                assert item.error is not None
                raise item.error
            emit(dict(event="frame", number=item.number, index=item.index, path=item.path, seconds=round(item.seconds, 4), skipped=False))

    def stylize(frames: Tensor, weights: list[float], pixels: bool) -> Tensor:
        nonlocal stylizer, compiled
        try:
            return stylizer(frames, weights, pixels=pixels)
        except Exception as exc:  # noqa: BLE001 - a failed automatic compilation falls back
            if not (compiled and stylizer.compiled is not None) or is_oom(exc) or isinstance(exc, StylecoreError):
                raise
            if config.compile:  # asked for: said in one line, with the way out
                raise DeviceError(f"the compiled network failed ({first_line(exc)}); run with `compile` off") from exc
            _log.warning("torch.compile failed (%s); stylizing without it", first_line(exc))
            compiled = False
            stylizer = get_stylizer(config.model, device, compile=False, tile=config.tile)
            return stylizer(frames, weights, pixels=pixels)

    # A CPU stylizes one frame at a time anyway (``Stylizer.__call__``): each frame then
    # goes to the writer as soon as it is made, not when its batch is, so the first frame
    # and the progress events come a batch sooner (2.4 s at 1080p with batches of 4).
    step = 1 if device.type == "cpu" else batch_size
    error: BaseException | None = None
    try:
        # Loaded (and compiled, on its first call) while the reader decodes the first batches.
        stylizer = get_stylizer(config.model, device, compile=compiled, tile=config.tile)
        while True:
            _check_cancel(cancel)
            batch = batches.get()
            if isinstance(batch, _Stop):
                if batch.error is not None:
                    raise batch.error
                break
            for lo in range(0, batch.frames.shape[0], step):
                if lo:
                    _check_cancel(cancel)
                began = time.perf_counter()
                frames = batch.frames[lo : lo + step]
                numbers = batch.numbers[lo : lo + step]
                # 8-bit pixels straight from the device, unless the frame is finished on the CPU.
                pixels = batch.contents is None and work_size == out_size
                result = stylize(frames, [config.style_weights[number - 1] for number in numbers], pixels)
                per_frame = (time.perf_counter() - began) / len(numbers)
                for k, number in enumerate(numbers, start=lo):
                    if pixels:
                        image = result[k - lo].numpy()
                    else:
                        image = np.ascontiguousarray(result[k - lo].clamp(0, 1).permute(1, 2, 0).numpy())
                        if batch.contents is not None:
                            image = _finish_colors(image, batch.contents[k], config.preserve_colors)
                        if work_size != out_size:
                            image = resize(image, out_size)
                    _put(writes, (number, batch.indices[k], image, per_frame), writers)
                report()
    except BaseException as exc:
        error = exc
        raise
    finally:
        stop.set()
        # Let the writers finish the frames they have: they are whole, and work is not lost.
        for _ in writers:
            _put(writes, _Stop(), writers)
        for writer in writers:
            writer.join()
        # The reader checks `stop` between frames and never blocks on a full queue once it
        # is set: waiting for it is bounded by one frame's decoding, and the source (closed
        # by the caller afterwards) is never closed under a read in progress.
        _drain(batches)
        reader.join()
        try:
            report()
        except BaseException:  # noqa: BLE001 - the first error wins
            if error is None:
                raise


def _check_cancel(cancel: CancelCheck) -> None:
    if cancel():
        raise Cancelled("cancelled; the frames written so far are kept and the job resumes where it stopped")


def _put(q: queue.Queue[Any], item: Any, consumers: Sequence[threading.Thread]) -> None:
    """``q.put`` that gives up when the consuming threads have died (their error is reported)."""
    while any(consumer.is_alive() for consumer in consumers):
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def _drain(q: queue.Queue[Any]) -> None:
    while True:
        try:
            q.get_nowait()
        except queue.Empty:
            return
