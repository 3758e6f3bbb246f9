"""Style-transfer losses: a plain functional core and thin ``nn.Module`` wrappers.

Feature dicts map VGG layer names (``relu4_2``...) to ``N x C x H x W`` activations.
Layer-weight dicts map the same names to scalar weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn import functional as F

# Gatys et al. 2016: content at conv4_2 (we take its ReLU), style on the first ReLU of
# each block, equally weighted. "Equally" holds here because every layer's loss is
# normalised by its target's energy (see ``style_loss``); in the paper the raw Gram errors
# of shallow layers dominate by orders of magnitude.
GATYS_CONTENT_LAYERS: dict[str, float] = {"relu4_2": 1.0}
GATYS_STYLE_LAYERS: dict[str, float] = {
    "relu1_1": 0.2,
    "relu2_1": 0.2,
    "relu3_1": 0.2,
    "relu4_1": 0.2,
    "relu5_1": 0.2,
}
# Huang et al. 2017 (real-time video style transfer): content at relu4_2.
HUANG_CONTENT_LAYERS: dict[str, float] = {"relu4_2": 1.0}


@dataclass(frozen=True)
class Recipe:
    """One paper's layers and the base scales that make every user weight 1.0 a good default.

    The total loss is ``content_weight * content + style_weight * style_scale * style +
    tv_weight * tv_scale * tv + temporal_weight * temporal_scale * temporal``. Content and
    style are normalised (see ``content_loss``/``style_loss``), so the scales hold for every
    loss network; TV and temporal act on [0, 1] pixels. Calibrated by eye with hed-vgg16 on
    four paintings and several contents (docs/images/calibration.jpg).
    """

    content_layers: Mapping[str, float]
    style_layers: Mapping[str, float]
    style_scale: float
    tv_scale: float
    temporal_scale: float
    pooling: str = "max"  # of the loss network
    layers: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(dict.fromkeys([*self.content_layers, *self.style_layers])))


# Gatys et al. image optimisation, with Ruder et al.'s temporal term (optimization and
# style-video modes). Max pooling, as the networks were trained: average pooling (which
# Gatys et al. suggest) gave smoother strokes here but lost faces and brightened borders.
GATYS_RUDER = Recipe(GATYS_CONTENT_LAYERS, GATYS_STYLE_LAYERS, style_scale=8.0, tv_scale=2e1, temporal_scale=2e3)
# Huang et al. feedforward training.
# Style layers depart from Huang et al. (relu1_2, relu2_2, relu3_2, relu4_2): with
# hed-vgg16 those layers let the network satisfy the style with fine horizontal stripes
# over every surface (seen in training previews, with and without the temporal loss);
# Gatys' relu*_1 layers, the ones optimization mode uses, give brush strokes instead.
HUANG = Recipe(HUANG_CONTENT_LAYERS, GATYS_STYLE_LAYERS, style_scale=1e1, tv_scale=1e1, temporal_scale=5e2)

# Keeps a normalised loss finite when its target is all zeros (a black frame's deep layers);
# far below any real layer's energy, so it does not break scale invariance.
_NORM_EPS = 1e-20


def gram_matrix(features: Tensor) -> Tensor:
    """Gram matrix ``G[n, i, j] = sum_hw F[n, i, hw] F[n, j, hw] / (C * H * W)``, in float32 or wider.

    ``(N, C, H, W) -> (N, C, C)``. Dividing by ``C*H*W`` makes the value independent of
    the image size, so a style measured at one resolution applies at another. Features
    of a bfloat16 loss network may come in as they are: the product is taken in float32
    (see ``_Gram``).
    """
    n, c, h, w = features.shape
    return _Gram.apply(features.reshape(n, c, h * w)) / (c * h * w)


class _Gram(torch.autograd.Function):
    """``F F^T`` of ``N x C x M`` features, with a backward of one matrix product.

    Autograd sees ``F`` used twice and takes two products and a sum for the gradient;
    ``G`` is symmetric in ``F``, so ``dF = (dG + dG^T) F`` is the same gradient from one
    product. The Grams' products took a quarter of an optimisation step's time at 426x240
    (five layers of ``C x C`` products over up to 100k positions), so this matters.

    With bfloat16 features (the loss network under autocast) the forward product is taken
    in float32 of the same values, exactly as from upcast features, because the style loss
    lives on small differences between Grams; the backward product runs in bfloat16, the
    dtype its result goes back into the network in anyway.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, flat: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(flat)
        wide = flat.to(torch.promote_types(flat.dtype, torch.float32))
        return torch.bmm(wide, wide.transpose(1, 2))

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (flat,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return torch.bmm((grad + grad.transpose(1, 2)).to(flat.dtype), flat)


def content_loss(features: Tensor, target: Tensor) -> Tensor:
    """Relative squared error ``sum((F - P)^2) / sum(P^2)`` of each image, averaged over the batch.

    Departs from Gatys et al. (``1/2 sum((F - P)^2)``): dividing by the target's energy makes
    the value independent of the network's activation scale (Caffe VGGs see [0, 255]
    inputs, torchvision's see standardised ones), so one content weight fits every network.
    """
    n = features.shape[0]
    # Summed in float32 at least: bfloat16 features (an autocast loss network) would round
    # away the small differences the loss and its gradient are made of.
    features = features.to(torch.promote_types(features.dtype, torch.float32))
    target = target.to(features.dtype)
    error = ((features - target) ** 2).reshape(n, -1).sum(dim=1)
    energy = (target.detach() ** 2).reshape(target.shape[0], -1).sum(dim=1)
    return (error / (energy + _NORM_EPS)).mean()


def style_loss(features: Tensor, target_gram: Tensor) -> Tensor:
    """Relative Gram error ``sum((G - A)^2) / sum(A^2)`` of each image, averaged over the batch.

    ``target_gram`` is ``(C, C)`` or ``(N or 1, C, C)`` and broadcasts over the batch.
    Departs from Gatys et al. (``sum((G - A)^2) / (4 N^2 M^2)``, whose size follows the
    layer's activation magnitude to the fourth power): normalised by the target's energy,
    every layer weighs what its layer weight says and multiplying a layer's features by a
    constant leaves the loss unchanged, on any loss network.
    """
    gram = gram_matrix(features)
    target = target_gram.to(gram.dtype)
    if target.dim() == 2:
        target = target.unsqueeze(0)
    error = ((gram - target) ** 2).sum(dim=(1, 2))
    energy = (target.detach() ** 2).sum(dim=(1, 2))
    return (error / (energy + _NORM_EPS)).mean()


def tv_loss(image: Tensor) -> Tensor:
    """Total variation ``mean((I[..., y, x+1] - I[..., y, x])^2) + mean((I[..., y+1, x] - I[..., y, x])^2)``.

    Each term is the mean over all horizontal (resp. vertical) neighbour pairs of an
    ``N x C x H x W`` image.
    """
    dx = image[..., :, 1:] - image[..., :, :-1]
    dy = image[..., 1:, :] - image[..., :-1, :]
    return (dx**2).mean() + (dy**2).mean()


def temporal_loss(image: Tensor, warped_previous: Tensor, mask: Tensor) -> Tensor:
    """Ruder et al. short-term temporal loss ``sum(c * (x - w)^2) / D``.

    ``c`` is the ``N x 1 x H x W`` reliability mask (1 = reliable), broadcast over channels;
    ``D = C * H * W`` is the number of pixel values per image (averaged over the batch).
    """
    n, c, h, w = image.shape
    weighted = mask.to(image.dtype) * (image - warped_previous) ** 2
    return weighted.sum() / (n * c * h * w)


def blend_grams(grams: Sequence[Mapping[str, Tensor]], weights: Sequence[float]) -> dict[str, Tensor]:
    """Weighted average of several styles' Gram dicts; ``weights`` are normalised to sum 1."""
    if len(grams) != len(weights) or not grams:
        raise ValueError(f"blend_grams: need one weight per style, got {len(grams)} styles and {len(weights)} weights")
    total = float(sum(weights))
    if total <= 0 or any(wt < 0 for wt in weights):
        raise ValueError(f"blend_grams: style weights must be >= 0 with a positive sum, got {list(weights)}")
    blended: dict[str, Tensor] = {}
    for layer in grams[0]:
        blended[layer] = sum((g[layer] * (wt / total) for g, wt in zip(grams, weights)), start=torch.zeros_like(grams[0][layer]))
    return blended


class ContentLoss(nn.Module):
    """Weighted sum of ``content_loss`` over layers, against fixed target features."""

    def __init__(self, target: Mapping[str, Tensor], layers: Mapping[str, float]) -> None:
        super().__init__()
        self.layers = dict(layers)
        self.target = {name: target[name].detach() for name in self.layers}

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        return sum(
            (weight * content_loss(features[name], self.target[name]) for name, weight in self.layers.items()),
            start=torch.zeros((), device=next(iter(features.values())).device),
        )


class StyleLoss(nn.Module):
    """Weighted sum of ``style_loss`` over layers, against fixed target Gram matrices."""

    def __init__(self, target_grams: Mapping[str, Tensor], layers: Mapping[str, float]) -> None:
        super().__init__()
        self.layers = dict(layers)
        self.target_grams = {name: target_grams[name].detach() for name in self.layers}

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        return sum(
            (
                weight * style_loss(features[name], self.target_grams[name])
                for name, weight in self.layers.items()
            ),
            start=torch.zeros((), device=next(iter(features.values())).device),
        )


class TVLoss(nn.Module):
    """Module form of ``tv_loss``."""

    def forward(self, image: Tensor) -> Tensor:
        return tv_loss(image)


class TemporalLoss(nn.Module):
    """Module form of ``temporal_loss``."""

    def forward(self, image: Tensor, warped_previous: Tensor, mask: Tensor) -> Tensor:
        return temporal_loss(image, warped_previous, mask)
