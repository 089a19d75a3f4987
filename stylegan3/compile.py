"""``torch.compile`` of a generator's synthesis network, as an opt-in view; the eager pure-PyTorch network stays
the default and the reference (``tests/test_compile.py`` checks the two agree, forward and gradient)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class CompiledGenerator:
    """G with ``synthesis`` compiled: every other attribute (``mean_w``, ``img_resolution``, ``state_dict``, ...)
    is G's own, so a cache key of the weights is the same as the eager generator's."""

    def __init__(self, G: nn.Module, synthesis: Any) -> None:
        self.generator = G
        self.synthesis = synthesis

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["generator"], name)

    def __repr__(self) -> str:
        return f"CompiledGenerator({type(self.generator).__name__})"


def compiled_synthesis(G: nn.Module, mode: str | None = None) -> CompiledGenerator:
    """A view of G whose synthesis network is ``torch.compile(G.synthesis, mode=mode)``, compiled once per
    generator and mode and cached on G (each new input shape is compiled on its first call and pays the compile
    time; on the CPU inductor needs a C compiler). ``mode``: None (default), ``reduce-overhead`` (CUDA graphs:
    the shapes are static) or ``max-autotune``."""
    if isinstance(G, CompiledGenerator):
        G = G.generator
    cache = G.__dict__.setdefault("_compiled_synthesis", {})
    if mode not in cache:
        # Static shapes: with symbolic ones (what torch.compile tries once a graph sees a second shape), inductor
        # failed on the layers' shape conditions ("cannot determine truth value of Relational", torch 2.14).
        cache[mode] = torch.compile(G.synthesis, mode=mode, dynamic=False)
    return CompiledGenerator(G, cache[mode])
