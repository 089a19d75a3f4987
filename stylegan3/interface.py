"""The generator interface: everything inversion, the encoder, tuning, the mapper, the pipeline, the page and
evaluation may use of a generator. ``stylegan3.load`` returns one of its three implementations (StyleGAN3,
StyleGAN2, DCGAN: ``stylegan3.io.ARCHITECTURES``); code outside ``stylegan3/`` uses only what is listed here and
never asks which kind it holds. ``docs/architecture.md`` has the same list in prose.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from .framing import Framing


@runtime_checkable
class FaceGenerator(Protocol):
    """A face generator as the rest of the project sees it (an ``nn.Module``; eval mode after ``load``)."""

    architecture: str  # the ARCHITECTURES key that rebuilds it (saved in generator.json); for messages only
    init_kwargs: dict  # what rebuilds it with ``stylegan3.build(architecture, init_kwargs)``; part of the fingerprint
    z_dim: int  # width of z, the random input of ``mapping``
    c_dim: int  # class-label width (0 for every face generator here)
    w_dim: int  # width of one W+ row
    num_ws: int  # rows of W+: latents are [N, num_ws, w_dim] float32 everywhere (inversion, encoder, mapper)
    img_resolution: int  # output side in pixels
    img_channels: int  # 3
    framing: Framing  # where it draws faces: the face front end aligns photos and videos with this crop
    delta_reg_applies: bool  # whether the thesis's delta-regulariser (W+ rows near one w) means anything for its W+
    mapping: nn.Module  # mapping(z [N, z_dim], c=None, truncation_psi=1, truncation_cutoff=None) -> W+;
    #                     truncation moves rows towards ``mapping.w_avg`` ([w_dim] or [num_ws, w_dim])
    synthesis: nn.Module  # synthesis(ws [N, num_ws, w_dim], noise_mode="const", force_fp32=True) -> [N, 3, res, res]
    #                       in [-1, 1]; noise_mode: random | const | none (no effect where there is no noise)

    def mean_w(self, n: int = 10000, seed: int = 123, batch_size: int = 1000) -> torch.Tensor:
        """Mean W+ of ``n`` seeded z: [num_ws, w_dim] float32 (the thesis's inversion start)."""
        ...

    def set_impl(self, impl: str) -> None:
        """Choose the ops (fast, reference, triton); a generator without such layers accepts each and is unchanged."""
        ...

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute activations in backward where the generator supports it (else nothing happens)."""
        ...

    def state_dict(self, *args: Any, **kwargs: Any) -> dict:  # with init_kwargs: the fingerprint, our folder format
        ...


def check_generator(G: object) -> FaceGenerator:
    """``G`` if it has every member of ``FaceGenerator`` with the right kind of value; a TypeError naming the first
    missing or wrong one otherwise (a new implementation's test calls this)."""
    if not isinstance(G, nn.Module):
        raise TypeError(f"a generator is an nn.Module, got {type(G).__name__}")
    for name, kind in (
        ("architecture", str),
        ("init_kwargs", dict),
        ("z_dim", int),
        ("c_dim", int),
        ("w_dim", int),
        ("num_ws", int),
        ("img_resolution", int),
        ("img_channels", int),
        ("framing", Framing),
        ("delta_reg_applies", bool),
        ("mapping", nn.Module),
        ("synthesis", nn.Module),
    ):
        if not isinstance(getattr(G, name, None), kind):
            raise TypeError(f"{type(G).__name__}.{name} must be a {kind.__name__}")
    for name in ("mean_w", "set_impl", "set_gradient_checkpointing"):
        if not callable(getattr(G, name, None)):
            raise TypeError(f"{type(G).__name__}.{name} must be a method")
    if not hasattr(G.mapping, "w_avg"):
        raise TypeError(f"{type(G).__name__}.mapping must have w_avg (truncation's centre)")
    return G  # type: ignore[return-value]
