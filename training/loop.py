"""The training loop: a plain function over a ``TrainConfig``."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import math
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stylecore.devices import bf16_autocast_pays, resolve_device, reuse_freed_memory
from stylecore.errors import Cancelled, InputError, OutputError
from stylecore.io.imageops import load_image, resize, save_image, scaled_size, to_tensor
from stylecore.losses import gram_matrix
from stylecore.catalog import resolve_model, write_thumbnail
from stylecore.nets.model_file import ModelInfo, load_model, now_iso, save_model, style_thumbnail_hash
from stylecore.nets.transformer import StyleTransformer, TransformerConfig
from stylecore.nets.loss_nets import load_loss_network, resolve_loss_net

from .checkpoint import RandomState, checkpoint_path, load_checkpoint, save_checkpoint
from .clipping import RelativeClip
from .config import TrainConfig
from .data import build_sampler, scan_data
from .flow_cache import FlowCache
from .frame_stats import frame_stats
from .hard_pairs import HARD_REFRESH, HardPairs
from .objective import DISTILL_LAYERS, LOSS_LAYERS, RECIPE, STYLE_LAYERS, DistillLoss, HybridLoss, LossWeights
from .pairs import PairBatch, collate
from .preview import contact_sheet

Log = Callable[[str], None]
# Training events (see ``train``): the CLI's progress bar and the worker both read them.
EventHook = Callable[[dict[str, Any]], None]
CancelCheck = Callable[[], bool]
# Settings that may differ between a run and its resume: they do not change what is learnt.
_RESUMABLE_CHANGES = frozenset({"resume", "restart", "cache_dir", "checkpoint_every", "preview_every", "log_every",
                                "device", "vgg_weights", "bf16"})
# Every setting's default: a checkpoint written before a setting existed was made with it.
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}
_PREVIEW_FRAMES = 3
_FINAL_LR_FRACTION = 0.1  # cosine decay of the learning rate down to this fraction
# The monotone term's twin weight differs from its frame's by at least this much: nearer
# weights give style losses within noise of each other, which the hinge's margin cannot order.
_TWIN_MIN_GAP = 0.25


def _autocast_factory(device: torch.device, enabled: bool) -> Callable[[], AbstractContextManager[object]]:
    if not enabled:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)


def _style_grams(config: TrainConfig, encoder: torch.nn.Module, device: torch.device) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    style = load_image(config.style)
    h, w = style.shape[:2]
    small = resize(style, scaled_size(w, h, min(config.style_size, max(w, h))))
    # style_rotate: the targets average the painting and the painting turned 90 degrees, so
    # a style whose strokes run mostly one way (Starry Night's horizontal dashes) does not
    # become the same stripes over every surface; the network then orients strokes by content.
    views = [small, np.ascontiguousarray(np.rot90(small))] if config.style_rotate else [small]
    grams: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for view in views:
            feats = encoder(to_tensor(view, device))
            for name in STYLE_LAYERS:
                grams[name] = grams.get(name, 0) + gram_matrix(feats[name]).float() / len(views)
    return grams, style


@contextlib.contextmanager
def _uninterrupted() -> Iterator[None]:
    """Hold a Ctrl-C back until the block ends. Adam updates the weights and its moments in
    several passes: cut between them, the checkpoint saved on interruption would hold half
    a step, and the resumed run would not be the uninterrupted one. Off the main thread
    (where Python delivers no signal) or under a handler Python did not install, it only
    runs the block."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous is None:
        yield
        return
    held: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if held:
        signal.raise_signal(signal.SIGINT)  # delivered now, to whatever handled it before


def _lr_at(step: int, config: TrainConfig) -> float:
    progress = step / max(config.steps - 1, 1)
    scale = _FINAL_LR_FRACTION + (1 - _FINAL_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * progress))
    return config.learning_rate * scale


def _preview_weights(model_config: TransformerConfig) -> list[float]:
    if not model_config.conditioned:
        return [1.0]
    top = model_config.max_style_weight
    return [0.0, 0.25 * top, 0.5 * top, top]


