"""Operators: Stylize (modal in the UI, synchronous in background mode), Cancel, and helpers."""

import os
import time
import uuid
from pathlib import Path

import bpy
from bpy.props import BoolProperty, StringProperty

from . import jobs, props, vse, worker_setup
from .environment import SetupError, move_results, output_root, rebase, resolve_worker_python, unsaved_root
from .protocol import POOL, WorkerError, worker_command
from .session import StylizeSession, TrainSession, store_models

# The run the panel shows. One at a time: the worker runs one job at a time anyway.
_ACTIVE: "StylizeSession | TrainSession | None" = None
TIMER_STEP_S = 0.1
# Inside one timer tick, keep rendering source frames for at most this long.
_TICK_BUDGET_S = 0.05
HELLO_CHECK_TIMEOUT_S = 180.0
# Names the temp folder of the unsaved file open now (a new one after every file load or
# File > New): unsaved files do not share a results folder.
_UNSAVED_KEY = uuid.uuid4().hex[:12]


def active_session() -> "StylizeSession | TrainSession | None":
    return _ACTIVE if _ACTIVE is not None and not _ACTIVE.finished else None


def settings_for(context: "bpy.types.Context") -> jobs.Settings:
    """Resolve the add-on preferences (defaults when it was registered without them)."""
    prefs = props.preferences(context)
    blend = bpy.data.filepath
    if prefs is None:
        return jobs.Settings(output_root=output_root("", blend, _UNSAVED_KEY))
    return jobs.Settings(
        worker_python=bpy.path.abspath(prefs.worker_python) if prefs.worker_python.strip() else "",
        device=jobs.DEVICES[prefs.device],
        output_root=output_root(_output_setting(prefs), blend, _UNSAVED_KEY),
        job_options=jobs.parse_job_options(prefs.job_options),
        train_options=jobs.parse_job_options(prefs.train_options, "Extra Training Options"),
    )


def _output_setting(prefs: "props.StylecorePreferences | None") -> str:
    """The Output Folder preference; ``//`` stays relative to the .blend."""
    if prefs is None:
        return ""
    return prefs.output_dir if prefs.output_dir.startswith("//") else bpy.path.abspath(prefs.output_dir)


def _target_names(scene: "bpy.types.Scene", name: str) -> tuple[list[str], list[str]]:
    """(strips to stylize, sound strips skipped); a result strip stands for its source."""
    if name:
        strips = [vse.find_strip(scene, name)]
    else:
        strips = vse.selected_strips(scene) or [vse.active_strip(scene)]
    strips = [s for s in strips if s is not None]
    visual = [s for s in strips if not vse.is_sound(s)]
    sounds = [s.name for s in strips if vse.is_sound(s)]
    if not visual:
        return [s.name for s in strips], []  # only sound: let the plan explain why
    names: list[str] = []
    for strip in visual:
        try:
            source = jobs.source_of(scene, strip)
        except jobs.StylizeError:
            source = strip  # the plan reports the missing source
        if source.name not in names:
            names.append(source.name)
    return names, sounds


def _tag_redraw(context: "bpy.types.Context") -> None:
    screen = context.screen
    if screen is None:
        return
    for area in screen.areas:
        if area.type in {"SEQUENCE_EDITOR", "PROPERTIES"}:
            area.tag_redraw()


