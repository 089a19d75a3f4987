"""The inversion objective of the thesis (eq. 3.1-3.5), as small per-image functions.

``L = 0.1 * MSE + 1.5 * LPIPS + 0.05 * ID + 0.002 * DeltaReg`` (weights in ``LossWeights``). Every term is
returned per image ([N]), so a batch of images is a sum of independent problems.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from stylegan3.config import Bounds


@dataclass
class LossWeights:
    """Weights of eq. 3.5 (the thesis's values); 0 switches a term off (and its network is not loaded)."""

    mse: float = 0.1
    lpips: float = 1.5
    id: float = 0.05
    delta_reg: float = 0.002
    LIMITS: ClassVar[dict] = {name: Bounds(0, 1e6) for name in ("mse", "lpips", "id", "delta_reg")}


def mse_loss(image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pixel mean squared error per image (eq. 3.1): [N, C, H, W] x2 in [-1, 1] -> [N], in float32 (also for a
    bf16 image from an autocast generator)."""
    return (image.float() - target.float()).square().flatten(1).mean(dim=1)


def delta_reg(w_plus: torch.Tensor) -> torch.Tensor:
    """Delta regularisation (eq. 3.4): write w = (w_0, w_0 + D_1, ..., w_0 + D_15) and return sum_i ||D_i||^2.

    w_plus: [N, num_ws, w_dim] -> [N]. The thesis squares the norms (its author's code did not).
    """
    deltas = w_plus[:, 1:] - w_plus[:, :1]
    return deltas.square().sum(dim=(1, 2))


def downsample_to(image: torch.Tensor, size: int | None) -> torch.Tensor:
    """Area-average [N, C, H, W] down to size x size (no-op when ``size`` is None or not smaller)."""
    if size is None or image.shape[-1] <= size:
        return image
    return F.adaptive_avg_pool2d(image, (size, size))


class IdentityLoss(nn.Module):
    """ID term (eq. 3.3): ``1 - cos(R(image), R(target))`` per image, R an ``IdentityEncoder`` (ArcFace IR-SE50).

    For a fixed target, compute ``embed(target)`` once and pass it as ``target_embedding`` (``invert`` does, once
    per call). Nothing is cached here: a cache keyed by a tensor's address served a later batch the embedding of
    an earlier one whose freed memory the new target reused.
    """

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def embed(self, target: torch.Tensor) -> torch.Tensor:
        """R(target) without gradients: [N, 3, S, S] in [-1, 1] -> [N, D]."""
        with torch.no_grad():
            return self._encode(target)

    def _encode(self, image: torch.Tensor) -> torch.Tensor:
        # Always float32, also under autocast: near 1 the cosine needs more than bfloat16's 8 bits (1 - cos came
        # out as -0.0078 = -2^-7 in bf16), and the 112 px network is cheap next to the generator.
        with torch.autocast(image.device.type, enabled=False):
            return self.encoder(image.float())

    def forward(
        self, image: torch.Tensor, target: torch.Tensor, target_embedding: torch.Tensor | None = None
    ) -> torch.Tensor:
        """[N, 3, S, S] x [N, 3, S, S] in [-1, 1] (and optionally ``embed(target)``, [N, D]) -> [N] in [0, 2]."""
        if target_embedding is None:
            target_embedding = self.embed(target)
        return 1.0 - F.cosine_similarity(self._encode(image), target_embedding, dim=1)


@dataclass
class LossOptions:
    """The inversion loss as every command configures it: eq. 3.5's weights, where LPIPS is computed, and the
    weights files of the loss networks (held inline by script configs: ``loss.lpips=0 loss_resolution=256``)."""

    loss: LossWeights = field(default_factory=LossWeights)  # eq. 3.5 weights; 0 turns a term off
    loss_resolution: int | None = None  # LPIPS at full resolution (thesis) or downsampled to this size (e.g. 256)
    arcface: str | None = None  # model_ir_se50.pth path (default: the cache, see README)
    alexnet: str | None = None  # torchvision AlexNet weights for LPIPS (default: torch hub cache / our cache)

    def build(self, device: torch.device | str = "cpu") -> InversionLoss:
        """The loss with its networks loaded (:func:`build_inversion_loss`)."""
        return build_inversion_loss(self.loss, self.loss_resolution, self.arcface, self.alexnet, device)


def build_inversion_loss(
    weights: LossWeights,
    loss_resolution: int | None = None,
    arcface_path: str | None = None,
    alexnet_path: str | None = None,
    device: torch.device | str = "cpu",
) -> InversionLoss:
    """Eq. 3.5 with its pretrained networks loaded (only those whose weight is non-zero).

    Missing weight files raise ``stylegan3.WeightsNotFoundError`` naming the file and where to put it.
    """
    lpips = identity = None
    if weights.lpips:
        from .perceptual import LPIPS

        lpips = LPIPS(alexnet_path=alexnet_path, device=device)
    if weights.id:
        from .arcface import IdentityEncoder

        identity = IdentityLoss(IdentityEncoder.from_pretrained(arcface_path, device=device))
    return InversionLoss(weights, lpips=lpips, identity=identity, loss_resolution=loss_resolution)


class InversionLoss(nn.Module):
    """Eq. 3.5 on a batch: ``forward(image, target, w_plus) -> (total [N], {term: [N]})``.

    ``lpips`` and ``identity`` are callables (x, y in [-1, 1]) -> [N], e.g. ``inversion.perceptual.LPIPS`` and
    ``inversion.arcface.IdentityEncoder``-based loss; they are needed only when their weight is non-zero.
    ``loss_resolution``: where LPIPS is computed. None = at the generator's resolution (the thesis); 256 =
    both images area-averaged to 256 first (as PTI does): LPIPS then sees the face at the scale AlexNet's
    receptive fields were trained on, and costs ~16x less at 1024. MSE is always at full resolution, and
    ArcFace always sees its own 112 px crop.
    """

    def __init__(
        self,
        weights: LossWeights,
        lpips: nn.Module | None = None,
        identity: nn.Module | None = None,
        loss_resolution: int | None = None,
    ) -> None:
        super().__init__()
        if weights.lpips and lpips is None:
            raise ValueError("LPIPS weight is non-zero but no LPIPS network was given (set loss.lpips=0 to skip)")
        if weights.id and identity is None:
            raise ValueError("ID weight is non-zero but no identity network was given (set loss.id=0 to skip)")
        self.weights = weights
        self.lpips = lpips if weights.lpips else None
        self.identity = identity if weights.id else None
        self.loss_resolution = loss_resolution

    def target_features(self, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """What the loss needs of a fixed target, computed once without gradients: ``{"id": [N, D]}`` (ArcFace
        embedding) when the ID term is on, ``{"lpips": [...]}`` (the target's AlexNet features) when LPIPS is on
        and can reuse them. Pass it to ``forward`` as ``features``."""
        features: dict = {}
        if self.lpips is not None and hasattr(self.lpips, "features"):
            with torch.no_grad():
                features["lpips"] = self.lpips.features(downsample_to(target, self.loss_resolution))
        if self.identity is not None and hasattr(self.identity, "embed"):
            features["id"] = self.identity.embed(target)
        return features

    def forward(
        self,
        image: torch.Tensor,
        target: torch.Tensor,
        w_plus: torch.Tensor,
        features: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """[N, 3, H, W] x [N, 3, H, W] in [-1, 1], [N, num_ws, w_dim] (and ``target_features(target)``) ->
        (total [N], {term: [N]})."""
        features = features or {}
        terms: dict[str, torch.Tensor] = {"mse": mse_loss(image, target)}
        if self.lpips is not None:
            size = self.loss_resolution
            small = downsample_to(image, size)
            if "lpips" in features:  # the target's features of this call (target_features)
                terms["lpips"] = self.lpips.distance(self.lpips.features(small), features["lpips"]).reshape(-1)
            else:
                terms["lpips"] = self.lpips(small, downsample_to(target, size)).reshape(-1)
        if self.identity is not None:
            if "id" in features:
                terms["id"] = self.identity(image, target, features["id"]).reshape(-1)
            else:
                terms["id"] = self.identity(image, target).reshape(-1)
        terms["delta_reg"] = delta_reg(w_plus)
        terms = {name: value.float() for name, value in terms.items()}  # float32 whatever the networks ran in
        total = sum(getattr(self.weights, name) * value for name, value in terms.items())
        return total, terms
