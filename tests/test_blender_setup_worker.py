"""Set Up Worker (add-on preferences): the worker environment made by the add-on itself.

Pure tests of ``blender_addon/worker_setup.py`` (which torch build, the offline message),
then headless Blender with the extension installed from the built zip, a stylecore wheel
bundled in it, and pip pointed at a local folder (``--no-index --find-links``): no network.

The local folder holds small stand-in distributions of stylecore's dependencies built
here. The one named ``torch`` carries a ``.pth`` file that makes the test machine's real
packages importable (without their metadata, so pip and the set-up still see only what
they installed): the environment really runs the worker, and Check Worker reports its
devices.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import blender_helpers as bh
import pytest

from blender_addon import worker_setup as ws

sys.path.insert(0, str(bh.REPO / "tools"))
import build_extension  # noqa: E402

WORKER = bh.worker_python()
ADDON = bh.EXTENSION_MODULE
# stylecore's dependencies (pyproject.toml): stand-ins are built for each.
DEPENDENCIES = ("torch", "numpy", "opencv-python-headless", "safetensors", "tqdm", "imageio-ffmpeg", "h5py")
# Top-level entries of the real site-packages that the stand-in torch must not expose.
_HIDDEN = {"pip", "setuptools", "pkg_resources", "_distutils_hack", "__pycache__", "stylecore", "training"}


# ------------------------------------------------------------------------------ pure


def test_windows_with_nvidia_gets_the_cuda_build_from_pytorchs_index() -> None:
    choice = ws.torch_choice("win32", True, [], "C:\\env\\Scripts\\python.exe")
    assert choice.args == ("torch", "--index-url", ws.TORCH_CUDA_INDEX)
    assert "CUDA build" in choice.build and "CPU build instead" in choice.how_to_change


def test_windows_without_nvidia_says_how_to_get_cuda() -> None:
    choice = ws.torch_choice("win32", False, [], "C:\\env\\Scripts\\python.exe")
    assert choice.args == ("torch",) and choice.build.startswith("CPU build")
    assert f"--index-url {ws.TORCH_CUDA_INDEX}" in choice.how_to_change and "--force-reinstall" in choice.how_to_change


def test_linux_takes_the_index_default_and_pip_options_choose_the_source() -> None:
    assert ws.torch_choice("linux", True, [], "/env/bin/python").args == ("torch",)
    assert "CUDA" in ws.torch_choice("linux", False, [], "/env/bin/python").build
    # A user's own package source wins over PyTorch's index, even on Windows with a GPU.
    assert ws.torch_choice("win32", True, ["--no-index", "--find-links", "/w"], "py").args == ("torch",)


def test_an_unreachable_index_is_told_from_a_folder_without_the_package() -> None:
    assert not ws.index_reachable(["--index-url", "http://127.0.0.1:9/simple"], env={})
    assert ws.index_reachable(["--no-index", "--find-links", "/nowhere"], env={})


def test_the_bundled_wheel_is_the_newest_stylecore_wheel(tmp_path: Path) -> None:
    for name in ("stylecore-0.9.0-py3-none-any.whl", "stylecore-0.10.0-py3-none-any.whl", "other-9.0-py3-none-any.whl"):
        (tmp_path / name).write_bytes(b"")
    assert ws.bundled_wheel(tmp_path).name == "stylecore-0.10.0-py3-none-any.whl"
    assert ws.bundled_wheel(tmp_path / "missing") is None


# ------------------------------------------------------------------------- fixtures


def _wheel(folder: Path, name: str, version: str, files: dict[str, str]) -> Path:
    """A minimal valid wheel (metadata, RECORD with hashes) holding ``files``."""
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    files = {**files,
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: stylecore-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = []
    path = folder / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, text in files.items():
            data = text.encode()
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{member},sha256={digest},{len(data)}")
            archive.writestr(member, data)
        archive.writestr(f"{info}/RECORD", "\n".join([*record, f"{info}/RECORD,,"]) + "\n")
    return path


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The local package source: stylecore's wheel from this checkout, and stand-ins."""
    assert WORKER is not None
    folder = tmp_path_factory.mktemp("wheels")
    probe = ("import json, sysconfig, importlib.metadata as m; print(json.dumps({'site': sysconfig.get_paths()"
             "['purelib'], 'versions': {n: m.version(n) for n in %r}}))" % (DEPENDENCIES,))
    found = json.loads(subprocess.run([WORKER, "-c", probe], capture_output=True, text=True, check=True).stdout)
    # The real packages, without their metadata (else pip would count them as installed).
    shim = tmp_path_factory.mktemp("real-packages")
    for entry in Path(found["site"]).iterdir():
        if (entry.suffix in {".dist-info", ".egg-info", ".pth"} or entry.name.startswith("__editable__")
                or entry.name in _HIDDEN):
            continue
        (shim / entry.name).symlink_to(entry)
    for name, version in found["versions"].items():
        files = {"stylecore_test_real_packages.pth": f"{shim}\n"} if name == "torch" else {}
        _wheel(folder, name, version, files)
    # stylecore's own wheel, built from a copy (a build in the checkout would leave build/ there).
    source = tmp_path_factory.mktemp("stylecore-source")
    for part in ("pyproject.toml", "README.md"):
        shutil.copy2(bh.REPO / part, source / part)
    for part in ("stylecore", "training"):
        shutil.copytree(bh.REPO / part, source / part, ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run([WORKER, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "-w", str(folder), str(source)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    return folder


SET_UP = f"""
import bpy, json, os, sys
bpy.ops.wm.read_userpref()  # the bpy module loads the installed extension only when asked
prefs = bpy.context.preferences.addons[{ADDON!r}].preferences
prefs.setup_pip_options = os.environ["PIP_OPTIONS"]
out = {{"runs": []}}
for _ in range(int(os.environ.get("RUNS", "1"))):
    try:
        out["runs"].append(sorted(bpy.ops.preferences.stylecore_setup_worker()))
    except RuntimeError as exc:
        out["runs"].append(str(exc))
    out.setdefault("worker_python", []).append(prefs.worker_python)
if os.environ.get("CHECK"):
    out["check"] = sorted(bpy.ops.sequencer.stylize_check_worker())
print("RESULT " + json.dumps(out), flush=True)
"""


def _set_up(tmp_path: Path, archive: Path, pip_options: str, **extra: str) -> tuple[dict, str]:
    env = bh.install_extension(archive, tmp_path / "blender-user")
    env.pop("STYLECORE_WORKER_PYTHON", None)  # the set-up must provide the worker
    for key in [key for key in env if key.startswith("PIP_")]:
        env.pop(key)  # only the package source the test gives (a machine may set PIP_FIND_LINKS)
    env.update(PIP_OPTIONS=pip_options, PIP_CONFIG_FILE=os.devnull, **extra)
    done = subprocess.run([sys.executable, "-c", SET_UP], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(result[7:]), done.stdout


def _env_folder(tmp_path: Path) -> Path:
    return tmp_path / "blender-user" / "extensions" / ".user" / "user_default" / "stylecore_vse" / ws.ENV_FOLDER


needs_worker = pytest.mark.skipif(WORKER is None, reason="no Python with stylecore: set STYLECORE_WORKER_PYTHON")


@pytest.mark.slow
@needs_worker
def test_set_up_worker_from_a_local_wheel_folder_then_again(tmp_path: Path, wheels: Path) -> None:
    pytest.importorskip("bpy")
    archive = build_extension.build(tmp_path / "dist", worker_wheels=sorted(wheels.glob("stylecore-*.whl")))
    out, log = _set_up(tmp_path, archive, f"--no-index --find-links {wheels}", RUNS="2", CHECK="1")
    python = ws.env_python(_env_folder(tmp_path))
    assert out["runs"] == [["FINISHED"], ["FINISHED"]], log[-3000:]
    assert out["worker_python"] == [str(python), str(python)]
    first, second = log.split("environment: already there", 1)
    # First run: everything installed, the stylecore wheel from inside the extension.
    assert "environment: created" in first and "torch: installed" in first
    assert "stylecore: installed from the add-on's wheel stylecore-0.1.0-py3-none-any.whl" in first
    assert "hed-vgg16 weights: ready" in first
    # Second run: nothing installed again.
    assert not [line for line in second.splitlines() if line.startswith("$ ") and " pip install " in line]
    assert "torch: " in second and "already installed" in second
    assert "stylecore: 0.1.0 already installed" in second and "installed from" not in second
    assert "Worker ready: torch" in second and "CPU only" in second
    # Check Worker then talks to the new environment's worker.
    assert out["check"] == ["FINISHED"]
    assert "Worker OK (preferences)" in log and "devices cpu" in log
    versions = subprocess.run([str(python), "-c", "import stylecore, sys; print(stylecore.__file__)"],
                              capture_output=True, text=True, cwd=tmp_path, env={"PATH": os.environ["PATH"]})
    assert str(_env_folder(tmp_path)) in versions.stdout, "stylecore should come from the bundled wheel"


@pytest.mark.slow
@needs_worker
def test_set_up_worker_offline_says_what_to_do_instead(tmp_path: Path) -> None:
    pytest.importorskip("bpy")
    archive = build_extension.build(tmp_path / "dist")
    # Nothing listens on port 9: the index is unreachable, as offline.
    out, log = _set_up(tmp_path, archive, "--index-url http://127.0.0.1:9/simple --retries 0 --timeout 2")
    message = out["runs"][0]
    assert isinstance(message, str), out
    line = message.strip().splitlines()[-1]
    assert "Set Up Worker could not reach the package index (could not install torch)" in line
    assert "pip install torch stylecore" in line and "weights get hed-vgg16" in line
    assert "set Worker Python to" in line
    assert out["worker_python"] == [""]
