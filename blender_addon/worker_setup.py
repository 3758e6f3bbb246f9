"""Set Up Worker: a Python environment with torch, stylecore and the HED weights, made by
the add-on itself. Pure Python (no ``bpy``), polled like ``runner.JobRun``.

Steps, each skipped when its result is already there (re-running is cheap): create a
virtual environment, install torch (on Windows with an NVIDIA GPU the CUDA build from
PyTorch's own index; the package index's Windows wheel is CPU-only), install stylecore
(a wheel bundled with the add-on, else the package index), fetch the HED loss-network
weights and ask the environment which torch build and devices it has. Every command's
output goes to a log file; the status line is its last line.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_FOLDER = "worker-env"
LOG_NAME = "set-up-worker.log"
# PyTorch's own index of CUDA builds (Windows: the package index's torch has no CUDA).
TORCH_CUDA_INDEX = "https://download.pytorch.org/whl/cu128"
STYLECORE_REQUIREMENT = "stylecore"
HED_NETWORK = "hed-vgg16"

RUNNING, DONE, FAILED, CANCELLED = "running", "done", "failed", "cancelled"
# pip's words when it cannot reach an index (urllib3 errors, DNS, refused, timeouts).
_OFFLINE = re.compile(
    r"Failed to establish a new connection|NewConnectionError|Could not fetch URL|Temporary failure in name "
    r"resolution|Name or service not known|Network is unreachable|Connection refused|ConnectTimeout|"
    r"ReadTimeout|getaddrinfo failed|No connection could be made|could not download .* from the package index",
    re.IGNORECASE,
)
_NOT_FOUND = re.compile(r"No matching distribution found for (\S+)")
DEFAULT_INDEX = "https://pypi.org/simple"
_REACH_TIMEOUT_S = 5.0
# Versions of the packages that matter, without importing them (torch takes seconds).
_VERSIONS = ("import json, importlib.metadata as m\n"
             "def v(n):\n"
             "    try: return m.version(n)\n"
             "    except m.PackageNotFoundError: return None\n"
             "print(json.dumps({n: v(n) for n in ('torch', 'stylecore')}))")
# The last step: the HED weights (stylecore's ``weights get hed-vgg16``), and which devices
# torch sees; one process, as importing torch takes seconds.
_PROBE = ("import json, torch, stylecore\n"
          "from stylecore.nets.loss_nets import get_weights\n"
          f"print('{HED_NETWORK} weights ready:', get_weights('{HED_NETWORK}'), flush=True)\n"
          "cuda = torch.cuda.is_available()\n"
          "mps = bool(getattr(torch.backends, 'mps', None) and torch.backends.mps.is_available())\n"
          "print(json.dumps({'torch': torch.__version__, 'stylecore': getattr(stylecore, '__version__', '?'),\n"
          "                  'cuda': torch.version.cuda, 'gpu': torch.cuda.get_device_name(0) if cuda else None,\n"
          "                  'mps': mps}))")


def env_python(env: Path, platform: str = sys.platform) -> Path:
    """The interpreter of a virtual environment."""
    return env / "Scripts" / "python.exe" if platform == "win32" else env / "bin" / "python"


def has_nvidia_gpu(platform: str = sys.platform) -> bool:
    """An NVIDIA driver is installed (its ``nvidia-smi`` tool is there)."""
    if shutil.which("nvidia-smi"):
        return True
    if platform == "win32":
        system = Path(os.environ.get("SystemRoot", r"C:\Windows")) / "System32" / "nvidia-smi.exe"
        return system.is_file()
    return False


def bundled_wheel(folder: Path | None) -> Path | None:
    """The newest stylecore wheel shipped inside the add-on (tools/build_extension.py --worker-wheel)."""
    if folder is None or not folder.is_dir():
        return None
    wheels = sorted(folder.glob("stylecore-*.whl"), key=lambda p: _version_key(wheel_version(p)))
    return wheels[-1] if wheels else None


def wheel_version(wheel: Path) -> str:
    """``stylecore-0.1.0-py3-none-any.whl`` -> ``0.1.0``."""
    parts = wheel.name.split("-")
    return parts[1] if len(parts) > 2 else ""


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", version))


@dataclass(frozen=True)
class TorchChoice:
    """Which torch build to install, and the words that say so."""

    args: tuple[str, ...]  # pip arguments after "install"
    build: str  # e.g. "CUDA build from PyTorch's index"
    how_to_change: str  # "" when there is nothing to change


def torch_choice(platform: str, nvidia: bool, pip_options: Sequence[str], python: str) -> TorchChoice:
    """The default wheel on Linux (it carries CUDA) and macOS (MPS); on Windows the CUDA
    build from PyTorch's index when an NVIDIA GPU is there, else the CPU build. Pip options
    that choose the package source (``--index-url``, ``--no-index``) win."""
    pip = f'"{python}" -m pip install --force-reinstall torch'
    if any(opt.startswith(("--index-url", "-i", "--no-index", "--find-links", "-f")) for opt in pip_options):
        return TorchChoice(("torch",), "from the package source in Set Up Worker's pip options", "")
    if platform == "win32" and nvidia:
        return TorchChoice(("torch", "--index-url", TORCH_CUDA_INDEX), f"CUDA build from {TORCH_CUDA_INDEX}",
                           f"for the CPU build instead: {pip}")
    if platform == "win32":
        return TorchChoice(("torch",), "CPU build (no NVIDIA GPU found)",
                           f"for an NVIDIA GPU: {pip} --index-url {TORCH_CUDA_INDEX}")
    if platform == "darwin":
        return TorchChoice(("torch",), "the package index's build (Apple MPS)", "")
    return TorchChoice(("torch",), "the package index's build (with CUDA on Linux x86_64)", "")


def manual_commands(platform: str = sys.platform) -> str:
    """The same set-up by hand, for a machine where Set Up Worker cannot reach the index."""
    env = "%USERPROFILE%\\stylecore-env" if platform == "win32" else "~/stylecore-env"
    python = str(env_python(Path(env), platform)) if platform != "win32" else env + "\\Scripts\\python.exe"
    return (f"python -m venv {env}; {python} -m pip install torch stylecore; "
            f"{python} -m stylecore weights get {HED_NETWORK}; then set Worker Python to {python}")


@dataclass
class Command:
    """One subprocess of the set-up; its output goes to the log (and to ``output``)."""

    label: str
    argv: list[str]
    output: str = ""
    returncode: int | None = None


@dataclass
class WorkerSetup:
    """Makes (or completes) the worker environment in ``folder``; ``poll()`` it until
    ``finished``, or ``run()`` it to the end."""

    folder: Path  # the add-on's user folder: the environment and the log go here
    base_python: str = sys.executable  # creates the environment (Blender's own Python)
    pip_options: list[str] = field(default_factory=list)  # e.g. --no-index --find-links DIR
    wheel_folder: Path | None = None  # the add-on's bundled wheels
    platform: str = sys.platform
    nvidia: bool | None = None  # None: detect
    on_line: Callable[[str], None] | None = None  # each log line, e.g. print in background mode
    state: str = RUNNING
    message: str = ""  # one line: the result, or what went wrong and what to do
    step: int = 0
    total_steps: int = 4
    summary: list[str] = field(default_factory=list)  # what each step found or did
    _steps: Generator[Command, Command, None] | None = None
    _command: Command | None = None
    _proc: subprocess.Popen[bytes] | None = None
    _log_start: int = 0

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.log_path.write_text("", encoding="utf-8")

    # ------------------------------------------------------------------ public

    @property
    def env(self) -> Path:
        return self.folder / ENV_FOLDER

    @property
    def python(self) -> Path:
        return env_python(self.env, self.platform)

    @property
    def log_path(self) -> Path:
        return self.folder / LOG_NAME

    @property
    def finished(self) -> bool:
        return self.state != RUNNING

    @property
    def fraction(self) -> float:
        return 1.0 if self.state == DONE else min(self.step / self.total_steps, 1.0)

    @property
    def status(self) -> str:
        """One line for the preferences and the status bar."""
        if self.finished:
            return self.message
        label = self._command.label if self._command is not None else "Starting"
        last = _last_line(self.log_path)
        return f"Step {self.step}/{self.total_steps}: {label}" + (f" ({last[:80]})" if last else "")

    def poll(self) -> bool:
        """Advance without blocking; True once finished."""
        if self.finished:
            return True
        if self._steps is None:
            self._steps = self._plan()
            self._start(next(self._steps, None))
        elif self._proc is not None and self._proc.poll() is not None:
            assert self._command is not None
            self._command.returncode = self._proc.returncode
            self._command.output = self._read_log_since(self._log_start)
            self._proc = None
            try:
                self._start(self._steps.send(self._command))
            except StopIteration:
                self._start(None)
        return self.finished

    def run(self, interval: float = 0.2) -> str:
        """Block until finished (background mode); returns the state."""
        while not self.poll():
            time.sleep(interval)
        return self.state

    def cancel(self) -> None:
        """Stop the running command; re-running Set Up Worker completes what is missing."""
        if self.finished:
            return
        if self._proc is not None:
            _terminate(self._proc)
            self._proc = None
        self._log("Cancelled: click Set Up Worker again to complete the environment")
        self._end(CANCELLED, "Set Up Worker cancelled: click it again to complete the environment")

    # ------------------------------------------------------------------ the steps

    def _plan(self) -> Generator[Command, Command, None]:
        """The steps, as a generator that yields commands and gets them back finished."""
        python = str(self.python)
        pip = [python, "-m", "pip", "install", "--disable-pip-version-check", *self.pip_options]
        self.step = 1
        if self.python.is_file():
            self._note(f"environment: already there ({self.env})")
        else:
            done = yield Command("Creating the Python environment", [self.base_python, "-m", "venv", str(self.env)])
            if not self._ok(done, "could not create a Python environment"):
                return
            self._note(f"environment: created ({self.env})")
        versions = yield Command("Checking the environment", [python, "-c", _VERSIONS])
        if not self._ok(versions, "the new environment's Python does not run"):
            return
        have = _json_line(versions.output)

        self.step = 2
        if have.get("torch"):
            self._note(f"torch: {have['torch']} already installed")
        else:
            nvidia = has_nvidia_gpu(self.platform) if self.nvidia is None else self.nvidia
            choice = torch_choice(self.platform, nvidia, self.pip_options, python)
            done = yield Command(f"Installing torch, {choice.build} (large download)", [*pip, *choice.args])
            if not self._ok(done, "could not install torch"):
                return
            self._note(f"torch: installed, {choice.build}" + (f"; {choice.how_to_change}" if choice.how_to_change else ""))

        self.step = 3
        wheel = bundled_wheel(self.wheel_folder)
        wanted = wheel_version(wheel) if wheel is not None else None
        if have.get("stylecore") and (wanted is None or have["stylecore"] == wanted):
            self._note(f"stylecore: {have['stylecore']} already installed")
        else:
            source = str(wheel) if wheel is not None else STYLECORE_REQUIREMENT
            where = f"the add-on's wheel {wheel.name}" if wheel is not None else "the package index"
            done = yield Command(f"Installing stylecore from {where}", [*pip, source])
            if not self._ok(done, "could not install stylecore"):
                return
            self._note(f"stylecore: installed from {where}")

        self.step = 4
        probe = yield Command(f"Getting the {HED_NETWORK} loss-network weights, checking torch's devices",
                              [python, "-c", _PROBE])
        if not self._ok(probe, f"could not get the {HED_NETWORK} weights or import torch and stylecore"):
            return
        self._note(f"{HED_NETWORK} weights: ready")
        found = _json_line(probe.output)
        device = (f"CUDA {found.get('cuda')} on {found['gpu']}" if found.get("gpu")
                  else "Apple MPS" if found.get("mps") else "CPU only")
        self._end(DONE, f"Worker ready: torch {found.get('torch', '?')} ({device}), stylecore "
                        f"{found.get('stylecore', '?')}; Worker Python is {python}")

    def _ok(self, command: Command, what: str) -> bool:
        if command.returncode == 0:
            return True
        self._end(FAILED, self._failure(command, what))
        return False

    def _failure(self, command: Command, what: str) -> str:
        """One line: offline, a missing package, or the command's last error line."""
        text = command.output
        # pip without retries says only "from versions: none" when the index is unreachable.
        unreachable = "(from versions: none)" in text and not index_reachable(self.pip_options)
        if unreachable or _OFFLINE.search(text):
            return (f"Set Up Worker could not reach the package index ({what}): connect to the internet and click "
                    f"Set Up Worker again, or make an environment on any machine yourself ({manual_commands(self.platform)})")
        missing = _NOT_FOUND.search(text)
        if missing:
            return (f"{what}: the package source has no {missing.group(1)} for this Python "
                    f"({sys.version_info.major}.{sys.version_info.minor}); see the log {self.log_path}")
        last = _last_line_of(text) or f"exit code {command.returncode}"
        return f"{what}: {last} (log: {self.log_path})"

    # ------------------------------------------------------------------ mechanics

    def _start(self, command: Command | None) -> None:
        if self.finished:
            return
        self._command = command
        if command is None:
            if self.state == RUNNING:
                self._end(FAILED, "Set Up Worker stopped without a result")
            return
        self._log(f"$ {shlex.join(command.argv)}")
        self._log_start = self.log_path.stat().st_size
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it until it ends
        env = dict(os.environ, PYTHONUNBUFFERED="1", PIP_PROGRESS_BAR="off")
        env.pop("PYTHONPATH", None)  # the environment's own packages, not the caller's
        env.pop("PYTHONHOME", None)  # Blender sets it for its own Python
        try:
            self._proc = subprocess.Popen(command.argv, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, cwd=self.folder, env=env,
                                          **_new_group())
        except OSError as exc:
            self._end(FAILED, f"could not run {command.argv[0]}: {exc}")
        finally:
            log.close()

    def _note(self, text: str) -> None:
        self.summary.append(text)
        self._log(text)

    def _log(self, text: str) -> None:
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(text + "\n")
        if self.on_line is not None:
            self.on_line(text)

    def _read_log_since(self, offset: int) -> str:
        with open(self.log_path, "rb") as log:
            log.seek(offset)
            text = log.read().decode("utf-8", "replace")
        if self.on_line is not None:
            for line in text.splitlines():
                self.on_line(line)
        return text

    def _end(self, state: str, message: str) -> None:
        self.state, self.message = state, message
        if state != CANCELLED:
            self._log(message)


