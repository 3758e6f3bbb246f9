"""Client side of the stylecore worker protocol (docs/worker-protocol.md): pure Python.

The worker is a subprocess running in the environment where stylecore and torch are
installed. Requests go to its stdin as JSON lines; a reader thread turns its stdout into a
queue of events, and another keeps the tail of its stderr, so Blender never blocks on a
pipe. Nothing here imports ``bpy``, torch or stylecore.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .contract import PROTOCOL

WORKER_MODULE = "stylecore.worker"
# Pseudo-event the reader queues when the worker's stdout closes (the process ended).
EXIT_EVENT = "worker-exit"
_STDERR_TAIL = 60
# How long the exit report waits for the stderr reader to reach the end of the pipe.
_STDERR_DRAIN_S = 5.0


class WorkerError(Exception):
    """The worker cannot be started or talked to; the message is one line for the user."""


@dataclass(frozen=True)
class WorkerInfo:
    """What the worker said in its ``hello``."""

    protocol: int
    stylecore: str
    torch: str
    devices: tuple[str, ...]
    device_names: tuple[tuple[str, str], ...] = ()  # ("cuda", "NVIDIA ...")
    ops: tuple[str, ...] = ("stylize",)

    def describe_devices(self) -> str:
        """``cuda (NVIDIA H200), cpu``: the best device first, as Automatic would pick it."""
        names = dict(self.device_names)
        order = sorted(self.devices, key=lambda d: {"cuda": 0, "mps": 1}.get(d, 2))
        return ", ".join(f"{d} ({names[d]})" if d in names else d for d in order)


def worker_command(python: str) -> list[str]:
    """The command line that starts the worker with interpreter ``python``."""
    return [python, "-u", "-m", WORKER_MODULE]


class WorkerClient:
    """One worker process. Thread-safe to send from; events are read from ``events()``."""

    def __init__(self, command: Sequence[str], *, env: dict[str, str] | None = None) -> None:
        self.command = list(command)
        self._env = env
        self._proc: subprocess.Popen[str] | None = None
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._stderr: collections.deque[str] = collections.deque(maxlen=_STDERR_TAIL)
        self._send_lock = threading.Lock()
        self.info: WorkerInfo | None = None
        self.hello_sent = False

    # ------------------------------------------------------------------ process

    def start(self) -> None:
        """Start the process (idempotent while it runs)."""
        if self.alive:
            return
        self.info = None
        self.hello_sent = False
        self._events = queue.Queue()
        self._stderr.clear()
        env = dict(os.environ if self._env is None else self._env)
        env.setdefault("PYTHONIOENCODING", "utf-8")
        # A Blender-bundled PYTHONHOME/PYTHONPATH would break a different interpreter.
        for key in ("PYTHONHOME", "PYTHONPATH"):
            env.pop(key, None)
        # Its own process group: Ctrl+C in the terminal of a headless batch reaches Blender
        # only, which cancels the job cleanly (whole frames kept), instead of killing the
        # worker's video decoder mid-frame. The worker still ends when Blender does (stdin closes).
        flags = (subprocess.CREATE_NO_WINDOW | subprocess.CREATE_NEW_PROCESS_GROUP) if sys.platform == "win32" else 0
        try:
            self._proc = subprocess.Popen(
                self.command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                encoding="utf-8",
                errors="replace",
                bufsize=1,
                env=env,
                creationflags=flags,
                start_new_session=sys.platform != "win32",
            )
        except OSError as exc:
            raise WorkerError(f"cannot start the stylecore worker ({self.command[0]}): {exc.strerror or exc}") from None
        stderr_reader = threading.Thread(target=self._read_stderr, args=(self._proc,), daemon=True)
        stderr_reader.start()
        threading.Thread(target=self._read_stdout, args=(self._proc, self._events, stderr_reader),
                         daemon=True).start()

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def stderr_tail(self, lines: int = 10) -> list[str]:
        return list(self._stderr)[-lines:]

    def _read_stdout(self, proc: subprocess.Popen[str], events: queue.Queue[dict[str, Any]],
                     stderr_reader: threading.Thread) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            text = line.strip()
            if not text:
                continue
            try:
                event = json.loads(text)
            except ValueError:
                event = None
            if not isinstance(event, dict) or "event" not in event:
                # Not protocol: a library printed to stdout. Keep it for error messages.
                self._stderr.append(text)
                continue
            if event["event"] == "hello":
                self.info = _parse_hello(event)
            events.put(event)
        code = proc.wait()
        # The exit is reported with the worker's last words: let the stderr reader drain the
        # pipe first (it ends at EOF; bounded, in case a grandchild keeps the pipe open).
        stderr_reader.join(timeout=_STDERR_DRAIN_S)
        events.put({"event": EXIT_EVENT, "returncode": code})

    def _read_stderr(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.strip():
                self._stderr.append(line.rstrip())

    # ------------------------------------------------------------------ requests

    def send(self, request: dict[str, Any]) -> None:
        """Write one request line; a dead worker raises ``WorkerError``."""
        proc = self._proc
        if proc is None or proc.stdin is None or proc.poll() is not None:
            raise WorkerError(self.death_message())
        line = json.dumps(request, separators=(",", ":")) + "\n"
        try:
            with self._send_lock:
                proc.stdin.write(line)
                proc.stdin.flush()
        except (OSError, ValueError):
            raise WorkerError(self.death_message()) from None

    def hello(self) -> None:
        """Ask for the handshake; the ``hello`` event sets ``info``."""
        self.send({"op": "hello", "protocol": PROTOCOL})
        self.hello_sent = True

    def stylize(self, job_id: str, job: dict[str, Any], *, overwrite: bool = False) -> None:
        self.send({"op": "stylize", "id": job_id, "job": job, "overwrite": overwrite})

    def submit(self, op: str, job_id: str, job: dict[str, Any]) -> None:
        """A ``train`` or ``models`` job (protocol 2)."""
        self.send({"op": op, "id": job_id, "job": job})

    def cancel(self, job_id: str) -> None:
        with contextlib.suppress(WorkerError):  # a dead worker runs nothing: cancelled either way
            self.send({"op": "cancel", "id": job_id})

    def events(self, timeout: float | None = 0.0) -> list[dict[str, Any]]:
        """Events received so far; with a timeout, wait that long for the first one."""
        out: list[dict[str, Any]] = []
        try:
            if timeout is None or timeout > 0:
                out.append(self._events.get(timeout=timeout))
            while True:
                out.append(self._events.get_nowait())
        except queue.Empty:
            pass
        return out

    def close(self, timeout: float = 10.0) -> None:
        """Ask the worker to shut down (it cancels a running job); kill it if it hangs."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            try:
                self.send({"op": "shutdown"})
                if proc.stdin is not None:
                    proc.stdin.close()
            except (WorkerError, OSError, ValueError):
                pass
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self._proc = None

    # ------------------------------------------------------------------ messages

    def import_problem(self) -> str | None:
        """A one-line explanation when the worker printed that a module is missing."""
        python = self.command[0] if self.command else "?"
        for line in reversed(self.stderr_tail(20)):
            text = line.strip()
            # Python's own "-m" failure is "...: Error while finding module specification for
            # 'stylecore.worker' (ModuleNotFoundError: ...)" or "...: No module named stylecore".
            if "No module named stylecore" in text or "module specification for 'stylecore" in text:
                text = "ModuleNotFoundError: No module named 'stylecore'"
            if not text.startswith(("ModuleNotFoundError", "ImportError")):
                continue
            if "stylecore" in text:
                return (f"stylecore is not installed for the worker Python {python}: install it there "
                        f"({python} -m pip install stylecore) or choose another interpreter "
                        "in the add-on's preferences")
            return (f"the worker Python {python} cannot import what stylecore needs ({text}); "
                    f"reinstall stylecore there ({python} -m pip install stylecore) or choose another interpreter")
        return None

    def death_message(self) -> str:
        """One line saying that the worker stopped, and the likely reason."""
        code = self.returncode
        tail = self.stderr_tail(20)
        problem = self.import_problem()
        if problem is not None:
            return problem
        last = _last_meaningful(tail)
        status = "" if code is None else f" (exit code {code})"
        detail = f": {last}" if last else ""
        return f"the stylecore worker stopped{status}{detail}"


