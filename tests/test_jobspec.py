"""JobSpec: validation, JSON round trip, and what the fingerprint ignores."""

from __future__ import annotations

import pytest

from stylecore.errors import InputError
from stylecore.jobspec import JobSpec


def test_json_round_trip_and_unknown_fields() -> None:
    spec = JobSpec(content="c.mp4", output="o", styles=(("s.jpg", 0.5),), frame_map=(3, 1), style_weights=(1.0, 2.0))
    again = JobSpec.from_dict(spec.to_dict())
    assert again == spec
    with pytest.raises(InputError, match="unknown job field.*colour"):
        JobSpec.from_dict({**spec.to_dict(), "colour": "red"})


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(mode="optimization"), "needs a style image"),
        (dict(mode="style-video"), "needs a style video"),
        (dict(mode="feedforward", frames=(5, 5)), "selects no frame"),
        (dict(mode="feedforward", size=4), "too small"),
        (dict(mode="watercolour"), "mode must be one of"),
    ],
)
def test_invalid_jobs_say_what_to_fix(fields: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        JobSpec(content="c.mp4", output="o", **fields)


def test_fingerprint_ignores_where_and_how_fast() -> None:
    a = JobSpec(content="c.mp4", output="o", mode="feedforward")
    b = JobSpec(content="./c.mp4", output="other", mode="feedforward", device="cuda", batch_size=16)
    assert a.fingerprint_hash() == b.fingerprint_hash()
    assert a.fingerprint_hash() != JobSpec(content="c.mp4", output="o", mode="feedforward", size=256).fingerprint_hash()


def test_style_weight_per_frame() -> None:
    spec = JobSpec(content="c", output="o", mode="feedforward", style_weights=(0.0, 0.5))
    assert [spec.style_weight_at(n) for n in (1, 2, 3)] == [0.0, 0.5, 0.5]
    assert JobSpec(content="c", output="o", mode="feedforward", style_weight=2.0).style_weight_at(7) == 2.0
