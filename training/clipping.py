"""Gradient clipping relative to the run's own recent gradients (``TrainConfig.clip_grad``).

A distillation's texture term compares each image's Gram matrices with its teacher's,
relative to the teacher's own (``training.objective``). A crop the teacher paints with
little energy then weighs hundreds of times more than a typical one: in one run a single
batch's term was 2385 where it is usually 2-7, and its gradient's norm 6.0e4 against a
median of 130-150 (docs/distillation-notes.md, stop 44). Adam's second moment remembers
such a step for hundreds of steps, and at higher rates the stage diverged.

A fixed norm limit would have to be set anew for every loss, network and rate, so the
limit follows the run's own norms, as in AutoClip (Seetharaman et al. 2020), which clips
at a percentile of every norm seen so far. Here it departs from the paper in two ways:
the limit is a multiple of the *median* of the last ``WINDOW`` steps' norms, so that it
follows a fine-tuning stage whose gradients shrink, and the multiple lets the ordinary
steps through untouched (the paper's percentile clips a fixed share of them). The raw
norms go into the history, clipped or not: recording the clipped ones would only let the
limit drift down, and the median keeps the spikes from raising it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable

import torch

WINDOW = 100  # steps whose gradient norms set the limit
WARMUP = 20  # steps before the first clip: a median of fewer is too noisy to trust


class RelativeClip:
    """Clips the gradients' total norm to ``factor`` x the median norm of the last
    ``WINDOW`` steps, once ``WARMUP`` steps are seen. Call after ``backward``, before the
    optimiser's step; the history is state a resumed run needs (``state``/``restore``).
    ``factor`` above 1 is checked where the user gives it (``TrainConfig``)."""

    def __init__(self, factor: float) -> None:
        self.factor = factor
        self.norms: deque[float] = deque(maxlen=WINDOW)
        self.clipped = 0  # steps clipped since the last ``take_clipped``

    def limit(self) -> float:
        """The norm a step may have now (infinite during the warm-up)."""
        if len(self.norms) < WARMUP:
            return float("inf")
        return self.factor * float(torch.tensor(list(self.norms)).median())

    def __call__(self, parameters: Iterable[torch.Tensor]) -> float:
        """Clip the gradients in place; returns their norm before clipping."""
        limit = self.limit()
        norm = float(torch.nn.utils.clip_grad_norm_(list(parameters), limit))
        if norm > limit:
            self.clipped += 1
        if math.isfinite(norm):  # a broken step says nothing about the typical norm
            self.norms.append(norm)
        return norm

    def take_clipped(self) -> int:
        """Steps clipped since the last call (for the log line)."""
        count, self.clipped = self.clipped, 0
        return count

    def state(self) -> torch.Tensor:
        return torch.tensor(list(self.norms), dtype=torch.float64)

    def restore(self, norms: torch.Tensor) -> None:
        self.norms.clear()
        self.norms.extend(norms.tolist())
