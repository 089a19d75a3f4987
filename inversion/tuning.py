"""Pivotal tuning (PTI; Roich et al. 2021, "Pivotal Tuning for Latent-based Editing of Real Images"): after the W+
inversion, fine-tune a copy of the generator so that the found latent, the pivot ``w_p``, renders the photo.

The pivot stays fixed; Adam moves the synthesis network's weights (the mapping network is left as it is, so the
tuned generator's mean w and seeds' latents are the original's). The reconstruction loss is the inversion's own
(``InversionLoss``: MSE + LPIPS, the ID term where enabled; delta-reg of the fixed pivot is a constant). PTI's
locality regularisation (eq. 5-6 of the paper) keeps the edit local: each step draws ``z``, maps it
(``w_z = mapping(z)``, truncation 0.5 as the official code does), moves from the pivot towards it by a fixed
distance ``alpha`` (``w_r = w_p + alpha (w_z - w_p) / ||w_z - w_p||``, the norm over the whole [num_ws, w_dim]
latent) and asks the tuned generator to render ``w_r`` as the original does: ``L_R = MSE + LPIPS`` between the two
images (LPIPS only where the loss has its network), weighted by ``locality`` (lambda_R). The original generator
object is never changed (tested bit for bit): tuning works on ``copy.deepcopy(G)``.

Defaults (``TuningOptions``) are the paper's and its official code's: 350 steps, Adam lr 3e-4 (torch's betas),
lambda_R = 0.1, alpha = 30, one locality sample per step, every step (the code's
``locality_regularization_interval = 1``; the paper gives no interval). The official code ships with locality off
(``use_locality_regularization = False``); here it is on by default, as in the paper's experiments.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from stylegan3.sampling import synthesize

from .losses import InversionLoss, downsample_to, mse_loss
from .precision import autocast, check_precision, loss_scaler

TUNE_MODES = ("none", "pti")
LOCALITY_TRUNCATION = 0.5  # PTI's official code maps the locality samples' z with truncation psi 0.5


@dataclass
class TuningOptions:
    """Pivotal tuning of the generator for one photo (PTI's defaults); ``tune=none`` leaves the generator as is."""

    tune: str = "none"  # none, or pti: after the W+ inversion, fine-tune a copy of the generator on the photo
    tune_steps: int = 350  # Adam steps on the synthesis weights (PTI: 350)
    tune_lr: float = 3e-4  # Adam's learning rate (PTI: 3e-4)
    tune_locality: float = 0.1  # weight of the locality regulariser (PTI's lambda_R: 0.1); 0 turns it off
    tune_alpha: float = 30.0  # locality samples' distance from the pivot in W+ (PTI: 30)

    @property
    def enabled(self) -> bool:
        return self.tune == "pti"

    def check(self) -> None:
        """ValueError naming the first bad setting (before any work)."""
        if self.tune not in TUNE_MODES:
            raise ValueError(f"tune must be one of {', '.join(TUNE_MODES)}, got {self.tune!r}")
        if self.tune_steps < 0:
            raise ValueError(f"tune_steps must be 0 or more, got {self.tune_steps}")
        for name in ("tune_lr", "tune_locality", "tune_alpha"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number, 0 or more, got {value}")
        if self.tune_lr == 0 and self.enabled and self.tune_steps:
            raise ValueError("tune_lr must be more than 0 (tune=none skips tuning)")


@dataclass
class TuningResult:
    """``generator``: the tuned copy (eval mode, no grads, on the original's device); ``losses``: the inversion
    loss's per-term values of ``generator(w_p)`` (floats, ``total`` included); ``history``: (step, {term: float}),
    ``locality`` among them where it is on; ``seconds``: the tuning's wall time."""

    generator: nn.Module
    losses: dict[str, float]
    history: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0


def locality_latents(
    G: nn.Module, w_pivot: torch.Tensor, z: torch.Tensor, alpha: float, truncation_psi: float = LOCALITY_TRUNCATION
) -> torch.Tensor:
    """PTI's locality samples: ``w_p + alpha (w_z - w_p) / ||w_z - w_p||`` with ``w_z = mapping(z)`` (truncated),
    each at distance ``alpha`` from the pivot. w_pivot: [num_ws, w_dim] or [1, num_ws, w_dim]; z: [N, z_dim] ->
    [N, num_ws, w_dim]."""
    with torch.no_grad():
        w_z = G.mapping(z.to(w_pivot.device), None, truncation_psi=truncation_psi)
        pivot = w_pivot.reshape(1, G.num_ws, G.w_dim)
        direction = w_z - pivot
        norm = direction.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None]
        return pivot + alpha * direction / norm


def locality_loss(
    image: torch.Tensor, reference: torch.Tensor, lpips: nn.Module | None, lpips_resolution: int | None = None
) -> torch.Tensor:
    """PTI's L_R per image: MSE + LPIPS (where ``lpips`` is given; at ``lpips_resolution`` as the inversion loss's
    ``loss_resolution``) between the tuned and the original generator's renders of the same latents,
    [N, 3, H, W] x2 in [-1, 1] -> [N]."""
    loss = mse_loss(image, reference)
    if lpips is not None:
        small, small_reference = downsample_to(image, lpips_resolution), downsample_to(reference, lpips_resolution)
        loss = loss + lpips(small, small_reference).reshape(-1).float()
    return loss


def locality_z(z_dim: int, steps: int, seed: int = 0) -> torch.Tensor:
    """The locality samples' z, one per step, from ``np.random.RandomState(seed)`` (the same on any device):
    [steps, z_dim] float32."""
    return torch.from_numpy(np.random.RandomState(seed).randn(steps, z_dim).astype(np.float32))


def tune_generator(
    G: nn.Module,
    target: torch.Tensor,
    w_pivot: torch.Tensor,
    loss_fn: InversionLoss,
    options: TuningOptions | None = None,
    precision: str = "fp32",
    seed: int = 0,
    callback: Callable[[int, dict[str, torch.Tensor]], None] | None = None,
    log_every: int = 10,
) -> TuningResult:
    """Tune a copy of ``G`` so that ``w_pivot`` ([num_ws, w_dim] or [1, num_ws, w_dim]) renders ``target``
    ([1, 3, res, res] float32 in [-1, 1]); ``G`` itself is not changed. ``options.tune`` is not consulted: this
    is the tuning itself (``options.tune_steps`` steps, ``tune_steps=0`` gives an untuned copy).

    ``precision``: the generator and loss networks under autocast (bf16, fp16 with loss scaling); the weights and
    Adam stay float32. ``seed``: the locality samples' z (``locality_z``). ``callback(step, terms)`` after each
    step with the step's loss terms (on the device); ``history`` every ``log_every`` steps (0: none).
    """
    opts = options or TuningOptions()
    check_precision(precision)
    if target.ndim != 4 or target.shape[0] != 1:
        raise ValueError(f"tuning takes one target [1, 3, H, W], got {tuple(target.shape)}")
    device = target.device
    start = time.perf_counter()
    w = w_pivot.detach().to(device=device, dtype=torch.float32).reshape(1, G.num_ws, G.w_dim)
    tuned = copy.deepcopy(G).eval().requires_grad_(False)
    params = list(tuned.synthesis.parameters())
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=opts.tune_lr)
    scaler = loss_scaler(precision, device)
    with autocast(precision, device):
        features = loss_fn.target_features(target)
    locality = opts.tune_locality > 0 and opts.tune_steps > 0
    lpips = loss_fn.lpips
    zs = locality_z(G.z_dim, opts.tune_steps, seed) if locality else None
    history: list[tuple[int, dict[str, float]]] = []
    for step in range(opts.tune_steps):
        optimizer.zero_grad(set_to_none=True)
        with autocast(precision, device):
            total, terms = loss_fn(synthesize(tuned, w), target, w, features)
            loss = total.float().sum()
            if locality:
                w_r = locality_latents(G, w, zs[step : step + 1], opts.tune_alpha)
                with torch.no_grad():
                    reference = synthesize(G, w_r)
                reg = locality_loss(synthesize(tuned, w_r), reference, lpips, loss_fn.loss_resolution)
                terms = {**terms, "locality": reg.detach()}
                loss = loss + opts.tune_locality * reg.float().sum()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        terms = {k: v.detach().float() for k, v in terms.items()}
        if callback is not None:
            callback(step, terms)
        if log_every > 0 and (step % log_every == 0 or step == opts.tune_steps - 1):
            history.append((step, {k: float(v.sum()) for k, v in terms.items()}))
    tuned.requires_grad_(False)
    with torch.no_grad(), autocast(precision, device):
        total, terms = loss_fn(synthesize(tuned, w), target, w, features)
    losses = {"total": float(total.float().sum()), **{k: float(v.float().sum()) for k, v in terms.items()}}
    return TuningResult(tuned, losses, history, opts.tune_steps, time.perf_counter() - start)


@torch.no_grad()
def latent_drift(G: nn.Module, tuned: nn.Module, w: torch.Tensor) -> torch.Tensor:
    """How far tuning moved the renders of latents ``w`` ([N, num_ws, w_dim]): per latent, the MSE between the
    tuned and the original generator's images ([-1, 1] range) -> [N]."""
    return torch.stack(
        [mse_loss(synthesize(tuned, w[i : i + 1]), synthesize(G, w[i : i + 1]))[0] for i in range(len(w))]
    )
