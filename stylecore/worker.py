"""JSON-lines worker for the Blender add-on: ``python -m stylecore.worker``.

Requests arrive on stdin, events leave on stdout, one JSON object per line (see
docs/worker-protocol.md). Jobs run on the main thread; a reader thread keeps listening so
that ``cancel`` and ``shutdown`` take effect while a job runs. The process stays alive
across jobs, so loss networks and models loaded by one job are reused by the next.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import traceback
from typing import IO, Any

from stylecore import __version__
from stylecore.contract import PROTOCOL
from stylecore.errors import Cancelled, StylecoreError

# Protocol 2 added the ``train`` and ``models`` requests; a protocol-1 client only stylizes,
# which protocol 2 still answers unchanged.
COMPATIBLE_PROTOCOLS = (1, 2)
JOB_OPS = ("stylize", "train", "models")


class _Events:
    """Writes protocol events to the real stdout, one line each, from any thread."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def __call__(self, event: dict[str, Any]) -> None:
        line = json.dumps(event, separators=(",", ":"))
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()


class _State:
    """What the reader thread and the job loop share."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: str | None = None
        self.cancelled: set[str] = set()
        self.shutdown = threading.Event()


def serve(stdin: IO[str], stdout: IO[str]) -> int:
    """Serve requests until ``shutdown`` or end of input; return the exit status."""
    emit = _Events(stdout)
    state = _State()
    jobs: queue.Queue[dict[str, Any] | None] = queue.Queue()
    reader = threading.Thread(target=_read_requests, args=(stdin, emit, state, jobs), daemon=True)
    reader.start()
    while True:
        request = jobs.get()
        if request is None:
            return 0
        _run_job(request, emit, state)
        if state.shutdown.is_set():
            return 0


def _read_requests(stdin: IO[str], emit: _Events, state: _State, jobs: queue.Queue) -> None:
    """Read until end of input; whatever happens, the job loop is told to finish.

    End of input means the add-on (or Blender) is gone: the running job is cancelled
    like on ``shutdown``, so an orphaned worker never keeps computing.
    """
    try:
        _dispatch_requests(stdin, emit, state, jobs)
    except Exception as exc:  # noqa: BLE001 - a dead reader must not leave the worker hanging
        traceback.print_exc(file=sys.stderr)
        emit({"event": "error", "id": None, "message": f"worker failed reading requests ({type(exc).__name__}: {exc})"})
    finally:
        state.shutdown.set()
        with state.lock:
            if state.running is not None:
                state.cancelled.add(state.running)
        jobs.put(None)


def _dispatch_requests(stdin: IO[str], emit: _Events, state: _State, jobs: queue.Queue) -> None:
    """Parse requests; answer ``hello`` and handle ``cancel``/``shutdown`` at once."""
    for line in stdin:
        line = line.strip()
        if not line:
            continue
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            emit({"event": "error", "id": None, "message": f"unreadable request ({exc}): {line[:80]}"})
            continue
        op = request.get("op")
        job_id = request.get("id")
        if op in ("stylize", "cancel") and not _valid_id(job_id):
            # Echoed as sent (never turned into a string), so the sender can tell which request failed.
            emit({"event": "error", "id": job_id, "message": f"a {op} request needs an `id` that is a non-empty "
                  f"string, not {_shown(job_id)}"})
            continue
        if op == "hello":
            try:
                emit(_hello(request))
            except ImportError as exc:
                emit({"event": "error", "id": None, "message": f"the worker's Python cannot import {exc.name or exc}: "
                      "install stylecore and torch in it (pip install torch==2.13.0 stylecore)"})
        elif op == "cancel":
            with state.lock:
                state.cancelled.add(job_id)
        elif op == "shutdown":
            break
        elif op in JOB_OPS:
            problem = _envelope_problem(request) if op != "models" else ""
            if problem:
                emit({"event": "error", "id": job_id, "message": problem})
                continue
            with state.lock:
                busy = state.running is not None or not jobs.empty()
                if not busy:
                    state.running = job_id
            if busy:
                emit({"event": "error", "id": job_id, "message": "the worker is already running a job; "
                      "cancel it or wait for it to finish"})
            else:
                jobs.put(request)
        else:
            emit({"event": "error", "id": job_id, "message": f"unknown op {op!r}; expected hello, stylize, "
                  "train, models, cancel or shutdown"})


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _valid_id(job_id: Any) -> bool:
    return isinstance(job_id, str) and bool(job_id)


def _envelope_problem(request: dict[str, Any]) -> str:
    """What is wrong with a job request's own fields (a stylize job is then checked by ``JobSpec``)."""
    if not isinstance(request.get("job"), dict):
        return f"`job` must be a JSON object of job fields, not {_shown(request.get('job'))}"
    if not isinstance(request.get("overwrite", False), bool):
        return f"`overwrite` must be true or false, not {_shown(request.get('overwrite'))}"
    return ""


