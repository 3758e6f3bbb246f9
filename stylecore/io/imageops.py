"""Image I/O, NumPy <-> torch conversion, resizing and colour preservation.

Images in NumPy are ``float32`` ``H x W x 3`` RGB in ``[0, 1]``; in torch ``1 x 3 x H x W``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

from stylecore.errors import InputError

# OpenCV reads OpenEXR only when this is set before its first EXR read (it is read then,
# not at import); render output from Blender is often EXR. setdefault so a user's "0" wins.
os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")

# Temp files are hidden (leading ".") and end in ".tmp<ext>", so frame scans that skip
# hidden files or match ``frame_NNNNNN.png`` exactly never pick up a half-written file.
TEMP_MARK = ".tmp"

# Gatys et al. (2016) use YIQ for luminance-only transfer: a linear, exactly invertible
# transform whose first row is the luma of NTSC (BT.601) weights.
_RGB_TO_YIQ = np.array(
    [
        [0.299, 0.587, 0.114],
        [0.595716, -0.274453, -0.321263],
        [0.211456, -0.522591, 0.311135],
    ],
    dtype=np.float64,
)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as ``H x W x 3`` float32 RGB in ``[0, 1]``.

    Grey images are repeated to 3 channels, alpha is dropped (straight-alpha PNGs keep
    their colours), 16-bit images keep their precision, and float images (EXR, HDR),
    which hold scene-linear light, are encoded to sRGB and clipped.
    """
    return read_image(path)[0]


def read_image(path: str | Path) -> tuple[np.ndarray, bool]:
    """``load_image``'s float image, and whether the file holds 8-bit samples (16-bit and
    float images hold more), from one decode."""
    path = Path(path)
    raw = _decode(path)
    return _to_float_rgb(raw, path), raw.dtype == np.uint8


def _decode(path: Path) -> np.ndarray:
    """The file's pixels as OpenCV decodes them: any depth, BGR(A) or grey."""
    if not path.is_file():
        raise InputError(f"image {path} does not exist; check the path")
    # imdecode on the raw bytes rather than imread: imread fails on non-ASCII paths on Windows.
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise InputError(f"cannot read image {path}: {exc.strerror}; check its permissions") from None
    raw = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if raw is None:
        raise InputError(
            f"cannot decode image {path}; is it a PNG, JPEG, TIFF, BMP, WebP or EXR file?"
        )
    return raw


def read_pixels(path: str | Path) -> np.ndarray:
    """The file as ``H x W x 3`` uint8 RGB: an 8-bit file's own pixels, without a pass
    through floats; a deeper file's rounded as ``to_pixels`` rounds ``load_image``'s."""
    path = Path(path)
    raw = _decode(path)
    if raw.dtype != np.uint8:
        return to_pixels(_to_float_rgb(raw, path))
    return np.ascontiguousarray(_to_rgb(raw))


def _to_rgb(raw: np.ndarray) -> np.ndarray:
    """OpenCV's BGR(A)/grey array -> an RGB view or copy of the same depth (alpha dropped)."""
    if raw.ndim == 2:
        raw = raw[:, :, None]
    channels = raw.shape[2]
    if channels == 1:
        return np.repeat(raw, 3, axis=2)
    if channels == 2:  # grey + alpha
        return np.repeat(raw[:, :, :1], 3, axis=2)
    return raw[:, :, 2::-1]  # BGR(A) -> RGB


def _to_float_rgb(raw: np.ndarray, path: Path) -> np.ndarray:
    """OpenCV's BGR(A)/grey array of any depth -> float32 RGB in [0, 1]."""
    raw = _to_rgb(raw)
    if raw.dtype == np.uint8:
        img = pixels_to_float(raw)
    elif raw.dtype == np.uint16:
        img = raw.astype(np.float32) / 65535.0
    elif raw.dtype in (np.float32, np.float64, np.float16):
        img = _linear_to_srgb(np.nan_to_num(raw.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0))
    else:
        raise InputError(f"image {path} has unsupported pixel type {raw.dtype}; save it as 8- or 16-bit PNG")
    return np.ascontiguousarray(np.clip(img, 0.0, 1.0), dtype=np.float32)


def _linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """sRGB transfer function (IEC 61966-2-1) for scene-linear float images."""
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1.0 / 2.4) - 0.055).astype(np.float32)


