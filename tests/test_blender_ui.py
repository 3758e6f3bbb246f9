"""The sidebar panel and the modal operator, exercised without a window.

Headless Blender has no UI, so the panel draws into a recording layout that checks every
call against the real ``UILayout`` RNA (function names, keyword arguments, property
names), and the modal operator is driven with synthetic timer and Esc events.
"""

from __future__ import annotations

import time
import types
from pathlib import Path
from typing import Any

import blender_helpers as bh
import pytest

bpy = pytest.importorskip("bpy")

from blender_addon import jobs, operators, props, ui, vse  # noqa: E402
from blender_addon.session import StylizeSession  # noqa: E402

WORKER = bh.worker_python()


class RecordingLayout:
    """Stands in for ``UILayout``: validates and records every call."""

    def __init__(self, calls: list[tuple[str, dict[str, Any]]]) -> None:
        object.__setattr__(self, "calls", calls)

    def __setattr__(self, name: str, value: Any) -> None:
        assert name in bpy.types.UILayout.bl_rna.properties, f"UILayout has no property {name}"

    def __getattr__(self, name: str) -> Any:
        functions = bpy.types.UILayout.bl_rna.functions
        assert name in functions, f"UILayout has no function {name}"
        params = [p.identifier for p in functions[name].parameters]

        def call(*args: Any, **kwargs: Any) -> Any:
            unknown = set(kwargs) - set(params)
            assert not unknown, f"UILayout.{name}() has no parameter {unknown}"
            named = dict(zip(params, args), **kwargs)
            if name in {"prop", "prop_search"}:
                data, prop = named["data"], named["property"]
                assert prop in data.bl_rna.properties, f"{data} has no property {prop}"
            if name in {"prop_search"}:
                assert named["search_property"] in named["search_data"].bl_rna.properties
            if name == "operator":
                module, op = named["operator"].split(".")
                assert hasattr(getattr(bpy.ops, module), op) and getattr(getattr(bpy.ops, module), op).idname()
                self.calls.append((name, named))
                return types.SimpleNamespace()
            self.calls.append((name, named))
            return RecordingLayout(self.calls)

        return call


def draw_panel() -> list[tuple[str, dict[str, Any]]]:
    calls: list[tuple[str, dict[str, Any]]] = []
    panel = types.SimpleNamespace(layout=RecordingLayout(calls))
    assert ui.SEQUENCER_PT_stylize.poll(bpy.context)
    ui.SEQUENCER_PT_stylize.draw(panel, bpy.context)
    return calls


