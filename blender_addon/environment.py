"""Where the worker's Python is and where results go: no ``bpy`` import, so it is testable.

The worker runs in its own Python (where stylecore and torch are installed). It is, in
order: the interpreter set in the preferences; ``$STYLECORE_WORKER_PYTHON``; Blender's own
Python when stylecore is importable there (``pip install stylecore`` into Blender).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

ENV_WORKER_PYTHON = "STYLECORE_WORKER_PYTHON"
DEFAULT_OUTPUT = "//stylized/"

_HOW_TO = (
    "click Set Up Worker in Edit > Preferences > Add-ons > Stylecore, or "
    "create a Python environment with stylecore (python -m venv ENV, then ENV/bin/pip install stylecore) "
    "and set Worker Python in Edit > Preferences > Add-ons > Stylecore to ENV/bin/python "
    "(ENV\\Scripts\\python.exe on Windows)"
)


# Headless (the batch command), preferences are out of reach: name the flag and the variable.
_HOW_TO_HEADLESS = (
    "pass --worker-python PATH or set STYLECORE_WORKER_PYTHON=PATH, PATH being the Python of an environment "
    "with stylecore (python -m venv ENV, then ENV/bin/pip install stylecore); the Worker Python saved in the "
    "installed add-on's preferences is used too"
)


class SetupError(Exception):
    """The add-on is not set up to run the worker; the message says how to fix it."""


def resolve_worker_python(configured: str = "", env: dict[str, str] | None = None, *,
                          headless: bool = False) -> tuple[str, str]:
    """``(interpreter, how it was found)``; raises ``SetupError`` with instructions
    (``headless``: for the batch command, naming its flag instead of the preferences)."""
    env = dict(os.environ) if env is None else env
    if configured.strip():
        path = Path(configured.strip()).expanduser()
        if not path.is_file():
            raise SetupError(f"the Worker Python set in the add-on's preferences does not exist: {path}; "
                             f"fix the path, or clear it to detect stylecore automatically")
        return str(path), "preferences"
    from_env = env.get(ENV_WORKER_PYTHON, "").strip()
    if from_env:
        path = Path(from_env).expanduser()
        if not path.is_file():
            raise SetupError(f"${ENV_WORKER_PYTHON} names a Python that does not exist: {path}")
        return str(path), f"${ENV_WORKER_PYTHON}"
    # find_spec locates packages without importing them. torch is checked too: a stylecore
    # checkout that merely sits on sys.path (e.g. the current folder) cannot run the worker.
    if sys.executable and all(importlib.util.find_spec(name) is not None for name in ("stylecore", "torch")):
        return sys.executable, "stylecore is importable in Blender's Python"
    raise SetupError(f"no Python with stylecore found: {_HOW_TO_HEADLESS if headless else _HOW_TO}")


def output_root(configured: str, blend_path: str, unsaved_key: str = "") -> Path:
    """Absolute folder for results; ``//`` means beside the .blend, or, while the file is
    unsaved, this file's own folder in the temp folder (``unsaved_root(unsaved_key)``)."""
    text = (configured or DEFAULT_OUTPUT).strip()
    if text.startswith("//"):
        relative = text[2:]
        base = Path(blend_path).resolve().parent if blend_path else unsaved_root(unsaved_key)
        return (base / relative).resolve() if relative else base.resolve()
    return Path(text).expanduser().resolve()


def unsaved_root(key: str) -> Path:
    """The temp folder of one unsaved .blend (``key`` names it): results of other files,
    and of other Blender sessions, never mix into it."""
    return Path(tempfile.gettempdir()) / "stylecore" / f"unsaved-{key or 'file'}"


def move_results(old: Path, new: Path) -> None:
    """Move everything in ``old`` into ``new`` (merging folders that exist in both: a file
    already in ``new`` is kept), then remove ``old``."""
    new.mkdir(parents=True, exist_ok=True)
    for entry in sorted(old.iterdir()):
        target = new / entry.name
        if not target.exists():
            shutil.move(str(entry), str(target))
        elif entry.is_dir() and target.is_dir():
            move_results(entry, target)
    shutil.rmtree(old, ignore_errors=True)


def rebase(path: str, old: Path, new: Path) -> str | None:
    """``path`` moved from under ``old`` to under ``new``; None when it is not under ``old``."""
    try:
        rel = Path(path).resolve().relative_to(old.resolve())
    except ValueError:
        return None
    return str(new / rel)
