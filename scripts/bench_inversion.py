"""Benchmark inversion: Adam steps/s and peak memory by batch size and LPIPS resolution, as images per hour.

The full thesis loss runs (generator forward + backward, LPIPS-AlexNet, ArcFace IR-SE50, delta-reg) with random
weights everywhere: speed and memory do not depend on the weights. Each (batch, loss resolution) runs in a fresh
process so peak memory is its own (CPU: peak RSS above the process's size before the timed steps; CUDA:
``max_memory_allocated`` above the same baseline). Images/hour assumes the thesis's 1000 steps per image; the
thesis reports about 4 per hour (15 min per image on a GTX 1080 Ti). The issue-13 rows come last: inversion at the
best batch (for each LPIPS resolution) and the video warm start (``--warm-steps`` per following frame, batch 1).
``--joint-pass`` (default auto: true on CUDA) is passed on, so a GPU batch is timed as one pass per step.

    python scripts/bench_inversion.py                                  # CPU, small SG3-T plan at 64 px
    python scripts/bench_inversion.py --config r --resolution 1024 --w-dim 512 --device cuda --batches 1,4,8 \
        --precision bf16 --compile
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from inversion.arcface import IRSE50, IdentityEncoder
from inversion.inverter import InverterOptions, invert, resolve_joint_pass
from inversion.losses import IdentityLoss, InversionLoss, LossWeights
from inversion.perceptual import LPIPS
from inversion.precision import PRECISIONS
from stylegan3.bench import PLANS, build_plan, time_and_peak
from stylegan3.config import parse_cli

THESIS_IMAGES_PER_HOUR = 4.0  # 15 minutes per image, GTX 1080 Ti

REPO = Path(__file__).resolve().parents[1]
CHILD = [sys.executable, "-m", "scripts.bench_inversion"]  # each measurement in its own process


@dataclass
class BenchInversionConfig:
    ALIASES: ClassVar[dict[str, str]] = {"--config": "plan"}  # --config r: the layer plan (not a YAML file here)
    plan: str = "t"  # layer plan: t, r or sg2
    resolution: int = 64
    w_dim: int = 64
    device: str = "cpu"
    batches: str = "1,4,8"
    loss_resolutions: str = "0,256"  # LPIPS resolution, 0 = the generator's
    steps: int | None = None  # timed steps (default 2 CPU, 20 CUDA)
    warmup: int | None = None  # untimed steps first (default 1 CPU, 5 CUDA)
    precision: str = "fp32"  # autocast dtype (fp16: loss scaling)
    compile: bool = False  # torch.compile the synthesis network
    joint_pass: bool | str = "auto"  # one forward/backward per batch: true, false or auto (true on CUDA)
    warm_steps: int = 200  # steps per following frame of a video
    json: str | None = None  # also write the figures here
    child: bool = False  # internal: one measurement, printed as JSON
    batch: int = 1  # internal (child)
    loss_resolution: int = 0  # internal (child)


def run_one(args: BenchInversionConfig) -> dict:
    """Time ``args.steps`` inversion steps of one batch in this process."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    G = build_plan(args.plan, args.resolution, args.w_dim).to(device)
    lpips = LPIPS(device=device, _random_backbone=True)
    identity = IdentityLoss(IdentityEncoder(IRSE50()).to(device))
    loss_res = None if args.loss_resolution == 0 else args.loss_resolution
    loss_fn = InversionLoss(LossWeights(), lpips=lpips, identity=identity, loss_resolution=loss_res)
    targets = torch.rand(args.batch, 3, G.img_resolution, G.img_resolution, device=device) * 2 - 1
    joint = resolve_joint_pass(args.joint_pass, device)
    opts = InverterOptions(precision=args.precision, compile=args.compile, log_every=0, joint_pass=joint)
    invert(G, targets, loss_fn, InverterOptions(**{**vars(opts), "steps": args.warmup}))  # (and compiles)

    opts.steps = args.steps
    result = None

    def run() -> None:
        nonlocal result
        result = invert(G, targets, loss_fn, opts)

    seconds, peak = time_and_peak(run, device)
    return {"steps_per_s": args.steps / seconds, "peak_bytes": peak, "skipped_steps": result.skipped_steps}


