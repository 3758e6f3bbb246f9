"""Helpers for the Blender add-on tests: scenes, generated media, renders, a fake worker.

Runs under the ``bpy`` module from PyPI (4.5 LTS and 5.0). The stylecore worker runs in
its own interpreter: ``$STYLECORE_WORKER_PYTHON``, or this one when stylecore is
importable here. Run as a script (``python blender_helpers.py fake-worker``) this file is
a tiny protocol-speaking stand-in for the worker, for protocol tests without torch.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

ADDON = "blender_addon"
W, H = 64, 48  # test media size
# Frame i of a generated clip is solid-ish: red = BASE + STEP * i; the ramp in blue adds texture.
BASE, STEP = 20, 18


def worker_python() -> str | None:
    """The interpreter that can run ``python -m stylecore.worker``, or None."""
    configured = os.environ.get("STYLECORE_WORKER_PYTHON", "").strip()
    if configured:
        return configured if Path(configured).is_file() else None
    # torch too: a checkout on sys.path makes stylecore "importable" without its dependencies.
    found = all(importlib.util.find_spec(name) is not None for name in ("stylecore", "torch"))
    return sys.executable if found else None


# ------------------------------------------------------------------------------ blender


def enable_addon() -> Any:
    """Enable the add-on (idempotent) and return its preferences."""
    import addon_utils
    import bpy

    if bpy.context.preferences.addons.get(ADDON) is None:
        addon_utils.enable(ADDON, default_set=True)
    return bpy.context.preferences.addons[ADDON].preferences


def fresh_scene(tmp_path: Path, *, job_options: dict[str, Any] | None = None) -> Any:
    """An empty scene at 64x48, 24 fps, Standard view, with the add-on on and set up."""
    import bpy

    bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
    prefs = enable_addon()
    prefs.worker_python = ""
    prefs.device = "CPU"
    prefs.output_dir = str(tmp_path / "stylized") + os.sep
    prefs.job_options = json.dumps(job_options if job_options is not None else FAST_JOB)
    scene = bpy.context.scene
    if scene.sequence_editor is not None:
        scene.sequence_editor_clear()
    scene.animation_data_clear()
    scene.sequence_editor_create()
    r = scene.render
    r.resolution_x, r.resolution_y, r.resolution_percentage = W, H, 100
    r.fps, r.fps_base = 24, 1.0
    scene.frame_start, scene.frame_end = 1, 12
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    return scene


# Fast settings for tests: a randomly initialised VGG needs no download, one step per frame.
FAST_JOB = {"loss_net": "random-vgg19", "first_iterations": 1}


_RANDOM_MODEL = """
import sys, torch
from stylecore.nets.model_file import ModelInfo, save_model
from stylecore.nets.transformer import StyleTransformer, TransformerConfig
torch.manual_seed(0)
config = TransformerConfig()
save_model(sys.argv[1], StyleTransformer(config), ModelInfo(config=config, style_name="untrained test model"))
"""


def make_random_model(path: Path, python: str) -> Path:
    """An untrained feedforward model file (fast, and its output differs a lot from its input)."""
    import subprocess

    subprocess.run([python, "-c", _RANDOM_MODEL, str(path)], check=True, capture_output=True, timeout=300)
    return path


def feedforward_settings(strip: Any, model: Path) -> None:
    st = strip.stylecore
    st.mode = "FEEDFORWARD"
    st.model = str(model)
    st.size = 0


def optimization_settings(strip: Any, style: Path, *, size: int = 32) -> None:
    st = strip.stylecore
    st.mode = "OPTIMIZATION"
    st.style_source = "FILE"
    st.style_image = str(style)
    st.iterations = 1
    st.size = size


def frame_pixels(index: int) -> Any:
    """RGBA float pixels (H x W x 4) of generated frame ``index``."""
    import numpy as np

    img = np.zeros((H, W, 4), np.float32)
    img[..., 0] = (BASE + STEP * index) / 255.0
    img[..., 1] = 0.5
    img[..., 2] = np.linspace(0.1, 0.9, W, dtype=np.float32)[None, :]
    img[..., 3] = 1.0
    return img


def save_png(path: Path, pixels: Any) -> Path:
    """Write RGBA float pixels (top row first) as an 8-bit PNG with Blender."""
    import bpy
    import numpy as np

    h, w = pixels.shape[:2]
    image = bpy.data.images.new(path.stem, w, h, alpha=True)
    image.pixels.foreach_set(np.ascontiguousarray(pixels[::-1]).ravel())  # Blender stores bottom row first
    image.filepath_raw = str(path)
    image.file_format = "PNG"
    image.save()
    bpy.data.images.remove(image)
    return path


def make_frames(folder: Path, count: int, prefix: str = "img_") -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(count):
        name = f"{prefix}{i + 1}.png"  # unpadded on purpose: natural order must be used
        save_png(folder / name, frame_pixels(i))
        names.append(name)
    return names


def make_movie(path: Path, count: int = 12, fps: int = 24) -> Path:
    """An H.264 movie whose frame i has red level BASE + STEP * i, made by Blender itself."""
    import bpy

    from blender_addon import vse

    frames = path.parent / f"{path.stem}_src"
    names = make_frames(frames, count, prefix="f")
    scene = bpy.data.scenes.new("movie-maker")
    try:
        r = scene.render
        r.resolution_x, r.resolution_y, r.resolution_percentage = W, H, 100
        r.fps, r.fps_base = fps, 1.0
        scene.frame_start, scene.frame_end = 1, count
        scene.view_settings.view_transform = "Standard"
        strips = vse.children(scene.sequence_editor_create())
        strip = strips.new_image("frames", str(frames / names[0]), 1, 1)
        for name in names[1:]:
            strip.elements.append(name)
        vse.render_sequencer(scene, str(path))
    finally:
        bpy.data.scenes.remove(scene)
    return path


def add_movie(scene: Any, path: Path, name: str = "Clip", channel: int = 1, start: int = 1) -> Any:
    from blender_addon import vse

    strip = vse.children(scene.sequence_editor).new_movie(name, str(path), channel, start)
    strip.select = True
    scene.sequence_editor.active_strip = strip
    return strip


def render_frame(scene: Any, frame: int, folder: Path) -> Any:
    """The sequencer's output at ``frame`` as float RGB (H x W x 3, top row first)."""
    import bpy

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"render_{frame:04d}.png"
    r = scene.render
    scene.frame_set(frame)
    if hasattr(r.image_settings, "media_type"):
        r.image_settings.media_type = "IMAGE"
    r.image_settings.file_format = "PNG"
    r.image_settings.color_mode = "RGB"
    r.filepath = str(path)
    r.use_file_extension = False
    bpy.ops.render.render(write_still=True, scene=scene.name)
    return read_png(path)


