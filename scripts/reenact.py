"""Reenact a photo with a driving video: the person in SOURCE makes the expressions of DRIVING, at the
generator's resolution, at the driving clip's fps and with its sound.

python scripts/reenact.py source.png driving.mp4 -o out.mp4 --network stylegan3-r-ffhq-1024x1024 --mapper runs/mapper
python scripts/reenact.py source.png driving.mp4 -o out.mp4 --mapper runs/mapper --concat    # driving | source | result
python scripts/reenact.py source.png driving.jpg -o out.png --mapper runs/mapper              # one driving image
python scripts/reenact.py source.png driving.mp4 --mapper runs/mapper regions=lips motion_scale=1.5 save_track=t.npz
python scripts/reenact.py source.png driving.mp4 -o out.mp4 --mapper runs/mapper tune=pti     # identity detail (PTI)

The source is inverted once (``steps`` Adam steps, the thesis's loss) and its latent cached under
$REENACT_CACHE/latents, keyed by the image, the network and the inversion settings; ``latent=FILE.npy`` uses a
given W+ instead, ``init=encoder:DIR`` starts the inversion from an encoder (train_encoder.py) instead of the mean
w (fewer ``steps`` then reach the same loss). ``tune=pti`` then tunes a copy of the generator on the source once
(pivotal tuning, ``inversion.tuning``; cached beside the latent) and renders every frame with it. Driving frames
without a face reuse the last good landmarks (counted in the log).

The mapper is shown the driving face's motion put on the source's landmarks (``motion=relative``, from the
``reference`` frame, scaled to the source; ``pose``, ``motion_scale``, ``regions``), or the driving landmarks
themselves (``motion=absolute``, the thesis's setting); see ``reenactment/faces/motion.py``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from tqdm import tqdm

import stylegan3
from inversion.encoder import InitOptions
from inversion.inverter import InverterOptions, check_loss_applies
from inversion.losses import LossOptions
from inversion.precision import check_precision
from inversion.tuning import TuningOptions
from reenactment.faces.landmarks import LandmarkDetector, NoFaceError
from reenactment.model.mapper import load_mapper
from reenactment.pipeline import (
    DrivingOptions,
    Reenactor,
    SourceInversion,
    check_driving,
    check_networks,
    prepare_source,
    reenact,
)
from stylegan3 import WeightsFileError, WeightsNotFoundError
from stylegan3.config import exit_with_error, inline, parse_cli, save_config
from stylegan3.runtime import DistEnv, init_distributed, resolve_device, resolve_impl


@dataclass
class ReenactConfig:
    POSITIONAL: ClassVar[tuple[str, ...]] = ("source", "driving")
    ALIASES: ClassVar[dict[str, str]] = {"-o": "output"}
    driving_options: DrivingOptions = inline(DrivingOptions)  # tracking (smooth*, tilt, crop*) and motion options
    source: str = ""  # photo of the person to animate
    driving: str = ""  # driving video (or one image)
    output: str = "out/reenacted.mp4"  # -o: the mp4 to write (an image when DRIVING is an image)
    network: str = "stylegan3-r-ffhq-1024x1024"  # generator: .pkl, weights folder or known name
    mapper: str = ""  # MAPPER_DIR written by train_mapper.py
    concat: bool = False  # write driving | source | result side by side
    paste_back: bool = False  # put the reenacted face back into the source photo (its size, its background)
    device: str = "auto"  # auto (cuda if available), cpu, cuda, mps
    impl: str = "auto"  # generator ops: auto (triton on CUDA when Triton imports, else fast), fast, reference, triton
    batch_size: int = 8  # driving frames per generator batch (see the README for the GPU memory it takes)
    precision: str = "fp32"  # fp32, bf16 or fp16: the source's inversion and the frames' generator under autocast
    backend: str = "dlib"  # landmark backend: dlib or mediapipe
    face: str = "largest"  # which face of the source photo: largest, or an index (0 = the largest)
    latent: str | None = None  # the source's W+ as .npy [num_ws, w_dim]: skip inverting it
    cache: bool = True  # cache the source latent under $REENACT_CACHE/latents
    steps: int = 1000  # inversion steps for the source (thesis: 1000)
    start: InitOptions = inline(InitOptions)  # init: mean (the thesis) or encoder:DIR (train_encoder.py, this network)
    losses: LossOptions = inline(LossOptions)  # the source's inversion loss: loss.*, loss_resolution, arcface, alexnet
    tuning: TuningOptions = inline(TuningOptions)  # tune=pti: tune the generator on the source once (tune_steps, ...)
    save_track: str | None = None  # also write the landmark track (source, driving, target, fps) to this .npz
    show_landmarks: bool = False  # with --concat: a last panel with the target landmarks the mapper is shown


def main(argv: list[str] | None = None) -> Path:
    cfg = parse_cli(ReenactConfig, argv, __doc__)
    if not cfg.source or not cfg.driving or not cfg.mapper:
        raise SystemExit("error: give SOURCE, DRIVING and --mapper MAPPER_DIR")
    start = time.time()
    try:
        cfg.driving_options.check()
        cfg.tuning.check()
        check_precision(cfg.precision)
        check_driving(cfg.driving, cfg.output)  # before the models load and the source is inverted
        device = resolve_device(cfg.device)
        init_distributed(device, DistEnv())  # the current CUDA device, cuDNN's benchmark mode
        G = stylegan3.load(cfg.network, device=device)
        G.set_impl(resolve_impl(cfg.impl, device))
        mapper = load_mapper(cfg.mapper, device=device)
        check_networks(G, mapper)
        if not cfg.latent:
            check_loss_applies(G, cfg.losses.loss)
        detector = LandmarkDetector(cfg.backend)
        settings = SourceInversion(
            InverterOptions(steps=cfg.steps, precision=cfg.precision), cfg.losses, cfg.start, cfg.tuning
        )
        tune_bar = tqdm(
            total=cfg.tuning.tune_steps, unit="step", desc="tune generator", leave=False, disable=not cfg.tuning.enabled
        )
        if cfg.latent:
            latent = np.load(cfg.latent)
            source = prepare_source(
                G,
                cfg.source,
                detector,
                settings,
                device,
                cfg.driving_options.tracking.tilt,
                latent=latent,
                face=cfg.face,
                report=tqdm.write,
                tune_progress=lambda s, t: tune_bar.update(1),
            )
        else:
            bar = tqdm(total=cfg.steps, unit="step", desc="invert source", leave=False)
            source = prepare_source(
                G,
                cfg.source,
                detector,
                settings,
                device,
                cfg.driving_options.tracking.tilt,
                cfg.cache,
                lambda s, t: bar.update(1),
                face=cfg.face,
                report=tqdm.write,
                tune_progress=lambda s, t: tune_bar.update(1),
            )
            bar.close()
            print("source latent: " + ("from the cache" if source.cached else f"inverted in {cfg.steps} steps"))
        tune_bar.close()
        if cfg.tuning.enabled:
            tuned = "from the cache" if source.tuned_cached else f"tuned in {cfg.tuning.tune_steps} steps (PTI)"
            print(f"tuned generator: {tuned}")
        reenactor = Reenactor(G, mapper, source, device, cfg.precision)
        tracked = tqdm(unit="frame", desc="landmarks", leave=False)
        written = tqdm(unit="frame", desc="reenact")
        result = reenact(
            reenactor,
            cfg.driving,
            cfg.output,
            detector,
            options=cfg.driving_options,
            batch_size=cfg.batch_size,
            concat=cfg.concat,
            paste_back=cfg.paste_back,
            show_landmarks=cfg.show_landmarks,
            track_file=cfg.save_track,
            on_frames=written.update,
            on_tracked=tracked.update,
        )
        tracked.close()
        written.close()
    except (WeightsNotFoundError, WeightsFileError, OSError, ValueError, NoFaceError) as err:
        exit_with_error(err)
    out = result.output
    save_config(cfg, out.with_name(out.stem + ".config.yaml"))
    if result.missing:
        print(f"{result.missing} of {result.frames} driving frames had no face: they reuse the last good landmarks")
    reference = result.reference
    print(f"motion: {result.motion}" + ("" if reference is None else f", from driving frame {reference}"))
    if cfg.save_track:
        print(f"landmark track: {cfg.save_track}")
    print(f"wrote {out} ({result.frames} frames) in {time.time() - start:.1f} s")
    return out


if __name__ == "__main__":
    main()