class _SessionOperator:
    """A long job as a modal operator: a timer steps the session, Esc cancels, the status
    bar shows progress; in background mode (and from scripts via ``execute``) the job runs
    to the end before returning. Subclasses build the session in ``_session``."""

    _timer = None

    def _session(self, context: "bpy.types.Context") -> "StylizeSession | TrainSession | None":
        raise NotImplementedError

    def _finish(self, session: "StylizeSession | TrainSession") -> set[str]:
        for message in session.messages:
            if message.level != "INFO" or bpy.app.background:
                self.report({message.level}, message.text)
        if session.results or (session.preview and not session.failed and not session.cancelled):
            if not bpy.app.background and session.results and isinstance(session, StylizeSession):
                self.report({"INFO"}, f"Stylized {len(session.results)} strip(s)")
            elif not bpy.app.background and session.results:
                self.report({"INFO"}, session.messages[-1].text)
            return {"FINISHED"}
        return {"CANCELLED"}

    def execute(self, context: "bpy.types.Context") -> set[str]:
        """Synchronous: runs the job to the end (background mode and scripts)."""
        global _ACTIVE
        session = self._session(context)
        if session is None:
            return {"CANCELLED"}
        _ACTIVE = session
        try:
            session.run()
        finally:
            _ACTIVE = None
        return self._finish(session)

    def invoke(self, context: "bpy.types.Context", event: "bpy.types.Event") -> set[str]:
        global _ACTIVE
        if bpy.app.background:
            return self.execute(context)
        session = self._session(context)
        if session is None:
            return {"CANCELLED"}
        _ACTIVE = session
        wm = context.window_manager
        self._timer = wm.event_timer_add(TIMER_STEP_S, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context: "bpy.types.Context", event: "bpy.types.Event") -> set[str]:
        session = _ACTIVE
        if session is None:
            return self._stop(context, None)
        if event.type == "ESC" and event.value == "PRESS":
            session.cancel()
            return {"RUNNING_MODAL"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        deadline = time.monotonic() + _TICK_BUDGET_S
        while not session.step() and session.rendering and time.monotonic() < deadline:
            pass
        if context.workspace is not None:
            context.workspace.status_text_set(f"{session.status}   (Esc to cancel)")
        _tag_redraw(context)
        if session.finished:
            return self._stop(context, session)
        return {"PASS_THROUGH"}

    def cancel(self, context: "bpy.types.Context") -> None:
        """Blender ends the operator (e.g. a file is loaded): stop the job too."""
        if _ACTIVE is not None:
            _ACTIVE.cancel()
        self._stop(context, None)

    def _stop(self, context: "bpy.types.Context", session: "StylizeSession | TrainSession | None") -> set[str]:
        global _ACTIVE
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
            self._timer = None
        if context.workspace is not None:
            context.workspace.status_text_set(None)
        _ACTIVE = None
        _tag_redraw(context)
        return self._finish(session) if session is not None else {"CANCELLED"}


class SEQUENCER_OT_stylize(_SessionOperator, bpy.types.Operator):
    """Stylize the selected strips into image strips above them (Esc cancels; re-running resumes)"""

    bl_idname = "sequencer.stylize"
    bl_label = "Stylize"
    bl_options = {"REGISTER", "UNDO"}

    strip: StringProperty(name="Strip", description="Strip to stylize; empty for the selected strips",
                          options={"SKIP_SAVE", "HIDDEN"})
    preview: BoolProperty(name="Preview", description="Stylize the current frame only and show it in the panel",
                          options={"SKIP_SAVE"})

    @classmethod
    def poll(cls, context: "bpy.types.Context") -> bool:
        return context.scene is not None and vse.editor(context.scene) is not None and active_session() is None

    def _session(self, context: "bpy.types.Context") -> "StylizeSession | None":
        scene = context.scene
        names, sounds = _target_names(scene, self.strip)
        if not names:
            self.report({"ERROR"}, "Select a movie, image, meta, scene or effect strip to stylize")
            return None
        for name in sounds:
            self.report({"WARNING"}, f"Skipped sound strip '{name}': only visual strips can be stylized")
        try:
            settings = settings_for(context)
        except jobs.StylizeError as exc:
            self.report({"ERROR"}, str(exc))
            return None
        log = print if bpy.app.background else None
        return StylizeSession(scene.name, names, settings, preview=self.preview, log=log)


class SEQUENCER_OT_stylize_train(_SessionOperator, bpy.types.Operator):
    """Train a real-time model for the active strip's Style Image in the worker (Esc cancels; training again \
resumes). The model goes to your model folder and Stylize uses it for this style"""

    bl_idname = "sequencer.stylize_train"
    bl_label = "Train Style"
    bl_options = {"REGISTER"}

    strip: StringProperty(name="Strip", description="Strip whose style to train; empty for the active strip",
                          options={"SKIP_SAVE", "HIDDEN"})

    @classmethod
    def poll(cls, context: "bpy.types.Context") -> bool:
        return context.scene is not None and vse.editor(context.scene) is not None and active_session() is None

    def _session(self, context: "bpy.types.Context") -> "TrainSession | None":
        scene = context.scene
        strip = vse.find_strip(scene, self.strip) if self.strip else vse.active_strip(scene)
        if strip is None or vse.is_sound(strip):
            self.report({"ERROR"}, "Select the movie or image strip whose Style Image to train")
            return None
        try:
            settings = settings_for(context)
        except jobs.StylizeError as exc:
            self.report({"ERROR"}, str(exc))
            return None
        log = print if bpy.app.background else None
        return TrainSession(scene.name, strip.name, settings, log=log)


class SEQUENCER_OT_stylize_cancel(bpy.types.Operator):
    """Stop the running job after the current frame or training step (work done so far stays)"""

    bl_idname = "sequencer.stylize_cancel"
    bl_label = "Cancel Stylize"

    @classmethod
    def poll(cls, context: "bpy.types.Context") -> bool:
        return active_session() is not None

    def execute(self, context: "bpy.types.Context") -> set[str]:
        session = active_session()
        if session is not None:
            session.cancel()
        return {"FINISHED"}


def _result_folder(context: "bpy.types.Context") -> str:
    scene = context.scene
    strip = vse.active_strip(scene) if scene is not None else None
    if strip is None:
        return ""
    if not props.strip_settings(strip).is_result:
        strip = jobs.find_result(scene, strip)
    return "" if strip is None else props.strip_settings(strip).output_dir


class SEQUENCER_OT_stylize_open_folder(bpy.types.Operator):
    """Open the folder of the stylized frames in the file browser"""

    bl_idname = "sequencer.stylize_open_folder"
    bl_label = "Open Folder"

    @classmethod
    def poll(cls, context: "bpy.types.Context") -> bool:
        return bool(_result_folder(context))

    def execute(self, context: "bpy.types.Context") -> set[str]:
        folder = _result_folder(context)
        bpy.ops.wm.path_open(filepath=folder)
        return {"FINISHED"}


class SEQUENCER_OT_stylize_select_source(bpy.types.Operator):
    """Select the strip this result was made from"""

    bl_idname = "sequencer.stylize_select_source"
    bl_label = "Select Source"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context: "bpy.types.Context") -> bool:
        strip = vse.active_strip(context.scene) if context.scene is not None else None
        return strip is not None and props.strip_settings(strip).is_result

    def execute(self, context: "bpy.types.Context") -> set[str]:
        try:
            source = jobs.source_of(context.scene, vse.active_strip(context.scene))
        except jobs.StylizeError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        vse.select_only(context.scene, source)
        return {"FINISHED"}