def read_png(path: Path) -> Any:
    """Float RGB pixels of a PNG (H x W x 3, top row first), as stored (no colour transform)."""
    import bpy
    import numpy as np

    image = bpy.data.images.load(str(path), check_existing=False)
    try:
        w, h = image.size
        data = np.empty(w * h * 4, np.float32)
        image.pixels.foreach_get(data)
    finally:
        bpy.data.images.remove(image)
    return data.reshape(h, w, 4)[::-1, :, :3]


def decode_index(pixels: Any, reference: list[float]) -> int:
    """Which generated frame ``pixels`` shows: nearest mean red level in ``reference``."""
    red = float(pixels[..., 0].mean())
    return min(range(len(reference)), key=lambda i: abs(reference[i] - red))


def png_is_whole(path: Path) -> bool:
    """A PNG that ends with its IEND chunk (a half-written file does not)."""
    data = path.read_bytes()
    return data.startswith(b"\x89PNG\r\n\x1a\n") and data[-12:-8] == b"\x00\x00\x00\x00" and data[-8:-4] == b"IEND"


# ------------------------------------------------------------------------- fake worker


def fake_worker(mode: str) -> int:
    """Speak the worker protocol without torch. ``mode`` picks a behaviour to test."""
    if mode == "no-stylecore":
        print("Traceback (most recent call last):", file=sys.stderr)
        print("ModuleNotFoundError: No module named 'stylecore'", file=sys.stderr)
        return 1
    out = sys.stdout
    cancelled: set[str] = set()

    def emit(event: dict[str, Any]) -> None:
        out.write(json.dumps(event) + "\n")
        out.flush()

    import queue
    import threading

    requests: queue.Queue[dict[str, Any] | None] = queue.Queue()

    def read() -> None:
        for line in sys.stdin:
            if line.strip():
                request = json.loads(line)
                if request.get("op") == "cancel":
                    cancelled.add(request["id"])
                requests.put(request)
        requests.put(None)

    threading.Thread(target=read, daemon=True).start()
    while True:
        request = requests.get()
        if request is None or request.get("op") == "shutdown":
            return 0
        op = request.get("op")
        if op == "hello" and mode == "hang-without-torch":
            # What stylecore's worker did when torch failed to import in its reader thread.
            print("Exception in thread Thread-1 (_read_requests):", file=sys.stderr)
            print("ModuleNotFoundError: No module named 'torch'", file=sys.stderr, flush=True)
            time.sleep(3600)
        if op == "hello":
            emit({"event": "hello", "protocol": 1 if mode == "old-protocol" else 2, "stylecore": "9.9",
                  "torch": "none", "devices": ["cpu"]})
        elif op == "stylize":
            job_id, job = request["id"], request["job"]
            if mode == "crash":
                print("RuntimeError: simulated crash in the worker", file=sys.stderr, flush=True)
                os._exit(3)
            if mode == "bad-job":
                emit({"event": "error", "id": job_id, "message": "style image not found: /nowhere.png"})
                continue
            total = len(job.get("frame_map") or [0, 1, 2])
            print("noise on stdout that is not protocol")  # must be tolerated
            emit({"event": "start", "id": job_id, "total": total, "todo": total, "output": job.get("output", "")})
            for k in range(1, total + 1):
                if job_id in cancelled:
                    emit({"event": "cancelled", "id": job_id})
                    break
                time.sleep(0.2 if mode == "slow" else 0.0)
                emit({"event": "frame", "id": job_id, "number": k, "index": k - 1, "path": f"frame_{k:06d}.png",
                      "seconds": 0.01, "skipped": False})
                emit({"event": "progress", "id": job_id, "done": k, "total": total, "seconds_per_frame": 0.01,
                      "eta_seconds": 0.01 * (total - k)})
            else:
                emit({"event": "done", "id": job_id, "output": job.get("output", ""), "frames": total})


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "fake-worker":
        sys.exit(fake_worker(sys.argv[2] if len(sys.argv) > 2 else "ok"))


