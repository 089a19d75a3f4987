"""Measure inversion on real faces: reconstruction PSNR, SSIM and dlib identity distance of real photos, for the mean
start at ``steps``, the encoder start at a fifth of them, and each followed by pivotal tuning; seconds per image.

Photos are aligned with the generator's framing at its size. Identity: dlib's face descriptor of the aligned photo
and of its reconstruction (both upscaled ``upscale`` times for dlib's detector; distance < 0.6 is dlib's "same
person"). The encoder start runs all ``steps``: its loss history says at which step it first reaches the mean
start's final loss (``reached``), and its latents at ``steps // 5`` are its row. The loss is MSE alone (the weights
of LPIPS and ArcFace cannot be had here; the delta-regulariser has no meaning for digiface-dcgan-64's W+).

    python -m scripts.train_encoder --config configs/train_encoder_digiface.yaml
    python -m scripts.bench_real_faces encoder=out/encoder_digiface > docs/bench/digiface_inversion.log
"""

from __future__ import annotations

import dataclasses
import glob
import time
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

import stylegan3
from inversion.encoder import load_encoder
from inversion.inverter import InverterOptions, invert
from inversion.losses import LossWeights, build_inversion_loss, mse_loss
from inversion.targets import to_tensor
from inversion.tuning import TuningOptions, tune_generator
from reenactment.evaluation.metrics import DlibFaceEmbedder, embedding_distance, psnr, ssim
from reenactment.faces.align import load_target
from reenactment.faces.landmarks import LandmarkDetector, NoFaceError
from stylegan3.config import inline, parse_cli
from stylegan3.sampling import synthesize, to_uint8


@dataclass
class BenchRealFacesConfig:
    network: str = "digiface-dcgan-64"  # generator
    photos: str = "../shared/samples/images/london_*.jpg"  # glob of photos
    steps: int = 500  # the mean start's steps (configs/invert_digiface.yaml); the encoder start's row: steps // 5
    lr: float = 0.02  # Adam's learning rate (configs/invert_digiface.yaml)
    encoder: str = ""  # encoder folder (train_encoder.py) for this generator; empty: no encoder rows
    tuning: TuningOptions = inline(TuningOptions)  # tune_steps, tune_lr, tune_locality, tune_alpha (PTI's defaults)
    pti: bool = True  # also the rows with pivotal tuning
    upscale: int = 4  # dlib needs faces larger than 64 px


