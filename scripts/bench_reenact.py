"""Benchmark reenactment: frames/s of each stage (decode, landmarks, landmark images + mapper, generator, encode)
and end to end, measured in one run. Random weights (speed does not depend on them).

    python scripts/bench_reenact.py                                   # CPU: SG3-T plan at 64 px, mapper at 128 px
    python scripts/bench_reenact.py --config r --resolution 1024 --w-dim 512 --mapper-size 580 --device cuda \
        --thesis-mapper --precision bf16 --compile

``--precision`` runs the mapper and the generator under autocast, ``--compile`` the synthesis network through
``torch.compile`` (compiled in the warm-up), ``--prefetch`` sets how many batches the end-to-end run's worker
prepares ahead (0: none). The goal at 1024 px with the R plan on an H100 is real time: 25 frames/s or more end to end.

``driving=synthetic landmarks=synthetic`` needs no file outside the checkout and no dlib model (a GPU machine that
gets only the repository): a 75-frame 360x288 clip is written on the fly, and the landmarks are the mean 3D face
(``FACE_MODEL_68``) turning and opening its mouth, given to the pipeline in place of the detector (the landmark
stage is then not timed).
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from inversion.precision import PRECISIONS, autocast
from reenactment.faces.landmarks import LandmarkDetector
from reenactment.faces.synthetic import SyntheticFaces
from reenactment.media.video import VideoReader, VideoWriter
from reenactment.model.mapper import MappingNetwork
from reenactment.pipeline import DrivingOptions, Reenactor, Source, reenact, track_driving
from stylegan3.bench import PLANS, build_plan, synchronize
from stylegan3.compile import compiled_synthesis
from stylegan3.config import parse_cli
from stylegan3.runtime import resolve_impl
from stylegan3.sampling import (
    synthesize,
    to_uint8,
)

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "samples" / "videos" / "grid_lbax4n.mpg"


@dataclass
class BenchReenactConfig:
    ALIASES: ClassVar[dict[str, str]] = {"--config": "plan"}  # --config r: the layer plan (not a YAML file here)
    driving: str = str(SAMPLE)  # driving clip (default: a GRID sample); synthetic: a clip made on the fly
    landmarks: str = "dlib"  # dlib (the detector, timed) or synthetic (a moving mean face, no detector model)
    frames: int = 75  # length of the driving=synthetic clip (GRID's 3 s)
    plan: str = "t"  # layer plan: t, r or sg2
    resolution: int = 64
    w_dim: int = 64
    channel_max: int | None = None  # at most this many channels per layer (smoke runs; None: the plan's)
    mapper_size: int = 128  # landmark image size (thesis: 580)
    thesis_mapper: bool = False  # the thesis's channel widths (default: tiny)
    batch: int = 8
    device: str = "cpu"
    impl: str = "auto"  # generator ops: auto (triton on CUDA after a passed trial, else fast), fast, reference, triton
    amp: bool = False  # generator float16 layers (CUDA)
    precision: str = "fp32"  # autocast dtype (mapper, generator)
    compile: bool = False  # torch.compile the synthesis network
    prefetch: int = 2  # batches prepared ahead by the worker (0: none)
    json: str | None = None


def synthetic_clip(path: Path, frames: int = 75, size: tuple[int, int] = (360, 288)) -> Path:
    """A ``frames``-frame clip of ``size`` (GRID's) at 25 fps: smooth moving colour, no sound."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    with VideoWriter(path, 25.0) as writer:
        for t in range(frames):
            r = 127 + 100 * np.sin(xx / 40 + t / 5)
            g = 127 + 100 * np.cos(yy / 30 - t / 7)
            b = 127 + 60 * np.sin((xx + yy) / 50 + t / 3)
            writer.write(np.stack([r, g, b], axis=-1).astype(np.uint8))
    return path


def timed(fn, sync) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    args = parse_cli(BenchReenactConfig, argv, __doc__)
    driving = Path(args.driving)
    if args.plan not in PLANS:
        raise SystemExit(f"error: plan must be one of {', '.join(sorted(PLANS))}, got {args.plan!r}")
    if args.precision not in PRECISIONS:
        raise SystemExit(f"error: precision must be one of {', '.join(PRECISIONS)}, got {args.precision!r}")
    if args.landmarks not in ("dlib", "synthetic"):
        raise SystemExit(f"error: landmarks must be dlib or synthetic, got {args.landmarks!r}")
    device = torch.device(args.device)
    if args.driving == "synthetic":
        scratch = tempfile.TemporaryDirectory()  # lives as long as this call (the end-to-end run reads it again)
        driving = synthetic_clip(Path(scratch.name) / "synthetic.mp4", args.frames)

    def sync() -> None:
        synchronize(device)

    torch.manual_seed(0)
    G = build_plan(args.plan, args.resolution, args.w_dim, args.channel_max).to(device)
    G.set_impl(resolve_impl(args.impl, device, G))
    G = compiled_synthesis(G) if args.compile else G
    channels = (16, 32, 64, 128, 256, 512, 512, 512) if args.thesis_mapper else (8, 8, 16, 16, 32, 32, 32, 32)
    mapper = MappingNetwork(args.mapper_size, G.num_ws, args.w_dim, channels).to(device).eval()
    print(
        f"reenactment benchmark: {args.plan.upper()} plan {args.resolution} px, mapper {args.mapper_size} px "
        f"({sum(p.numel() for p in mapper.parameters()):,} params), batch {args.batch}, {args.device}, "
        f"{args.precision}{', compiled' if args.compile else ''}, prefetch {args.prefetch}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; driving {driving.name}"
    )
    with VideoReader(driving) as reader:
        frames = list(reader)
    n = len(frames)
    size = frames[0].shape[1::-1]  # (w, h)
    detector = LandmarkDetector("dlib") if args.landmarks == "dlib" else SyntheticFaces(size, args.frames)
    rates: dict[str, float] = {}
    rates["decode"] = n / timed(lambda: sum(1 for _ in VideoReader(driving)), sync)
    if args.landmarks == "dlib":
        rates["landmarks"] = n / timed(lambda: [detector(f) for f in frames], sync)
    else:
        print("  landmarks: synthetic (the detector is not run, so not timed)")
    track = track_driving(driving, detector, G.img_resolution, DrivingOptions())
    source = Source(G.mean_w().cpu(), np.zeros((G.img_resolution,) * 2 + (3,), np.uint8), track.points[0], False)
    reenactor = Reenactor(G, mapper, source, device)
    batches = [track.points[i : i + args.batch] for i in range(0, n, args.batch)]
    with torch.no_grad(), autocast(args.precision, device):
        reenactor.frames(batches[0])  # warm-up (and compile)
        ws = []

        def run_mapper() -> None:
            ws.clear()
            ws.extend(mapper.predict(reenactor.w_s, reenactor.render(b), reenactor.L_s) for b in batches)

        rates["landmark images + mapper"] = n / timed(run_mapper, sync)
        images = []

        def run_generator() -> None:
            images.clear()
            images.extend(to_uint8(synthesize(G, w, args.amp)) for w in ws)

        rates["generator"] = n / timed(run_generator, sync)
    with tempfile.TemporaryDirectory() as tmp:

        def encode() -> None:
            with VideoWriter(Path(tmp) / "enc.mp4", 25.0) as writer:
                for batch in images:
                    for frame in batch:
                        writer.write(frame)

        rates["encode"] = n / timed(encode, sync)
        # End to end: the pipeline as reenact.py runs it (two decodes, landmarks, smoothing, batches, audio).
        out = Path(tmp) / "e2e.mp4"

        def end_to_end() -> None:
            with autocast(args.precision, device):
                reenact(reenactor, driving, out, detector, batch_size=args.batch, prefetch=args.prefetch)

        rates["end to end"] = n / timed(end_to_end, sync)
    for stage, fps in rates.items():
        print(f"  {stage:26s} {fps:9.1f} frames/s")
    slowest = min((k for k in rates if k != "end to end"), key=rates.get)
    print(f"  slowest stage: {slowest}; end to end is {rates['end to end'] / 25:.2f}x real time at 25 fps")
    print("| what | measured | goal |")
    print("| --- | --- | --- |")
    print(
        f"| reenact end to end (decode, landmarks, mapper, generator, encode), {args.resolution} px | "
        f"{rates['end to end']:.1f} frames/s | >= 25 frames/s |"
    )
    if args.json:
        record = {"args": {k: str(v) for k, v in vars(args).items()}, "fps": rates}
        Path(args.json).write_text(json.dumps(record, indent=2))
    return rates


if __name__ == "__main__":
    main()
