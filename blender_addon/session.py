"""A stylize run over one or more strips, advanced in small steps.

For each strip: plan the job, render the strip first if its pixels are not in a file,
run the job on the worker, then create or update the result strip. ``step()`` does a
little of that and returns; the modal operator calls it from a timer (the UI stays
responsive), background mode and the batch command call ``run()`` which loops. Strips
and scenes are looked up by name at every step, as undo may replace the Python objects.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import bpy

from . import jobs, props, vse
from .environment import SetupError, resolve_worker_python
from .protocol import POOL, WorkerError, worker_command
from .runner import CANCELLED, DONE, JobRun, Progress

Log = Callable[[str], None]


@dataclass
class Message:
    level: str  # "INFO" | "WARNING" | "ERROR", as for Operator.report
    text: str


class _Session:
    """What a stylize and a training session share: the scene they report to, their
    messages (also the scene's status line) and running to the end. Subclasses are
    dataclasses with ``scene_name``, ``log``, ``messages`` and ``step()``."""

    scene_name: str
    log: Log | None
    messages: list[Message]

    @property
    def scene(self) -> Any:
        return bpy.data.scenes.get(self.scene_name)

    @property
    def failed(self) -> bool:
        return any(m.level == "ERROR" for m in self.messages)

    def step(self, wait: float = 0.0) -> bool:
        raise NotImplementedError

    def run(self) -> list[Message]:
        """Run to the end (background mode, batch, tests)."""
        while not self.step(wait=0.25):
            pass
        return self.messages

    def _say(self, text: str, level: str = "INFO") -> None:
        self.messages.append(Message(level, text))
        if self.log is not None:
            self.log(text if level == "INFO" else f"{level}: {text}")
        scene = self.scene
        if scene is not None and hasattr(scene, props.SCENE_SETTINGS):
            props.scene_settings(scene).status = text


@dataclass
class StylizeSession(_Session):
    """Stylizes ``strip_names`` of ``scene_name`` one after another."""

    scene_name: str
    strip_names: list[str]
    settings: jobs.Settings
    preview: bool = False
    log: Log | None = None
    messages: list[Message] = field(default_factory=list)
    results: list[str] = field(default_factory=list)
    cancelled: bool = False
    finished: bool = False
    _queue: list[str] = field(default_factory=list)
    _plan: jobs.Plan | None = None
    _render: Iterator[int] | None = None
    _rendered: int = 0
    _run: JobRun | None = None
    _done_strips: int = 0
    _last_logged: int = -1

    def __post_init__(self) -> None:
        self._queue = list(self.strip_names)

    # ------------------------------------------------------------------ public

    @property
    def current(self) -> str:
        return self._plan.source_name if self._plan is not None else ""

    @property
    def fraction(self) -> float:
        """Overall progress in [0, 1] across all strips."""
        total = max(len(self.strip_names), 1)
        part = 0.0
        if self._render is not None and self._plan is not None:
            part = 0.5 * self._rendered / max(self._plan.frame_count, 1)
        elif self._run is not None:
            part = self._run.progress.fraction
        return min(1.0, (self._done_strips + part) / total)

    @property
    def status(self) -> str:
        """One line for the panel and the status bar."""
        if self.finished:
            return "Cancelled" if self.cancelled else "Done"
        name = self.current
        counter = f" ({self._done_strips + 1}/{len(self.strip_names)})" if len(self.strip_names) > 1 else ""
        if self._render is not None and self._plan is not None:
            return f"Rendering {name}{counter}: {self._rendered}/{self._plan.frame_count}"
        if self._run is not None:
            p: Progress = self._run.progress
            if self._run.state == "starting":
                return f"Starting the worker for {name}{counter}..."
            if self._run.state == "cancelling":
                return f"Cancelling {name}..."
            eta = f", {_clock(p.eta_seconds)} left" if p.eta_seconds > 0 else ""
            return f"Stylizing {name}{counter}: {p.done}/{p.total} frames{eta}"
        return "Stylize"

    def step(self, wait: float = 0.0) -> bool:
        """Do a slice of work (waiting up to ``wait`` s for the worker); True when all is done."""
        if self.finished:
            return True
        if self._render is not None:
            self._step_render()
        elif self._run is not None:
            self._step_job(wait)
        elif self._queue and not self.cancelled:
            self._start_next()
        else:
            self.finished = True
        return self.finished

    def cancel(self) -> None:
        """Stop after the current frame; frames already written stay, re-running resumes."""
        if self.finished or self.cancelled:
            return
        self.cancelled = True
        self._queue.clear()
        self._say("Cancelled: the frames made so far are kept; stylize again to resume", "WARNING")
        if self._render is not None:
            self._render.close()  # restores the scene (mutes, blend, output settings)
            self._render = None
            self._end_strip()
        if self._run is not None:
            self._run.cancel()

    @property
    def rendering(self) -> bool:
        """True while source frames are being rendered (each step renders one frame)."""
        return self._render is not None

    # ------------------------------------------------------------------ steps

    def _start_next(self) -> None:
        name = self._queue.pop(0)
        scene = self.scene
        strip = None if scene is None else vse.find_strip(scene, name)
        if strip is None:
            self._error(f"strip '{name}' no longer exists")
            return
        try:
            frame = scene.frame_current if self.preview else None
            self._plan = jobs.plan_strip(scene, strip, self.settings, preview_frame=frame)
        except jobs.StylizeError as exc:
            self._error(str(exc))
            self._done_strips += 1
            return
        if self._plan.rendered:
            assert self._plan.render_folder is not None and self._plan.render_frames is not None
            shutil.rmtree(self._plan.render_folder, ignore_errors=True)
            source = vse.find_strip(scene, self._plan.source_name)
            self._rendered = 0
            if vse.parent_meta(source) is not None:
                self._error(f"strip '{source.name}' is inside a meta strip and can only be stylized by "
                            "rendering it: stylize the meta strip instead")
                self._end_strip()
                return
            self._say(f"{self._plan.source_name}: rendering {self._plan.frame_count} frame(s) through Blender")
            self._render = vse.render_strip_frames(scene, source, self._plan.render_folder,
                                                   self._plan.render_frames)
            return
        self._submit()

    def _step_render(self) -> None:
        assert self._render is not None and self._plan is not None
        try:
            self._rendered = next(self._render)
        except StopIteration:
            self._render = None
            self._plan.finalize()
            source = None if self.scene is None else vse.find_strip(self.scene, self._plan.source_name)
            if source is not None:
                props.strip_settings(source).uid = self._plan.uid  # possibly adopted from before a crash
            self._submit()
        except (RuntimeError, ValueError) as exc:
            self._render = None
            self._error(f"rendering strip '{self._plan.source_name}' failed: {exc}")
            self._end_strip()

    def _submit(self) -> None:
        assert self._plan is not None
        try:
            python, _ = resolve_worker_python(self.settings.worker_python)
            client = POOL.get(worker_command(python))
        except (SetupError, WorkerError) as exc:
            self._error(str(exc))
            self._queue.clear()  # every other strip would fail the same way
            self._end_strip()
            return
        self._say(f"{self._plan.source_name}: {self._plan.frame_count} frame(s) -> {self._plan.folder}")
        self._last_logged = -1
        self._run = JobRun(client, self._plan.job)

    def _step_job(self, wait: float) -> None:
        assert self._run is not None and self._plan is not None
        run = self._run
        run.poll(timeout=wait)
        if self.log is not None and run.progress.done != self._last_logged and run.progress.total:
            self._last_logged = run.progress.done
            p = run.progress
            self.log(f"{self._plan.source_name}: {p.done}/{p.total} frames "
                     f"({p.seconds_per_frame:.2f} s/frame, {_clock(p.eta_seconds)} left)")
        if not run.finished:
            return
        self._run = None
        if run.state == DONE:
            self._finish_strip()
        elif run.state == CANCELLED:
            self._say(f"{self._plan.source_name}: stopped after {len(run.frames)} new frame(s)")
            self._end_strip()
        else:
            if run.error and run.error.startswith("no feedforward model was trained on"):
                self._remember_no_model()
            self._error(f"{self._plan.source_name}: {run.error}")
            self._end_strip()

    def _remember_no_model(self) -> None:
        """The panel then says that this style has no model yet and offers Train Style."""
        assert self._plan is not None
        scene = self.scene
        strip = None if scene is None else vse.find_strip(scene, self._plan.source_name)
        styles = self._plan.job.get("styles") or []
        if strip is not None and styles:
            props.strip_settings(strip).no_model_style = str(styles[0][0])

    def _finish_strip(self) -> None:
        assert self._plan is not None and self._plan.folder is not None
        scene = self.scene
        try:
            if self.preview:
                _show_preview(scene, self._plan.folder / jobs.FRAME_NAME.format(1))
                self._say(f"{self._plan.source_name}: preview of frame {scene.frame_current} ready")
            else:
                result = jobs.apply_result(scene, self._plan)
                self.results.append(result.name)
                self._say(f"{self._plan.source_name}: stylized into '{result.name}'")
        except (jobs.StylizeError, ValueError) as exc:
            self._error(str(exc))
        self._end_strip()

    def _end_strip(self) -> None:
        self._plan = None
        self._render = None
        self._run = None
        self._done_strips += 1

    # ------------------------------------------------------------------ messages

    def _error(self, text: str) -> None:
        self._say(text, "ERROR")


@dataclass
class TrainSession(_Session):
    """Trains a model for one strip's style image on the worker (Train Style), then
    refreshes the scene's model list. Same interface as ``StylizeSession`` for the
    operators and the panel."""

    scene_name: str
    strip_name: str
    settings: jobs.Settings
    log: Log | None = None
    messages: list[Message] = field(default_factory=list)
    results: list[str] = field(default_factory=list)  # the trained model's name
    cancelled: bool = False
    finished: bool = False
    preview: bool = False
    rendering: bool = False
    _job: dict[str, Any] | None = None
    _run: JobRun | None = None
    _list: JobRun | None = None
    _shown_preview: str | None = None
    _last_logged: int = -1

    @property
    def fraction(self) -> float:
        return self._run.progress.fraction if self._run is not None else 0.0

    @property
    def status(self) -> str:
        if self.finished:
            return "Cancelled" if self.cancelled else "Done"
        run = self._run
        name = (self._job or {}).get("output", "")
        if run is None or run.state == "starting":
            return f"Starting the worker to train {name}..."
        if run.state == "cancelling":
            return f"Cancelling the training of {name}..."
        p = run.progress
        eta = f", {_clock(p.eta_seconds)} left" if p.eta_seconds > 0 else ""
        loss = f", loss {p.losses['total']:.3g}" if "total" in p.losses else ""
        return f"Training {name}: step {p.done}/{p.total}{eta}{loss}"

    def step(self, wait: float = 0.0) -> bool:
        if self.finished:
            return True
        if self._run is None and self._list is None:
            self._start()
        elif self._run is not None:
            self._step_training(wait)
        else:
            self._step_list(wait)
        return self.finished

    def cancel(self) -> None:
        """Stop after the current step; the checkpoint stays, training again resumes."""
        if self.finished or self.cancelled:
            return
        self.cancelled = True
        self._say("Cancelled: training again resumes from the last step", "WARNING")
        if self._run is not None:
            self._run.cancel()
        else:
            self.finished = True

    def _start(self) -> None:
        scene = self.scene
        strip = None if scene is None else vse.find_strip(scene, self.strip_name)
        if strip is None:
            self._error(f"strip '{self.strip_name}' no longer exists")
            return
        try:
            self._job = jobs.plan_training(scene, strip, self.settings)
            client = _client(self.settings)
        except (jobs.StylizeError, SetupError, WorkerError) as exc:
            self._error(str(exc))
            return
        props.strip_settings(jobs.source_of(scene, strip)).train_start_over = False  # once, not every time
        self._say(f"training model '{self._job['output']}' for {self._job['style']}")
        self._run = JobRun(client, self._job, op="train")

    def _step_training(self, wait: float) -> None:
        assert self._run is not None
        run = self._run
        run.poll(timeout=wait)
        if run.preview and run.preview != self._shown_preview and self.scene is not None:
            self._shown_preview = run.preview
            _show_preview(self.scene, run.preview)
        if self.log is not None and run.progress.done != self._last_logged and run.progress.total:
            self._last_logged = run.progress.done
            self.log(self.status)
        if not run.finished:
            return
        self._run = None
        if run.state == DONE:
            name = Path(run.model or "").stem
            self.results.append(name)
            scene = self.scene
            strip = None if scene is None else vse.find_strip(scene, self.strip_name)
            if strip is not None:
                props.strip_settings(jobs.source_of(scene, strip)).no_model_style = ""
            self._say(f"trained model '{name}': Stylize now uses it for this style image")
            try:
                self._list = JobRun(_client(self.settings), {}, op="models")
            except (SetupError, WorkerError):
                self.finished = True
        elif run.state == CANCELLED:
            self.finished = True
        else:
            self._error(f"training failed: {run.error}")

    def _step_list(self, wait: float) -> None:
        assert self._list is not None
        if not self._list.poll(timeout=wait):
            return
        if self._list.models is not None and self.scene is not None:
            store_models(self.scene, self._list.models)
        self._list = None
        self.finished = True

    def _error(self, text: str) -> None:
        self._say(text, "ERROR")
        self.finished = True


def _client(settings: jobs.Settings) -> Any:
    python, _ = resolve_worker_python(settings.worker_python)
    return POOL.get(worker_command(python))


def store_models(scene: Any, models: list[dict[str, Any]]) -> None:
    """The worker's model list into the scene's (the Model field searches it)."""
    collection = props.scene_settings(scene).models
    collection.clear()
    for entry in models:
        item = collection.add()
        item.name = str(entry.get("name", ""))
        item.path = str(entry.get("path", ""))
        item.origin = str(entry.get("origin", ""))
        item.style_name = str(entry.get("style_name", ""))


def _show_preview(scene: Any, path: Any) -> None:
    """Load the preview frame into the image the panel shows."""
    name = "Stylecore Preview"
    image = bpy.data.images.get(name)
    if image is None:
        image = bpy.data.images.load(str(path), check_existing=False)
        image.name = name
    else:
        image.filepath = str(path)
        image.reload()
    props.scene_settings(scene).preview_image = image
    if not bpy.app.background:
        image.preview_ensure()
        image.preview.reload()


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
