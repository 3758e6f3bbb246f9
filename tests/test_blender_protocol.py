"""The add-on's worker client and job runner, against a fake worker (no torch needed)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import blender_helpers
import pytest

pytest.importorskip("bpy")  # importing blender_addon imports bpy

from blender_addon.environment import SetupError, output_root, resolve_worker_python
from blender_addon.protocol import WorkerClient
from blender_addon.runner import CANCELLED, DONE, FAILED, JobRun

HELPERS = Path(blender_helpers.__file__)


def fake(mode: str) -> WorkerClient:
    client = WorkerClient([sys.executable, str(HELPERS), "fake-worker", mode])
    client.start()
    return client


@pytest.fixture()
def clients():
    made: list[WorkerClient] = []

    def make(mode: str) -> WorkerClient:
        made.append(fake(mode))
        return made[-1]

    yield make
    for client in made:
        client.close(timeout=5)


def test_job_runs_to_done_with_progress_and_frames(clients) -> None:
    seen: list[str] = []
    job = {"frame_map": [4, 5, 6, 7], "output": "/out"}
    run = JobRun(clients("ok"), job, on_event=lambda e: seen.append(e["event"]))
    assert run.wait(timeout=30) == DONE
    assert run.progress.done == run.progress.total == 4
    assert sorted(run.frames) == [1, 2, 3, 4]
    assert run.output == "/out"
    assert seen[0] == "start" and seen[-1] == "done"
    assert seen.count("frame") == 4 and seen.count("progress") == 4


def test_worker_stays_alive_across_jobs(clients) -> None:
    client = clients("ok")
    first = JobRun(client, {"frame_map": [0]})
    assert first.wait(timeout=30) == DONE
    second = JobRun(client, {"frame_map": [0, 1]})
    assert second.wait(timeout=30) == DONE
    assert client.alive and second.progress.total == 2


def test_error_event_becomes_the_message(clients) -> None:
    run = JobRun(clients("bad-job"), {})
    assert run.wait(timeout=30) == FAILED
    assert run.error == "style image not found: /nowhere.png"


def test_crash_is_reported_with_exit_code_and_last_stderr_line(clients) -> None:
    run = JobRun(clients("crash"), {})
    assert run.wait(timeout=30) == FAILED
    assert "exit code 3" in run.error
    assert "RuntimeError: simulated crash in the worker" in run.error
    assert "\n" not in run.error


def test_crash_report_waits_for_a_slow_stderr_reader(clients, monkeypatch) -> None:
    # Under load the stderr thread can lag behind the stdout thread that sees the exit:
    # a reader slowed on purpose makes that lag certain, and the last line must still come.
    original = WorkerClient._read_stderr

    def slow(self, proc):  # type: ignore[no-untyped-def]
        time.sleep(1.0)
        original(self, proc)

    monkeypatch.setattr(WorkerClient, "_read_stderr", slow)
    run = JobRun(clients("crash"), {})
    assert run.wait(timeout=30) == FAILED
    assert "exit code 3" in run.error and "RuntimeError: simulated crash in the worker" in run.error


def test_interpreter_without_stylecore_says_how_to_install(clients) -> None:
    run = JobRun(clients("no-stylecore"), {})
    assert run.wait(timeout=30) == FAILED
    assert "stylecore is not installed" in run.error and "pip install stylecore" in run.error


def test_worker_that_hangs_after_an_import_error_fails_fast(clients) -> None:
    started = time.monotonic()
    run = JobRun(clients("hang-without-torch"), {})
    assert run.wait(timeout=30) == FAILED
    assert time.monotonic() - started < 20
    assert "No module named 'torch'" in run.error and "pip install stylecore" in run.error


def test_protocol_mismatch_asks_to_update(clients) -> None:
    run = JobRun(clients("old-protocol"), {})
    assert run.wait(timeout=30) == FAILED
    assert "protocol 1" in run.error and "update stylecore" in run.error


def test_cancel_stops_between_frames(clients) -> None:
    run = JobRun(clients("slow"), {"frame_map": list(range(50))})
    while not run.frames:
        run.poll(timeout=1.0)
    run.cancel()
    assert run.wait(timeout=30) == CANCELLED
    assert 1 <= len(run.frames) < 50


def test_missing_interpreter_cannot_start() -> None:
    client = WorkerClient(["/nonexistent/python", "-m", "stylecore.worker"])
    with pytest.raises(Exception, match="cannot start the stylecore worker"):
        client.start()


def test_worker_python_resolution_order(tmp_path: Path) -> None:
    python = tmp_path / "python"
    python.write_text("")
    assert resolve_worker_python(str(python), env={}) == (str(python), "preferences")
    assert resolve_worker_python("", env={"STYLECORE_WORKER_PYTHON": str(python)})[0] == str(python)
    with pytest.raises(SetupError, match="does not exist"):
        resolve_worker_python(str(tmp_path / "missing"), env={})
    with pytest.raises(SetupError, match="does not exist"):
        resolve_worker_python("", env={"STYLECORE_WORKER_PYTHON": str(tmp_path / "missing")})


def test_no_worker_python_explains_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SetupError, match=r"pip install stylecore.*Preferences"):
        resolve_worker_python("", env={})


def test_output_root_beside_blend_or_in_temp(tmp_path: Path) -> None:
    blend = tmp_path / "edit.blend"
    assert output_root("//stylized/", str(blend)) == (tmp_path / "stylized").resolve()
    unsaved = output_root("//stylized/", "", "abc")
    # An unsaved file has a temp folder of its own: other files' results never mix in.
    assert unsaved.name == "stylized" and unsaved.parent.name == "unsaved-abc"
    assert unsaved.parent.parent.name == "stylecore"
    assert output_root("//stylized/", "", "xyz") != unsaved
    assert output_root(str(tmp_path / "abs"), str(blend)) == (tmp_path / "abs").resolve()


def test_engine_messages_reach_blender_users_in_panel_words() -> None:
    from blender_addon.runner import for_blender

    engine = ("no loss network weights on this machine: run 'stylecore weights get hed-vgg16' once, or give its "
              "file as `vgg_weights`; `loss_net` random-vgg19 needs no weights")
    shown = for_blender(engine)
    assert "`" not in shown and "--" not in shown
    assert "the Loss Network field of the Stylize panel" in shown
    assert "'<Worker Python> -m stylecore weights get hed-vgg16'" in shown
    shown = for_blender("cannot resume from m.ckpt: EOF; `restart` starts over")
    assert shown.endswith("; Start Over (Train Style) starts over")
