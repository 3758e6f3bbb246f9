"""The hybrid training loss of the feedforward network (Huang et al. 2017):

    L = a * content + sum_i w_i * b * style_i / N + c * TV + g * temporal [+ s * noise]

- content: ``relu4_2`` features of each output vs its input frame;
- style: Gram matrices at ``relu1_1 ... relu5_1`` vs the style image's (Huang et al. use
  ``relu*_2``: see ``losses.HUANG`` for why this departs from them),
  per output image ``i`` weighted by its sampled style weight ``w_i`` (the input the
  conditioned network sees; Babaeizadeh and Ghiasi 2018);
- TV: total variation of each output, weighted by ``min(1, w_i)`` so that it fades with
  the style (at weight 0 the target is the input itself, not a smoothed input);
- temporal: the previous frame's output warped by the input pair's flow vs the current
  output, masked by occlusion;
- noise (optional): output of a frame vs output of the same frame plus small noise, a
  flow-free stability term;
- distillation (``DistillLoss``, the "-small" models): instead of the content, style and
  TV terms, a narrower student matches a trained teacher's output at the same style weight,
  in pixels (L1) and in loss-network features (relative error at ``DISTILL_LAYERS``); the
  temporal term stays, so the student is as stable as its teacher. An optional
  texture term matches the Gram matrices of the teacher's output, image by image, at the
  same layers: pixel and feature errors alone let a narrower student leave out the
  teacher's sparse strokes (a blank sky where the teacher paints dashes), since any stroke
  it places a little off costs more than none. Its own monotone term (optional): a
  student follows its teacher's curve over the style weight, and where that curve is
  nearly flat (the Shipwreck's from 1 to 1.5 on a portrait: +0.5 %) a copy can tip over
  and move the frame less at a stronger weight; a hinge then asks the stronger of two
  outputs of one frame to be further from it (mean absolute difference) than the weaker.
  It measures pixels, not the style loss, because the distillation's loss network stops
  at ``relu3_1`` and because "further from the frame" is what the Style Weight slider
  promises (the shipped models' test measures the same).
- monotone (our addition, not in the papers): one frame of the batch again at a second
  style weight (its "twin"); a hinge on the stronger output's style loss exceeding the
  weaker one's. The
  per-weight optima of ``content + w * style`` have style losses that fall with ``w``, but a
  briefly trained network that shares its filters over all weights does not get there by
  itself (The Scream's first models had their lowest style loss at weight 0.25), and the
  Style Weight slider must mean "more style".
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

from stylecore import losses
from stylecore.flow import warp_tensor

# Layers and base scales that make weight 1.0 a sensible default (one home:
# ``losses.HUANG``); the noise term, training's own, acts on [0, 1] pixels.
RECIPE = losses.HUANG
NOISE_SCALE = 5e2
# The stronger output must beat the weaker one's style loss by this fraction: a strict fall.
MONOTONE_MARGIN = 0.02

CONTENT_LAYERS: dict[str, float] = dict(RECIPE.content_layers)
STYLE_LAYERS: dict[str, float] = dict(RECIPE.style_layers)
LOSS_LAYERS: tuple[str, ...] = RECIPE.layers
# Distillation compares edges and textures up to relu3_1: deep enough for strokes, and the
# loss network then stops at its third block (the student's step is dominated by it).
DISTILL_LAYERS: dict[str, float] = {"relu1_1": 1.0, "relu2_1": 1.0, "relu3_1": 1.0}
# L1 of [0, 1] pixels is ~0.05 for an untrained student: this brings it near the feature term.
PIXEL_SCALE = 1e1
# Relative Gram errors of a student against its teacher are 0.03-0.7 summed over
# DISTILL_LAYERS where the feature term is 0.25-1: this brings them together.
TEXTURE_SCALE = 1e1
# The colour term compares outputs averaged over blocks of this side: their colours, with
# the strokes averaged out.
COLOUR_BLOCK = 8
# Most of a copy's pixel error is colour: block-averaged, the Shipwreck's copy was 0.048
# from its teacher where its pixel L1 was 0.054. At weight 1 this term is then about three
# times the pixel term, so the colour outweighs the strokes.
COLOUR_SCALE = 3e1
# Distillation's monotone term: the stronger output must be this fraction further from
# the frame than the weaker. Small, since the teachers' own curves are nearly flat at the
# strong end: from weight 1 to 1.5 on the astronaut they rise 0.5 % (the Shipwreck), 1.2 %
# (the Scream), 10 % (Starry Night, Woman with a Hat).
CHANGE_MARGIN = 0.01
# Frames move 0.1-0.25 (mean absolute difference) from their input at weights 0.25-2: a
# shortfall of a few thousandths then weighs near the pixel term.
CHANGE_SCALE = 1e2


@dataclass(frozen=True)
class LossWeights:
    content: float = 1.0
    style: float = 1.0
    tv: float = 1.0
    temporal: float = 1.0
    noise: float = 0.0
    monotone: float = 0.0


class WeightedStyleLoss(torch.nn.Module):
    """Style loss of each image in a batch, weighted per image, averaged over the batch."""

    def __init__(self, target_grams: Mapping[str, Tensor], layers: Mapping[str, float]) -> None:
        super().__init__()
        self.layers = dict(layers)
        self.target_grams = {name: target_grams[name].detach() for name in self.layers}

    def per_image(self, features: Mapping[str, Tensor]) -> Tensor:
        """The unweighted style loss of each image: a vector of the batch's length."""
        count = features[next(iter(self.layers))].shape[0]
        return torch.stack([
            sum(layer_weight * losses.style_loss(features[name][i : i + 1], self.target_grams[name])
                for name, layer_weight in self.layers.items())
            for i in range(count)
        ])

    def forward(self, features: Mapping[str, Tensor], weights: Tensor) -> Tensor:
        return (weights * self.per_image(features)).mean()


