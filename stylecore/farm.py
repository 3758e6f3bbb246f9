"""Farm: one job spread over a Ray cluster (``pip install "stylecore[farm]"``).

``run_job`` hands a job with ``JobSpec.farm`` set to ``run_farm``, after it opened the job
folder; everything around the frames (fingerprint, resume, ``mark_done``, encoding) stays
the pipeline's. The driver (this process) plans and waits; Ray tasks make the frames, each
opening the content itself where it lies (shared storage) and seeking to its own frames,
and each writing whole frames into the job folder through ``JobDir``.

How a job is split:

1. Shots. With a temporal chain (optimization and style-video modes, ``temporal_weight``
   > 0) a cut pass, in parallel tasks, finds the scene cuts with the pipeline's own test.
   Shots are independent: the single-machine run restarts its chain there too.
2. Chunks. A shot is cut into chunks of ``chunk`` frames, one task each, running the
   mode's own frame loop (``optimize_loop.run_optimization`` over a ``span``;
   ``feedforward.run_feedforward`` on feedforward chunks, which are independent and give
   the single-machine frames exactly).
3. Stitches. A chunk that starts mid-shot has no stylized previous frame, so it starts
   its own chain ``SETTLE`` frames before the previous chunk's last frame (its first
   frame's texture keeps changing over the next few frames while the chain settles; those
   frames are made and thrown away) and keeps its frames as drafts in a hidden folder. Two chains differ in texture everywhere, and blending
   one into the other over a few frames still flickers, so the stitch task carries the
   previous chain on instead: it adds to each draft the difference between the two chains
   on their common frame, moved along the optical flow (composed from that frame, so the
   texture is resampled once, not blurred frame after frame) wherever that frame's pixels
   are still visible; newly revealed pixels keep the draft's own texture. A stitch needs
   the previous chunk's final last frame: stitches of a shot run one after the other,
   while shots and chunks run in parallel. A stitch costs two optical flows per frame,
   far less than optimising it.

Tasks report frames through a Ray queue; the driver turns them into the pipeline's
events (one progress for the whole job). A killed worker loses only its frame in flight:
Ray retries the task, which skips the frames on disk, and a re-run does the same.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stylecore.errors import Cancelled, DeviceError, InputError, StylecoreError, first_line
from stylecore.jobdir import JobDir
from stylecore.jobspec import JobSpec

if TYPE_CHECKING:
    from stylecore.io.sources import FrameSource
    from stylecore.modes.frame_loop import CancelCheck, Emit

INSTALL_HINT = 'pip install "stylecore[farm]"'
_WORK = ".stylecore-farm"  # hidden folder inside the job folder: drafts and the shot list
_WORK_FILE = "farm.json"
_RETRIES = 3  # Ray re-runs a task whose worker or node died; the re-run skips finished frames
_POLL_S = 0.2
_CANCEL_WAIT_S = 20.0  # for tasks to stop at a frame boundary before they are killed
# Frames a stitched chunk's chain runs before the common frame. A chain's first frame is
# optimised from scratch and its texture keeps moving for a few frames (warping error 3-6x
# the shot's median over the next 3 frames on the sample clip); measured seams with 4 are
# within the farm's 1.5x criterion.
SETTLE = 4
_ADDRESS = re.compile(r"\A(?:ray://)?(?P<host>\[[0-9a-fA-F:]+\]|[^:/\s]+):(?P<port>\d{1,5})\Z")


# ---------------------------------------------------------------------------------------
# Checks and connection


def check_farm(spec: JobSpec) -> None:
    """Fail fast, before the job folder is touched: Ray installed, an address that answers."""
    _import_ray()
    if spec.farm != "auto":
        match = _ADDRESS.match(spec.farm or "")
        if match is None:
            raise InputError(f"`farm` {spec.farm!r} is not auto, ray://HOST:PORT or HOST:PORT")
        host, port = match["host"].strip("[]"), int(match["port"])
        try:
            socket.create_connection((host, port), timeout=5.0).close()
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise InputError(
                f"cannot reach the Ray cluster at {spec.farm} ({reason}); check the address, start the cluster "
                "with 'ray start --head', or use `farm` auto for a cluster on this machine"
            ) from None


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise InputError(f"`farm` needs Ray, an optional extra: {INSTALL_HINT}") from None
    return ray


def _connect(ray: Any, farm: str) -> tuple[bool, float]:
    """Join the cluster; returns (whether this call started Ray, seconds it took).

    A Ray already initialised in this process (a notebook, a test) is used as it is.
    ``auto`` follows Ray's own rule: ``RAY_ADDRESS``, else the cluster last started on this
    machine, else a new local one with all its cores and GPUs.
    """
    if ray.is_initialized():
        return False, 0.0
    began = time.perf_counter()
    try:
        ray.init(
            address=None if farm == "auto" else farm,
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=False,  # workers' prints would break the progress bar; Ray keeps them in its logs
        )
    except Exception as exc:  # noqa: BLE001 - Ray raises several kinds; all mean "no cluster"
        raise InputError(f"cannot join the Ray cluster at {farm}: {first_line(exc)}") from None
    return True, time.perf_counter() - began


# ---------------------------------------------------------------------------------------
# Planning


@dataclass(frozen=True)
class Chunk:
    """Output positions ``start .. stop - 1`` (0-based), made by one task.

    ``stitched``: the chunk starts mid-shot, so its task makes drafts from ``start - lead``
    on, and a stitch task turns them into the job's frames (from the common frame
    ``start - 1`` on).
    """

    start: int
    stop: int
    stitched: bool = False
    lead: int = 0  # frames before ``start`` its task makes (stitched chunks only)

    @property
    def numbers(self) -> range:
        """Its output frame numbers (1-based, as in the job folder)."""
        return range(self.start + 1, self.stop + 1)

    @property
    def span(self) -> range:
        """The positions its task's frame loop makes (``lead`` more, first, when stitched)."""
        return range(self.start - self.lead, self.stop)

    def drafts_folder(self, work: str | Path) -> Path:
        return Path(work) / f"chunk_{self.start + 1:06d}"