class Judge:
    """PSNR, SSIM and the dlib identity distance of reconstructions against their targets."""

    def __init__(self, targets: torch.Tensor, upscale: int) -> None:
        self.targets, self.upscale = targets, upscale
        self.detector, self.embedder = LandmarkDetector("dlib"), DlibFaceEmbedder()
        self.target_descriptors = [self.descriptor(img) for img in to_uint8(targets)]

    def descriptor(self, image: np.ndarray) -> np.ndarray | None:
        side = image.shape[0] * self.upscale
        big = np.asarray(Image.fromarray(image).resize((side, side), Image.Resampling.BICUBIC))
        try:
            return self.embedder(big, self.detector(big))
        except NoFaceError:
            return None

    def __call__(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        x, y = (images.clamp(-1, 1) + 1) / 2, (self.targets + 1) / 2
        ids = []
        for image, ref in zip(to_uint8(images), self.target_descriptors):
            d = self.descriptor(image)
            ids.append(np.nan if d is None or ref is None else embedding_distance(d, ref))
        return {"psnr": psnr(x, y).numpy(), "ssim": ssim(x, y).numpy(), "id": np.array(ids)}


def _row(name: str, scores: dict[str, np.ndarray], seconds: float, n: int) -> str:
    ids = scores["id"]
    found = np.isfinite(ids)
    id_text = f"{np.median(ids[found]):.3f} ({found.sum()}/{n} found)" if found.any() else "n/a (no face found)"
    return (
        f"| {name} | {np.median(scores['psnr']):.2f} | {scores['psnr'].min():.2f} | {np.median(scores['ssim']):.3f} "
        f"| {id_text} | {(ids[found] < 0.6).sum()}/{n} | {seconds / n:.1f} |"
    )


def main(argv: list[str] | None = None) -> None:
    cfg = parse_cli(BenchRealFacesConfig, argv, __doc__)
    try:
        cfg.tuning.check()
        G = stylegan3.load(cfg.network)
        encoder = load_encoder(cfg.encoder, G, cfg.network) if cfg.encoder else None
    except (ValueError, OSError) as err:
        raise SystemExit(f"error: {err}") from None
    paths = sorted(glob.glob(cfg.photos))
    if not paths:
        raise SystemExit(f"error: no photo matches {cfg.photos}")
    targets = torch.cat([to_tensor(load_target(p, G.img_resolution, framing=G.framing)) for p in paths])
    n = len(paths)
    loss_fn = build_inversion_loss(LossWeights(mse=0.1, lpips=0.0, id=0.0, delta_reg=0.0))
    judge = Judge(targets, cfg.upscale)
    print(
        f"real-face inversion benchmark: {cfg.network} ({G.img_resolution} px, framing {G.framing.name}), {n} photos "
        f"({cfg.photos}), MSE loss, Adam lr {cfg.lr}, CPU threads {torch.get_num_threads()}, torch {torch.__version__}"
    )
    missing = [p for p, d in zip(paths, judge.target_descriptors) if d is None]
    print(
        f"dlib finds a face in {n - len(missing)} of {n} aligned photos" + (f" (not in {missing})" if missing else "")
    )
    options = InverterOptions(steps=cfg.steps, lr=cfg.lr, log_every=1, joint_pass=False)
    starts: dict[str, tuple[torch.Tensor | None, int]] = {"mean start": (None, cfg.steps)}
    if encoder is not None:
        with torch.no_grad():
            starts["encoder start"] = (encoder.start(targets), cfg.steps // 5)
    rows, latents, histories, seconds = [], {}, {}, {}
    for name, (w_init, row_steps) in starts.items():
        t0 = time.perf_counter()
        result = invert(G, targets, loss_fn, dataclasses.replace(options, steps=row_steps), w_init=w_init)
        seconds[name] = time.perf_counter() - t0
        latents[name] = result.w_plus
        histories[name] = np.array([terms["mse"] for _, terms in result.history])  # [steps, n]
        with torch.no_grad():
            images = synthesize(G, result.w_plus)
        rows.append(_row(f"{name}, {row_steps} steps", judge(images), seconds[name], n))
    if encoder is not None:  # the encoder start's whole run, for the step at which it reaches the mean's loss
        result = invert(G, targets, loss_fn, options, w_init=starts["encoder start"][0])
        history = np.array([terms["mse"] for _, terms in result.history])
        final_mean = histories["mean start"][-1]
        reached = [int(np.argmax(history[:, i] <= final_mean[i])) + 1 if (history[:, i] <= final_mean[i]).any()
                   else None for i in range(n)]  # fmt: skip
        with torch.no_grad():
            zero = mse_loss(synthesize(G, starts["encoder start"][0]), targets).numpy()
            mean0 = mse_loss(synthesize(G, G.mean_w()[None].expand(n, -1, -1)), targets).numpy()
        print(
            f"start MSE (pixels in [-1, 1]), median: mean w {np.median(mean0):.4f}, encoder {np.median(zero):.4f}; "
            f"mean start's final MSE after {cfg.steps} steps, median {np.median(final_mean):.4f}"
        )
        got = [r for r in reached if r is not None]
        print(
            f"encoder start reaches the mean start's final MSE in {len(got)} of {n} photos within {cfg.steps} steps"
            + (f" (steps: median {int(np.median(got))}, max {max(got)}; target <= {cfg.steps // 5})" if got else "")
        )
        at_fifth = history[cfg.steps // 5 - 1]
        print(f"at step {cfg.steps // 5}: encoder start MSE / mean start's final MSE, median "
              f"{np.median(at_fifth / final_mean):.2f}")  # fmt: skip
    if cfg.pti:
        for name, w in latents.items():
            t0 = time.perf_counter()
            tuned_images = []
            for i in range(n):
                tuned = tune_generator(G, targets[i : i + 1], w[i], loss_fn, cfg.tuning, log_every=0).generator
                with torch.no_grad():
                    tuned_images.append(synthesize(tuned, w[i : i + 1]))
            tune_seconds = time.perf_counter() - t0
            rows.append(
                _row(f"{name} + PTI ({cfg.tuning.tune_steps} steps)", judge(torch.cat(tuned_images)),
                     seconds[name] + tune_seconds, n)
            )  # fmt: skip
    print()
    print("| start | PSNR median (dB) | PSNR min | SSIM median | dlib identity distance median | < 0.6 | s/image |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
