"""Layers shared by the StyleGAN2 and StyleGAN3 generators: fully connected layer and mapping."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from .config import Bounds, ConfigError, check_settings
from .framing import FFHQ, Framing
from .ops import bias_act, normalize_2nd_moment

IMPLS = ("fast", "reference", "triton")  # the ops implementations a generator can run (GeneratorMixin.set_impl)


class FullyConnectedLayer(nn.Module):
    """Linear layer with equalized learning rate: weights stored as N(0, 1) / lr_multiplier."""

    def __init__(
        self,
        in_features: int,  # input width
        out_features: int,  # output width
        activation: str = "linear",  # "linear" or "lrelu"
        bias: bool = True,  # learn a bias
        lr_multiplier: float = 1.0,  # learning-rate multiplier (scales the stored values)
        weight_init: float = 1.0,  # std of the initial weight
        bias_init: float | list[float] = 0.0,  # initial bias, scalar or per output
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) * (weight_init / lr_multiplier))
        init = np.broadcast_to(np.asarray(bias_init, dtype=np.float32), [out_features])
        self.bias = nn.Parameter(torch.from_numpy(init / lr_multiplier)) if bias else None
        self.weight_gain = lr_multiplier / np.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, in_features] -> [N, out_features]."""
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        x = x.matmul(w.t())
        return bias_act(x, b, act=self.activation, gain=np.sqrt(2) if self.activation == "lrelu" else 1.0)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"


class MappingNetwork(nn.Module):
    """z (and optional class label c) -> w, broadcast to [N, num_ws, w_dim], with truncation."""

    def __init__(
        self,
        z_dim: int,  # input latent width, 0 = none
        c_dim: int,  # conditioning label width, 0 = none
        w_dim: int,  # intermediate latent width
        num_ws: int,  # number of w vectors to broadcast to
        num_layers: int = 2,  # number of fully connected layers
        embed_features: int | None = None,  # label embedding width (default w_dim)
        layer_features: int | None = None,  # hidden width (default w_dim)
        activation: str = "lrelu",  # activation of the layers
        lr_multiplier: float = 0.01,  # learning-rate multiplier of the layers
        w_avg_beta: float = 0.998,  # decay of the tracked mean of w during training
    ) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        embed_features = (w_dim if embed_features is None else embed_features) if c_dim > 0 else 0
        layer_features = w_dim if layer_features is None else layer_features
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        for idx in range(num_layers):
            layer = FullyConnectedLayer(features[idx], features[idx + 1], activation, lr_multiplier=lr_multiplier)
            setattr(self, f"fc{idx}", layer)
        self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        update_emas: bool = False,
    ) -> torch.Tensor:
        """z: [N, z_dim], c: [N, c_dim] or None -> ws: [N, num_ws, w_dim] float32.

        Truncation moves the first ``truncation_cutoff`` rows (all when None) towards ``w_avg``.
        """
        parts = []
        if self.z_dim > 0:
            parts.append(normalize_2nd_moment(z.to(torch.float32)))
        if self.c_dim > 0:
            parts.append(normalize_2nd_moment(self.embed(c.to(torch.float32))))
        x = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        if update_emas:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            if truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                x[:, :truncation_cutoff] = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
        return x

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}"


def _integer(lo: int, hi: int) -> Bounds:
    return Bounds(lo, hi, integer=True)


def mapping_mean(G: nn.Module, n: int = 10000, seed: int = 123, batch_size: int = 1000) -> torch.Tensor:
    """The mean W+ of ``G.mapping`` over ``n`` z from ``np.random.RandomState(seed)`` (drawn on the CPU), no
    truncation: [num_ws, w_dim] float32 on the mapping's device, cached on ``G`` until the mapping's weights or
    buffers change. Every generator's ``mean_w``."""
    params = [*G.mapping.parameters(), *G.mapping.buffers()]  # buffers: a DCGAN's BatchNorm statistics
    key = (n, seed, tuple((p.data_ptr(), p._version) for p in params))
    cache = G.__dict__.setdefault("_mean_w_cache", {})
    if key not in cache:
        training = G.mapping.training
        G.mapping.eval()  # BatchNorm (DCGAN) with its running statistics: train mode would also change them
        device = G.mapping.w_avg.device
        z = np.random.RandomState(seed).randn(n, G.z_dim).astype(np.float32)
        total = torch.zeros([G.num_ws, G.w_dim], dtype=torch.float64, device=device)
        with torch.no_grad():
            for start in range(0, n, batch_size):
                zb = torch.from_numpy(z[start : start + batch_size]).to(device)
                total += G.mapping(zb, None).to(torch.float64).sum(dim=0)
        G.mapping.train(training)
        cache.clear()
        cache[key] = (total / n).to(torch.float32)
    return cache[key].clone()