def monotone_hinge(stronger: Tensor, weaker: Tensor, margin: float = MONOTONE_MARGIN) -> Tensor:
    """Mean of ``max(0, stronger - (1 - margin) * weaker)`` over a batch of style losses: zero
    once every stronger-weight output's style loss is below its weaker twin's by ``margin``.
    ``weaker`` is a target (detached): the term pushes the stronger output, never the weaker
    one away from its own objective."""
    return torch.relu(stronger - (1.0 - margin) * weaker.detach()).mean()


def rising_hinge(stronger: Tensor, weaker: Tensor, margin: float = CHANGE_MARGIN) -> Tensor:
    """Mean of ``max(0, (1 + margin) * weaker - stronger)`` over a batch: zero once every
    stronger-weight measure exceeds its weaker twin's by ``margin``; ``weaker`` is a target
    (detached), so only the stronger output is pushed."""
    return torch.relu((1.0 + margin) * weaker.detach() - stronger).mean()


def change_from(inputs: Tensor, outputs: Tensor) -> Tensor:
    """How far each output moved from its input: the mean absolute difference per image."""
    return (outputs.float() - inputs.float()).abs().flatten(1).mean(1)


class HybridLoss:
    """Computes the weighted loss terms for one batch of frame pairs."""

    def __init__(
        self,
        encoder: torch.nn.Module,
        style_grams: Mapping[str, Tensor],
        weights: LossWeights,
        autocast: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext,
    ) -> None:
        self.encoder = encoder
        # Only the loss network runs under ``autocast`` (bfloat16 on CPUs that have it);
        # Grams, warps and differences stay in float32, where bfloat16 would round away
        # the small differences the gradients are made of.
        self.autocast = autocast
        self.weights = weights
        self.style_scale = RECIPE.style_scale
        self.style = WeightedStyleLoss(style_grams, STYLE_LAYERS)

    def __call__(
        self,
        inputs: Tensor,
        outputs: Tensor,
        style_weights: Tensor,
        temporal: tuple[Tensor, Tensor, Tensor, Tensor] | None = None,
        noisy_outputs: Tensor | None = None,
        twin: tuple[Tensor, Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, dict[str, float]]:
        """``inputs``/``outputs``: ``M x 3 x S x S`` (both frames of every pair);
        ``style_weights``: ``M``; ``temporal``: ``(out_cur, out_prev, flow_bw, mask)``;
        ``noisy_outputs``: outputs of the noisy copies of the first ``K`` inputs;
        ``twin``: ``(outputs, of, weights)``: outputs of inputs ``of`` (indices into
        ``inputs``) at other style ``weights`` than theirs in ``style_weights``."""
        w = self.weights
        with torch.no_grad(), self.autocast():
            content_targets = _float(self.encoder(inputs))
        with self.autocast():
            features = _float(self.encoder(outputs))
        outputs = outputs.float()
        content = losses.ContentLoss(content_targets, CONTENT_LAYERS)(features)
        per_image_style = self.style.per_image(features)
        style = (style_weights * per_image_style).mean()
        tv_fade = style_weights.float().clamp(0.0, 1.0)
        tv = sum((tv_fade[i] * losses.tv_loss(outputs[i : i + 1]) for i in range(outputs.shape[0])),
                 start=torch.zeros((), device=outputs.device)) / outputs.shape[0]
        terms = {
            "content": w.content * content,
            "style": w.style * self.style_scale * style,
            "tv": w.tv * RECIPE.tv_scale * tv,
        }
        if temporal is not None and w.temporal > 0:
            terms["temporal"] = w.temporal * temporal_term(*temporal)
        if noisy_outputs is not None and w.noise > 0:
            clean = outputs[: noisy_outputs.shape[0]]
            terms["noise"] = w.noise * NOISE_SCALE * torch.mean((noisy_outputs.float() - clean) ** 2)
        if twin is not None and w.monotone > 0:
            twin_outputs, of, twin_weights = twin
            with self.autocast():
                twin_style = self.style.per_image(_float(self.encoder(twin_outputs)))
            own_style = per_image_style[of]
            twin_stronger = twin_weights > style_weights[of]
            hinge = monotone_hinge(torch.where(twin_stronger, twin_style, own_style),
                                   torch.where(twin_stronger, own_style, twin_style))
            terms["monotone"] = w.monotone * self.style_scale * hinge
        total = sum(terms.values(), start=torch.zeros((), device=outputs.device))
        return total, {name: float(value.detach()) for name, value in terms.items()}


def temporal_term(out_cur: Tensor, out_prev: Tensor, flow_bw: Tensor, mask: Tensor) -> Tensor:
    """The scaled temporal loss: the previous output warped by the pair's flow vs the current."""
    warped = warp_tensor(out_prev.float(), flow_bw.float())
    return RECIPE.temporal_scale * losses.temporal_loss(out_cur.float(), warped, mask)


class DistillLoss:
    """A student's loss against its teacher's outputs on the same frames and weights:
    ``p * PIXEL_SCALE * |S - T|_1 + f * sum_l content_loss(phi_l(S), phi_l(T))
    + x * TEXTURE_SCALE * sum_l style_loss(phi_l(S), gram(phi_l(T)))
    + c * COLOUR_SCALE * |pool(S) - pool(T)|_1 + g * temporal
    + m * CHANGE_SCALE * rising_hinge(|S_strong - X|, |S_weak - X|)``, ``pool`` the mean
    over ``COLOUR_BLOCK`` pixels square, ``S_strong``/``S_weak`` the student's outputs of
    the same frames ``X`` at a stronger and a weaker style weight.

    Why a colour term beside the pixel one: the pixel L1 weighs a stroke a little off as
    much as a broad colour cast under it, and a narrow copy cannot place every stroke;
    averaged over blocks, the strokes cancel and the cast is what is left. Weighted on its
    own, it brought the Shipwreck's copy 1.0 dB nearer its teacher than as many steps
    without it (docs/distillation-notes.md)."""

    def __init__(
        self,
        encoder: torch.nn.Module,
        pixel: float,
        feature: float,
        temporal: float,
        autocast: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext,
        texture: float = 0.0,
        colour: float = 0.0,
        monotone: float = 0.0,
    ) -> None:
        self.encoder = encoder
        self.pixel, self.feature, self.temporal, self.texture = pixel, feature, temporal, texture
        self.colour, self.monotone = colour, monotone
        self.autocast = autocast

    def __call__(
        self,
        outputs: Tensor,
        teacher_outputs: Tensor,
        temporal: tuple[Tensor, Tensor, Tensor, Tensor] | None = None,
        twins: tuple[Tensor, Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, dict[str, float]]:
        """``outputs``, ``teacher_outputs``: ``M x 3 x S x S``; ``temporal`` as in ``HybridLoss``;
        ``twins``: ``(frames, weaker, stronger)``, the student's outputs of the same frames
        at two style weights, for the monotone term."""
        with torch.no_grad(), self.autocast():
            targets = _float(self.encoder(teacher_outputs))
        with self.autocast():
            features = _float(self.encoder(outputs))
        terms = {
            "pixel": self.pixel * PIXEL_SCALE * (outputs.float() - teacher_outputs.float()).abs().mean(),
            "feature": self.feature * losses.ContentLoss(targets, DISTILL_LAYERS)(features),
        }
        if self.texture > 0:
            # Each output against its own teacher image's Grams (N x C x C targets broadcast).
            teacher_grams = {name: losses.gram_matrix(targets[name]) for name in DISTILL_LAYERS}
            terms["texture"] = self.texture * TEXTURE_SCALE * losses.StyleLoss(teacher_grams, DISTILL_LAYERS)(features)
        if self.colour > 0:
            blocks = [F.avg_pool2d(x.float(), COLOUR_BLOCK, ceil_mode=True) for x in (outputs, teacher_outputs)]
            terms["colour"] = self.colour * COLOUR_SCALE * (blocks[0] - blocks[1]).abs().mean()
        if temporal is not None and self.temporal > 0:
            terms["temporal"] = self.temporal * temporal_term(*temporal)
        if twins is not None and self.monotone > 0:
            frames, weaker, stronger = twins
            hinge = rising_hinge(change_from(frames, stronger), change_from(frames, weaker))
            terms["monotone"] = self.monotone * CHANGE_SCALE * hinge
        total = sum(terms.values(), start=torch.zeros((), device=outputs.device))
        return total, {name: float(value.detach()) for name, value in terms.items()}


def _float(features: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {name: value.float() for name, value in features.items()}