# ------------------------------------------------------------------- installed extension

EXTENSION_MODULE = "bl_ext.user_default.stylecore_vse"
_INSTALL = f"""
import bpy, os
bpy.ops.extensions.package_install_files(filepath=os.environ["ZIP"], repo="user_default", enable_on_install=True)
prefs = bpy.context.preferences.addons[{EXTENSION_MODULE!r}].preferences
for key, value in (("worker_python", "PREF_WORKER"), ("output_dir", "PREF_OUTPUT"), ("train_options", "PREF_TRAIN")):
    if os.environ.get(value):
        setattr(prefs, key, os.environ[value])
prefs.device = "CPU"
bpy.ops.wm.save_userpref()
"""


def install_extension(archive: Path, user_folder: Path, **prefs: str) -> dict[str, str]:
    """Install the extension zip as a user would, into ``user_folder`` (Blender's user
    resources), save the given preferences (worker_python, output_dir, train_options),
    and return an environment that makes Blender use that folder."""
    import subprocess

    env = dict(os.environ, BLENDER_USER_RESOURCES=str(user_folder), ZIP=str(archive),
               PREF_WORKER=prefs.get("worker_python", ""), PREF_OUTPUT=prefs.get("output_dir", ""),
               PREF_TRAIN=prefs.get("train_options", ""))
    done = subprocess.run([sys.executable, "-c", _INSTALL], env=env, capture_output=True, text=True, timeout=300,
                          cwd=user_folder.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    for key in ("ZIP", "PREF_WORKER", "PREF_OUTPUT", "PREF_TRAIN"):
        env.pop(key)
    return env
