"""Invert one photo into W+ with the thesis's optimiser (mean-w start, Adam, MSE + LPIPS + ID + delta-reg).

``init=encoder:DIR`` starts from an encoder trained by train_encoder.py for the same generator instead.
``tune=pti`` then fine-tunes a copy of the generator so that the latent renders the photo (pivotal tuning,
``inversion.tuning``): OUT/generator/ is that generator (``network=OUT/generator`` loads it anywhere).

python scripts/invert.py face.jpg --network stylegan3-r-ffhq-1024x1024 --steps 1000 --out out/face --device cuda
python scripts/invert.py aligned.png --no-align --network G.pkl --steps 200 loss.lpips=0 loss.id=0
python scripts/invert.py aligned.png --no-align --network G.pkl --steps 100 init=encoder:out/encoder
python scripts/invert.py face.jpg --network stylegan3-r-ffhq-1024x1024 --steps 450 tune=pti --out out/face_pti

Writes OUT/latent.npy (float32 [num_ws, w_dim]), reconstruction.png, target.png (the aligned photo),
comparison.png (target | reconstruction), losses.json (final per-term losses and their history), config.yaml.
With tune=pti: OUT/generator/ (written whole or not at all), reconstruction.png from the tuned generator,
comparison.png target | W+ alone | tuned, and losses.json's ``before_tuning`` (the W+ result) beside ``final``.
"""

from __future__ import annotations

import io
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from tqdm import tqdm

import stylegan3
from inversion.encoder import InitOptions, start_latents
from inversion.inverter import InverterOptions, check_loss_applies, invert
from inversion.losses import LossOptions
from inversion.targets import to_tensor
from inversion.tuning import TuningOptions, tune_generator
from reenactment.faces.align import load_target
from stylegan3 import WeightsFileError, WeightsNotFoundError
from stylegan3.config import NOT_EMPTY, exit_with_error, inline, parse_cli, save_config
from stylegan3.images import write_image
from stylegan3.io import atomic_folder, atomic_write
from stylegan3.runtime import DistEnv, init_distributed, resolve_device, resolve_impl
from stylegan3.sampling import (
    synthesize,
    to_uint8,
)


@dataclass
class InvertConfig:
    POSITIONAL: ClassVar[tuple[str, ...]] = ("image",)
    inverter: InverterOptions = inline(InverterOptions)  # steps, lr, beta1, beta2, eps, early_stop_*, ...
    start: InitOptions = inline(InitOptions)  # init: mean (the thesis) or encoder:DIR
    image: str = ""  # the photo to invert
    network: str = "stylegan3-r-ffhq-1024x1024"  # .pkl, weights folder or known name (the thesis: SG3-R FFHQ)
    out: str = "out/invert"  # output folder
    align: bool = True  # FFHQ-align the photo first (--no-align: it is already aligned)
    backend: str = "dlib"  # landmark backend for alignment
    face: str = "largest"  # which face of several: largest, or an index (0 = the largest; the log lists them)
    device: str = "auto"  # auto (cuda if available), cpu, cuda, cuda:1, mps
    impl: str = "auto"  # generator ops: auto (triton on CUDA after a passed trial, else fast), fast, reference, triton
    losses: LossOptions = inline(LossOptions)  # loss.*, loss_resolution, arcface, alexnet
    tuning: TuningOptions = inline(TuningOptions)  # tune=none|pti, tune_steps, tune_lr, tune_locality, tune_alpha
    LIMITS: ClassVar[dict] = {"out": NOT_EMPTY}


