"""``training/ship_models.sh`` retrains the shipped models with the settings each model's
metadata records: run with a stand-in ``python`` that notes each call instead of training,
its calls are read by the real ``training.train`` parser and compared, stage by stage,
with the chain of ``init`` records in ``stylecore/models/*.json``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from training.config import TrainConfig
from training.train import build_parser, config_from_args

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "stylecore" / "models"
NAMES = ["starry_night", "scream", "shipwreck", "woman_with_a_hat"]
# The settings that make a stage what it is (paths, logging and checkpoints do not).
SETTINGS = ["steps", "size", "batch_size", "learning_rate", "monotone_weight", "still_fraction", "zoom",
            "texture_weight", "colour_weight", "seed", "width", "res_blocks", "pixel_weight", "style_rotate",
            "distill_monotone_weight"]
# A setting an early stage's record lacks did not exist then: what it was in effect.
BEFORE_IT_EXISTED = {"monotone_weight": 0.0}

# Notes each call (its arguments, NUL-separated, one call a line) and writes what the
# call would: the --out file of a training, the folder of ``training.photos``.
STUB = r"""#!/usr/bin/env bash
printf '%s\0' "$@" >> "$STUB_LOG"; printf '\n' >> "$STUB_LOG"
out=""; prev=""
for a in "$@"; do
  [ "$prev" = --out ] && out=$a
  prev=$a
done
[ "$1 $2" = "-m training.photos" ] && mkdir -p "$3"
[ -n "$out" ] && mkdir -p "$(dirname "$out")" && : > "$out"
exit 0
"""


@pytest.fixture(scope="module")
def calls(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The settings of every training the script runs, in order."""
    if shutil.which("bash") is None:
        pytest.fail("bash is needed to run training/ship_models.sh")
    tmp = tmp_path_factory.mktemp("ship")
    stub = tmp / "bin" / "python"
    stub.parent.mkdir()
    stub.write_text(STUB)
    stub.chmod(0o755)
    log = tmp / "calls"
    env = {**os.environ, "PATH": f"{stub.parent}{os.pathsep}{os.environ['PATH']}", "STUB_LOG": str(log)}
    (tmp / "video").mkdir()
    subprocess.run(["bash", str(ROOT / "training" / "ship_models.sh"), str(tmp / "video"), str(tmp / "styles"),
                    str(tmp / "out")], env=env, check=True, timeout=60)
    argvs = [line.split("\0") for line in log.read_text().split("\0\n") if line]
    trainings = [argv[2:] for argv in argvs if argv[:2] == ["-m", "training.train"]]
    assert len(trainings) == len(argvs) - 1  # and one call of training.photos
    return [config_from_args(build_parser().parse_args(argv)).to_dict() for argv in trainings]


def _recorded_stages(model: str) -> list[dict[str, Any]]:
    """The model's training records, its first stage first (each stage's ``init`` holds the
    record of the model it started from)."""
    stages = []
    record = json.loads((MODELS / f"{model}.json").read_text())
    training = record.get("training")
    while training:
        stages.append(training)
        start = training.get("init")
        training = start.get("training") if isinstance(start, dict) else None
    return stages[::-1]


def _data(paths: list[str] | tuple[str, ...]) -> list[str]:
    """The data a stage read, by name. The shipped models read the photographs and the two
    samples from one folder (``photos``, six stills), the script from two places (see its
    comment on the photographs): the same stills."""
    names = sorted(Path(p).name for p in paths)
    samples = ["astronaut_512x384.jpg", "chelsea_451x300.jpg"]
    if "photos" in names and all(s in names for s in samples):
        names = [n for n in names if n not in samples]
    return names


@pytest.mark.parametrize("model", NAMES + [f"{name}-small" for name in NAMES])
def test_the_script_trains_each_shipped_model_as_its_metadata_records(calls: list[dict[str, Any]],
                                                                       model: str) -> None:
    defaults = TrainConfig(style="", data="", out="").to_dict()
    ours = [c for c in calls if Path(c["out"]).name == f"{model}.safetensors"]
    recorded = _recorded_stages(model)
    assert len(ours) == len(recorded), f"{model}: the script trains {len(ours)} stages, the model records {len(recorded)}"
    for stage, (mine, theirs) in enumerate(zip(ours, recorded), start=1):
        for key in SETTINGS:
            expected = theirs.get(key, BEFORE_IT_EXISTED.get(key, defaults[key]))
            assert mine[key] == expected, f"{model} stage {stage}: {key} {mine[key]!r}, recorded {expected!r}"
        assert _data(mine["data"]) == _data(theirs["data"]), f"{model} stage {stage}: data"
        assert (mine["init"] is None) == (theirs.get("init") is None), f"{model} stage {stage}: init"
        teacher = theirs.get("teacher")
        expected_teacher = teacher["model"] + ".safetensors" if teacher else None
        assert (Path(mine["teacher"]).name if mine["teacher"] else None) == expected_teacher, \
            f"{model} stage {stage}: teacher"
