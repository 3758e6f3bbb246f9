"""Gatys-style image optimisation, made temporally stable after Ruder et al. (2016).

One frame is an optimisation problem over its pixels:

    L(x) = a * L_content(x, p) + b * L_style(x, a_s) + c * L_tv(x) + g * L_temporal(x, w, m)

with ``p`` the content frame, ``a_s`` the style targets (Gram matrices), ``w`` the previous
stylized frame warped into this frame by optical flow and ``m`` its reliability mask
(forward-backward consistency). A later frame starts from ``w`` (warm start), so it
needs far fewer iterations than the first. Large first frames are solved coarse to fine.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from stylecore import losses
from stylecore.errors import Cancelled, InputError
from stylecore.nets.vgg import VGGEncoder

# The loss's base scales and layers (one home: ``losses.GATYS_RUDER``).
RECIPE = losses.GATYS_RUDER

# ``trace(level, iterations_done, loss)``: see ``optimize_frame``.
Trace = Callable[[int, int, float], None]

# Below this long side a coarser level is not worth solving (VGG's receptive field).
_MIN_LEVEL_SIDE = 192


# The stop rule of ``OptimConfig.tolerance`` for a shot's first frame and for the later
# frames, which start from the warped previous result: stop once a 10-iteration chunk
# lowers the loss by less than this fraction. Measured at 426x240 with hed-vgg16
# (``bench.convergence``, stop 27; BENCHMARKS.md): a later frame's loss falls 8.6-11.7 % over
# its first 10 iterations, 1.2-2.3 % over the next 10, 0.7-1.2 % over the next, then less,
# and is within 1 % of its 150-iteration value after 40-70. 2 % ends a later frame after
# 20 or 30 iterations; over six clips (``bench.optimization_sheet``) its style and
# content losses are within 1.3 % of stopping after 40-70 (the rule before stop 27), and
# frame 5 at 100 % looks the same. (Stop 19, against 0.2 %: style and content losses
# 2.5 % and 1.8 % higher, warping error 13 % lower, only fine strokes placed differently.)
# The first frame has no previous result to lean on and keeps the strict rule. A chunk's
# gain is measured from its start to the next chunk's start, so that it includes the
# clamp to [0, 1] between chunks (``_run_lbfgs``).
FIRST_TOLERANCE = 2e-3
LATER_TOLERANCE = 2e-2


@dataclass(frozen=True)
class OptimConfig:
    """Weights and solver settings for one frame's optimisation."""

    iterations: int = 500
    optimizer: str = "lbfgs"
    learning_rate: float | None = None  # None = optimizer default (L-BFGS 1.0, Adam 0.02)
    content_weight: float = 1.0
    style_weight: float = 1.0
    tv_weight: float = 1.0
    temporal_weight: float = 1.0
    scales: int = 1  # coarse-to-fine levels (1 = single scale)
    # Stop once a 10-iteration chunk lowers the loss by less than this fraction (L-BFGS).
    tolerance: float = FIRST_TOLERANCE
    # L-BFGS's strong-Wolfe line search. Later frames go without it: from the warped
    # previous result the quasi-Newton step is good as it is, and an iteration is then one
    # loss evaluation instead of 1.2 (same loss after the same iterations; ``_run_lbfgs``
    # falls back to the search should a step overshoot).
    line_search: bool = True
    # Run the loss network in bfloat16 (autocast); the losses stay float32. See ``_features``.
    bf16: bool = False
    content_layers: Mapping[str, float] = field(default_factory=lambda: dict(RECIPE.content_layers))
    style_layers: Mapping[str, float] = field(default_factory=lambda: dict(RECIPE.style_layers))

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([*self.content_layers, *self.style_layers]))


@dataclass(frozen=True)
class TemporalTarget:
    """The previous stylized frame warped into this frame, and where to trust it."""

    warped: torch.Tensor  # 1x3xHxW
    mask: torch.Tensor  # 1x1xHxW, 1 = reliable


def style_grams(encoder: VGGEncoder, style: torch.Tensor, layers: Mapping[str, float]) -> dict[str, torch.Tensor]:
    """Gram matrices of one style image at the given layers."""
    with torch.no_grad():
        feats = encoder(style)
    return {name: losses.gram_matrix(feats[name]) for name in layers}


