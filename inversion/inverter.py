"""Batched W+ inversion by optimisation (thesis section 3.1): Adam on each image's own latent, from the mean w.

Each image in a batch has its own W+ and its own loss, and Adam is elementwise. By default every image's forward
and backward pass runs on its own (``[1, ...]`` shapes, the same operations in the same order as a single run),
so a batch gives bit for bit the latents of inverting its images one at a time, whatever else is in the batch:
the kernels' float32 summation order depends on the batch size (measured: 6.7e-6 in one forward pass of the 64 px
test generator), and Adam's normalised steps carry such differences into the latents. ``joint_pass=True`` runs the
whole batch in one pass instead (fewer, larger kernels: may pay on a GPU; it did not on the 2-core CPU); the
default ``auto`` does so on CUDA only. The step loop never waits for the device except every ``log_every`` steps:
early stopping is decided on the device (per-image counters, finished images frozen by masks) and read on the host
only then (with fp16, PyTorch's GradScaler still reads its overflow check on the host every step).
``precision`` (``inversion.precision``): bf16 or fp16 run the generator and the loss networks under autocast (fp16
with dynamic loss scaling); the latents and Adam stay float32.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from stylegan3.compile import compiled_synthesis
from stylegan3.config import Bounds
from stylegan3.sampling import synthesize

from .losses import InversionLoss, LossWeights
from .precision import autocast, check_precision, loss_scaler


@dataclass
class InverterOptions:
    """Optimiser settings (the thesis's values)."""

    steps: int = 1000  # Adam steps (the thesis's loss converges around 1000)
    lr: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    early_stop_patience: int = 0  # stop an image after this many steps without improvement (0 = never)
    early_stop_min_delta: float = 1e-4  # relative improvement that counts
    precision: str = "fp32"  # fp32, bf16 (autocast) or fp16 (autocast + dynamic loss scaling); latents stay fp32
    compile: bool = False  # torch.compile the synthesis network (stylegan3.compile)
    log_every: int = 10  # loss history and the early-stop check every N steps (0: no history, check every 10)
    joint_pass: bool | str = "auto"  # one forward/backward for the whole batch; auto: on CUDA only (else per image)
    LIMITS: ClassVar[dict] = {
        "steps": Bounds(0, 10_000_000),
        "lr": Bounds(0, 10, above=True),
        "beta1": Bounds(0, 1),
        "beta2": Bounds(0, 1),
        "eps": Bounds(0, 1, above=True),
        "early_stop_patience": Bounds(0, None),
        "early_stop_min_delta": Bounds(0, 1),
        "precision": ("fp32", "bf16", "fp16"),
        "log_every": Bounds(0, None),
    }

    def resolved(self, device: torch.device | str) -> InverterOptions:
        """These options with ``joint_pass`` decided for ``device`` (a bool); ValueError for a bad value."""
        return dataclasses.replace(self, joint_pass=resolve_joint_pass(self.joint_pass, device))


def resolve_joint_pass(value: bool | str, device: torch.device | str) -> bool:
    """``joint_pass`` as a bool: ``auto`` is true on CUDA (one pass per batch is what a GPU batch is for) and
    false elsewhere (per image: bit-identical to single runs). Accepts true/false/auto (also as strings)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text == "auto":
        return torch.device(device).type == "cuda"
    if text in ("true", "false"):
        return text == "true"
    raise ValueError(f"joint_pass must be true, false or auto, got {value!r}")


@dataclass
class InversionResult:
    """``w_plus`` [N, num_ws, w_dim] float32 (the last step's latents); ``losses``: final per-term values per image
    (each [N], at ``w_plus``); ``history``: (step, {term: [N]}) every ``log_every`` steps; ``steps_run``: per image;
    ``skipped_steps``: steps the fp16 loss scaler dropped (a gradient overflowed: nothing moved, the scale halved)."""

    w_plus: torch.Tensor
    losses: dict[str, torch.Tensor]
    history: list[tuple[int, dict[str, list[float]]]] = field(default_factory=list)
    steps_run: list[int] = field(default_factory=list)
    skipped_steps: int = 0


def check_loss_applies(G: nn.Module, weights: LossWeights) -> None:
    """A one-line ValueError when a loss term is on that has no meaning for ``G``: the delta-regulariser on a
    generator whose W+ rows are not per-layer styles (``G.delta_reg_applies``; scripts call this before any work)."""
    if weights.delta_reg and not G.delta_reg_applies:
        raise ValueError(
            f"loss.delta_reg={weights.delta_reg} has no meaning for this generator ({G.architecture}: its W+ "
            "rows are not per-layer styles); set loss.delta_reg=0"
        )


def invert(
    G: nn.Module,
    targets: torch.Tensor,
    loss_fn: InversionLoss,
    options: InverterOptions | None = None,
    w_init: torch.Tensor | None = None,
    callback: Callable[[int, dict[str, torch.Tensor]], None] | None = None,
) -> InversionResult:
    """Invert ``targets`` [N, 3, res, res] float32 in [-1, 1] into W+.

    ``w_init``: [N, num_ws, w_dim] or [num_ws, w_dim] warm start; default the thesis's mean w
    (``G.mean_w(10000, seed=123)``, all rows equal). ``callback(step, terms)`` is called after every step with
    the per-term losses ([N] each, on the device: reading them waits for it) of that step; once every image has
    stopped early, up to ``log_every`` - 1 more steps (that change nothing) may be reported before the loop ends.
    """
    opts = options or InverterOptions()
    check_precision(opts.precision)
    device = targets.device
    joint = resolve_joint_pass(opts.joint_pass, device)
    n = targets.shape[0]
    if targets.ndim != 4 or targets.shape[-1] != G.img_resolution or targets.shape[-2] != G.img_resolution:
        raise ValueError(f"targets must be [N, 3, {G.img_resolution}, {G.img_resolution}], got {tuple(targets.shape)}")
    check_loss_applies(G, loss_fn.weights)
    start = G.mean_w() if w_init is None else w_init
    start = start.to(device=device, dtype=torch.float32)
    if start.ndim == 2:
        start = start.unsqueeze(0).expand(n, -1, -1)
    w = start.clone().contiguous().requires_grad_(True)
    optimizer = torch.optim.Adam([w], lr=opts.lr, betas=(opts.beta1, opts.beta2), eps=opts.eps)
    scaler = loss_scaler(opts.precision, device)
    synth = compiled_synthesis(G) if opts.compile else G
    early_stop = opts.early_stop_patience > 0
    # Per-image state lives on the device; the host reads ``active`` only every ``check_every`` steps.
    best = torch.full((n,), float("inf"), device=device)
    stale = torch.zeros(n, dtype=torch.long, device=device)
    active = torch.ones(n, dtype=torch.bool, device=device)
    steps_run = torch.zeros(n, dtype=torch.long, device=device)
    check_every = opts.log_every if opts.log_every > 0 else 10
    history: list[tuple[int, dict[str, list[float]]]] = []
    # What the loss needs of each fixed target (the ArcFace embedding), computed once for this call.
    groups = [slice(0, n)] if joint else [slice(i, i + 1) for i in range(n)]
    group_targets = [targets[g] for g in groups]
    with autocast(opts.precision, device):
        features = [loss_fn.target_features(t) for t in group_targets]
    last_total = torch.zeros(n, device=device)
    last_terms: dict[str, torch.Tensor] = {}
    running = [True] * len(groups)  # the host's view of which groups still run (as of the last check)
    skipped = 0
    for step in range(opts.steps):
        logged = opts.log_every > 0 and (step % opts.log_every == 0 or step == opts.steps - 1)
        if early_stop and (logged or step % check_every == 0):
            alive = active.tolist()  # the one wait for the device, every check_every steps
            if not any(alive):
                break
            running = [any(alive[g]) for g in groups]
        optimizer.zero_grad(set_to_none=True)
        step_total = torch.zeros(n, device=device)
        step_terms: dict[str, torch.Tensor] = {}
        for g, target, feats, run in zip(groups, group_targets, features, running):
            if not run:
                continue  # stopped early: its latent is frozen and its last losses stand
            w_group = w[g]
            with autocast(opts.precision, device):
                total, terms = loss_fn(synthesize(synth, w_group), target, w_group, feats)
            total, terms = total.float(), {k: v.float() for k, v in terms.items()}
            scaler.scale(total.sum()).backward()
            step_total[g] = total.detach()
            for name, value in terms.items():
                step_terms.setdefault(name, torch.zeros(n, device=device, dtype=value.dtype))[g] = value.detach()
        # A stopped image keeps its last losses when it runs on its own; in a joint pass every image is computed.
        keep = None if joint or not early_stop else active
        last_total = step_total if keep is None else torch.where(keep, step_total, last_total)
        for name, value in step_terms.items():
            old = last_terms.get(name, torch.zeros_like(value))
            last_terms[name] = value if keep is None else torch.where(keep, value, old)
        before = w.detach().clone() if early_stop else None
        if scaler.is_enabled():  # fp16: the GradScaler reads its overflow check on the host every step anyway
            scale = scaler.get_scale()
            scaler.step(optimizer)
            scaler.update()
            skipped += scaler.get_scale() < scale
        else:
            optimizer.step()
        if before is not None:  # images that stopped early keep their latents (Adam's momentum would move them)
            with torch.no_grad():
                w.copy_(torch.where(active[:, None, None], w, before))
        steps_run += active
        detached = {k: v.clone() for k, v in last_terms.items()}
        if callback is not None:
            callback(step, detached)
        if logged:
            history.append((step, {k: v.float().cpu().tolist() for k, v in detached.items()}))
        if early_stop:
            value = last_total
            improved = torch.isinf(best) | (value < best * (1 - opts.early_stop_min_delta))
            best = torch.where(improved, value, best)
            stale = torch.where(improved, torch.zeros_like(stale), stale + 1)
            active = active & (stale < opts.early_stop_patience)
    # The final losses come from the eager network: under no_grad a compiled one would compile a second graph
    # (torch.compile guards on the grad mode) for a single forward pass.
    with torch.no_grad(), autocast(opts.precision, device):
        w_final = w.detach()
        results = [
            loss_fn(synthesize(G, w_final[g]), target, w_final[g], feats)
            for g, target, feats in zip(groups, group_targets, features)
        ]
        total = torch.cat([r[0] for r in results])
        terms = {k: torch.cat([r[1][k] for r in results]) for k in results[0][1]}
    return InversionResult(
        w_plus=w_final.float(),
        losses={"total": total.float(), **{k: v.float() for k, v in terms.items()}},
        history=history,
        steps_run=steps_run.tolist(),
        skipped_steps=int(skipped),
    )