class GeneratorMixin:
    """What the StyleGAN2 and StyleGAN3 generators share besides their synthesis networks."""

    framing: Framing = FFHQ  # NVIDIA's FFHQ networks draw faces in FFHQ's crop
    delta_reg_applies = True  # W+ rows are per-layer styles: the thesis's delta-regulariser keeps them near one w

    # Limits of the constructor arguments, checked before anything is built (``check_init_kwargs``, called by
    # ``stylegan3.io.build``): NVIDIA's released networks lie well inside them; a weights file or generator.json
    # outside them is refused in one line instead of allocating, hanging or failing deep in a constructor.
    # Subclasses add their synthesis network's in SYNTHESIS_LIMITS (dotted keys reach into mapping_kwargs).
    INIT_LIMITS: ClassVar[dict[str, Bounds | tuple[str, ...]]] = {
        "z_dim": _integer(1, 4096),
        "c_dim": _integer(0, 16384),
        "w_dim": _integer(1, 4096),
        "img_resolution": _integer(4, 4096),
        "img_channels": _integer(1, 4),
        "mapping_kwargs.num_layers": _integer(1, 32),
        "mapping_kwargs.embed_features": _integer(1, 4096),
        "mapping_kwargs.layer_features": _integer(1, 4096),
        "mapping_kwargs.activation": ("lrelu", "linear", "relu"),
    }
    SYNTHESIS_LIMITS: ClassVar[dict[str, Bounds | tuple[str, ...]]] = {}
    MAX_PARAMETERS = 1 << 28  # an upper bound of the weights, estimated before building (1 GiB of float32)
    MAX_SETTING_ITEMS = 64  # values in one list or dict of settings (resample_filter: 4)

    @classmethod
    def check_init_kwargs(cls, kwargs: dict[str, Any]) -> None:
        """ConfigError (a ValueError) naming the first argument that is not a finite number where one is due, lies
        outside the limits, or makes the network larger than ``MAX_PARAMETERS``; nothing is built."""
        check_settings(kwargs, {**GeneratorMixin.INIT_LIMITS, **cls.SYNTHESIS_LIMITS}, cls.MAX_SETTING_ITEMS)
        missing = [k for k in ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels") if kwargs.get(k) is None]
        if missing:
            raise ConfigError(f"missing {', '.join(missing)}")
        estimate = cls.parameter_bound(kwargs)
        if estimate > cls.MAX_PARAMETERS:
            raise ConfigError(
                f"these settings make a network of up to {estimate:,} parameters (the limit is {cls.MAX_PARAMETERS:,})"
            )

    @classmethod
    def parameter_bound(cls, kwargs: dict[str, Any]) -> int:
        """An upper bound of the mapping network's parameter count (``check_init_kwargs``: values within limits);
        subclasses add their synthesis network's."""
        mapping = kwargs.get("mapping_kwargs") or {}
        w_dim, z_dim, c_dim = (int(kwargs.get(k) or 0) for k in ("w_dim", "z_dim", "c_dim"))
        embed = int(mapping.get("embed_features") or w_dim)
        width = max(z_dim + embed, int(mapping.get("layer_features") or w_dim), w_dim)
        return int(mapping.get("num_layers") or 8) * width * (width + 1) + c_dim * embed

    def _store_init_args(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        mapping_kwargs: dict | None,
        synthesis_kwargs: dict,
    ) -> None:
        self.init_kwargs = {  # what rebuilds this network: saved with its weights
            "z_dim": z_dim,
            "c_dim": c_dim,
            "w_dim": w_dim,
            "img_resolution": img_resolution,
            "img_channels": img_channels,
            "mapping_kwargs": dict(mapping_kwargs or {}),
            **synthesis_kwargs,
        }
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        update_emas: bool = False,
        **synthesis_kwargs,
    ) -> torch.Tensor:
        """z: [N, z_dim] -> image [N, img_channels, res, res]."""
        ws = self.mapping(
            z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, update_emas=update_emas
        )
        return self.synthesis(ws, update_emas=update_emas, **synthesis_kwargs)

    def mean_w(self, n: int = 10000, seed: int = 123, batch_size: int = 1000) -> torch.Tensor:
        """Mean of ``mapping(z)`` over ``n`` z from ``np.random.RandomState(seed)``, no truncation.

        Returns [num_ws, w_dim] float32 on the generator's device (all rows equal for StyleGAN). The z are drawn
        on the CPU so that a seed means the same latent on every device. Cached per network until
        its mapping weights change.
        """
        return mapping_mean(self, n, seed, batch_size)

    def set_impl(self, impl: str) -> None:
        """Select the ops of every layer: "fast" (default), "reference" or "triton".

        "triton" runs the fused Triton kernels of :mod:`stylegan3.triton_ops` where a layer has one (the filtered
        leaky ReLU of StyleGAN3); the other layers keep the fast path. It needs CUDA, or the CPU under the Triton
        interpreter (``TRITON_INTERPRET=1``); elsewhere it is a one-line RuntimeError naming why.
        """
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {', '.join(IMPLS)}, not {impl!r}")
        if impl == "triton":
            from . import triton_ops

            devices = {p.device for p in self.parameters()} or {torch.device("cpu")}
            for device in devices:
                triton_ops.check_available(device)
        for module in self.modules():
            if hasattr(module, "impl"):
                module.impl = impl

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each synthesis layer (block) in backward instead of storing its activations."""
        self.synthesis.gradient_checkpointing = enabled
