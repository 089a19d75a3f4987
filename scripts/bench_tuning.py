"""Measure pivotal tuning (inversion.tuning): on real photos, the reconstruction MSE of W+ alone and after tuning,
how far random latents drift with and without the locality term, and the seconds per tuning step.

The loss is the thesis's full loss with networks of the real size and random weights (LPIPS' AlexNet trunk random,
its calibrated heads from the lpips wheel; ArcFace IR-SE50 random): the time per step is what the pretrained
networks cost, the MSE is measured on the photo. Drift: the MSE between the tuned and the original generator's
images of ``held_out`` latents that tuning never saw, ``mapping(z)`` with truncation 0.5 (PTI's locality samples'
kind) and the same latents moved to each locality radius (``alphas``, ``tune_alpha``) from the pivot.

    python -m scripts.bench_tuning                                                  # the 64 px fixture, CPU
    python -m scripts.bench_tuning network=stylegan3-r-ffhq-1024x1024 device=cuda  # a GPU at 1024
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import torch

import stylegan3
from inversion.arcface import IRSE50, IdentityEncoder
from inversion.inverter import InverterOptions, invert
from inversion.losses import IdentityLoss, InversionLoss, LossWeights, mse_loss
from inversion.perceptual import LPIPS
from inversion.targets import to_tensor
from inversion.tuning import TuningOptions, latent_drift, locality_latents, locality_z, tune_generator
from reenactment.faces.align import load_target
from stylegan3.config import inline, parse_cli
from stylegan3.runtime import resolve_device
from stylegan3.sampling import synthesize


@dataclass
class BenchTuningConfig:
    network: str = "../shared/fixtures/stylegan/sg3t_64.pkl"  # generator
    photos: list[str] = field(
        default_factory=lambda: [
            "../shared/samples/images/london_021_neutral.jpg",
            "../shared/samples/images/london_003_neutral.jpg",
        ]
    )  # aligned (dlib) before inverting
    steps: int = 200  # W+ steps for the pivot
    tuning: TuningOptions = inline(TuningOptions)  # tune_steps, tune_lr, tune_locality, tune_alpha (PTI's defaults)
    alphas: list[float] = field(default_factory=lambda: [30.0, 10.0])  # locality radii to compare (tune_alpha each)
    held_out: int = 16  # random latents for the drift (z seeds apart from the tuning's)
    device: str = "cpu"


def main(argv: list[str] | None = None) -> None:
    cfg = parse_cli(BenchTuningConfig, argv, __doc__)
    try:
        cfg.tuning.check()
        device = resolve_device(cfg.device)
        G = stylegan3.load(cfg.network, device=device)
    except (ValueError, OSError) as err:
        raise SystemExit(f"error: {err}") from None
    torch.manual_seed(0)
    lpips = LPIPS(device=device, _random_backbone=True)
    identity = IdentityLoss(IdentityEncoder(IRSE50()).to(device))
    loss = InversionLoss(LossWeights(), lpips=lpips, identity=identity)
    print(
        f"pivotal tuning benchmark: {cfg.network} ({G.img_resolution} px), {device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; full loss (random-weight LPIPS trunk and IR-SE50); W+ {cfg.steps} steps, "
        f"tuning {cfg.tuning.tune_steps} steps, lr {cfg.tuning.tune_lr}, lambda_R {cfg.tuning.tune_locality}"
    )
    z = locality_z(G.z_dim, cfg.held_out, seed=10_000)
    with torch.no_grad():
        w_random = G.mapping(z.to(device), None, truncation_psi=0.5)
    radii = sorted({*cfg.alphas, cfg.tuning.tune_alpha}, reverse=True)  # drift of latents at these distances
    for photo in cfg.photos:
        target = to_tensor(load_target(photo, G.img_resolution, True, "dlib", "largest", framing=G.framing))
        target = target.to(device)
        pivot = invert(G, target, loss, InverterOptions(steps=cfg.steps)).w_plus
        with torch.no_grad():
            before = mse_loss(synthesize(G, pivot), target).item()
        distance = (w_random - pivot).flatten(1).norm(dim=1).mean().item()
        print(f"\n{photo}: W+ alone ({cfg.steps} steps) MSE {before:.5f}; random latents lie {distance:.1f} from the "
              "pivot on average")  # fmt: skip
        runs = [("no locality", dataclasses.replace(cfg.tuning, tune="pti", tune_locality=0.0))]
        runs += [
            (f"locality, alpha {a:g}", dataclasses.replace(cfg.tuning, tune="pti", tune_alpha=a)) for a in cfg.alphas
        ]
        for name, options in runs:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            result = tune_generator(G, target, pivot, loss, options, log_every=0)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - start
            with torch.no_grad():
                after = mse_loss(synthesize(result.generator, pivot), target).item()
            drift = latent_drift(G, result.generator, w_random).mean().item()
            near = [latent_drift(G, result.generator, locality_latents(G, pivot, z, a)).mean().item() for a in radii]
            at = ", ".join(f"at {a:g} {d:.5f}" for a, d in zip(radii, near))
            print(f"  {name:22s} MSE {after:.5f} ({after / before:.2f}x W+ alone); drift: random latents {drift:.5f}"
                  f", {at}; {seconds / max(options.tune_steps, 1):.3f} s per step")  # fmt: skip


if __name__ == "__main__":
    main()
