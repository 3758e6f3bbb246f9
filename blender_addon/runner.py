"""One job on a worker, as a small state machine that is polled: pure Python, no ``bpy``.

The modal operator calls ``poll()`` from a timer so the UI never blocks; background mode
and tests call ``wait()``, which loops over the same steps. States: ``starting`` (waiting
for the worker's hello), ``running``, ``cancelling``, then one of ``done``, ``cancelled``,
``failed``.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .protocol import EXIT_EVENT, PROTOCOL, WorkerClient, WorkerError

STARTING = "starting"
RUNNING = "running"
CANCELLING = "cancelling"
DONE = "done"
CANCELLED = "cancelled"
FAILED = "failed"
FINISHED_STATES = frozenset({DONE, CANCELLED, FAILED})

# Importing torch on a cold disk can take a long time; a worker silent for longer is stuck.
HELLO_TIMEOUT_S = 120.0
# After a cancel, a worker inside a long optimisation step gets this long to stop.
CANCEL_GRACE_S = 120.0

EventHook = Callable[[dict[str, Any]], None]

# The engine's messages name settings by their job field, in backticks (`loss_net`); a
# Blender user sees the panel field or preference instead (docs/worker-protocol.md).
PANEL_NAMES = {
    "loss_net": "the Loss Network field of the Stylize panel",
    "vgg_weights": "the STYLECORE_VGG_WEIGHTS variable of the worker",
    "size": "Processing Size",
    "iterations": "Iterations",
    "first_iterations": "the first_iterations Extra Job Option",
    "style_weight": "Style Weight",
    "style": "Style Image",
    "style_video": "Style Video",
    "model": "Model",
    "device": "the Device preference",
    "output": "the Output Folder preference",
    "overwrite": "Re-stylize",
    "frames": "the strip's frame range",
    "restart": "Start Over (Train Style)",
    "quality": "Quality (Train Style)",
    "content": "Train on This Strip",
    "data": "the training content (this strip, and the data folders in Extra Training Options)",
}
# The engine's "no model for this style" message, and what a Blender user does about it.
_NO_MODEL = re.compile(r"^no feedforward model was trained on (.+?); train one .*$")
_SETTING = re.compile(r"`([a-z_]+)`")


def for_blender(message: str) -> str:
    """An engine message in Blender's words: panel fields, and the worker's own Python for
    the commands it suggests."""
    no_model = _NO_MODEL.match(message)
    if no_model:
        return (f"no feedforward model was trained on {no_model.group(1)}: click Train Style in the Stylize "
                "panel to train one, choose another Model, or use the Optimization mode")
    message = _SETTING.sub(lambda m: PANEL_NAMES.get(m.group(1), m.group(1)), message)
    return message.replace("'stylecore weights", "'<Worker Python> -m stylecore weights")


@dataclass
class Progress:
    """What the panel and the status bar show."""

    done: int = 0
    total: int = 0
    todo: int = 0
    seconds_per_frame: float = 0.0  # per training step for a training job
    eta_seconds: float = 0.0
    losses: dict[str, float] = field(default_factory=dict)  # training only

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0


@dataclass
class JobRun:
    """Sends one job to ``client`` and follows its events until it finishes."""

    client: WorkerClient
    job: dict[str, Any]
    overwrite: bool = False
    op: str = "stylize"  # or "train", "models" (protocol 2)
    on_event: EventHook | None = None
    job_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    state: str = STARTING
    progress: Progress = field(default_factory=Progress)
    error: str | None = None
    output: str | None = None
    frames: dict[int, str] = field(default_factory=dict)  # output number -> path
    preview: str | None = None  # training: the latest preview sheet
    model: str | None = None  # training: the model file written
    models: list[dict[str, Any]] | None = None  # the answer of a models job
    _submitted: bool = False
    _since: float = field(default_factory=time.monotonic)

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES

    def poll(self, timeout: float = 0.0) -> bool:
        """Handle whatever the worker sent (waiting up to ``timeout`` s); True once finished."""
        if self.finished:
            return True
        try:
            self._advance()
            for event in self.client.events(timeout):
                self._handle(event)
                if self.finished:
                    break
            self._check_timeouts()
        except WorkerError as exc:
            self._fail(str(exc))
        return self.finished

    def wait(self, timeout: float | None = None) -> str:
        """Block until the job finishes (or ``timeout`` s pass); returns the state."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.poll(timeout=0.25):
            if deadline is not None and time.monotonic() > deadline:
                break
        return self.state

    def cancel(self) -> None:
        """Ask the worker to stop between frames; whole frames stay on disk."""
        if self.finished:
            return
        if not self._submitted:
            self._finish(CANCELLED)
            return
        self.client.cancel(self.job_id)
        self.state = CANCELLING
        self._since = time.monotonic()

    # ------------------------------------------------------------------ internals

    def _advance(self) -> None:
        if self.state != STARTING:
            return
        if self.client.info is None:
            if not self.client.hello_sent:
                self.client.hello()
                self._since = time.monotonic()
            return
        if self.client.info.protocol != PROTOCOL:
            self._fail(_protocol_message(self.client.info.protocol, self.client.info.stylecore))
            return
        if self.op == "stylize":
            self.client.stylize(self.job_id, self.job, overwrite=self.overwrite)
        elif self.op not in self.client.info.ops:
            self._fail(f"the stylecore worker (stylecore {self.client.info.stylecore}) cannot run {self.op} jobs: "
                       "update stylecore in the worker's environment (Set Up Worker in the add-on's preferences)")
            return
        else:
            self.client.submit(self.op, self.job_id, self.job)
        self._submitted = True
        self.state = RUNNING
        self._since = time.monotonic()

    def _handle(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == EXIT_EVENT:
            self._fail(self.client.death_message())
            return
        if kind == "hello":
            self._advance()
            return
        job_id = event.get("id")
        if job_id is None and kind == "error" and self.state == STARTING:
            self._fail(str(event.get("message", "the worker refused the handshake")))
            return
        if job_id != self.job_id:
            return  # a late event of an earlier job
        if self.on_event is not None:
            self.on_event(event)
        if kind == "start":
            self.progress.total = int(event.get("total", 0))
            self.progress.todo = int(event.get("todo", 0))
            self.output = event.get("output") or self.output
        elif kind == "frame":
            self.frames[int(event.get("number", 0))] = str(event.get("path", ""))
        elif kind == "progress":
            self.progress.done = int(event.get("done", self.progress.done))
            self.progress.total = int(event.get("total", self.progress.total))
            self.progress.seconds_per_frame = float(event.get("seconds_per_frame", event.get("seconds_per_step", 0.0)))
            self.progress.eta_seconds = float(event.get("eta_seconds", 0.0))
            self.progress.losses = dict(event.get("losses") or {})
        elif kind == "preview":
            self.preview = str(event.get("path", "")) or self.preview
        elif kind == "models":
            self.models = list(event.get("models") or [])
        elif kind == "done":
            self.output = event.get("output") or self.output
            self.model = event.get("model") or self.model
            self.progress.done = self.progress.total = int(event.get("frames", self.progress.total))
            self._finish(DONE)
        elif kind == "cancelled":
            self._finish(CANCELLED)
        elif kind == "error":
            self._fail(for_blender(str(event.get("message", "the worker reported an error"))))

    def _check_timeouts(self) -> None:
        waited = time.monotonic() - self._since
        if self.state == STARTING and (problem := self.client.import_problem()) is not None:
            # A worker whose imports failed may hang instead of exiting: do not wait for it.
            self.client.close(timeout=2.0)
            self._fail(problem)
        elif self.state == STARTING and waited > HELLO_TIMEOUT_S:
            self._fail(f"the stylecore worker did not answer within {HELLO_TIMEOUT_S:.0f} s; "
                       "check the worker Python in the add-on's preferences")
        elif self.state == CANCELLING and waited > CANCEL_GRACE_S:
            # The worker ignores the cancel: stop it, or it would refuse the next job as busy.
            self.client.close(timeout=2.0)
            self._finish(CANCELLED)

    def _fail(self, message: str) -> None:
        self.error = message
        self._finish(FAILED)

    def _finish(self, state: str) -> None:
        self.state = state


def _protocol_message(theirs: int, version: str) -> str:
    return (f"the stylecore worker (stylecore {version}) speaks protocol {theirs}, this add-on speaks "
            f"{PROTOCOL}: update stylecore in the worker's environment, or the add-on, so they match")