def optimize_frame(
    encoder: VGGEncoder,
    content: torch.Tensor,
    grams: Mapping[str, torch.Tensor],
    config: OptimConfig,
    *,
    init: torch.Tensor | None = None,
    temporal: TemporalTarget | None = None,
    cancel: Callable[[], bool] | None = None,
    trace: Trace | None = None,
) -> torch.Tensor:
    """Stylize one frame and return it as a 1x3xHxW tensor in [0, 1].

    ``init`` defaults to the content frame. ``trace(level, iterations, loss)`` is called
    after every chunk of iterations (convergence curves for the bench). With ``config.scales > 1`` the problem is
    solved on a pyramid, each level starting from the upsampled result of the last.
    """
    if content.dim() != 4 or content.shape[:2] != (1, 3):
        raise InputError(f"expected a 1x3xHxW content tensor, got {tuple(content.shape)}")
    image = (content if init is None else init).detach().clone()
    levels = _pyramid_sizes(tuple(content.shape[-2:]), config.scales)
    # Coarse levels are cheap: give them the same share each, the finest the rest.
    per_level = max(config.iterations // (2 * len(levels)), 1) if len(levels) > 1 else config.iterations
    for depth, size in enumerate(levels):
        last = depth == len(levels) - 1
        iterations = config.iterations - per_level * (len(levels) - 1) if last else per_level
        level_content = _resize(content, size)
        level_init = _resize(image, size)
        level_temporal = None
        if temporal is not None:
            level_temporal = TemporalTarget(_resize(temporal.warped, size), _resize(temporal.mask, size))
        level_trace = None if trace is None else (lambda n, loss, d=depth: trace(d, n, loss))
        image = _solve(encoder, level_content, grams, config, level_init, level_temporal, iterations, cancel, level_trace)
    return image.clamp(0.0, 1.0)


def _solve(
    encoder: VGGEncoder,
    content: torch.Tensor,
    grams: Mapping[str, torch.Tensor],
    config: OptimConfig,
    init: torch.Tensor,
    temporal: TemporalTarget | None,
    iterations: int,
    cancel: Callable[[], bool] | None,
    trace: Callable[[int, float], None] | None = None,
) -> torch.Tensor:
    """Run the optimizer for ``iterations`` steps on one pyramid level."""
    with torch.no_grad():
        content_feats = _features(encoder, content, config.bf16)
    content_loss = losses.ContentLoss({k: content_feats[k] for k in config.content_layers}, config.content_layers)
    style_loss = losses.StyleLoss(dict(grams), config.style_layers)
    # TV smooths the noise that stylization brings; it fades out with the style, so that
    # style weight 0 gives back the content frame untouched (a keyframed fade works).
    tv_weight = config.tv_weight * min(1.0, max(config.style_weight, 0.0))

    image = init.detach().clone(memory_format=torch.contiguous_format).requires_grad_(True)

    def objective() -> torch.Tensor:
        feats = _features(encoder, image, config.bf16)
        total = config.content_weight * content_loss(feats)
        if config.style_weight:
            total = total + config.style_weight * RECIPE.style_scale * style_loss(feats)
        if tv_weight:
            total = total + tv_weight * RECIPE.tv_scale * losses.tv_loss(image)
        if temporal is not None and config.temporal_weight:
            total = total + config.temporal_weight * RECIPE.temporal_scale * losses.temporal_loss(
                image, temporal.warped, temporal.mask
            )
        return total

    if iterations <= 0:
        return image.detach()
    if config.optimizer == "lbfgs":
        _run_lbfgs(image, objective, iterations, config.learning_rate or 1.0, cancel, trace, config.tolerance,
                   config.line_search)
    else:
        _run_adam(image, objective, iterations, config.learning_rate or 0.02, cancel)
    return image.detach().clamp(0.0, 1.0)


def _features(encoder: VGGEncoder, image: torch.Tensor, bf16: bool) -> dict[str, torch.Tensor]:
    """The loss network's features of ``image``; with ``bf16`` its convolutions run in
    bfloat16 and the features come back in bfloat16 (with the Grams' bfloat16 backward, an
    evaluation takes 0.24 s against 0.45-0.60 s in float32 at 426x240 on a CPU with
    AVX512-BF16). The losses take them in float32
    (``losses.content_loss``, ``losses.gram_matrix``), because a bfloat16 Gram over ~100k
    positions loses the precision the style loss lives on."""
    if not bf16:
        return encoder(image)
    with torch.autocast(image.device.type, dtype=torch.bfloat16):
        return encoder(image)


# L-BFGS runs in chunks so that cancel is honoured without waiting for a whole frame.
_CHUNK = 10
# The strong-Wolfe line search may evaluate the loss a few times per iteration.
_MAX_EVALS_PER_ITER = 2


def _run_lbfgs(
    image: torch.Tensor,
    objective: Callable[[], torch.Tensor],
    iterations: int,
    lr: float,
    cancel: Callable[[], bool] | None,
    trace: Callable[[int, float], None] | None = None,
    tolerance: float = FIRST_TOLERANCE,
    line_search: bool = True,
) -> None:
    """L-BFGS on ``image`` in chunks of ``_CHUNK`` iterations, stopping when a chunk lowers
    the loss by less than ``tolerance`` of it.

    A chunk's gain is judged before the next chunk runs: the loss where that chunk would
    begin is evaluated first and, when the run goes on, handed to L-BFGS as its first
    evaluation, so deciding costs nothing and stopping wastes one evaluation, not a chunk.
    ``trace(iterations, loss)`` gets the loss after every chunk (with a trace, a run that
    reaches ``iterations`` evaluates once more to report where it ended).

    Without ``line_search`` every iteration is one loss evaluation and takes the
    quasi-Newton step as it is; should a chunk end above where it began (the step
    overshot), its start is restored and the rest runs with the line search."""

    def make() -> torch.optim.LBFGS:
        return torch.optim.LBFGS([image], lr=lr, max_iter=_CHUNK, history_size=50,
                                 line_search_fn="strong_wolfe" if line_search else None)

    optimizer = make()
    latest = [float("inf")]  # the loss at the last evaluation: near a chunk's end
    # A loss already evaluated at ``image`` as it is, with its gradient in ``image.grad``:
    # the next closure call returns it instead of evaluating again.
    ready: list[torch.Tensor] = []

    def closure() -> torch.Tensor:
        if ready:
            return ready.pop()
        optimizer.zero_grad(set_to_none=True)
        loss = objective()
        loss.backward()
        latest[0] = float(loss.detach())
        return loss

    done = 0
    previous = float("inf")
    while done < iterations:
        if cancel is not None and cancel():
            raise Cancelled("cancelled")
        # The loss where this chunk begins: after the clamp to [0, 1] that ended the last
        # one, so the clamp's effect counts in the last chunk's gain.
        start = closure()
        began = float(start.detach())
        if not math.isfinite(began):
            break  # cannot happen after a finite, clamped chunk; never step from it
        if trace is not None:
            trace(done, began)
        if previous - began < tolerance * abs(previous):
            return  # the last chunk lowered the loss by too little: it has stopped falling
        ready.append(start)
        chunk = min(_CHUNK, iterations - done)
        group = optimizer.param_groups[0]
        group["max_iter"] = chunk
        group["max_eval"] = chunk * _MAX_EVALS_PER_ITER
        state = optimizer.state[image]
        iters_before, evals_before = state.get("n_iter", 0), state.get("func_evals", 0)
        last_good = image.detach().clone()
        optimizer.step(closure)
        ready.clear()
        with torch.no_grad():
            if not (torch.isfinite(image).all() and math.isfinite(latest[0])):
                # An ill-conditioned step can overflow; keep the last finite image instead
                # of writing a frame of NaNs.
                image.copy_(last_good)
                return
            if not line_search and latest[0] > began:
                image.copy_(last_good)
                line_search = True
                optimizer = make()
                continue
            image.clamp_(0.0, 1.0)
        done += chunk
        previous = began
        # A chunk that ended before its iteration and evaluation budgets means L-BFGS
        # converged (gradient or change below tolerance): further chunks would do nothing.
        iters = state.get("n_iter", 0) - iters_before
        evals = state.get("func_evals", 0) - evals_before
        if iters < chunk and evals < group["max_eval"]:
            break
    if trace is not None:
        with torch.no_grad():
            trace(done, float(objective()))


def _run_adam(
    image: torch.Tensor,
    objective: Callable[[], torch.Tensor],
    iterations: int,
    lr: float,
    cancel: Callable[[], bool] | None,
) -> None:
    optimizer = torch.optim.Adam([image], lr=lr)
    for step in range(iterations):
        if cancel is not None and step % _CHUNK == 0 and cancel():
            raise Cancelled("cancelled")
        optimizer.zero_grad(set_to_none=True)
        objective().backward()
        last_good = image.detach().clone()
        optimizer.step()
        with torch.no_grad():
            if not torch.isfinite(image).all():
                image.copy_(last_good)
                break
            image.clamp_(0.0, 1.0)


def auto_scales(width: int, height: int) -> int:
    """Pyramid levels for a frame: one more for every halving that stays >= 192 px."""
    levels, side = 1, max(width, height)
    while side // 2 >= _MIN_LEVEL_SIDE and levels < 4:
        side //= 2
        levels += 1
    return levels


def _pyramid_sizes(size: tuple[int, int], scales: int) -> list[tuple[int, int]]:
    """Sizes from coarsest to finest; each level halves the next. ``(height, width)``, as
    torch's ``interpolate`` takes them (the one place sizes are not ``(w, h)``)."""
    height, width = size
    sizes = [(height, width)]
    for _ in range(max(scales, 1) - 1):
        height, width = max(height // 2, 1), max(width // 2, 1)
        sizes.append((height, width))
    return sizes[::-1]


def _resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True)
