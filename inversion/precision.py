"""Numeric precision of an inversion: which autocast dtype the networks run in, and the loss scaler it needs.

``fp32``: everything float32 (the reference). ``bf16``: the generator and the loss networks under
``torch.autocast`` in bfloat16 (float32's exponent range: no gradient underflows, no scaling). ``fp16``: the same
in float16 plus dynamic loss scaling: at 1024 px the per-pixel gradient of a mean loss is about 1e-8, below
float16's smallest subnormal (6e-8), so unscaled gradients flush to zero. In every mode the latents, Adam's
state and the loss terms stay float32; only the networks' matrix products and convolutions drop precision.
"""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str) -> None:
    """Raise ``ValueError`` naming the valid values unless ``precision`` is one of ``PRECISIONS``."""
    if precision not in _DTYPES:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of ``precision`` (None for fp32)."""
    check_precision(precision)
    return _DTYPES[precision]


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """A context that runs the networks in ``precision`` on ``device`` (a no-op for fp32)."""
    dtype = autocast_dtype(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def loss_scaler(precision: str, device: torch.device, init_scale: float = 2.0**16) -> torch.amp.GradScaler:
    """Dynamic loss scaling for fp16 (disabled, a pass-through, otherwise): the loss is multiplied by the scale
    before ``backward``, the gradients are divided by it before Adam's step, a step whose gradients hold an inf
    or NaN is skipped (latents and Adam's state unchanged) and the scale halved; after 2000 good steps it
    doubles."""
    return torch.amp.GradScaler(device.type, init_scale=init_scale, enabled=autocast_dtype(precision) == torch.float16)
