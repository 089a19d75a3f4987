"""Turning photos into inversion targets: read, FFHQ-align (or not), resize, and convert to [-1, 1] tensors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from stylegan3.images import read_image


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


def load_target(
    path: str | Path,
    resolution: int,
    align: bool = True,
    backend: str = "dlib",
    face: str | int = "largest",
    report: Callable[[str], None] | None = None,
) -> np.ndarray:
    """A photo as a resolution x resolution uint8 target: FFHQ-aligned from its landmarks when ``align``
    (``NoFaceError`` if there is no face), else only resized (it must then be square and already aligned).

    ``face``: which face of several ("largest", or an index, 0 = the largest); ``report`` gets the one-line note
    saying which face was taken of how many, when there are several."""
    if not align:
        return resize_square(read_image(path), resolution)
    from reenactment.align import align_face
    from reenactment.landmarks import LandmarkDetector

    image, points, note = LandmarkDetector(backend).read_face(path, face)
    if note and report:
        report(note)
    aligned, _ = align_face(image, points, size=resolution)
    return aligned