def temp_path_for(path: Path) -> Path:
    """A unique hidden temp file next to ``path`` (same folder, so ``os.replace`` is atomic)."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f"{TEMP_MARK}{path.suffix}")
    os.close(fd)
    return Path(name)


def is_temp_name(name: str) -> bool:
    """True for names made by :func:`temp_path_for` (left behind only by a killed run)."""
    stem = name.rsplit(".", 1)[0]
    return name.startswith(".") and (name.endswith(TEMP_MARK) or stem.endswith(TEMP_MARK))


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is either absent, the old file, or whole."""
    path = Path(path)
    tmp = temp_path_for(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            # fsync so a power loss right after the rename cannot leave an empty frame.
            os.fsync(f.fileno())
        # The temp file is created private; the result gets the usual permissions so
        # other users (a render farm, a colleague) can read the frames.
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def pixels_to_float(pixels: np.ndarray) -> np.ndarray:
    """8-bit pixels -> float32 in [0, 1], the inverse of ``to_pixels`` (exact: ``to_pixels``
    gives the same pixels back). One pass: the division reads uint8 and writes float32."""
    return np.divide(pixels, np.float32(255.0), dtype=np.float32)


def to_pixels(img: np.ndarray) -> np.ndarray:
    """An RGB ``[0, 1]`` float image as the 8-bit pixels ``save_image`` writes (uint8 as is)."""
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 image, got shape {img.shape}")
    if img.dtype == np.uint8:
        return img
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_image(path: str | Path, img: np.ndarray) -> None:
    """Write an RGB ``[0, 1]`` image as 8-bit (PNG, or the format the suffix names), atomically."""
    path = Path(path)
    pixels = to_pixels(img)
    ok, buf = cv2.imencode(path.suffix or ".png", np.ascontiguousarray(pixels[:, :, ::-1]))
    if not ok:
        raise InputError(f"cannot encode {path}: OpenCV does not write {path.suffix!r} files; use .png")
    atomic_write_bytes(path, buf.tobytes())


def to_tensor(img: np.ndarray, device: torch.device | None = None) -> torch.Tensor:
    """``H x W x 3`` float RGB -> ``1 x 3 x H x W`` float32 tensor (a copy; the input is untouched)."""
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"to_tensor expects H x W x 3, got shape {img.shape}")
    t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).permute(2, 0, 1).unsqueeze(0)
    return t.to(device) if device is not None else t.clone()


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """First image of an ``N x 3 x H x W`` (or ``3 x H x W``) tensor -> ``H x W x 3`` float32 in [0, 1]."""
    if t.dim() == 4:
        t = t[0]
    if t.dim() != 3 or t.shape[0] != 3:
        raise ValueError(f"to_numpy expects N x 3 x H x W or 3 x H x W, got shape {tuple(t.shape)}")
    return np.ascontiguousarray(t.detach().float().clamp(0.0, 1.0).permute(1, 2, 0).cpu().numpy())


def scaled_size(width: int, height: int, long_side: int | None, multiple: int = 1) -> tuple[int, int]:
    """``(width, height)`` scaled so the long side is ``long_side`` (aspect kept).

    ``None`` keeps the size. Both sides are rounded to the nearest ``multiple`` (at least
    one ``multiple``), as networks with strided layers need.
    """
    if width < 1 or height < 1:
        raise InputError(f"image size {width}x{height} is empty")
    if multiple < 1:
        raise ValueError("multiple must be >= 1")
    if long_side is not None and long_side < 1:
        raise InputError(f"`size` {long_side} must be a positive number of pixels")
    scale = 1.0 if long_side is None else long_side / max(width, height)

    def fit(side: int) -> int:
        return max(multiple, round(side * scale / multiple) * multiple)

    return fit(width), fit(height)


def resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to ``size = (width, height)``: area averaging when shrinking, cubic when enlarging."""
    width, height = size
    h, w = img.shape[:2]
    if (w, h) == (width, height):
        return img
    # INTER_AREA avoids aliasing when shrinking; cubic is sharper when enlarging but
    # overshoots, hence the clip.
    interp = cv2.INTER_AREA if width <= w and height <= h else cv2.INTER_CUBIC
    out = cv2.resize(img, (width, height), interpolation=interp)
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)


def luminance_transfer(stylized: np.ndarray, content: np.ndarray) -> np.ndarray:
    """Stylized luminance with the content's chroma (Gatys et al. 2016, YIQ).

    As in the paper's luminance-only transfer, the stylized luminance is first matched to
    the content's mean and standard deviation: a dark painting would otherwise darken a
    light content, and its own chroma on that darker luminance reads as another colour
    (a pink sky turned maroon). Departs from the paper in matching after stylization
    (the paper matches the style image before), which keeps one optimisation for all
    colour modes. ``content`` is resized to the stylized image's size when they differ.
    """
    h, w = stylized.shape[:2]
    content = resize(content, (w, h))
    y = stylized.astype(np.float64) @ _RGB_TO_YIQ[0]
    yiq = content.astype(np.float64) @ _RGB_TO_YIQ.T
    y_content = yiq[..., 0]
    yiq[..., 0] = (y - y.mean()) * (y_content.std() / max(float(y.std()), 1e-6)) + y_content.mean()
    return np.clip(yiq @ _YIQ_TO_RGB.T, 0.0, 1.0).astype(np.float32)


def match_color(style: np.ndarray, content: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Recolour the style image so its RGB mean and covariance equal the content's.

    Linear transfer ``x' = A (x - mu_s) + mu_c`` with ``A = C_c^(1/2) C_s^(-1/2)``
    (symmetric square roots; Gatys et al. 2016, "colour histogram matching"). ``eps``
    regularises near-singular covariances (flat or grey images). Clipped to [0, 1].
    """
    s = style.reshape(-1, 3).astype(np.float64)
    c = content.reshape(-1, 3).astype(np.float64)
    mu_s, mu_c = s.mean(axis=0), c.mean(axis=0)
    cov_s = np.cov(s, rowvar=False) + eps * np.eye(3)
    cov_c = np.cov(c, rowvar=False) + eps * np.eye(3)
    a = _sym_power(cov_c, 0.5) @ _sym_power(cov_s, -0.5)
    out = (s - mu_s) @ a.T + mu_c
    return np.clip(out, 0.0, 1.0).reshape(style.shape).astype(np.float32)


def _sym_power(m: np.ndarray, p: float) -> np.ndarray:
    """``m ** p`` for a symmetric positive-definite matrix, via its eigen decomposition."""
    vals, vecs = np.linalg.eigh(m)
    vals = np.maximum(vals, 1e-12)
    return (vecs * vals**p) @ vecs.T
