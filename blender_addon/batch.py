"""Headless batch: stylize what is stale, then render the sequencer.

    python -m blender_addon.batch edit.blend --stylize stale --render out.mp4
    python -m blender_addon.batch edit.blend --stylize stale --farm auto --render out.mp4
    blender -b edit.blend -P blender_addon/batch.py -- --stylize stale --render out.mp4

Stylizes every strip marked for stylization ("Include in Batch", set on every strip
that was stylized once) whose result is missing or out of date, then renders the
sequencer to a video (by suffix) or to PNG frames (a folder, or a path with ``#``),
optionally over a frame range. Progress goes to stdout; the exit status is 0 on
success, 1 when a strip or the render failed, 2 for bad arguments, 130 when cancelled
with Ctrl+C (whole frames are kept: running the batch again resumes).

With the ``bpy`` module the user preferences are loaded first (the module does not load
them by itself), so an installed, enabled copy of the add-on and its saved Worker Python
apply, as in Blender. A strip that could not be stylized is never rendered from an old
result without saying so: the render is refused unless ``--allow-stale`` is given.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import bpy

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CANCELLED = 0, 1, 2, 130
# Name this folder is imported under when run as a script and no installed copy is enabled.
_SCRIPT_PACKAGE = "_stylecore_addon"


def parse_args(argv: list[str]) -> argparse.Namespace:
    from .vse import VIDEO_CONTAINERS

    parser = argparse.ArgumentParser(
        prog="blender_addon.batch",
        description="Stylize stale strips of a .blend and render its sequencer.",
    )
    parser.add_argument("blend", nargs="?", help=".blend file (optional when Blender already opened one)")
    parser.add_argument("--stylize", choices=("stale", "all", "none"), default="stale",
                        help="which marked strips to stylize: stale ones (default), all, or none")
    parser.add_argument("--render", metavar="PATH",
                        help=f"render the sequencer to a video ({' '.join(VIDEO_CONTAINERS)}) or PNG frames "
                             "(a folder, or a path with #)")
    parser.add_argument("--frames", metavar="START:END", help="inclusive timeline frame range to render")
    parser.add_argument("--scene", help="scene to use (default: the file's active scene)")
    parser.add_argument("--worker-python", metavar="PATH", help="Python interpreter with stylecore installed")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), help="device for the worker")
    parser.add_argument("--job-options", metavar="JSON",
                        help='extra stylecore job fields for every strip, e.g. \'{"tv_weight": 2}\' '
                             "(replaces the preferences' Extra Job Options)")
    parser.add_argument("--farm", nargs="?", const="auto", metavar="ADDRESS",
                        help="stylize each strip on a Ray cluster (the worker's Python needs "
                             "'pip install \"stylecore[farm]\"'): auto (the flag alone) or ray://HOST:PORT")
    parser.add_argument("--chunk", type=int, metavar="N", help="with --farm: frames per farm task (default 48)")
    parser.add_argument("--save", action="store_true", help="save the .blend after stylizing (result strips)")
    parser.add_argument("--allow-stale", action="store_true",
                        help="render even when a strip's stylized result is missing or out of date (default: refuse)")
    return parser.parse_args(argv)


def _frame_range(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        start, end = (int(part) for part in text.split(":"))
    except ValueError:
        raise SystemExit(_usage(f"--frames {text}: write START:END, e.g. 1:48")) from None
    if end < start:
        raise SystemExit(_usage(f"--frames {text}: END must not be before START"))
    return start, end


def _usage(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _ensure_registered(as_addon: bool) -> bool:
    """Register this package's operators and properties unless an installed copy did.

    ``as_addon``: enable it through the add-on system (so its preferences exist); a
    package imported from a script's folder is not an add-on and registers directly.
    Returns True when it registered directly (the caller unregisters: the bpy module
    hangs at exit with classes registered outside the add-on system).
    """
    if hasattr(bpy.types, "SEQUENCER_OT_stylize"):
        return False
    package = __package__ or ""
    if as_addon:
        import addon_utils

        addon_utils.enable(package, default_set=True)
        if hasattr(bpy.types, "SEQUENCER_OT_stylize"):
            return False
    sys.modules[package].register()
    return True


def main(argv: list[str] | None = None, *, as_addon: bool = True) -> int:
    """Run the batch; returns the exit status."""
    from .protocol import POOL

    args = parse_args(sys.argv[1:] if argv is None else argv)
    frames = _frame_range(args.frames)
    if not bpy.app.binary_path:
        # The bpy module starts without the user's preferences (Blender itself loads them):
        # without them an installed extension is not enabled and its settings are unknown.
        bpy.ops.wm.read_userpref()
    if args.blend:
        blend = Path(args.blend).expanduser().resolve()
        if not blend.is_file():
            return _usage(f"{blend} does not exist")
        if Path(bpy.data.filepath or "").resolve() != blend:
            bpy.ops.wm.open_mainfile(filepath=str(blend))
    elif not bpy.data.filepath:
        return _usage("give a .blend file")
    registered_here = _ensure_registered(as_addon)
    try:
        return _installed_batch()._run(args, frames)
    finally:
        POOL.close_all()
        if registered_here:
            sys.modules[__package__ or ""].unregister()


def _installed_batch() -> ModuleType:
    """This module of the registered add-on: an installed extension's own copy when it is
    the one enabled (its preferences are the user's), else this one."""
    registered = getattr(bpy.types, "SEQUENCER_OT_stylize", None)
    package = registered.__module__.rsplit(".", 1)[0] if registered is not None else __package__
    if not package or package == __package__:
        return sys.modules[__name__]
    return importlib.import_module(f"{package}.batch")


def _run(args: argparse.Namespace, frames: tuple[int, int] | None) -> int:
    """Stylize, then render; the .blend is open and the add-on registered."""
    try:
        return _stylize_and_render(args, frames)
    except KeyboardInterrupt:
        print("cancelled (Ctrl+C): whole frames are kept; run the batch again to resume", file=sys.stderr)
        return EXIT_CANCELLED


def _stylize_and_render(args: argparse.Namespace, frames: tuple[int, int] | None) -> int:
    from . import jobs, operators, props, session, vse
    from .environment import SetupError, resolve_worker_python

    scene = bpy.data.scenes.get(args.scene) if args.scene else bpy.context.scene
    if scene is None:
        return _usage(f"no scene named {args.scene!r}; scenes: {', '.join(s.name for s in bpy.data.scenes)}")
    try:
        settings = operators.settings_for(bpy.context)
    except jobs.StylizeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    try:
        options = settings.job_options if args.job_options is None else jobs.parse_job_options(args.job_options)
    except jobs.StylizeError as exc:
        return _usage(str(exc))
    if args.farm is not None:
        options = {**options, "farm": args.farm}
    if args.chunk is not None:
        options = {**options, "chunk": args.chunk}
    settings = dataclasses.replace(
        settings,
        worker_python=args.worker_python or settings.worker_python,
        device=args.device or settings.device,
        job_options=options,
    )

    failed = False
    unstylized: list[str] = []  # strips whose result is still missing or out of date
    if args.stylize != "none" and vse.editor(scene) is not None:
        marked = [s for s in vse.all_strips(scene)
                  if props.strip_settings(s).batch and not props.strip_settings(s).is_result]
        todo = []
        for strip in marked:
            try:
                stale = args.stylize == "all" or jobs.is_stale(scene, strip, settings)
            except jobs.StylizeError as exc:
                print(f"error: {exc}", file=sys.stderr)
                failed = True
                unstylized.append(strip.name)
                continue
            if stale:
                todo.append(strip.name)
            else:
                print(f"{strip.name}: up to date")
        print(f"stylizing {len(todo)} of {len(marked)} marked strip(s)")
        if todo:
            try:
                resolve_worker_python(settings.worker_python, headless=True)
            except SetupError as exc:
                print(f"error: {exc}", file=sys.stderr)
                todo, unstylized, failed = [], list(todo), True
        if todo:
            run = session.StylizeSession(scene.name, todo, settings, log=print)
            try:
                run.run()
            except KeyboardInterrupt:
                run.cancel()  # the worker stops after the frame in flight; whole frames stay
                run.run()
                print("cancelled (Ctrl+C): whole frames are kept; run the batch again to resume", file=sys.stderr)
                return EXIT_CANCELLED
            for message in run.messages:
                if message.level != "INFO":
                    print(f"{message.level.lower()}: {message.text}", file=sys.stderr)
            failed = failed or run.failed
            unstylized += [name for name in todo if name not in _sources_of(scene, run.results)]
        if args.save and bpy.data.filepath:
            bpy.ops.wm.save_mainfile()

    if args.render and unstylized and not args.allow_stale:
        print(f"error: not rendering: the stylized result of {', '.join(repr(n) for n in unstylized)} is missing or "
              "out of date (see above); fix that and run again, or pass --allow-stale to render it as it is",
              file=sys.stderr)
        return EXIT_FAILED
    if args.render and unstylized:
        print(f"warning: rendering with the missing or out-of-date stylized result of "
              f"{', '.join(repr(n) for n in unstylized)} (--allow-stale)", file=sys.stderr)
    if args.render:
        total = (frames[1] - frames[0] + 1) if frames else (scene.frame_end - scene.frame_start + 1)
        count = 0

        def on_frame(frame: int) -> None:
            nonlocal count
            count += 1
            print(f"rendered frame {frame} ({count}/{total})", flush=True)

        try:
            out = vse.render_sequencer(scene, args.render, frames, on_frame)
        except (RuntimeError, OSError) as exc:
            print(f"error: rendering failed: {exc}", file=sys.stderr)
            return EXIT_FAILED
        print(f"rendered {count} frame(s) to {out}")
    return EXIT_FAILED if failed else EXIT_OK


def _sources_of(scene: object, result_names: list[str]) -> set[str]:
    """The source strips of the given result strips."""
    from . import props, vse

    names = set()
    for name in result_names:
        result = vse.find_strip(scene, name)
        if result is not None:
            names.add(props.strip_settings(result).source_name)
    return names


def _package_for_script() -> ModuleType:
    """When run with ``blender -P batch.py``, the package this file belongs to.

    An installed, enabled copy of the add-on wins (its preferences apply); otherwise this
    folder is imported under a private name so its relative imports work.
    """
    registered = getattr(bpy.types, "SEQUENCER_OT_stylize", None)
    if registered is not None:
        return importlib.import_module(registered.__module__.rsplit(".", 1)[0])
    here = Path(__file__).resolve().parent
    name = _SCRIPT_PACKAGE
    spec = importlib.util.spec_from_file_location(name, here / "__init__.py", submodule_search_locations=[str(here)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _script_argv() -> list[str]:
    return sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []


if __name__ == "__main__":
    if __package__:
        code = main()  # python -m blender_addon.batch
    else:
        package = _package_for_script()  # blender -b -P blender_addon/batch.py -- ...
        batch = importlib.import_module(f"{package.__name__}.batch")
        code = batch.main(_script_argv(), as_addon=package.__name__ != _SCRIPT_PACKAGE)
    sys.stdout.flush()
    sys.exit(code)