def texts(calls: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [c[1].get("text", "") for c in calls]


def drawn_props(calls: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [c[1]["property"] for c in calls if c[0] in {"prop", "prop_search"}]


@pytest.fixture()
def scene(tmp_path: Path):
    return bh.fresh_scene(tmp_path)


@pytest.fixture(scope="module")
def movie(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("movie")
    bh.fresh_scene(folder)
    return bh.make_movie(folder / "clip.mp4", 6)


def test_panel_shows_each_modes_settings(scene, movie) -> None:
    strip = bh.add_movie(scene, movie)
    calls = draw_panel()
    feedforward = drawn_props(calls)
    assert {"mode", "model", props.STYLE_WEIGHT, "temporal_weight", "preserve_colors", "size"} <= set(feedforward)
    # The style image chooses the model; Train Style makes one for it.
    assert {"style_image", "train_quality", "train_own_frames"} <= set(feedforward) and "iterations" not in feedforward
    assert "Train Style" in texts(calls)
    assert not any("No model is trained" in t for t in texts(calls))
    props.strip_settings(strip).style_image = "/styles/scream.jpg"
    props.strip_settings(strip).no_model_style = "/styles/scream.jpg"  # what a failed Stylize leaves
    assert any("No model is trained on this style image" in t for t in texts(draw_panel()))
    props.strip_settings(strip).style_image = ""
    props.strip_settings(strip).mode = "OPTIMIZATION"
    optimization = drawn_props(draw_panel())
    assert {"style_source", "style_image", "iterations", "loss_net"} <= set(optimization) and "model" not in optimization
    assert "loss_net" not in feedforward  # a feedforward model needs no loss network
    props.strip_settings(strip).style_source = "STRIP"
    assert "style_strip" in drawn_props(draw_panel())
    calls = draw_panel()
    assert {"Stylize", "Preview"} <= set(texts(calls))


def test_panel_for_a_result_strip_offers_mix_and_restylize(scene, movie) -> None:
    strip = bh.add_movie(scene, movie)
    p = jobs.plan_strip(scene, strip, operators.settings_for(bpy.context))
    p.folder.mkdir(parents=True)
    for k in range(p.frame_count):
        bh.save_png(p.folder / jobs.FRAME_NAME.format(k + 1), bh.frame_pixels(k))
    result = jobs.apply_result(scene, p)
    scene.sequence_editor.active_strip = result
    calls = draw_panel()
    assert ("prop", "blend_alpha") in [(c[0], c[1].get("property")) for c in calls]
    assert {"Mix", "Re-stylize"} <= set(texts(calls))
    assert any("Stylized from: Clip" in t for t in texts(calls))
    scene.sequence_editor.active_strip = strip  # the source shows its result's Mix too
    assert "blend_alpha" in drawn_props(draw_panel())


def test_panel_explains_sound_strips_and_shows_progress(scene, movie, monkeypatch, tmp_path: Path) -> None:
    import wave

    from blender_addon import vse

    wav = tmp_path / "tone.wav"
    with wave.open(str(wav), "wb") as out:  # a tenth of a second of silence
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\0\0" * 800)
    sound = vse.children(scene.sequence_editor).new_sound("Tone", str(wav), 2, 1)
    scene.sequence_editor.active_strip = sound
    assert vse.is_sound(sound)
    calls = draw_panel()
    assert "Sound strips cannot be stylized" in texts(calls)
    assert "mode" not in drawn_props(calls)  # no settings for a strip that has no pixels

    strip = bh.add_movie(scene, movie)
    strip.stylecore.mode = "FEEDFORWARD"
    fake = types.SimpleNamespace(fraction=0.25, status="Stylizing Clip: 3/12 frames", finished=False)
    monkeypatch.setattr(operators, "_ACTIVE", fake)
    calls = draw_panel()
    progress = [c for c in calls if c[0] == "progress"]
    assert progress and progress[0][1]["factor"] == 0.25 and progress[0][1]["text"] == fake.status
    assert any(c[0] == "operator" and c[1]["operator"] == "sequencer.stylize_cancel" for c in calls)


def run_timer(op: Any, limit_s: float = 120.0) -> set[str]:
    """Send timer events (as the window manager would) until the operator ends."""
    timer = types.SimpleNamespace(type="TIMER", value="NOTHING")
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        state = operators.SEQUENCER_OT_stylize.modal(op, bpy.context, timer)
        if state != {"PASS_THROUGH"}:
            return state
        time.sleep(operators.TIMER_STEP_S / 5)
    raise AssertionError("the modal operator did not finish")


def _fake_operator(strip: str = "", preview: bool = False) -> tuple[Any, list[tuple[set[str], str]]]:
    reports: list[tuple[set[str], str]] = []
    op = types.SimpleNamespace(strip=strip, preview=preview, _timer=None,
                               report=lambda level, text: reports.append((level, text)))
    cls = operators.SEQUENCER_OT_stylize
    for name in ("_stop", "_finish", "_session"):
        setattr(op, name, types.MethodType(getattr(cls, name), op))
    return op, reports


@pytest.mark.skipif(WORKER is None, reason="no Python with stylecore: set STYLECORE_WORKER_PYTHON")
def test_modal_operator_steps_on_timer_events_and_esc_cancels(scene, movie, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("STYLECORE_WORKER_PYTHON", str(WORKER))
    strip = bh.add_movie(scene, movie)
    bh.feedforward_settings(strip, bh.make_random_model(tmp_path / "m.safetensors", str(WORKER)))
    modal = operators.SEQUENCER_OT_stylize.modal

    op, reports = _fake_operator()
    session = op._session(bpy.context)
    monkeypatch.setattr(operators, "_ACTIVE", session)
    state = run_timer(op)
    assert state == {"FINISHED"} and operators._ACTIVE is None
    assert jobs.find_result(scene, strip) is not None
    assert any("stylized into 'Clip Stylized'" in text for _, text in reports)

    # Esc: the session is cancelled and the operator ends without a result.
    settings = operators.settings_for(bpy.context)
    props.strip_settings(strip).temporal_weight = 0.5  # another job
    op, reports = _fake_operator()
    session = StylizeSession(scene.name, [strip.name], settings)
    monkeypatch.setattr(operators, "_ACTIVE", session)
    assert modal(op, bpy.context, types.SimpleNamespace(type="ESC", value="PRESS")) == {"RUNNING_MODAL"}
    assert session.cancelled
    state = run_timer(op)
    assert state == {"CANCELLED"}
    assert any(level == {"WARNING"} and "stylize again to resume" in text for level, text in reports)
    assert modal(op, bpy.context, types.SimpleNamespace(type="MOUSEMOVE", value="NOTHING")) == {"CANCELLED"}
    assert vse.find_strip(scene, "Clip") is not None