class SEQUENCER_OT_stylize_check_worker(bpy.types.Operator):
    """Start the stylecore worker and report its versions and devices"""

    bl_idname = "sequencer.stylize_check_worker"
    bl_label = "Check Worker"

    def execute(self, context: "bpy.types.Context") -> set[str]:
        try:
            python, how = resolve_worker_python(settings_for(context).worker_python)
            client = POOL.get(worker_command(python))
            if client.info is None:
                if not client.hello_sent:
                    client.hello()
                deadline = time.monotonic() + HELLO_CHECK_TIMEOUT_S
                while client.info is None and time.monotonic() < deadline:
                    if any(e.get("event") in {"error", "worker-exit"} for e in client.events(0.25)):
                        break
        except (SetupError, WorkerError, jobs.StylizeError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        info = client.info
        if info is None:
            self.report({"ERROR"}, client.death_message() if not client.alive else "the worker did not answer")
            return {"CANCELLED"}
        self.report({"INFO"}, f"Worker OK ({how}): stylecore {info.stylecore}, torch {info.torch}, "
                              f"devices {info.describe_devices()}")
        return {"FINISHED"}


class SEQUENCER_OT_stylize_refresh_models(bpy.types.Operator):
    """Ask the worker which feedforward models exist (shipped and trained), for the Model field"""

    bl_idname = "sequencer.stylize_refresh_models"
    bl_label = "Refresh Models"

    @classmethod
    def poll(cls, context: "bpy.types.Context") -> bool:
        return context.scene is not None and active_session() is None

    def execute(self, context: "bpy.types.Context") -> set[str]:
        from .runner import DONE, JobRun

        try:
            python, _ = resolve_worker_python(settings_for(context).worker_python)
            run = JobRun(POOL.get(worker_command(python)), {}, op="models")
        except (SetupError, WorkerError, jobs.StylizeError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        if run.wait(timeout=HELLO_CHECK_TIMEOUT_S) != DONE or run.models is None:
            self.report({"ERROR"}, run.error or "the worker did not list its models")
            return {"CANCELLED"}
        store_models(context.scene, run.models)
        self.report({"INFO"}, f"{len(run.models)} model(s): {', '.join(m['name'] for m in run.models)}")
        return {"FINISHED"}


# The latest Set Up Worker run (the preferences show its progress, then its result).
_SETUP: "worker_setup.WorkerSetup | None" = None


def setup_worker_state() -> "worker_setup.WorkerSetup | None":
    return _SETUP


def addon_user_folder() -> Path:
    """The add-on's own writable folder (the worker environment lives here)."""
    if __package__.startswith("bl_ext.") and hasattr(bpy.utils, "extension_path_user"):
        return Path(bpy.utils.extension_path_user(__package__, create=True))
    # A classic add-on (Blender < 4.2 layout): a folder of Blender's user data files.
    return Path(bpy.utils.user_resource("DATAFILES", path=__package__.rsplit(".", 1)[-1], create=True))


class PREFERENCES_OT_stylecore_setup_worker(bpy.types.Operator):
    """Install the worker in a Python environment of the add-on's own (torch, stylecore, the HED weights) and \
use it as Worker Python. Runs in the background (Esc cancels); running it again checks it and completes what is missing"""

    bl_idname = "preferences.stylecore_setup_worker"
    bl_label = "Set Up Worker"

    _timer = None

    @classmethod
    def poll(cls, context: "bpy.types.Context") -> bool:
        return (_SETUP is None or _SETUP.finished) and active_session() is None

    def _start(self, context: "bpy.types.Context") -> bool:
        global _SETUP
        prefs = props.preferences(context)
        try:
            pip_options = worker_setup.parse_pip_options(prefs.setup_pip_options if prefs is not None else "")
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return False
        _SETUP = worker_setup.WorkerSetup(
            addon_user_folder(), pip_options=pip_options, wheel_folder=Path(__file__).parent / "worker_wheels",
            on_line=print if bpy.app.background else None)
        return True

    def execute(self, context: "bpy.types.Context") -> set[str]:
        """Synchronous (background mode and scripts)."""
        if not self._start(context):
            return {"CANCELLED"}
        _SETUP.run()
        return self._finish(context)

    def invoke(self, context: "bpy.types.Context", event: "bpy.types.Event") -> set[str]:
        if bpy.app.background:
            return self.execute(context)
        if not self._start(context):
            return {"CANCELLED"}
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.25, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context: "bpy.types.Context", event: "bpy.types.Event") -> set[str]:
        if _SETUP is None:
            return self._stop(context)
        if event.type == "ESC" and event.value == "PRESS":
            _SETUP.cancel()
        elif event.type != "TIMER":
            return {"PASS_THROUGH"}
        _SETUP.poll()
        if context.workspace is not None:
            context.workspace.status_text_set(f"Set Up Worker: {_SETUP.status}   (Esc to cancel)")
        _redraw_preferences(context)
        if _SETUP.finished:
            self._stop(context)
            return self._finish(context)
        return {"PASS_THROUGH"}

    def cancel(self, context: "bpy.types.Context") -> None:
        if _SETUP is not None:
            _SETUP.cancel()
        self._stop(context)

    def _stop(self, context: "bpy.types.Context") -> set[str]:
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
            self._timer = None
        if context.workspace is not None:
            context.workspace.status_text_set(None)
        _redraw_preferences(context)
        return {"CANCELLED"}

    def _finish(self, context: "bpy.types.Context") -> set[str]:
        assert _SETUP is not None
        if _SETUP.state == worker_setup.DONE:
            prefs = props.preferences(context)
            if prefs is not None:
                prefs.worker_python = str(_SETUP.python)
                context.preferences.is_dirty = True  # saved with the preferences (auto-save)
            for line in _SETUP.summary:
                self.report({"INFO"}, line)
            self.report({"INFO"}, _SETUP.message)
            return {"FINISHED"}
        self.report({"WARNING"} if _SETUP.state == worker_setup.CANCELLED else {"ERROR"}, _SETUP.message)
        return {"CANCELLED"}


class PREFERENCES_OT_stylecore_setup_worker_cancel(bpy.types.Operator):
    """Stop Set Up Worker (running it again completes the environment)"""

    bl_idname = "preferences.stylecore_setup_worker_cancel"
    bl_label = "Cancel Set Up Worker"

    @classmethod
    def poll(cls, context: "bpy.types.Context") -> bool:
        return _SETUP is not None and not _SETUP.finished

    def execute(self, context: "bpy.types.Context") -> set[str]:
        if _SETUP is not None:
            _SETUP.cancel()
        return {"FINISHED"}


def _redraw_preferences(context: "bpy.types.Context") -> None:
    for window in context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == "PREFERENCES":
                area.tag_redraw()


CLASSES = (
    SEQUENCER_OT_stylize,
    SEQUENCER_OT_stylize_train,
    SEQUENCER_OT_stylize_refresh_models,
    SEQUENCER_OT_stylize_cancel,
    SEQUENCER_OT_stylize_open_folder,
    SEQUENCER_OT_stylize_select_source,
    SEQUENCER_OT_stylize_check_worker,
    PREFERENCES_OT_stylecore_setup_worker,
    PREFERENCES_OT_stylecore_setup_worker_cancel,
)


@bpy.app.handlers.persistent
def _cancel_on_load(*_: object) -> None:
    """Loading another file ends a running job (its strips are about to disappear)."""
    if _ACTIVE is not None:
        _ACTIVE.cancel()


@bpy.app.handlers.persistent
def _new_unsaved_key(*_: object) -> None:
    """Another file (or File > New) is open: its unsaved results get their own folder."""
    global _UNSAVED_KEY
    _UNSAVED_KEY = uuid.uuid4().hex[:12]


@bpy.app.handlers.persistent
def _move_unsaved_results(filepath: object = "", *_: object) -> None:
    """Saving a file that was stylized while unsaved: its results move from the temp folder
    to the Output Folder beside the .blend, and the strips follow (before the file is
    written, so the saved file points there). Skipped while a job writes into them; the
    next save moves them then."""
    if not isinstance(filepath, str) or not filepath or active_session() is not None:
        return
    setting = _output_setting(props.preferences())
    old = output_root(setting, "", _UNSAVED_KEY)
    new = output_root(setting, filepath)
    if not old.is_dir() or old == new:
        return
    try:
        move_results(old, new)
    except OSError as exc:
        print(f"Stylecore: could not move the results of the unsaved file from {old} to {new}: {exc}")
        return
    for scene in bpy.data.scenes:
        if scene.sequence_editor is None:
            continue
        for strip in vse.all_strips(scene):
            st = props.strip_settings(strip)
            moved = rebase(st.output_dir, old, new) if st.is_result else None
            if moved is not None:
                st.output_dir = moved
                strip.directory = moved + os.sep
    for image in bpy.data.images:  # the panel's preview frame
        moved = rebase(bpy.path.abspath(image.filepath), old, new) if image.filepath else None
        if moved is not None:
            image.filepath = moved
    root = unsaved_root(_UNSAVED_KEY)
    if root.is_dir() and not any(root.iterdir()):
        root.rmdir()


_HANDLERS = (("load_pre", _cancel_on_load), ("load_post", _new_unsaved_key), ("save_pre", _move_unsaved_results))


def register_handlers() -> None:
    for name, handler in _HANDLERS:
        if handler not in getattr(bpy.app.handlers, name):
            getattr(bpy.app.handlers, name).append(handler)


def unregister_handlers() -> None:
    for name, handler in _HANDLERS:
        if handler in getattr(bpy.app.handlers, name):
            getattr(bpy.app.handlers, name).remove(handler)
    if _SETUP is not None:
        _SETUP.cancel()
    POOL.close_all()
