"""Training checkpoints: model and optimiser state, step and random state, so an
interrupted run resumes where it stopped.

Written with ``torch.save`` (atomically) and read with ``weights_only=True``, which
refuses anything but tensors and plain containers: a checkpoint cannot run code.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stylecore.errors import InputError
from stylecore.io.imageops import atomic_write_bytes


def checkpoint_path(out: str | Path) -> Path:
    return Path(out).with_suffix(".ckpt")


@dataclass(frozen=True)
class RandomState:
    """The random state a run's next step starts from: numpy's generator (crops, style
    weights) and torch's. Taken between steps, so that a run interrupted in the middle of
    one resumes with the draws that step had made undone."""

    numpy_rng: dict[str, Any]
    torch_rng: torch.Tensor

    @classmethod
    def now(cls, rng: np.random.Generator) -> RandomState:
        return cls(rng.bit_generator.state, torch.get_rng_state())


def save_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    random: RandomState,
    settings: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> None:
    """``random``: the state at the start of step ``step``; ``extra``: other state a run
    needs to resume exactly (tensors and plain values)."""
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": int(step),
        "numpy_rng": random.numpy_rng,
        "torch_rng": random.torch_rng,
        "settings": settings,
        "extra": extra or {},
    }
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, rng: np.random.Generator,
    extra: dict[str, Any] | None = None,
) -> tuple[int, dict[str, Any]]:
    """Restore the states in place, ``extra`` too (what ``save_checkpoint`` was given);
    returns ``(step, settings)``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        if extra is not None:
            extra.update(state.get("extra", {}))
        return int(state["step"]), dict(state["settings"])
    except Exception as exc:  # noqa: BLE001 - truncated, not a checkpoint, other torch: each is one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot resume from {path}: {first}; `restart` starts over") from None
