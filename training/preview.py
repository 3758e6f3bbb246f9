"""Preview contact sheet: a few fixed training frames, stylized at several style weights."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from stylecore.nets.transformer import StyleTransformer

_GAP = 4  # white pixels between tiles


def contact_sheet(model: StyleTransformer, frames: Tensor, weights: Sequence[float]) -> np.ndarray:
    """One row per frame: the input, then the output at each weight. ``H x W x 3`` float32."""
    was_training = model.training
    model.eval()
    rows: list[np.ndarray] = []
    with torch.no_grad():
        for frame in frames:
            tiles = [frame.unsqueeze(0)]
            for weight in weights:
                w = torch.full((1,), float(weight), device=frame.device)
                tiles.append(model(frame.unsqueeze(0), w).float())
            rows.append(_hstack([_numpy(t) for t in tiles]))
    model.train(was_training)
    return _vstack(rows)


def _numpy(t: Tensor) -> np.ndarray:
    return t[0].detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def _hstack(tiles: list[np.ndarray]) -> np.ndarray:
    h = tiles[0].shape[0]
    gap = np.ones((h, _GAP, 3), dtype=np.float32)
    parts: list[np.ndarray] = []
    for i, tile in enumerate(tiles):
        parts += [gap, tile] if i else [tile]
    return np.concatenate(parts, axis=1)


def _vstack(rows: list[np.ndarray]) -> np.ndarray:
    w = rows[0].shape[1]
    gap = np.ones((_GAP, w, 3), dtype=np.float32)
    parts: list[np.ndarray] = []
    for i, row in enumerate(rows):
        parts += [gap, row] if i else [row]
    return np.concatenate(parts, axis=0)
