"""Per-frame style-weight schedules."""

from __future__ import annotations

from pathlib import Path

import pytest

from stylecore.errors import InputError
from stylecore.schedule import load_schedule, parse_style_weight


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_json_list_one_weight_per_frame(tmp_path: Path) -> None:
    path = _write(tmp_path, "w.json", "[1, 2.5, 3, 4, 5]")
    assert load_schedule(path, 3) == (1.0, 2.5, 3.0)  # a longer list is cut to the job
    with pytest.raises(InputError, match="5 weights but the job has 6 frames"):
        load_schedule(path, 6)


def test_json_keyframes_interpolate_and_hold(tmp_path: Path) -> None:
    path = _write(tmp_path, "k.json", '{"3": 10, "7": 2}')
    # Held at 10 before frame 3, linear 10 -> 2 over frames 3..7 (step -2), held at 2 after.
    assert load_schedule(path, 9) == (10.0, 10.0, 10.0, 8.0, 6.0, 4.0, 2.0, 2.0, 2.0)
    single = _write(tmp_path, "one.json", '{"5": 0.5}')
    assert load_schedule(single, 3) == (0.5, 0.5, 0.5)


def test_csv_keyframes_with_header_and_comments(tmp_path: Path) -> None:
    path = _write(tmp_path, "w.csv", "frame,weight\n# ramp up\n1, 0\n\n5, 4   # peak\n")
    assert load_schedule(path, 6) == (0.0, 1.0, 2.0, 3.0, 4.0, 4.0)
    spaced = _write(tmp_path, "w.txt", "1 2\n3 6\n")
    assert load_schedule(spaced, 3) == (2.0, 4.0, 6.0)


def test_text_one_weight_per_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "w.txt", "1.5\n2.5\n")
    assert load_schedule(path, 2) == (1.5, 2.5)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.json", "[1, 2", "not valid JSON"),
        ("neg.json", "[1, -2]", ">= 0"),
        ("nan.json", '{"1": "x"}', "not a number"),
        ("bool.json", "[true]", "not a number"),
        ("zero.json", '{"0": 1}', "start at 1"),
        ("str.json", '"5"', "JSON list"),
        ("key.json", '{"a": 1}', "not a frame number"),
        ("dup.csv", "1,2\n1,3\n", "given twice"),
        ("ragged.csv", "1,2\n3\n", "frame,weight"),
        ("empty.csv", "# nothing\n", "holds no weights"),
        ("inf.csv", "1,inf\n", "finite"),
    ],
)
def test_bad_schedules(tmp_path: Path, name: str, text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        load_schedule(_write(tmp_path, name, text), 4)


def test_missing_schedule(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read"):
        load_schedule(tmp_path / "nope.json", 4)


def test_parse_style_weight(tmp_path: Path) -> None:
    assert parse_style_weight("5") == 5.0
    assert parse_style_weight("1e3") == 1000.0
    path = _write(tmp_path, "s.json", "[1]")
    assert parse_style_weight(str(path)) == path
    with pytest.raises(InputError, match="neither a number nor an existing"):
        parse_style_weight(str(tmp_path / "missing.json"))
    with pytest.raises(InputError, match=">= 0"):
        parse_style_weight("-1")
