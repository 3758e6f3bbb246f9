"""The JSON-lines worker, driven as a real subprocess (as the Blender add-on drives it)."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from conftest import pan_frames, write_png_folder


class Worker:
    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "stylecore.worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1, env=env)
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put(json.loads(line))  # every stdout line must be protocol JSON

    def send(self, request: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()

    def until(self, *kinds: str, timeout: float = 120.0) -> list[dict[str, Any]]:
        seen = []
        while True:
            event = self.events.get(timeout=timeout)
            seen.append(event)
            if event["event"] in kinds:
                return seen

    def close(self) -> int:
        self.send({"op": "shutdown"})
        return self.proc.wait(timeout=60)


@pytest.fixture()
def worker():
    w = Worker()
    yield w
    if w.proc.poll() is None:
        w.proc.kill()


def job(tmp_path: Path, style: Path, output: str, frames: int = 3, **extra: Any) -> dict[str, Any]:
    content = write_png_folder(tmp_path / f"pan{frames}", pan_frames(frames))
    return {"content": str(content), "output": str(tmp_path / output), "mode": "optimization",
            "styles": [[str(style), 1.0]], "loss_net": "random-vgg19", "first_iterations": 4, "iterations": 2,
            "device": "cpu", **extra}


def test_hello_job_events_and_reuse(tmp_path: Path, style_png: Path, worker: Worker) -> None:
    worker.send({"op": "hello", "protocol": 1})  # a protocol-1 client is still served
    hello = worker.until("hello")[-1]
    assert hello["protocol"] == 2 and "cpu" in hello["devices"]
    assert {"stylize", "train", "models"} <= set(hello["ops"])

    worker.send({"op": "stylize", "id": "a", "job": job(tmp_path, style_png, "a", frame_map=[2, 1, 0],
                                                         style_weights=[1.0, 0.5, 0.0])})
    events = worker.until("done", "error")
    assert events[-1]["event"] == "done", events[-1]
    assert events[0] == {"event": "start", "id": "a", "total": 3, "todo": 3, "output": str(tmp_path / "a"),
                         "loss_net": "random-vgg19", "loss_net_weights": "built in, seeded"}
    frames = [e for e in events if e["event"] == "frame"]
    assert [(e["number"], e["index"]) for e in frames] == [(1, 2), (2, 1), (3, 0)]
    assert [e["done"] for e in events if e["event"] == "progress"] == [1, 2, 3]

    # The same worker takes a second job.
    worker.send({"op": "stylize", "id": "b", "job": job(tmp_path, style_png, "b")})
    assert worker.until("done", "error")[-1]["event"] == "done"
    assert worker.close() == 0


def test_bad_jobs_are_readable_errors(tmp_path: Path, style_png: Path, worker: Worker) -> None:
    worker.send({"op": "stylize", "id": "x", "job": {"content": "/nowhere.mp4", "output": str(tmp_path / "o"),
                                                      "mode": "feedforward"}})
    error = worker.until("error", "done")[-1]
    assert error["event"] == "error" and error["id"] == "x" and "/nowhere.mp4" in error["message"]
    worker.send({"op": "stylize", "id": "y", "job": {"content": "c", "output": "o", "colour": "red"}})
    error = worker.until("error", "done")[-1]
    assert "unknown job field" in error["message"] and "colour" in error["message"]
    worker.send({"op": "dance"})
    assert "unknown op" in worker.until("error")[-1]["message"]
    assert worker.close() == 0


def test_cancel_keeps_whole_frames(tmp_path: Path, style_png: Path, worker: Worker) -> None:
    spec = job(tmp_path, style_png, "c", frames=8, first_iterations=20, iterations=20)
    worker.send({"op": "stylize", "id": "c", "job": spec})
    worker.until("frame", timeout=300)
    worker.send({"op": "cancel", "id": "c"})
    assert worker.until("cancelled", "done", "error", timeout=300)[-1]["event"] == "cancelled"
    names = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert "frame_000001.png" in names and all(n.startswith("frame_") or n == "stylecore-job.json" for n in names)
    # Sending the same job again resumes.
    worker.send({"op": "stylize", "id": "c2", "job": spec})
    events = worker.until("done", "error", timeout=600)
    assert events[-1]["event"] == "done"
    assert any(e["event"] == "frame" and e["skipped"] for e in events)
    assert worker.close() == 0


def test_end_of_input_cancels_the_running_job(tmp_path: Path, style_png: Path, worker: Worker) -> None:
    """Blender quitting closes the pipe: the worker stops instead of computing on, orphaned."""
    worker.send({"op": "stylize", "id": "d", "job": job(tmp_path, style_png, "d", frames=8, first_iterations=20,
                                                         iterations=20)})
    worker.until("frame", timeout=300)
    assert worker.proc.stdin is not None
    worker.proc.stdin.close()
    assert worker.proc.wait(timeout=120) == 0
    assert len(list((tmp_path / "d").glob("frame_*.png"))) < 8


def test_train_job_reports_progress_previews_cancels_and_resumes(tmp_path: Path, style_png: Path) -> None:
    """Protocol 2's training job: a tiny model for a new style lands in the user's model
    folder with a thumbnail and shows in the ``models`` answer; cancel keeps a checkpoint."""
    import os

    models = tmp_path / "models"
    worker = Worker(env=dict(os.environ, STYLECORE_MODELS=str(models)))
    try:
        content = write_png_folder(tmp_path / "clip", pan_frames(6, height=72, width=80))
        spec = {"style": str(style_png), "output": "stripes", "content": [str(content)], "data": [],
                "steps": 10, "size": 64, "batch_size": 1, "loss_net": "random-vgg19", "device": "cpu",
                "style_size": 64, "preview_every": 2, "checkpoint_every": 1, "bf16": False}
        worker.send({"op": "train", "id": "t", "job": spec})
        first = worker.until("progress", "error", timeout=300)
        assert first[-1]["event"] == "progress", first[-1]
        start = next(e for e in first if e["event"] == "start")
        assert start["total"] == 10 and start["output"] == str(models / "stripes.safetensors")
        worker.send({"op": "cancel", "id": "t"})
        events = worker.until("cancelled", "done", "error", timeout=300)
        assert events[-1]["event"] == "cancelled", events[-1]
        assert (models / "stripes.ckpt").is_file() and not (models / "stripes.safetensors").exists()

        worker.send({"op": "train", "id": "t2", "job": spec})  # the same job again resumes
        events = worker.until("done", "error", timeout=300)
        assert events[-1]["event"] == "done", events[-1]
        assert events[-1]["model"] == str(models / "stripes.safetensors") and events[-1]["name"] == "stripes"
        resumed = next(e for e in events if e["event"] == "start")
        assert 0 < 10 - resumed["todo"] < 10
        progress = [e for e in events if e["event"] == "progress"]
        assert progress[-1]["done"] == 10 and progress[-1]["eta_seconds"] == 0 and "total" in progress[-1]["losses"]
        previews = [e for e in events if e["event"] == "preview"]
        assert previews and all(Path(e["path"]).is_file() for e in previews)
        assert (models / "stripes.jpg").is_file() and not (models / "stripes.ckpt").exists()

        worker.send({"op": "models", "id": "m"})
        listed = worker.until("models")[-1]["models"]
        mine = [m for m in listed if m["name"] == "stripes"]
        assert mine and mine[0]["origin"] == "user" and mine[0]["thumbnail"] == str(models / "stripes.jpg")
        assert worker.until("done")[-1]["id"] == "m"

        worker.send({"op": "train", "id": "bad", "job": {"style": str(style_png), "output": "x", "colour": 1}})
        assert "unknown training option" in worker.until("error")[-1]["message"]
        assert worker.close() == 0
    finally:
        if worker.proc.poll() is None:
            worker.proc.kill()


def test_ids_must_be_strings_and_are_echoed_as_sent(worker: Worker) -> None:
    for bad in (5, None, ["a"], ""):
        worker.send({"op": "stylize", "id": bad, "job": {"content": "c", "output": "o"}})
        event = worker.until("error", "done")[-1]
        assert event["event"] == "error" and event["id"] == bad and "`id`" in event["message"], event
    assert worker.close() == 0


def test_protocol_fuzz_every_bad_field_is_one_readable_line(tmp_path: Path, worker: Worker) -> None:
    """Each job field, and the request envelope, replaced by values of every wrong kind:
    the worker answers each with one error line naming the problem, never an internal
    error, and never runs a job (the content does not exist, so nothing is written)."""
    import random

    base = {"content": str(tmp_path / "missing.mp4"), "output": str(tmp_path / "out"), "mode": "feedforward"}
    fields = ["content", "output", "mode", "styles", "style_video", "model", "frames", "frame_map", "size",
              "iterations", "first_iterations", "optimizer", "scales", "content_weight", "style_weight",
              "style_weights", "tv_weight", "temporal_weight", "preserve_colors", "style_scale", "loss_net",
              "vgg_weights", "seed", "device", "style_sync", "style_rate", "style_offset", "style_end",
              "batch_size", "tile", "compile", "bf16", "audio", "keep_frames", "extra"]
    junk = [None, True, -5, 0, 1e30, float("nan"), float("inf"), "notanumber", "", [], [5], [["a"]],
            [[1, 2]], [["a", float("nan")]], {"a": 1}, [1, 2, 3], 2**70, [float("nan")], -1.5]
    rng = random.Random(13)
    cases: list[dict[str, Any]] = [{"job": "notadict"}, {"job": [1]}, {"job": None},
                                   {"job": base, "overwrite": "yes"}]
    for name in fields:
        for value in rng.sample(junk, 6):
            cases.append({"job": {**base, name: value}})
    for n, case in enumerate(cases):
        worker.send({"op": "stylize", "id": f"fuzz{n}", **case})
        events = worker.until("error", "done", "cancelled")
        final = events[-1]
        assert final["event"] == "error" and final["id"] == f"fuzz{n}", (case, events)
        message = final["message"]
        assert "\n" not in message and "internal error" not in message and len(message) < 400, (case, message)
    assert not (tmp_path / "out").exists()
    assert worker.close() == 0