def index_reachable(pip_options: Sequence[str], env: dict[str, str] | None = None) -> bool:
    """Whether the package index pip uses answers a connection (True with ``--no-index``:
    then the local folders are the source, not the network)."""
    env = dict(os.environ) if env is None else env
    if "--no-index" in pip_options or env.get("PIP_NO_INDEX", "").lower() in {"1", "true", "yes"}:
        return True
    url = env.get("PIP_INDEX_URL") or DEFAULT_INDEX
    for i, option in enumerate(pip_options):
        if option in {"--index-url", "-i"} and i + 1 < len(pip_options):
            url = pip_options[i + 1]
        elif option.startswith("--index-url="):
            url = option.split("=", 1)[1]
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname:
        return True  # a local path: not a network question
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=_REACH_TIMEOUT_S):
            return True
    except OSError:
        return False


def parse_pip_options(text: str) -> list[str]:
    """The preferences' pip options (shell words)."""
    try:
        return shlex.split(text, posix=sys.platform != "win32")
    except ValueError as exc:
        raise ValueError(f"Set Up Worker's pip options are not valid ({exc})") from None


def _new_group() -> dict[str, Any]:
    """Popen arguments that put the child in its own process group (cancel stops pip's children too)."""
    if sys.platform == "win32":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    try:
        if sys.platform == "win32":
            proc.terminate()
        else:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        proc.kill()


def _json_line(text: str) -> dict[str, Any]:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            try:
                return dict(json.loads(line))
            except ValueError:
                continue
    return {}


def _last_line_of(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("ERROR", "error"))]
    return (errors or lines or [""])[-1]


def _last_line(path: Path) -> str:
    """The log's last non-empty line (pip's current action)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as log:
            log.seek(max(0, size - 2048))  # the tail is enough, the log may be long
            text = log.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""
