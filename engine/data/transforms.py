"""Resize policy and tensor conversion, so training, evaluation and inference agree on geometry.

Two policies:

* **Square crops for training / evaluation** (``fit_square`` / ``fit_square_mask``): resize so the
  *shorter* side equals ``size`` (images: antialiased bilinear on float data; masks: nearest
  neighbour, so no invented class ids), then take the centre ``size x size`` crop. The aspect
  ratio is kept; the longer side loses its margins equally on both ends.
* **Whole frames for inference** (``resize_shorter``): resize so the shorter side is ~``size``
  and both sides are rounded to a multiple of ``multiple`` (the UNet's down-sampling factor);
  nothing is cropped, the aspect ratio changes by at most half a multiple. Predictions are
  mapped back with ``mask_to_original`` (nearest) or ``probs_to_original`` (bilinear).

Tensors are (3, H, W) float32 in [-1, 1], the DDPM input range.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from engine.data.images import check_aspect


@dataclass(frozen=True)
class ResizeMeta:
    """Geometry of a ``resize_shorter`` call, needed to map predictions back."""

    original_hw: tuple[int, int]
    resized_hw: tuple[int, int]


def _as_float(img: np.ndarray) -> np.ndarray:
    """Accept uint8 or float images; return float32 HxWxC in [0, 1]."""
    arr = np.asarray(img)
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    else:
        arr = arr.astype(np.float32, copy=False)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3:
        raise ValueError(f"expected an HxW or HxWxC image, got shape {arr.shape}")
    return arr


def resize_float(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Antialiased bilinear resize of a float HxWxC image to ``hw`` (per channel, Pillow 'F')."""
    arr = _as_float(img)
    h, w = int(hw[0]), int(hw[1])
    if arr.shape[:2] == (h, w):
        return arr.copy()
    chans = [
        np.asarray(Image.fromarray(np.ascontiguousarray(arr[..., c])).resize((w, h), Image.Resampling.BILINEAR))
        for c in range(arr.shape[2])
    ]
    return np.stack(chans, axis=2).astype(np.float32)


def resize_mask(mask: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a uint8 HxW mask to ``hw``."""
    m = np.asarray(mask, dtype=np.uint8)
    h, w = int(hw[0]), int(hw[1])
    if m.shape == (h, w):
        return m.copy()
    return np.asarray(Image.fromarray(m).resize((w, h), Image.Resampling.NEAREST))


def _square_geometry(h: int, w: int, size: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Resized (h, w) with shorter side == size, and the (top, left) of the centre crop."""
    if h <= 0 or w <= 0 or size <= 0:
        raise ValueError(f"invalid sizes: image {h}x{w}, target {size}")
    check_aspect(w, h, "image")  # the resized long side is size × aspect: bounded before any allocation
    scale = size / min(h, w)
    rh = size if h <= w else max(size, round(h * scale))
    rw = size if w < h else max(size, round(w * scale))
    if h == w:
        rh = rw = size
    return (rh, rw), ((rh - size) // 2, (rw - size) // 2)


def fit_square(img: np.ndarray, size: int) -> np.ndarray:
    """Shorter side to ``size`` (bilinear, antialiased) then centre crop: float32 size x size x C."""
    arr = _as_float(img)
    (rh, rw), (top, left) = _square_geometry(arr.shape[0], arr.shape[1], size)
    out = resize_float(arr, (rh, rw))[top : top + size, left : left + size]
    return np.ascontiguousarray(np.clip(out, 0.0, 1.0))


def fit_square_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Same geometry as ``fit_square`` for a uint8 mask, with nearest neighbour."""
    m = np.asarray(mask, dtype=np.uint8)
    (rh, rw), (top, left) = _square_geometry(m.shape[0], m.shape[1], size)
    return np.ascontiguousarray(resize_mask(m, (rh, rw))[top : top + size, left : left + size])


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """HxWx3 image (uint8 or float in [0,1]) -> float32 tensor (3, H, W) in [-1, 1]."""
    arr = _as_float(img)
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    t = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
    return t.mul(2.0).sub(1.0).clamp_(-1.0, 1.0)


def from_tensor(t: torch.Tensor) -> np.ndarray:
    """Tensor (3, H, W) or (1, 3, H, W) in [-1, 1] -> uint8 HxWx3."""
    x = t.detach().to("cpu", torch.float32)
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 3:
        raise ValueError(f"expected a (3, H, W) tensor, got shape {tuple(x.shape)}")
    x = ((x.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
    return np.ascontiguousarray(x.permute(1, 2, 0).numpy())


def resize_shorter(img: np.ndarray, size: int, multiple: int = 8) -> tuple[np.ndarray, ResizeMeta]:
    """Resize (no crop) so the shorter side is ``size`` and both sides are multiples of ``multiple``."""
    arr = _as_float(img)
    h, w = arr.shape[:2]
    rh, rw = shorter_side_hw(h, w, size, multiple)
    out = np.clip(resize_float(arr, (rh, rw)), 0.0, 1.0)
    return out, ResizeMeta(original_hw=(h, w), resized_hw=(rh, rw))


def shorter_side_hw(h: int, w: int, size: int, multiple: int = 8) -> tuple[int, int]:
    """`resize_shorter`'s output size: shorter side ``size``, both sides snapped to multiples of ``multiple``."""
    if size <= 0 or multiple <= 0:
        raise ValueError(f"size and multiple must be positive, got {size}, {multiple}")
    check_aspect(w, h, "image")  # the resized long side is size × aspect: bounded before any allocation
    scale = size / min(h, w)

    def snap(v: float) -> int:
        return max(multiple, int(round(v / multiple)) * multiple)

    return snap(h * scale), snap(w * scale)


def model_input_uint8(rgb: np.ndarray, size: int, multiple: int = 8) -> torch.Tensor:
    """`to_tensor(resize_shorter(rgb, size, multiple)[0])` for a uint8 H×W×3 frame, 3× cheaper (video frames).

    The resize is linear, so Pillow's float resize of the 0..255 values scaled afterwards equals resizing the
    0..1 values (to float32 rounding, ≤ 3e-7): no full-size float copy, no per-channel strided copies of it.
    """
    h, w = rgb.shape[:2]
    rh, rw = shorter_side_hw(h, w, size, multiple)
    planes = [np.asarray(Image.fromarray(rgb[..., c].astype(np.float32)).resize((rw, rh), Image.Resampling.BILINEAR))
              if (rh, rw) != (h, w) else rgb[..., c].astype(np.float32) for c in range(3)]
    t = torch.from_numpy(np.stack(planes))
    return t.mul_(1.0 / 255.0).clamp_(0.0, 1.0).mul_(2.0).sub_(1.0)


def mask_to_original(mask_small: np.ndarray, original_hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a predicted uint8 mask back to the input image size."""
    return resize_mask(mask_small, original_hw)


def probs_to_original(
    probs: torch.Tensor | np.ndarray, original_hw: tuple[int, int]
) -> torch.Tensor | np.ndarray:
    """Bilinear resize of (C, h, w) probabilities back to ``original_hw``; same type as the input."""
    t = torch.from_numpy(np.asarray(probs, dtype=np.float32)) if isinstance(probs, np.ndarray) else probs
    if t.ndim != 3:
        raise ValueError(f"expected (C, h, w) probabilities, got shape {tuple(t.shape)}")
    out = F.interpolate(
        t[None].float(), size=(int(original_hw[0]), int(original_hw[1])), mode="bilinear",
        align_corners=False,
    )[0]
    return out.numpy() if isinstance(probs, np.ndarray) else out.to(probs.dtype)