def _shown(value: Any) -> str:
    text = json.dumps(value) if _jsonable(value) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _hello(request: dict[str, Any]) -> dict[str, Any]:
    import torch

    wanted = request.get("protocol", PROTOCOL)
    if wanted not in COMPATIBLE_PROTOCOLS:
        return {"event": "error", "id": None, "message": f"the add-on speaks worker protocol {wanted}, this "
                f"stylecore {__version__} speaks {PROTOCOL}: update stylecore in the worker's environment"}
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
    return {"event": "hello", "protocol": PROTOCOL, "stylecore": __version__, "torch": torch.__version__,
            "devices": devices, "device_names": _device_names(), "ops": list(JOB_OPS)}


def _device_names() -> dict[str, str]:
    """A readable name per accelerator (``{"cuda": "NVIDIA H200"}``), for Check Worker."""
    import torch

    names: dict[str, str] = {}
    if torch.cuda.is_available():
        names["cuda"] = torch.cuda.get_device_name(0)
    return names


def _run_job(request: dict[str, Any], emit: _Events, state: _State) -> None:
    from stylecore.jobspec import JobSpec
    from stylecore.pipeline import run_job

    job_id: str = request["id"]  # checked by the reader: a non-empty string
    final: dict[str, Any] = {"event": "error", "message": "the job ended without a result"}

    def send(event: dict[str, Any]) -> None:
        nonlocal final
        if event.get("event") == "done":
            final = event  # sent once the worker is free again, so a next job is accepted
        else:
            emit({**event, "id": job_id})

    def cancelled() -> bool:
        with state.lock:
            return job_id in state.cancelled

    try:
        op = request.get("op", "stylize")
        if op == "train":
            _train(dict(request.get("job") or {}), send, cancelled)
        elif op == "models":
            _models(send)
        else:
            spec = JobSpec.from_dict(dict(request.get("job") or {}))
            run_job(spec, send, cancelled, overwrite=bool(request.get("overwrite", False)))
    except Cancelled:
        final = {"event": "cancelled"}
    except StylecoreError as exc:
        final = {"event": "error", "message": _one_line(str(exc))}
    except Exception as exc:  # noqa: BLE001 - a worker must report, not die
        traceback.print_exc(file=sys.stderr)
        final = {"event": "error", "message": f"internal error ({type(exc).__name__}: {_one_line(str(exc))}); "
                 "the worker's stderr has the details"}
    with state.lock:
        state.cancelled.discard(job_id)
        state.running = None
    emit({**final, "id": job_id})


def _train(job: dict[str, Any], send: Any, cancelled: Any) -> None:
    """A training job: training events become protocol events (docs/worker-protocol.md)."""
    from training.job import TrainJob, run_train_job

    spec = TrainJob.from_dict(job)

    def on_event(event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "start":
            send({"event": "start", "total": event["steps"], "todo": event["steps"] - event["step"],
                  "output": event["out"], "loss_net": event["loss_net"], "device": event["device"]})
        elif kind == "step":
            send({"event": "progress", "done": event["step"], "total": event["steps"],
                  "seconds_per_step": event["seconds_per_step"], "eta_seconds": event["eta_seconds"],
                  "losses": event["losses"]})
        elif kind == "preview":
            send({"event": "preview", "step": event["step"], "path": event["path"]})
        elif kind == "done":
            send({"event": "done", "output": event["model"], "model": event["model"], "name": event["name"],
                  "frames": event["steps"]})

    run_train_job(spec, on_event=on_event, cancel=cancelled, log=lambda line: print(line, file=sys.stderr))


def _models(send: Any) -> None:
    """The model list (``stylecore models``), one ``models`` event, then ``done``."""
    from stylecore.catalog import list_models

    models = [{"name": m.name, "path": str(m.path), "origin": m.origin, "style_name": m.style_name,
               "thumbnail": str(m.thumbnail) if m.thumbnail else None,
               "style_thumbnail_sha256": m.style_thumbnail_sha256, "loss_network": m.loss_network}
              for m in list_models()]
    send({"event": "models", "models": models})
    send({"event": "done", "output": None, "frames": 0})


def main() -> int:
    # Protocol lines own the real stdout; anything else that prints goes to stderr.
    protocol_out = sys.stdout
    sys.stdout = sys.stderr
    return serve(sys.stdin, protocol_out)


if __name__ == "__main__":
    sys.exit(main())