def main(argv: list[str] | None = None) -> None:
    args = parse_cli(BenchInversionConfig, argv, __doc__)
    if args.plan not in PLANS:
        raise SystemExit(f"error: plan must be one of {', '.join(sorted(PLANS))}, got {args.plan!r}")
    try:
        joint = resolve_joint_pass(args.joint_pass, args.device)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    if args.precision not in PRECISIONS:
        raise SystemExit(f"error: precision must be one of {', '.join(PRECISIONS)}, got {args.precision!r}")
    cuda = args.device.startswith("cuda")
    args.steps = (20 if cuda else 2) if args.steps is None else args.steps
    args.warmup = (5 if cuda else 1) if args.warmup is None else args.warmup
    if args.child:
        print(json.dumps(run_one(args)))
        return
    print(
        f"inversion benchmark: {args.plan.upper()} plan at {args.resolution} px, w_dim {args.w_dim}, {args.device}"
        f", {args.precision}{', compiled' if args.compile else ''}"
        f", {'one pass per batch' if joint else 'one pass per image'}; "
        "full loss (MSE, LPIPS-AlexNet, ArcFace IR-SE50, delta-reg), "
        f"random weights; {args.steps} timed steps; torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    common = [f"--plan={args.plan}", f"--resolution={args.resolution}", f"--w-dim={args.w_dim}",
              f"--device={args.device}", f"--steps={args.steps}", f"--warmup={args.warmup}"]  # fmt: skip
    common += [f"--precision={args.precision}", f"--joint-pass={args.joint_pass}"] + (
        ["--compile"] if args.compile else []
    )
    results = []
    for loss_res in [int(x) for x in args.loss_resolutions.split(",")]:
        if loss_res and loss_res >= args.resolution:
            continue  # the same as full resolution
        for batch in [int(x) for x in args.batches.split(",")]:
            cmd = [
                sys.executable,
                "-m",
                f"scripts.{Path(__file__).stem}",
                "--child",
                f"--batch={batch}",
                f"--loss-resolution={loss_res}",
                *common,
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
            where = "full" if loss_res == 0 else str(loss_res)
            if proc.returncode != 0:
                reason = (proc.stderr.strip().splitlines() or ["unknown error"])[-1][:200]
                print(f"  batch {batch:2d}  LPIPS at {where:>4}: failed: {reason}", flush=True)
                results.append({"batch": batch, "loss_resolution": loss_res, "error": reason})
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            per_hour = 3600 * r["steps_per_s"] * batch / 1000
            r.update(batch=batch, loss_resolution=loss_res, images_per_hour=per_hour)
            results.append(r)
            print(
                f"  batch {batch:2d}  LPIPS at {where:>4}: {r['steps_per_s']:7.3f} steps/s  "
                f"peak {r['peak_bytes'] / 2**20:8.0f} MiB  {per_hour:8.2f} images/hour at 1000 steps "
                f"({per_hour / THESIS_IMAGES_PER_HOUR:.2f}x the thesis's {THESIS_IMAGES_PER_HOUR:.0f}/hour)",
                flush=True,
            )
    ok = [r for r in results if "error" not in r]
    if ok:
        base = next((r for r in ok if r["batch"] == 1 and r["loss_resolution"] == ok[0]["loss_resolution"]), ok[0])
        for r in ok:
            print(
                f"  batch {r['batch']} / batch {base['batch']} (LPIPS {r['loss_resolution'] or 'full'}): throughput "
                f"{r['images_per_hour'] / base['images_per_hour']:.2f}x, peak memory "
                f"{r['peak_bytes'] / max(base['peak_bytes'], 1):.2f}x"
            )
    print_rows(ok, args.warm_steps)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))


def print_rows(results: list[dict], warm_steps: int) -> None:
    """The issue-13 table rows: images/hour at the best batch per LPIPS resolution (goal >= 200 at 1000 steps),
    and frames/hour of the video warm start (one frame at a time, ``warm_steps`` each; goal >= 1000)."""
    print("| what | measured | goal |")
    print("| --- | --- | --- |")
    for loss_res in sorted({r["loss_resolution"] for r in results}):
        rows = [r for r in results if r["loss_resolution"] == loss_res]
        best = max(rows, key=lambda r: r["images_per_hour"])
        where = "full" if loss_res == 0 else loss_res
        print(
            f"| inversion, 1000 steps, full loss, LPIPS at {where} | {best['images_per_hour']:.2f} images/hour "
            f"(best batch {best['batch']} of {', '.join(str(r['batch']) for r in rows)}) | >= 200 images/hour |"
        )
        single = next((r for r in rows if r["batch"] == 1), None)
        if single is not None:
            print(
                f"| video warm start ({warm_steps} steps per following frame), LPIPS at {where} | "
                f"{3600 * single['steps_per_s'] / warm_steps:.1f} frames/hour | >= 1000 frames/hour |"
            )


if __name__ == "__main__":
    main()