def plan_chunks(count: int, chunk: int, cuts: Sequence[int] = (), *, chained: bool) -> list[Chunk]:
    """Shots (split at ``cuts``: positions that start a new shot), then chunks of ``chunk``
    frames; with ``chained`` the chunks after a shot's first are stitched, their chains
    starting ``SETTLE`` frames before the common frame (never before the shot)."""
    bounds = [0, *sorted({c for c in cuts if 0 < c < count}), count]
    chunks: list[Chunk] = []
    for first, end in zip(bounds, bounds[1:]):
        for start in range(first, end, chunk):
            stitched = chained and start > first
            lead = min(1 + SETTLE, start - first) if stitched else 0
            chunks.append(Chunk(start, min(end, start + chunk), stitched=stitched, lead=lead))
    return chunks


def _chained(spec: JobSpec) -> bool:
    """Frames depend on the previous one (a temporal chain), so mid-shot chunks are stitched."""
    return spec.mode != "feedforward" and spec.temporal_weight > 0


@dataclass(frozen=True)
class _Slots:
    """How tasks are placed: Ray resources per task, the task's device and thread count."""

    count: int  # tasks that run at once over the cluster
    options: dict[str, Any]
    device: str
    threads: int
    nodes: int


def _slots(ray: Any, device: str, tasks: int) -> _Slots:
    """One task per GPU; on CPUs, threads per task so that the tasks fill the nodes
    without oversubscribing them (Ray reserves a task's ``num_cpus`` on its node)."""
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    gpus = [int(r.get("GPU", 0)) for r in nodes]
    cpus = [int(r.get("CPU", 0)) for r in nodes if r.get("CPU", 0) >= 1]
    if not cpus:
        raise DeviceError("the Ray cluster has no CPU to run tasks on; check 'ray status'")
    if device in ("auto", "cuda") and sum(gpus) > 0:
        # A GPU task's CPU share feeds its GPU (decoding, PNG writing).
        per_gpu = max(1, min(int(r.get("CPU", 1)) // max(1, int(r.get("GPU", 0))) for r in nodes if r.get("GPU")))
        return _Slots(sum(gpus), {"num_gpus": 1, "num_cpus": per_gpu}, "cuda", per_gpu, len(nodes))
    if device == "cuda":
        raise DeviceError("`device` cuda, but the Ray cluster has no GPU; use `device` cpu or auto")
    if device == "mps":
        # Ray does not manage Apple GPUs: one task per node owns the node's GPU and CPUs.
        return _Slots(len(cpus), {"num_cpus": min(cpus)}, "mps", min(cpus), len(nodes))
    threads = max(1, min(min(cpus), sum(cpus) // max(1, tasks)))
    return _Slots(sum(c // threads for c in cpus), {"num_cpus": threads}, "cpu", threads, len(nodes))


# ---------------------------------------------------------------------------------------
# What a task sees of the job folder


def _attached(folder: str | Path) -> JobDir:
    """A job folder the driver has opened, seen from a task: no claim (the driver made it,
    and holds it) and no clean-up of temp files (other tasks' frames are in flight)."""
    return JobDir.attached(folder)


class _ChunkFrames(JobDir):
    """The job folder as one chunk task's frame loop sees it: its own frames (in its drafts
    folder when stitched); any other number reads as ``outside``: present, so the loop
    skips it (feedforward), or absent, so the chain starts fresh at the chunk's start."""

    def __init__(self, folder: str | Path, own: range, *, outside: bool) -> None:
        # No JobDir.__init__: the folder is the driver's (see ``JobDir.attached``).
        self._attach(folder)
        self.own, self.outside = own, outside

    def has_frame(self, number: int) -> bool:
        return super().has_frame(number) if number in self.own else self.outside


# ---------------------------------------------------------------------------------------
# Tasks (run on the workers)


def _set_threads(threads: int) -> None:
    import cv2
    import torch

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)


def _cuts_task(spec: JobSpec, indices: Sequence[int], start: int, stop: int, threads: int) -> list[int]:
    """Positions in ``start .. stop - 1`` that begin a new shot, by the frame loop's own test
    on the same processed frames (so the loop agrees with the plan)."""
    from stylecore import flow
    from stylecore.io import imageops
    from stylecore.io.sources import open_source
    from stylecore.modes.optimize_loop import processing_size

    _set_threads(threads)
    cuts = []
    first = max(1, start)
    with open_source(spec.content) as source:
        size = processing_size(spec.size, source.info.width, source.info.height)
        previous: np.ndarray | None = None
        for k, (_, image) in enumerate(source.iter_frames([indices[k] for k in range(first - 1, stop)]), first - 1):
            image = imageops.resize(image, size)
            if previous is not None and flow.is_scene_cut(previous, image, flow.flow_pair(previous, image)):
                cuts.append(k)
            previous = image
    return cuts


def _chunk_task(spec: JobSpec, indices: Sequence[int], chunk: Chunk, folder: str, work: str, events: Any,
                threads: int) -> dict[str, Any]:
    """Make one chunk with the mode's frame loop; returns timings for the farm's report."""
    began = time.perf_counter()
    from stylecore.io.sources import open_source
    from stylecore.modes.frame_loop import FeedforwardLoopConfig, loop_config
    from stylecore.modes.optimize_loop import run_optimization

    _set_threads(threads)
    stats = _task_started("chunk", chunk, events, began)
    if chunk.stitched:
        drafts = chunk.drafts_folder(work)
        drafts.mkdir(parents=True, exist_ok=True)
        _attached(drafts)._remove_stale_temps()  # of this chunk's own killed run
        frames = _ChunkFrames(drafts, range(chunk.span.start + 1, chunk.stop + 1), outside=False)
    else:
        frames = _ChunkFrames(folder, chunk.numbers, outside=spec.mode == "feedforward")
    emit = _reporter(events, stats, began, final=not chunk.stitched, numbers=chunk.numbers)
    never = lambda: False  # noqa: E731 - the driver stops a task with ray.cancel
    config = loop_config(spec, len(indices))
    with open_source(spec.content) as source:
        if isinstance(config, FeedforwardLoopConfig):
            from stylecore.modes.feedforward import run_feedforward

            run_feedforward(config, source, indices, frames, emit, never)
        else:
            run_optimization(config, source, indices, frames, emit, never, span=chunk.span)
    stats["seconds"] = round(time.perf_counter() - began, 3)
    return stats


def _stitch_task(spec: JobSpec, indices: Sequence[int], chunk: Chunk, folder: str, work: str, events: Any,
                 *after: Any) -> dict[str, Any]:
    """Carry the previous chunk's chain on into this chunk's drafts (see the module doc).

    ``after``: results of the tasks this one waits for (Ray resolves them first): the
    previous chunk's last frame and this chunk's drafts are on disk.
    """
    began = time.perf_counter()
    from stylecore.io import imageops
    from stylecore.io.sources import open_source

    _set_threads(1)
    stats = _task_started("stitch", chunk, events, began)
    final, drafts = _attached(folder), _attached(chunk.drafts_folder(work))
    emit = _reporter(events, stats, began, final=True, numbers=chunk.numbers)
    with open_source(spec.content) as source:
        common = chunk.start  # the number of the frame both chains made (position start - 1)
        first = final.read_frame(common)
        # The frames' own (written) size, not the processing size: the correction is the two
        # chains' texture difference, which a smaller copy would blur into a visible seam.
        size = (first.shape[1], first.shape[0])

        def content(k: int) -> np.ndarray:
            return imageops.resize(source.read(indices[k]), size)

        stitch = Stitch(first, drafts.read_frame(common), size)
        previous = content(chunk.start - 1)
        for k in range(chunk.start, chunk.stop):
            number, frame_began = k + 1, time.perf_counter()
            current = content(k)
            stitch.advance(previous, current)
            previous = current
            if final.has_frame(number):
                continue  # a resumed stitch still follows the flow through finished frames
            path = final.write_frame(number, stitch.apply(drafts.read_frame(number)))
            emit(dict(event="frame", number=number, index=indices[k], path=str(path),
                      seconds=round(time.perf_counter() - frame_began, 4), skipped=False))
    stats["seconds"] = round(time.perf_counter() - began, 3)
    return stats


class Stitch:
    """Carries one chain of stylized frames on into another (see the module doc).

    Made from both chains' version of their common frame; then, frame after frame,
    ``advance`` follows the content's optical flow (frames at the written size) and
    ``apply`` turns the second chain's frame into the first chain's continuation.
    """

    def __init__(self, first: np.ndarray, second: np.ndarray, size: tuple[int, int]) -> None:
        from stylecore.io.imageops import resize

        self.delta = resize(first, size) - resize(second, size)
        w, h = size
        # Where each pixel of the current frame was in the common frame, and whether it
        # was visible all the way there.
        self.composed = np.zeros((h, w, 2), np.float32)
        self.visible = np.ones((h, w), np.float32)

    def advance(self, previous: np.ndarray, current: np.ndarray) -> None:
        from stylecore import flow

        pair = flow.flow_pair(previous, current)
        back = pair.flow_bw
        # Composing, not re-warping the previous correction: the texture is resampled once.
        self.composed = back + flow.warp(self.composed, back)
        # Seen in the previous frame: Ruder et al.'s forward-backward test only. Their mask
        # also drops motion boundaries and pixels a fraction of a pixel past the border,
        # which is right for a loss but here would leave those pixels on the other chain.
        there = flow.warp(pair.flow_fw, back)
        round_trip = ((back + there) ** 2).sum(axis=-1)
        occluded = round_trip > flow._CONSISTENCY_REL * ((back**2).sum(axis=-1) + (there**2).sum(axis=-1)) \
            + flow._CONSISTENCY_ABS
        h, w = back.shape[:2]
        x = np.arange(w, dtype=np.float32)[None, :] + back[..., 0]
        y = np.arange(h, dtype=np.float32)[:, None] + back[..., 1]
        inside = (x > -1) & (x < w) & (y > -1) & (y < h)
        seen = (inside & ~occluded).astype(np.float32)
        self.visible = seen * flow.warp(self.visible, back)

    def apply(self, frame: np.ndarray) -> np.ndarray:
        """``frame`` (any size) plus the chains' difference, moved to where it now is."""
        from stylecore import flow
        from stylecore.io.imageops import resize

        correction = flow.warp(self.delta, self.composed) * self.visible[..., None]
        correction = resize(correction, (frame.shape[1], frame.shape[0]))
        return np.clip(frame + correction, 0.0, 1.0).astype(np.float32)


def _task_started(kind: str, chunk: Chunk, events: Any, began: float) -> dict[str, Any]:
    """Tell the driver where the task runs (its ``task`` event); the stats it returns."""
    import ray

    where = dict(kind=kind, first=chunk.start + 1, last=chunk.stop, node=ray.util.get_node_ip_address(),
                 pid=os.getpid())
    events.put(dict(event="task", **where))
    return dict(where, import_s=round(time.perf_counter() - began, 3), frames=0)


def _reporter(events: Any, stats: dict[str, Any], began: float, *, final: bool, numbers: range) -> Emit:
    """The frame loop's events, as the driver gets them: the job's own new frames (not
    drafts, not the frames outside the chunk that the loop skips) and cuts."""
    def emit(event: dict[str, Any]) -> None:
        if event.get("event") == "cut":
            events.put(event)
        elif event.get("event") == "frame" and not event.get("skipped") and event.get("number") in numbers:
            if "first_frame_at_s" not in stats:
                # Setup (model, style targets) shows as the time to the first frame minus its own.
                stats["first_frame_at_s"] = round(time.perf_counter() - began, 3)
                stats["first_frame_s"] = event.get("seconds", 0.0)
            stats["frames"] += 1
            if final:
                events.put(event)

    return emit


# ---------------------------------------------------------------------------------------
# Driver


def run_farm(spec: JobSpec, source: FrameSource, indices: Sequence[int], jobdir: JobDir, emit: Emit,
             cancel: CancelCheck) -> None:
    """Make every missing frame of the job on the Ray cluster ``spec.farm``.

    Called by ``run_job`` with the job folder open. Raises ``Cancelled`` when ``cancel()``
    turns true (the tasks are stopped; whole frames stay), and the ``StylecoreError`` a
    task raised.
    """
    ray = _import_ray()
    started_here, ray_start_s = _connect(ray, spec.farm or "auto")
    try:
        _Driver(ray, _portable(spec), indices, jobdir, emit, cancel, ray_start_s).run()
    finally:
        if started_here:
            ray.shutdown()


def _portable(spec: JobSpec) -> JobSpec:
    """The spec as a task runs it: absolute paths (a worker's folder is not ours), no farm."""
    def absolute(path: str | None) -> str | None:
        return os.path.abspath(path) if path else path

    model = spec.model
    if model and (Path(model).exists() or model.endswith(".safetensors")):
        model = os.path.abspath(model)
    return dataclasses.replace(
        spec, content=os.path.abspath(spec.content), output=os.path.abspath(spec.output),
        styles=tuple((os.path.abspath(p), w) for p, w in spec.styles), style_video=absolute(spec.style_video),
        vgg_weights=absolute(spec.vgg_weights), model=model, farm=None,
    )


class _Driver:
    """One farm run: plan, submit, relay events, stop everything on error or cancel."""

    def __init__(self, ray: Any, spec: JobSpec, indices: Sequence[int], jobdir: JobDir, emit: Emit,
                 cancel: CancelCheck, ray_start_s: float) -> None:
        self.ray, self.spec, self.indices, self.jobdir = ray, spec, list(indices), jobdir
        self.emit, self.cancel, self.ray_start_s = emit, cancel, ray_start_s
        self.total = len(self.indices)
        self.chained = _chained(spec)
        self.pending: dict[Any, str] = {}  # task ref -> what it makes, for messages
        self.reported: set[int] = set()
        self.stats: list[dict[str, Any]] = []
        self.events: Any = None  # the tasks' Ray queue of events
        self.slots: _Slots | None = None

    def run(self) -> None:
        ray = self.ray
        from ray.util.queue import Queue

        done_at_start = {n for n in range(1, self.total + 1) if self.jobdir.has_frame(n)}
        for number in sorted(done_at_start):
            self.emit(dict(event="frame", number=number, index=self.indices[number - 1],
                           path=str(self.jobdir.frame_path(number)), seconds=0.0, skipped=True))
        self.reported |= done_at_start
        if len(done_at_start) == self.total:
            shutil.rmtree(self.jobdir.folder / _WORK, ignore_errors=True)  # a run killed just before
            return
        work = self._work_folder()
        self.indices_ref = ray.put(self.indices)
        self.spec_ref = ray.put(self.spec)
        # No CPU held by the queue: on a small cluster it would take a task's place.
        self.events = Queue(actor_options={"num_cpus": 0})
        try:
            estimate = _slots(ray, self.spec.device, max(1, -(-self.total // self.spec.chunk)))
            cuts = self._shots(work, estimate) if self.chained else []
            for position in cuts:
                self.emit(dict(event="cut", index=self.indices[position], number=position + 1))
            chunks = plan_chunks(self.total, self._chunk_size(), cuts, chained=self.chained)
            stitches = [c for c in chunks if c.stitched and self._missing(c)]
            tasks = [c for c in chunks if (c in stitches and self._drafts_missing(c, work))
                     or (not c.stitched and self._missing(c))]
            slots = _slots(ray, self.spec.device, max(1, len(tasks)))
            self.slots = slots
            self.emit(dict(event="farm", nodes=slots.nodes, slots=slots.count, device=slots.device,
                           threads=slots.threads, chunks=len(chunks), tasks=len(tasks), stitches=len(stitches),
                           shots=len(cuts) + 1, ray_start_s=round(self.ray_start_s, 3)))
            self._submit(chunks, tasks, stitches, slots, work)
            self._wait()
        except BaseException:
            self._stop()
            self.jobdir._remove_stale_temps()  # the stopped tasks' frames in flight: only whole frames stay
            raise
        finally:
            ray.kill(self.events.actor)
        for number in range(1, self.total + 1):
            if number not in self.reported and self.jobdir.has_frame(number):
                # Written by a task that died before it could say so; Ray's re-run skipped it.
                self.emit(dict(event="frame", number=number, index=self.indices[number - 1],
                               path=str(self.jobdir.frame_path(number)), seconds=0.0, skipped=True))
        missing = self.jobdir.missing(self.total)
        if missing:
            raise StylecoreError(f"the farm finished without frame {missing[0]} ({len(missing)} missing); "
                                 "run the same command again to make the missing frames")
        shutil.rmtree(work, ignore_errors=True)
        self.jobdir._remove_stale_temps()  # of tasks that were killed: every writer is done now
        self.emit(dict(event="farm_stats", ray_start_s=round(self.ray_start_s, 3), tasks=self.stats))

    def _work_folder(self) -> Path:
        """The hidden folder of drafts and the shot list. It records the job's fingerprint:
        what another job (an overwritten one) left there is thrown away, never mixed in."""
        work = self.jobdir.folder / _WORK
        record = work / _WORK_FILE
        try:
            stored = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            stored = None
        if not isinstance(stored, dict) or stored.get("fingerprint") != self.jobdir.fingerprint:
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            self._record(work, {"fingerprint": self.jobdir.fingerprint})
        return work

    @staticmethod
    def _record(work: Path, fields: dict[str, Any]) -> None:
        from stylecore.io.imageops import atomic_write_bytes

        record = work / _WORK_FILE
        data = json.loads(record.read_text(encoding="utf-8")) if record.exists() else {}
        atomic_write_bytes(record, json.dumps({**data, **fields}, sort_keys=True).encode("utf-8"))

    def _missing(self, chunk: Chunk) -> bool:
        return any(not self.jobdir.has_frame(n) for n in chunk.numbers)

    def _drafts_missing(self, chunk: Chunk, work: Path) -> bool:
        drafts = _attached(chunk.drafts_folder(work))
        return any(not drafts.has_frame(n) for n in range(chunk.span.start + 1, chunk.stop + 1))

    def _chunk_size(self) -> int:
        size = self.spec.chunk
        if self.spec.mode == "feedforward":
            # Whole batches: each frame is stylized in the same batch as on one machine.
            batch = max(1, self.spec.batch_size)
            size = max(batch, size // batch * batch)
        return size

    def _shots(self, work: Path, slots: _Slots) -> list[int]:
        """Positions where a shot starts: found in parallel once, then kept in ``work``."""
        try:
            stored = json.loads((work / _WORK_FILE).read_text(encoding="utf-8"))["cuts"]
            if isinstance(stored, list):
                return [int(c) for c in stored]
        except (OSError, ValueError, KeyError, TypeError):
            pass
        task = self.ray.remote(_cuts_task).options(max_retries=_RETRIES, **slots.options)
        piece = max(self.spec.chunk, -(-self.total // max(1, slots.count)))
        for start in range(0, self.total, piece):
            stop = min(self.total, start + piece)
            ref = task.remote(self.spec_ref, self.indices_ref, start, stop, slots.threads)
            self.pending[ref] = f"the scene cuts of frames {start + 1}-{stop}"
        cuts = sorted(c for part in self._wait() for c in part)
        self._record(work, {"cuts": cuts})
        return cuts

    def _submit(self, chunks: list[Chunk], tasks: list[Chunk], stitches: list[Chunk], slots: _Slots,
                work: Path) -> None:
        chunk_task = self.ray.remote(_chunk_task).options(max_retries=_RETRIES, **slots.options)
        stitch_task = self.ray.remote(_stitch_task).options(max_retries=_RETRIES, num_cpus=1)
        common = (self.spec_ref, self.indices_ref)
        made: dict[int, Any] = {}
        for chunk in tasks:
            ref = chunk_task.remote(*common, chunk, str(self.jobdir.folder), str(work), self.events, slots.threads)
            made[chunk.start] = ref
            self.pending[ref] = f"frames {chunk.start + 1}-{chunk.stop}"
        before = {c.stop: c.start for c in chunks}
        for chunk in stitches:  # in order: each may wait for the one before
            # Ray starts a stitch once the previous chunk's last frame is final (its task,
            # or its stitch) and this chunk's drafts are made.
            after = [made[s] for s in (before.get(chunk.start), chunk.start) if s is not None and s in made]
            made.pop(chunk.start, None)
            ref = stitch_task.remote(*common, chunk, str(self.jobdir.folder), str(work), self.events, *after)
            made[chunk.start] = ref
            self.pending[ref] = f"the stitch of frames {chunk.start + 1}-{chunk.stop}"

    def _wait(self) -> list[Any]:
        """Relay events until every pending task is done; their results, in completion order."""
        ray = self.ray
        results = []
        while self.pending:
            if self.cancel():
                raise Cancelled("cancelled; the frames written so far are kept and the job resumes where it stopped")
            ready, _ = ray.wait(list(self.pending), num_returns=1, timeout=_POLL_S)
            self._relay()
            for ref in ready:
                what = self.pending.pop(ref)
                results.append(self._result(ref, what))
        self._relay()
        return results

    def _result(self, ref: Any, what: str) -> Any:
        ray = self.ray
        try:
            result = ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, StylecoreError):
                raise exc.cause from None  # the task's own one-line message
            raise
        except ray.exceptions.RayError as exc:
            first = first_line(exc)
            raise StylecoreError(
                f"the farm task making {what} failed after {_RETRIES} retries ({first}); "
                "run the same command again to resume"
            ) from None
        if isinstance(result, dict):
            self.stats.append(result)
        return result

    def _relay(self) -> None:
        """Forward the tasks' events; frame events say how many frames are made at once."""
        events = self.events
        if events is None:
            return
        from ray.util.queue import Empty

        while True:
            try:
                batch = events.get_nowait_batch(max(1, events.qsize()))
            except Empty:
                return
            for event in batch:
                if event.get("event") == "frame":
                    number = int(event["number"])
                    if number in self.reported:
                        continue
                    self.reported.add(number)
                    slots = self.slots.count if self.slots else 1
                    event = dict(event, parallel=max(1, min(slots, len(self.pending))))
                self.emit(event)

    def _stop(self) -> None:
        """Cancel every pending task and give them a moment to stop at a frame boundary
        (a frame on disk is whole either way: frames are written by rename)."""
        ray = self.ray
        refs = list(self.pending)
        if not refs:
            return
        for ref in refs:
            ray.cancel(ref)
        _, stuck = ray.wait(refs, num_returns=len(refs), timeout=_CANCEL_WAIT_S)
        for ref in stuck:
            ray.cancel(ref, force=True)
        self.pending.clear()