def main(argv: list[str] | None = None) -> Path:
    cfg = parse_cli(InvertConfig, argv, __doc__)
    if not cfg.image:
        raise SystemExit("error: give the image to invert")
    try:
        cfg.tuning.check()
        device = resolve_device(cfg.device)
        init_distributed(device, DistEnv())  # the current CUDA device, cuDNN's benchmark mode
        G = stylegan3.load(cfg.network, device=device)
        G.set_impl(resolve_impl(cfg.impl, device, G))
        target = load_target(
            cfg.image, G.img_resolution, cfg.align, cfg.backend, cfg.face, report=print, framing=G.framing
        )
        check_loss_applies(G, cfg.losses.loss)
        loss_fn = cfg.losses.build(device)
        options = cfg.inverter.resolved(device)  # joint_pass: auto -> true on CUDA
        encoder = cfg.start.load(G, cfg.network)
    except (WeightsNotFoundError, WeightsFileError, OSError, ValueError) as err:  # bad weights, image, no face
        exit_with_error(err)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    bar = tqdm(total=cfg.inverter.steps, unit="step", desc="invert")

    every = options.log_every or 10

    def show(step: int, terms: dict[str, torch.Tensor]) -> None:
        if step % every == 0 or step == options.steps - 1:  # reading the losses waits for the device: not each step
            bar.set_postfix({k: f"{v.item():.4f}" for k, v in terms.items()}, refresh=False)
            bar.update(step + 1 - bar.n)

    start = time.time()
    target_tensor = to_tensor(target).to(device)
    w_init = start_latents(encoder, target_tensor)
    result = invert(G, target_tensor, loss_fn, options, w_init=w_init, callback=show)
    bar.close()
    w_plus = result.w_plus[0].cpu().numpy().astype(np.float32)
    shutil.rmtree(out / "generator", ignore_errors=True)  # an earlier run's tuned generator fits its latent only
    buffer = io.BytesIO()
    np.save(buffer, w_plus)
    atomic_write(out / "latent.npy", buffer.getvalue())
    with torch.no_grad():
        recon = to_uint8(synthesize(G, result.w_plus))[0]
    panels = [target, recon]
    report: dict = {"final": with_psnr({k: float(v[0]) for k, v in result.losses.items()})}
    if cfg.tuning.enabled:
        tune_bar = tqdm(total=cfg.tuning.tune_steps, unit="step", desc="tune")
        tuned = tune_generator(G, target_tensor, result.w_plus, loss_fn, cfg.tuning, options.precision,
                               callback=lambda step, terms: tune_bar.update(1))  # fmt: skip
        tune_bar.close()
        atomic_folder(out / "generator", lambda tmp: stylegan3.save(tuned.generator, tmp))
        with torch.no_grad():
            recon = to_uint8(synthesize(tuned.generator, result.w_plus))[0]
        panels.append(recon)
        report = {"before_tuning": report["final"], "final": with_psnr(dict(tuned.losses))}
        report["tuning"] = {
            "steps": tuned.steps,
            "seconds": round(tuned.seconds, 2),
            "history": [{"step": s, **t} for s, t in tuned.history],
        }
    write_image(out / "target.png", target)
    write_image(out / "reconstruction.png", recon)
    write_image(out / "comparison.png", np.concatenate(panels, axis=1))
    report |= {
        "steps": result.steps_run[0],
        "seconds": round(time.time() - start, 2),
        "history": [{"step": s, **{k: v[0] for k, v in t.items()}} for s, t in result.history],
    }
    atomic_write(out / "losses.json", json.dumps(report, indent=1))
    final = report["final"]
    before = report.get("before_tuning")
    tuned_note = f" (W+ alone: mse {before['mse']:.4f}; tuned in {cfg.tuning.tune_steps} steps)" if before else ""
    print("final losses: " + ", ".join(f"{k} {v:.4f}" for k, v in final.items()) + f"{tuned_note}; wrote {out}")
    return out


def with_psnr(terms: dict[str, float]) -> dict[str, float]:
    """The loss terms with the reconstruction's PSNR (dB) added, from its MSE in [-1, 1] units."""
    mse01 = terms["mse"] / 4.0  # [-1, 1] -> [0, 1] range
    return {**terms, "psnr": float(10 * np.log10(1.0 / max(mse01, 1e-12)))}


if __name__ == "__main__":
    main()
