"""Inversion targets as tensors: square resizing and conversion to [-1, 1]. (Reading and FFHQ-aligning a photo is
``reenactment.faces.align.load_target``: alignment needs the landmark detector, which lives above this package.)"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 RGB -> [1, 3, H, W] float32 in [-1, 1]."""
    return torch.tensor(image).permute(2, 0, 1)[None].float() / 127.5 - 1.0  # a copy: inputs may be read-only


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize an HxWx3 uint8 image to size x size (Lanczos); refuses non-square input, which would distort."""
    h, w = image.shape[:2]
    if h != w:
        raise ValueError(f"an unaligned target must be square, got {w}x{h}: align it (drop --no-align) or crop it")
    if h == size:
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.LANCZOS))
