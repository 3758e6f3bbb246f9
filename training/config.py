"""The settings of one training run, as a frozen dataclass."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from stylecore.errors import InputError
from stylecore.nets.loss_nets import DEFAULT_LOSS_NET, LOSS_NETS


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``train`` needs. Weights of 1.0 are the sensible defaults for either
    loss network (each term has a base scale, see ``objective.py``)."""

    style: str
    data: str | tuple[str, ...]  # one path, or several (repeated --data)
    out: str
    steps: int = 4000
    size: int = 256  # training crops are size x size
    batch_size: int = 4  # frame pairs per step
    loss_net: str = DEFAULT_LOSS_NET
    vgg_weights: str | None = None
    device: str = "auto"
    content_weight: float = 1.0
    style_weight: float = 1.0
    tv_weight: float = 1.0
    temporal_weight: float = 1.0
    noise_weight: float = 0.0  # flow-free noise-stability loss; 0 = off
    noise_sigma: float = 0.03  # standard deviation of the added noise, in [0, 1] pixels
    # Hinge that makes a stronger style weight give a lower style loss on the same frame
    # (the strength control must be monotone; see objective.monotone_hinge); 0 = off.
    monotone_weight: float = 1.0
    style_size: int = 512  # long side of the style image for its Gram matrices
    style_rotate: bool = False  # also match the style turned 90 degrees (against stripes)
    learning_rate: float = 1e-3
    # The style-weight MLP learns this much faster than the rest, so that the strength
    # control develops within short training runs (its heads start at zero).
    cond_lr_scale: float = 5.0
    conditioned: bool = True  # train the network on the style weight as an input
    max_style_weight: float = 2.0  # conditioned weights are drawn from [0, max_style_weight]
    synthetic_fraction: float = 0.25  # share of pairs made by synthetic motion when video exists
    # Share of pairs made from the still images when videos exist too; None = the stills'
    # share of all frames (a few photos beside a clip of 300 pairs are then rarely seen).
    still_fraction: float | None = None
    # Crops show the data enlarged by up to this factor (1 = at its stored scale, the short
    # side about 1.15 crops): the distilled models learn their teacher's look on HD footage.
    zoom: float = 1.0
    max_pairs_per_clip: int = 300
    pair_gap: int = 1  # frames between the two frames of a video pair
    cache_dir: str | None = None  # flow cache; None = OUT's folder/.stylecore-flow-cache
    checkpoint_every: int = 200
    preview_every: int = 250
    log_every: int = 10
    resume: bool = False
    restart: bool = False
    bf16: bool | None = None  # CPU bfloat16 autocast; None = when the CPU supports it
    seed: int = 0
    init: str | None = None  # start from this model's weights (fine-tuning) instead of from scratch
    # Distillation: learn to reproduce this model's outputs (a model name or file) rather
    # than the style itself; ``style`` must be the painting it was trained on.
    teacher: str | None = None
    width: float = 1.0  # channels relative to the standard network (0.5 = the "-small" models)
    res_blocks: int | None = None  # residual blocks; None = the teacher's (or the standard 5)
    pixel_weight: float = 1.0  # distillation: L1 distance to the teacher's output
    texture_weight: float = 0.0  # distillation: Gram matrices of the teacher's output, image by image
    colour_weight: float = 0.0  # distillation: L1 of block-averaged outputs (their colours)
    # Distillation's own monotone term (``monotone_weight`` is the style-loss one, which a
    # distillation does not compute): a stronger weight must move the frame further; 0 = off.
    distill_monotone_weight: float = 0.0
    # Distillation: each crop normalised with its whole frame's statistics, as a user's
    # frame is (training.frame_stats); about 2.5x the time a step.
    frame_stats: bool = False
    # Distillation: share of the clip pairs drawn from the tenth the copy paints least like
    # its teacher, ranked every few hundred steps (training.hard_pairs); 0 = off.
    hard_pairs: float = 0.0
    # Clip each step's gradient norm to this multiple of the median norm of the recent
    # steps (training.clipping), against single crops whose loss is hundreds of times the
    # usual; 0 = off.
    clip_grad: float = 0.0

    def __post_init__(self) -> None:
        # One canonical form: a tuple of paths.
        object.__setattr__(self, "data", (self.data,) if isinstance(self.data, str) else tuple(self.data))
        if self.loss_net not in LOSS_NETS:
            raise InputError(f"`loss_net` must be one of {', '.join(LOSS_NETS)}, not {self.loss_net!r}")
        if self.steps < 1 or self.batch_size < 1:
            raise InputError("`steps` and `batch_size` must be at least 1")
        if self.size < 64 or self.size % 4:
            raise InputError(f"`size` {self.size}: use a multiple of 4 of at least 64")
        if min(self.content_weight, self.style_weight, self.tv_weight, self.temporal_weight, self.noise_weight,
               self.monotone_weight) < 0:
            raise InputError("loss weights must be >= 0")
        if not 0.0 <= self.synthetic_fraction <= 1.0:
            raise InputError("`synthetic_fraction` must be between 0 and 1")
        if self.still_fraction is not None and not 0.0 <= self.still_fraction <= 1.0:
            raise InputError("`still_fraction` must be between 0 and 1")
        if not 1.0 <= self.zoom <= 8.0:
            raise InputError(f"`zoom` {self.zoom}: use a factor between 1 (crops as stored) and 8")
        if not 0.1 <= self.width <= 4.0:
            raise InputError(f"`width` {self.width}: use a channel factor between 0.1 and 4 (0.5 = half the channels)")
        if self.res_blocks is not None and self.res_blocks < 0:
            raise InputError(f"`res_blocks` {self.res_blocks}: use 0 or more residual blocks")
        if min(self.pixel_weight, self.texture_weight, self.colour_weight, self.distill_monotone_weight) < 0:
            raise InputError("loss weights must be >= 0")
        if self.frame_stats and not self.teacher:
            raise InputError("`frame_stats` applies to distillation: give `teacher` too")
        if not 0.0 <= self.hard_pairs <= 1.0:
            raise InputError(f"`hard_pairs` {self.hard_pairs}: use a share between 0 and 1")
        if self.hard_pairs and not self.teacher:
            raise InputError("`hard_pairs` applies to distillation: give `teacher` too")
        if self.clip_grad and self.clip_grad <= 1.0:
            raise InputError(f"`clip_grad` {self.clip_grad}: use a multiple of the median gradient norm above 1 "
                             "(3 is a good start), or 0 for no clipping")
        if self.max_style_weight <= 0:
            raise InputError("`max_style_weight` must be positive")
        if self.resume and self.restart:
            raise InputError("`resume` and `restart` contradict each other; pass one")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
