"""Huang et al. (2017) stylizing network, optionally conditioned on the style weight.

Architecture (Huang et al., "Real-Time Neural Style Transfer for Videos", section 3.1):
three convolutions (16, 32, 48 channels; strides 1, 2, 2), five residual blocks at 48
channels, two resize-convolutions back to full size (32, 16 channels; nearest-neighbour
upsampling then a convolution, which avoids the checkerboard artefacts of transposed
convolutions) and a final convolution to RGB. Every convolution but the last is followed
by instance normalisation. About 0.25 M parameters.

Conditioning (Babaeizadeh and Ghiasi, "Adjustable Real-time Style Transfer", 2018): the
style weight ``w`` goes through a small MLP whose output shifts the scale and bias of
every instance normalisation, so one network renders any style strength in
``[0, max_style_weight]``. An unconditioned network ignores ``w`` inside the network and
instead mixes its output with the input: ``x + w * (stylized - x)``.

Output (departs from the paper, whose last layer predicts the image itself): the last
convolution predicts a change of the input in logit space, scaled by the style weight:
``out = sigmoid(logit(x) + w * delta(x, w))``. Style weight 0 therefore returns the frame
itself (to within the logit clamp), which makes a keyframed fade of the style exact at
its ends, and strength grows with ``w`` from the first step of training; the conditioned
network still decides what ``delta`` is at each weight, so 0.5 is a weaker stylization
(textures and colours both), not a mix of pixels. Files written before this
(``output: "absolute"``) keep the paper's output.

Any frame size works: the input is reflect-padded to a multiple of 4 (two stride-2
layers) and the output cropped back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

# Spatial size must be divisible by 2 ** (number of stride-2 layers).
SIZE_MULTIPLE = 4
_EPS = 1e-5
# Pixel stride of the estimate a channels-last map is centred on before its CPU norm.
_CENTRE_STRIDE = 8
# Inputs are clamped this far inside (0, 1) before the logit, so it stays finite.
_LOGIT_EPS = 1e-3
OUTPUTS = ("residual", "absolute")


@dataclass(frozen=True)
class TransformerConfig:
    """Shape of the network; stored in model files so a file rebuilds its own network."""

    down_channels: tuple[int, int, int] = (16, 32, 48)
    res_blocks: int = 5
    up_channels: tuple[int, int] = (32, 16)
    edge_kernel: int = 3  # kernel of the first and last convolution
    conditioned: bool = True
    cond_hidden: int = 32
    max_style_weight: float = 2.0  # conditioned range is [0, max_style_weight]
    output: str = "residual"  # "residual" (logit change of the input) or "absolute" (older files)

    def __post_init__(self) -> None:
        if self.output not in OUTPUTS:
            raise ValueError(f"TransformerConfig: output must be one of {OUTPUTS}")
        if len(self.down_channels) != 3 or len(self.up_channels) != 2:
            raise ValueError("TransformerConfig needs 3 down_channels and 2 up_channels")
        if self.edge_kernel % 2 != 1 or self.res_blocks < 0 or self.max_style_weight <= 0:
            raise ValueError("TransformerConfig: edge_kernel must be odd, res_blocks >= 0, max_style_weight > 0")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["down_channels"] = list(self.down_channels)
        data["up_channels"] = list(self.up_channels)
        return data

    def scaled(self, width: float) -> TransformerConfig:
        """The same network with ``width`` times the channels (at least 4 per layer)."""
        def scale(channels: tuple[int, ...]) -> tuple[int, ...]:
            return tuple(max(4, round(c * width)) for c in channels)

        return replace(self, down_channels=scale(self.down_channels), up_channels=scale(self.up_channels))

    def with_res_blocks(self, res_blocks: int | None) -> TransformerConfig:
        """The same network with ``res_blocks`` residual blocks (``None``: as it is)."""
        return self if res_blocks is None else replace(self, res_blocks=res_blocks)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TransformerConfig:
        return cls(
            down_channels=tuple(int(c) for c in data["down_channels"]),  # type: ignore[arg-type]
            res_blocks=int(data["res_blocks"]),
            up_channels=tuple(int(c) for c in data["up_channels"]),  # type: ignore[arg-type]
            edge_kernel=int(data["edge_kernel"]),
            conditioned=bool(data["conditioned"]),
            cond_hidden=int(data["cond_hidden"]),
            max_style_weight=float(data["max_style_weight"]),
            # Files from before the residual output have no entry.
            output=str(data.get("output", "absolute")),
        )


class NormStats:
    """Fixed instance-norm statistics, used by tiled inference so all tiles agree, and by
    training so a crop is normalised as its whole frame is.

    ``mean[k]`` and ``var[k]`` are ``N x C`` tensors for normalisation layer ``k``;
    layers without an entry compute their own statistics. When ``capture`` is set to a
    layer index, that layer stops the forward pass by raising ``CapturedActivation`` with
    its input, so a caller can measure the statistics of one layer at a time. With
    ``record`` every layer stores the statistics of its own input as it normalises (the
    whole frame's, measured in one pass). With ``renormalise`` the fixed statistics give
    the value and the map's own the gradient (batch renormalisation, Ioffe 2017): a crop
    trained under its frame's statistics then learns that a shift of the whole map is
    normalised away, as it is at inference.
    """

    def __init__(self, *, record: bool = False, renormalise: bool = False) -> None:
        self.mean: dict[int, Tensor] = {}
        self.var: dict[int, Tensor] = {}
        self.capture: int | None = None
        self.record = record
        self.renormalise = renormalise


class CapturedActivation(Exception):
    """Raised by the normalisation layer named in ``NormStats.capture``; carries its input."""

    def __init__(self, activation: Tensor) -> None:
        super().__init__("captured activation")
        self.activation = activation


class ConditionalInstanceNorm(nn.Module):
    """Instance normalisation whose scale and bias may be shifted per sample.

    ``y = (x - mean) / sqrt(var + eps) * (weight + d_scale) + (bias + d_shift)`` with
    ``d_scale, d_shift`` of shape ``N x C`` from the conditioning MLP (or zero).
    """

    def __init__(self, channels: int, index: int) -> None:
        super().__init__()
        self.channels = channels
        self.index = index  # position among the network's norms (for NormStats)
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor, modulation: Tensor | None, stats: NormStats | None) -> Tensor:
        if stats is not None and stats.capture == self.index:
            raise CapturedActivation(x)
        # Per-sample scale and shift, in float32 (they are tiny; half precision would
        # lose digits in ``mean * scale`` below).
        scale = self.weight.float().unsqueeze(0)
        shift = self.bias.float().unsqueeze(0)
        if modulation is not None:
            d_scale, d_shift = modulation.float().chunk(2, dim=1)
            scale = scale + d_scale
            shift = shift + d_shift
        if stats is not None and stats.record:
            var, mean = torch.var_mean(x.float(), dim=(2, 3), unbiased=False)
            stats.mean[self.index], stats.var[self.index] = mean, var
        if stats is not None and stats.renormalise and self.index in stats.mean:
            return self._renormalised(x, scale, shift, stats)
        if stats is not None and self.index in stats.mean:
            # Fold the fixed normalisation into the one multiply-add over the map.
            scale = scale * torch.rsqrt(stats.var[self.index].float() + _EPS)
            shift = shift - stats.mean[self.index].float() * scale
            return torch.addcmul(shift.to(x.dtype)[:, :, None, None], x, scale.to(x.dtype)[:, :, None, None])
        if x.device.type == "cpu" and not x.is_contiguous() and not torch.compiler.is_compiling():
            # PyTorch's CPU group_norm sums x and x^2 in one float32 pass for channels-last
            # maps (pytorch/pytorch#54293). Where a channel's mean is large beside its
            # spread, as after the first convolution, the variance cancels away: normalised
            # values off by up to 12 at 1280x720 on one thread, whole frames up to 53 levels
            # of 255 off. Centred first on the mean of every 8th pixel, each channel
            # normalises to the same values without the cancellation, for a fifth of the
            # time var_mean adds. Compiled networks compute their moments themselves.
            x = x - x[:, :, ::_CENTRE_STRIDE, ::_CENTRE_STRIDE].mean(dim=(2, 3), keepdim=True)
        # group_norm with one group per channel is instance normalisation; its kernel is
        # much faster than a separate var_mean on CPU and accumulates in float32 for
        # half-precision inputs.
        if scale.shape[0] == 1:
            # One scale and shift for the whole batch: group_norm applies them in the same
            # pass over the map.
            return F.group_norm(x, self.channels, scale[0].to(x.dtype), shift[0].to(x.dtype), eps=_EPS)
        normalized = F.group_norm(x, self.channels, eps=_EPS)
        return torch.addcmul(shift.to(x.dtype)[:, :, None, None], normalized, scale.to(x.dtype)[:, :, None, None])

    def _renormalised(self, x: Tensor, scale: Tensor, shift: Tensor, stats: NormStats) -> Tensor:
        """``(x - fixed mean) / fixed std`` in value, written as the map's own normalisation
        times ``r`` plus ``d`` (both constants) so the gradient flows through its own
        statistics (see ``NormStats``)."""
        var_own, mean_own = torch.var_mean(x.float(), dim=(2, 3), keepdim=True, unbiased=False)
        std_own = torch.sqrt(var_own + _EPS)
        mean = stats.mean[self.index].float()[:, :, None, None]
        std = torch.sqrt(stats.var[self.index].float()[:, :, None, None] + _EPS)
        r, d = (std_own / std).detach(), ((mean_own - mean) / std).detach()
        normalized = (x.float() - mean_own) / std_own * r + d
        return (normalized * scale[:, :, None, None] + shift[:, :, None, None]).to(x.dtype)


class ReflectConv(nn.Module):
    """Convolution with reflection padding (no dark borders from zero padding)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride, padding=kernel // 2, padding_mode="reflect")

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class StyleWeightMLP(nn.Module):
    """Maps the style weight to per-norm (d_scale, d_shift) pairs."""

    def __init__(self, hidden: int, norm_channels: list[int]) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(1, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.heads = nn.ModuleList(nn.Linear(hidden, 2 * c) for c in norm_channels)
        # Zero heads: training starts from a plain (unconditioned) instance norm.
        for head in self.heads:
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def forward(self, style_weight: Tensor) -> list[Tensor]:
        dtype = self.heads[0].weight.dtype if len(self.heads) else style_weight.dtype
        hidden = self.body(style_weight.reshape(-1, 1).to(dtype))
        return [head(hidden) for head in self.heads]


class StyleTransformer(nn.Module):
    """The stylizing network. ``forward(image, style_weight)`` -> stylized image in [0, 1]."""

    def __init__(self, config: TransformerConfig | None = None) -> None:
        super().__init__()
        self.config = config or TransformerConfig()
        cfg = self.config
        c1, c2, c3 = cfg.down_channels
        u1, u2 = cfg.up_channels
        norm_channels: list[int] = []

        def norm(channels: int) -> ConditionalInstanceNorm:
            norm_channels.append(channels)
            return ConditionalInstanceNorm(channels, len(norm_channels) - 1)

        self.down = nn.ModuleList(
            [ReflectConv(3, c1, cfg.edge_kernel), ReflectConv(c1, c2, 3, stride=2), ReflectConv(c2, c3, 3, stride=2)]
        )
        self.down_norms = nn.ModuleList([norm(c1), norm(c2), norm(c3)])
        self.res_convs = nn.ModuleList(
            nn.ModuleList([ReflectConv(c3, c3, 3), ReflectConv(c3, c3, 3)]) for _ in range(cfg.res_blocks)
        )
        self.res_norms = nn.ModuleList(nn.ModuleList([norm(c3), norm(c3)]) for _ in range(cfg.res_blocks))
        self.up = nn.ModuleList([ReflectConv(c3, u1, 3), ReflectConv(u1, u2, 3)])
        self.up_norms = nn.ModuleList([norm(u1), norm(u2)])
        self.final = ReflectConv(u2, 3, cfg.edge_kernel)
        self.num_norms = len(norm_channels)
        self.cond = StyleWeightMLP(cfg.cond_hidden, norm_channels) if cfg.conditioned else None

    def forward(self, image: Tensor, style_weight: Tensor | None = None, stats: NormStats | None = None) -> Tensor:
        """Stylize ``N x 3 x H x W`` images in [0, 1].

        ``style_weight``: ``N`` weights, or one weight for the whole batch (faster: the
        normalisation then applies it in one pass); ``None`` = 1.0. ``stats`` fixes
        normalisation statistics (tiled inference only).
        """
        _, _, h, w = image.shape
        if style_weight is None:
            style_weight = torch.ones(1, device=image.device, dtype=torch.float32)
        style_weight = style_weight.reshape(-1).to(device=image.device, dtype=torch.float32)
        # Unconditional pad and crop (zero padding when already a multiple of 4) keep the
        # graph free of shape-dependent branches, so ONNX export works at any size.
        pad_h, pad_w = (-h) % SIZE_MULTIPLE, (-w) % SIZE_MULTIPLE
        x = F.pad(image, (0, pad_w, 0, pad_h), mode="reflect")

        modulations: list[Tensor | None]
        if self.cond is not None:
            clamped = style_weight.clamp(0.0, self.config.max_style_weight)
            modulations = list(self.cond(clamped))
        else:
            modulations = [None] * self.num_norms

        def normed(layer: nn.Module, y: Tensor) -> Tensor:
            return layer(y, modulations[layer.index], stats)

        y = x
        for conv, nrm in zip(self.down, self.down_norms):
            y = F.relu(normed(nrm, conv(y)))
        for convs, nrms in zip(self.res_convs, self.res_norms):
            r = F.relu(normed(nrms[0], convs[0](y)))
            y = y + normed(nrms[1], convs[1](r))
        for conv, nrm in zip(self.up, self.up_norms):
            y = F.relu(normed(nrm, conv(F.interpolate(y, scale_factor=2.0, mode="nearest"))))
        delta = self.final(y)[:, :, :h, :w]
        if self.config.output == "residual":
            strength = style_weight.clamp(0.0, self.config.max_style_weight).to(delta.dtype)[:, None, None, None]
            return torch.sigmoid(torch.logit(image.to(delta.dtype), eps=_LOGIT_EPS) + strength * delta)
        out = torch.sigmoid(delta)
        if self.cond is None:
            # Unconditioned: the weight can only mix stylized and original pixels.
            mix = style_weight.clamp(0.0, 1.0).to(out.dtype)[:, None, None, None]
            out = image + mix * (out - image)
        return out

    def first_blocks(self, res_blocks: int) -> StyleTransformer:
        """A copy with only the first ``res_blocks`` residual blocks (and their norms'
        conditioning): the start for distilling a shallower, faster network from this one.
        Each block adds a correction to its input, so the copy already stylizes, coarser."""
        if not 0 <= res_blocks <= self.config.res_blocks:
            raise ValueError(f"first_blocks: {res_blocks} is not between 0 and {self.config.res_blocks}")
        copy = StyleTransformer(self.config.with_res_blocks(res_blocks))
        # The copy's parameters keep their names (its blocks are the first ones), except the
        # conditioning heads, one per norm: the copy's i-th norm is the kept norm ``kept[i]``.
        kept = [n.index for n in self.down_norms]
        kept += [n.index for nrms in self.res_norms[:res_blocks] for n in nrms]
        kept += [n.index for n in self.up_norms]
        source = self.state_dict()

        def origin(name: str) -> str:
            if not name.startswith("cond.heads."):
                return name
            _, _, index, rest = name.split(".", 3)
            return f"cond.heads.{kept[int(index)]}.{rest}"

        copy.load_state_dict({name: source[origin(name)] for name in copy.state_dict()})
        return copy.to(next(self.parameters()).dtype)

    def receptive_radius(self) -> int:
        """Pixels of context on each side that one output pixel depends on (for tiling)."""
        cfg = self.config
        radius = cfg.edge_kernel // 2  # first conv, stride 1
        radius += 1 + 2  # two stride-2 3x3 convs: 1 px at stride 1, 1 px at stride 2
        radius += 2 * cfg.res_blocks * 4  # 3x3 convs at stride 4
        radius += 2 * 2 + 2 + 1  # upsample rounding + 3x3 at stride 2, 3x3 at stride 1
        radius += cfg.edge_kernel // 2
        return radius


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