def draw_style_weights(network: TransformerConfig, n: int, rng: np.random.Generator, device: torch.device) -> torch.Tensor:
    """Per-pair style weights: uniform on ``[0, max_style_weight]`` for a conditioned network
    (Babaeizadeh and Ghiasi 2018), else all 1. A distilled student has its teacher's range."""
    if not network.conditioned:
        return torch.ones(n, device=device)
    return torch.from_numpy(rng.uniform(0.0, network.max_style_weight, size=n).astype(np.float32)).to(device)


def draw_twin_weight(weight: float, top: float, rng: np.random.Generator) -> float:
    """A second style weight for the monotone term: uniform on ``[0, top]`` at least
    ``_TWIN_MIN_GAP`` away from ``weight``."""
    below, above = max(0.0, weight - _TWIN_MIN_GAP), max(0.0, top - weight - _TWIN_MIN_GAP)
    u = rng.uniform(0.0, below + above)
    return u if u < below else weight + _TWIN_MIN_GAP + (u - below)


def batch_loss(
    model: StyleTransformer,
    batch: PairBatch,
    weights: torch.Tensor,
    loss_fn: HybridLoss,
    config: TrainConfig,
    autocast: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext,
    twin_weight: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of one batch of frame pairs: both frames of each pair go through the network
    with the pair's style weight; the temporal term ties the two outputs together. With
    ``twin_weight`` the first pair's current frame also goes through at that weight, for
    the monotone term."""
    n = batch.cur.shape[0]
    inputs = torch.cat([batch.prev, batch.cur])
    pair_weights = torch.cat([weights, weights])
    with autocast():
        outputs = model(inputs, pair_weights)
        noisy = None
        if config.noise_weight > 0:
            jitter = torch.randn_like(batch.prev) * config.noise_sigma
            noisy = model((batch.prev + jitter).clamp(0, 1), weights)
        twin = None
        if twin_weight is not None:
            of = torch.tensor([n], device=inputs.device)
            twin_weights = torch.tensor([twin_weight], device=inputs.device)
            twin = (model(inputs[of], twin_weights), of, twin_weights)
    out_prev, out_cur = outputs[:n], outputs[n:]
    temporal = (out_cur, out_prev, batch.flow_bw, batch.mask) if config.temporal_weight > 0 else None
    return loss_fn(inputs, outputs, pair_weights, temporal=temporal, noisy_outputs=noisy, twin=twin)


def distill_batch_loss(
    model: StyleTransformer,
    teacher: StyleTransformer,
    batch: PairBatch,
    weights: torch.Tensor,
    loss_fn: DistillLoss,
    autocast: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext,
    twin_weight: float | None = None,
    whole_frames: bool = False,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The distillation loss of one batch: student and teacher see both frames of each
    pair at the pair's style weight; the temporal term ties the student's two outputs.
    With ``twin_weight`` the student also paints the first pair's current frame at that
    weight, for the monotone term. With ``whole_frames`` (and frames in the batch) every
    crop is normalised with its whole frame's statistics (``frame_stats``)."""
    n = batch.cur.shape[0]
    inputs = torch.cat([batch.prev, batch.cur])
    pair_weights = torch.cat([weights, weights])
    frames = batch.frames if whole_frames else ()
    teacher_stats = frame_stats(teacher, frames, weights, autocast, repeat=2) if frames else None
    student_stats = frame_stats(model, frames, weights, autocast, renormalise=True, repeat=2) if frames else None
    with torch.no_grad(), autocast():
        targets = teacher(inputs, pair_weights, teacher_stats).float()
    with autocast():
        outputs = model(inputs, pair_weights, student_stats)
        twins = None
        if twin_weight is not None:
            frame, own = inputs[n : n + 1], outputs[n : n + 1]
            twin_weights = torch.tensor([twin_weight], device=inputs.device)
            # The twin in the same regime as ``own``: the two are compared.
            twin_stats = frame_stats(model, frames[:1], twin_weights, autocast, renormalise=True) if frames else None
            twin = model(frame, twin_weights, twin_stats)
            twins = (frame, own, twin) if twin_weight > float(weights[0]) else (frame, twin, own)
    temporal = (outputs[n:], outputs[:n], batch.flow_bw, batch.mask)
    return loss_fn(outputs, targets, temporal=temporal, twins=twins)


def load_teacher(config: TrainConfig, style_image: np.ndarray, device: torch.device) -> tuple[StyleTransformer, dict[str, Any]]:
    """The teacher of a distillation run, frozen, and its record for the student's metadata.
    Refuses a ``style`` other than the painting the teacher learnt (the student's metadata
    and thumbnail would name the wrong painting)."""
    path = resolve_model(config.teacher)
    teacher, info = load_model(path, device)
    if info.style_thumbnail_sha256 != style_thumbnail_hash(style_image):
        raise InputError(f"`style` {Path(config.style).name} is not the painting `teacher` {path.stem} was trained on "
                         f"({info.style_name}); give that painting as `style`")
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher.eval(), {"model": path.stem, "training": dict(info.training)}


def build_distill_loss(config: TrainConfig, device: torch.device,
                       autocast: Callable[[], AbstractContextManager[object]]) -> DistillLoss:
    encoder = load_loss_network(config.loss_net, tuple(DISTILL_LAYERS), device, weights_path=config.vgg_weights,
                                pooling=RECIPE.pooling)
    return DistillLoss(encoder, config.pixel_weight, config.content_weight, config.temporal_weight, autocast=autocast,
                       texture=config.texture_weight, colour=config.colour_weight,
                       monotone=config.distill_monotone_weight)


def build_loss(config: TrainConfig, device: torch.device, autocast: Callable[[], AbstractContextManager[object]]) -> tuple[HybridLoss, np.ndarray]:
    """The loss network, the style targets and the weighted objective; also the style image."""
    encoder = load_loss_network(config.loss_net, LOSS_LAYERS, device, weights_path=config.vgg_weights,
                                pooling=RECIPE.pooling)
    grams, style_image = _style_grams(config, encoder, device)
    loss_fn = HybridLoss(
        encoder,
        grams,
        LossWeights(config.content_weight, config.style_weight, config.tv_weight, config.temporal_weight, config.noise_weight,
                    config.monotone_weight if config.conditioned else 0.0),
        autocast=autocast,
    )
    return loss_fn, style_image


def prepare_out_folder(out: Path) -> None:
    """Make ``out``'s folder and check that it takes files before any step is spent: the
    first checkpoint is written after ``checkpoint_every`` steps, too late to find out."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out.parent):
            pass
    except OSError as exc:
        raise OutputError(f"cannot write model files in {out.parent} ({exc.strerror or exc}); choose another `out` "
                          "or fix the folder's permissions") from None


@contextlib.contextmanager
def _writing(target: Path, ckpt: Path, saved: int | None, resumes: bool) -> Iterator[None]:
    """Turn a failed write of ``target`` (a full disk, a folder made read-only mid-run) into
    one line that says which checkpoint is safe and how to go on from it."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            what = f"the disk holding {target.parent} is full (writing {target.name})"
            fix = "free some space"
        else:
            what = f"cannot write {target} ({exc.strerror or exc})"
            fix = "fix the folder's permissions"
        if saved is None:
            raise OutputError(f"{what}; no checkpoint was saved yet: {fix} and run the same command again") from None
        again = "the same command again" if resumes else "the same command with `resume`"
        raise OutputError(f"{what}; the checkpoint {ckpt.name} from step {saved} is safe: {fix} and run {again} "
                          "to continue from it") from None


def _init_from(path: str, model: StyleTransformer) -> dict[str, Any]:
    """Load a model file's weights into ``model`` (fine-tuning); returns its training record."""
    start, info = load_model(path)
    if start.config.with_res_blocks(model.config.res_blocks) == model.config and \
            start.config.res_blocks > model.config.res_blocks:
        start = start.first_blocks(model.config.res_blocks)  # a shallower copy starts from the first blocks
    if start.config != model.config:
        raise InputError(f"`init` {path} is a different network ({start.config}) from the one this run trains "
                         f"({model.config}); its settings must match (e.g. `unconditioned`, `max_style_weight`)")
    model.load_state_dict(start.state_dict())
    return dict(info.training)


# What an earlier stage's teacher record becomes when it is the later stage's teacher too.
SAME_TEACHER = "the teacher of the stage after this one"


def _stage_record(init_training: dict[str, Any] | None, teacher_record: dict[str, Any] | None) -> dict[str, Any] | None:
    """The record of the run a stage started from, kept whole except a teacher record that
    the new stage records too: that one is named, not repeated (a copy trained in ten
    stages repeated its teacher's recipe ten times: 60 of its 80 KB of metadata)."""
    if not init_training or not teacher_record or init_training.get("teacher") != teacher_record:
        return init_training
    return {**init_training, "teacher": {"model": teacher_record["model"], "training": SAME_TEACHER}}


def _fmt_seconds(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def settings_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between a checkpoint's settings and this run's, as ``--flag old -> new``
    (settings that do not change what is learnt are left out)."""
    changes = []
    for key in sorted(set(saved) | set(current)):
        if key in _RESUMABLE_CHANGES:
            continue
        # A setting newer than the checkpoint was then at its default.
        old, new = saved.get(key, _DEFAULTS.get(key)), current.get(key)
        if isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)):
            old, new = list(old), list(new)
        if old != new:
            changes.append(f"`{key}` {_show(old)} -> {_show(new)}")
    return changes


def _show(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) or "none"
    return str(value)


def train(
    config: TrainConfig,
    log: Log = print,
    command: str = "",
    on_event: EventHook | None = None,
    cancel: CancelCheck | None = None,
) -> Path:
    """Train a stylizing network and write ``config.out`` (+ ``.json``); returns its path.

    A checkpoint (``OUT.ckpt``) is written every ``checkpoint_every`` steps and on
    interruption or cancellation; ``resume=True`` continues from it (and refuses one made
    with other settings, saying what changed). Preview sheets go to
    ``OUT_previews/step_NNNNNN.png``.

    ``on_event`` receives ``{"event": "start", "step", "steps", "loss_net", "device", "out"}``,
    after every step ``{"event": "step", "step", "steps", "losses": {...}, "seconds_per_step",
    "eta_seconds"}``, ``{"event": "preview", "step", "path"}``, ``{"event": "checkpoint",
    "step", "path"}`` and finally ``{"event": "done", "model": path, "steps"}``. ``cancel`` is
    checked between steps: a true answer saves a checkpoint and raises ``Cancelled``.
    """
    emit: EventHook = on_event or (lambda event: None)
    # The concrete network ('auto' resolved) goes into the log, the checkpoint's settings and
    # the model's metadata.
    config = dataclasses.replace(config, loss_net=resolve_loss_net(config.loss_net, config.vgg_weights))
    out = Path(config.out)
    if out.suffix != ".safetensors":
        raise InputError(f"`out` {out}: model files end in .safetensors")
    ckpt = checkpoint_path(out)
    if ckpt.exists() and not (config.resume or config.restart):
        raise InputError(f"{ckpt} exists from an earlier run; pass `resume` to continue it or `restart` to start over")
    device = resolve_device(config.device)
    reuse_freed_memory(device)
    use_bf16 = bf16_autocast_pays(device) if config.bf16 is None else config.bf16
    autocast = _autocast_factory(device, use_bf16)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)

    teacher: StyleTransformer | None = None
    teacher_record: dict[str, Any] | None = None

    def twin_weight(weights: torch.Tensor, term: float) -> float | None:
        """A second style weight for a monotone term weighted ``term``, drawn in the range of
        the network being trained (a student's is its teacher's); None where the term is off
        or the network has no Style Weight input, whose outputs would not differ."""
        network = model.config
        if not network.conditioned or term <= 0:
            return None
        return draw_twin_weight(float(weights[0]), network.max_style_weight, rng)

    step_loss: Callable[[PairBatch, torch.Tensor], tuple[torch.Tensor, dict[str, float]]]
    if config.teacher:
        style_image = load_image(config.style)
        teacher, teacher_record = load_teacher(config, style_image, device)
        distill_fn = build_distill_loss(config, device, autocast)

        def step_loss(batch: PairBatch, weights: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
            assert teacher is not None
            return distill_batch_loss(model, teacher, batch, weights, distill_fn, autocast,
                                      twin_weight(weights, config.distill_monotone_weight), config.frame_stats)
    else:
        loss_fn, style_image = build_loss(config, device, autocast)

        def step_loss(batch: PairBatch, weights: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
            return batch_loss(model, batch, weights, loss_fn, config, autocast,
                              twin_weight(weights, config.monotone_weight))
    sources = scan_data(config.data)
    if config.hard_pairs and not sources.clips:
        raise InputError("`hard_pairs` ranks video pairs: give a clip in `data`, or leave `hard_pairs` at 0")
    # Only now, past every check of the inputs, so that a refused run leaves no new empty
    # folder behind; still before the flow cache and any step write there.
    prepare_out_folder(out)
    cache = FlowCache(config.cache_dir or out.parent / ".stylecore-flow-cache", warn=log)
    sampler = build_sampler(
        sources, config.size, config.synthetic_fraction, config.max_pairs_per_clip, config.pair_gap, cache, log,
        zoom=config.zoom, still_fraction=config.still_fraction, hard_fraction=config.hard_pairs,
    )
    preview_rng = np.random.default_rng(config.seed + 1)
    preview_frames = collate([sampler.draw(preview_rng) for _ in range(_PREVIEW_FRAMES)]).cur.to(device)
    preview_dir = out.parent / f"{out.stem}_previews"

    base_config = (teacher.config if teacher is not None else
                   TransformerConfig(conditioned=config.conditioned, max_style_weight=config.max_style_weight))
    model_config = base_config.scaled(config.width).with_res_blocks(config.res_blocks)
    model = StyleTransformer(model_config).to(device).train()
    init_training = _init_from(config.init, model) if config.init else None
    cond_params = list(model.cond.parameters()) if model.cond is not None else []
    cond_ids = {id(p) for p in cond_params}
    groups: list[dict[str, object]] = [{"params": [p for p in model.parameters() if id(p) not in cond_ids], "lr_scale": 1.0}]
    if cond_params:
        groups.append({"params": cond_params, "lr_scale": config.cond_lr_scale})
    optimizer = torch.optim.Adam(groups, lr=config.learning_rate)
    clip = RelativeClip(config.clip_grad) if config.clip_grad else None
    settings = config.to_dict()
    start = 0
    resumed: dict[str, Any] = {}
    if config.resume and ckpt.exists():
        start, saved = load_checkpoint(ckpt, model, optimizer, rng, resumed)
        changes = settings_changes(saved, settings)
        if changes:
            raise InputError(f"{ckpt} was made with other settings ({'; '.join(changes)}): run with the same "
                             f"settings to resume it, or pass `restart` to start over")
        if clip is not None and "grad_norms" in resumed:
            clip.restore(resumed["grad_norms"])  # the limit the run had reached
        log(f"resumed from {ckpt} at step {start}")
    hard: HardPairs | None = None
    if config.hard_pairs and teacher is not None:
        if sampler.clip_pairs:
            # Ranked at the crops' typical enlargement (the geometric mean of 1 ... zoom);
            # after the resume check, so a refused resume does not paint the clip first.
            hard = HardPairs([pair.cur for pair in sampler.clip_pairs], teacher, math.sqrt(config.zoom), device,
                             autocast)
            if "hard" in resumed:
                sampler.hard = resumed["hard"].numpy()  # the ranking the run had reached
        else:
            log("--hard-pairs: no usable video pairs in --data (too short, too dark or without texture to "
                "follow); every pair is drawn alike")
    log(
        f"training {out.name}: {config.steps} steps, {config.size}px crops, batch {config.batch_size} pairs, "
        f"loss net {config.loss_net}, device {device}{' (bf16 autocast)' if use_bf16 else ''}"
    )

    emit({"event": "start", "step": start, "steps": config.steps, "loss_net": config.loss_net, "device": str(device),
          "out": str(out)})
    began, sums, counted = time.perf_counter(), {}, 0
    completed = start  # optimiser steps taken: what a checkpoint records
    saved_step = start if start else None  # the step of the checkpoint on disk, if any

    def writing(target: Path) -> AbstractContextManager[None]:
        return _writing(target, ckpt, saved_step, config.resume)

    def between_steps() -> tuple[RandomState, torch.Tensor | None]:
        """The state the next step starts from, beside the weights and the optimiser's."""
        return RandomState.now(rng), clip.state() if clip is not None else None

    # Taken after every step, so that a run interrupted in the middle of one saves the state
    # before its draws and its gradient norm: resumed, it takes that step as if never cut.
    between = between_steps()

    def checkpoint(step: int) -> None:
        nonlocal saved_step
        random, norms = between
        extra: dict[str, Any] = {}
        if sampler.hard is not None:
            extra["hard"] = torch.from_numpy(sampler.hard)
        if norms is not None:
            extra["grad_norms"] = norms
        with writing(ckpt):
            save_checkpoint(ckpt, model, optimizer, step, random, settings, extra)
        saved_step = step
    try:
        for step in range(start, config.steps):
            if cancel is not None and cancel():
                raise Cancelled(f"training stopped after step {completed}")
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(step, config) * group["lr_scale"]
            if hard is not None and (step % HARD_REFRESH == 0 or sampler.hard is None):
                sampler.hard = hard.rank(model)
                log(f"ranked at step {step}: {hard.summary(sampler.hard)}")
            batch = collate([sampler.draw(rng) for _ in range(config.batch_size)]).to(device)
            weights = draw_style_weights(model_config, batch.cur.shape[0], rng, device)
            total, terms = step_loss(batch, weights)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            with _uninterrupted():
                if clip is not None:
                    clip(model.parameters())
                optimizer.step()
                completed = step + 1
                between = between_steps()

            losses = {"total": float(total.detach()), **terms}
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + value
            counted += 1
            done = step + 1
            per_step = (time.perf_counter() - began) / (done - start)
            emit({"event": "step", "step": done, "steps": config.steps, "losses": losses,
                  "seconds_per_step": per_step, "eta_seconds": per_step * (config.steps - done)})
            if done % config.log_every == 0 or done == config.steps:
                parts = "  ".join(f"{k} {v / counted:.4g}" for k, v in sums.items())
                clipped = f", {clip.take_clipped()} clipped" if clip is not None else ""
                log(f"step {done}/{config.steps}  {parts}  ({per_step:.2f} s/step{clipped}, "
                    f"eta {_fmt_seconds(per_step * (config.steps - done))})")
                sums, counted = {}, 0
            if done % config.checkpoint_every == 0 and done < config.steps:
                checkpoint(done)
                emit({"event": "checkpoint", "step": done, "path": str(ckpt)})
            if done % config.preview_every == 0 or done == config.steps:
                sheet = contact_sheet(model, preview_frames, _preview_weights(model_config))
                sheet_path = preview_dir / f"step_{done:06d}.png"
                with writing(sheet_path):
                    preview_dir.mkdir(parents=True, exist_ok=True)
                    save_image(sheet_path, sheet)
                emit({"event": "preview", "step": done, "path": str(sheet_path)})
    except (KeyboardInterrupt, Cancelled):
        # Never lose work: an interrupted run resumes from here with --resume.
        if completed > start:
            checkpoint(completed)
        if ckpt.exists():
            log(f"interrupted after step {completed}; checkpoint saved to {ckpt} (continue with "
                f"{'the same command' if config.resume else '--resume'})")
        raise

    info = ModelInfo(
        config=model_config,
        style_name=Path(config.style).stem,
        style_thumbnail_sha256=style_thumbnail_hash(style_image),
        loss_network=config.loss_net,
        training={
            **{k: v for k, v in settings.items() if k not in ("resume", "restart", "cache_dir")},
            "style": Path(config.style).name,
            "data": [Path(d).name for d in config.data],
            "out": out.name,
            "bf16": use_bf16,
            "command": command,
            "seconds": round(time.perf_counter() - began, 1),
            # A fine-tuned model's full recipe: the run it started from, and so on back.
            **({"init": {"model": Path(config.init).name, "training": _stage_record(init_training, teacher_record)}}
               if config.init else {}),
            # A distilled model's teacher and the teacher's own recipe.
            **({"teacher": teacher_record} if teacher_record else {}),
        },
        created=now_iso(),
    )
    with writing(out):
        save_model(out, model.eval(), info)
        write_thumbnail(out, style_image)  # shown in model lists; lets a copy of the painting find the model
    ckpt.unlink(missing_ok=True)  # the finished model supersedes the checkpoint
    log(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB), {out.with_suffix('.json').name} and {out.with_suffix('.jpg').name}")
    emit({"event": "done", "model": str(out), "steps": config.steps})
    return out