def _parse_hello(event: dict[str, Any]) -> WorkerInfo:
    return WorkerInfo(
        protocol=int(event.get("protocol", 0)),
        stylecore=str(event.get("stylecore", "?")),
        torch=str(event.get("torch", "?")),
        devices=tuple(str(d) for d in event.get("devices", ()) or ()),
        device_names=tuple((str(k), str(v)) for k, v in (event.get("device_names") or {}).items()),
        ops=tuple(str(o) for o in event.get("ops", ("stylize",)) or ("stylize",)),
    )


def _last_meaningful(lines: Sequence[str]) -> str:
    """The last stderr line worth showing (an exception line beats a progress bar)."""
    for line in reversed(lines):
        text = line.strip()
        if text and not text.startswith(("File ", "^", "~")) and text != "Traceback (most recent call last):":
            return text[:300]
    return ""


class WorkerPool:
    """Keeps one worker per command alive across jobs, so loaded models are reused."""

    def __init__(self) -> None:
        self._workers: dict[tuple[str, ...], WorkerClient] = {}
        self._lock = threading.Lock()

    def get(self, command: Sequence[str]) -> WorkerClient:
        key = tuple(command)
        with self._lock:
            client = self._workers.get(key)
            if client is None or not client.alive:
                client = WorkerClient(command)
                client.start()
                self._workers[key] = client
            return client

    def discard(self, client: WorkerClient) -> None:
        """Forget (and stop) a worker, e.g. after it misbehaved."""
        with self._lock:
            for key, value in list(self._workers.items()):
                if value is client:
                    del self._workers[key]
        client.close(timeout=2.0)

    def close_all(self) -> None:
        with self._lock:
            workers = list(self._workers.values())
            self._workers.clear()
        for client in workers:
            client.close()


POOL = WorkerPool()
