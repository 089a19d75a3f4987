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

With ``encoder=DIR`` (a train_encoder.py folder) it compares the starting points instead (:func:`bench_starts`):
per start (mean w, the encoder, the previous frame of a clip) the steps needed to reach the mean start's loss at
its last step and the device-seconds per frame, and the encoder target of issue 20 on held-out seeds:

    python -m scripts.bench_inversion encoder=out/encoder_smoke              # its network: the encoder's own
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
from stylegan3.runtime import resolve_impl

THESIS_IMAGES_PER_HOUR = 4.0  # 15 minutes per image, GTX 1080 Ti

REPO = Path(__file__).resolve().parents[1]
CHILD = [sys.executable, "-m", "scripts.bench_inversion"]  # each measurement in its own process


@dataclass
class BenchInversionConfig:
    ALIASES: ClassVar[dict[str, str]] = {"--config": "plan"}  # --config r: the layer plan (not a YAML file here)
    plan: str = "t"  # layer plan: t, r or sg2
    resolution: int = 64
    w_dim: int = 64
    channel_max: int | None = None  # at most this many channels per layer (smoke runs; None: the plan's)
    device: str = "cpu"
    impl: str = "auto"  # generator ops: auto (triton on CUDA after a passed trial, else fast), fast, reference, triton
    batches: str = "1,4,8"
    loss_resolutions: str = "0,256"  # LPIPS resolution, 0 = the generator's
    steps: int | None = None  # timed steps (default 2 CPU, 20 CUDA)
    warmup: int | None = None  # untimed steps first (default 1 CPU, 5 CUDA)
    precision: str = "fp32"  # autocast dtype (fp16: loss scaling)
    compile: bool = False  # torch.compile the synthesis network
    joint_pass: bool | str = "auto"  # one forward/backward per batch: true, false or auto (true on CUDA)
    warm_steps: int = 200  # steps per following frame of a video
    json: str | None = None  # also write the figures here
    encoder: str | None = None  # a train_encoder.py folder: compare the starts (mean, encoder, previous frame)
    network: str | None = None  # with encoder: the generator (default: the one named in its encoder.json)
    held_out: int = 8  # with encoder: held-out seeds (untruncated, never seen in training), from held_out_seed on
    held_out_seed: int = 1000000
    mean_steps: int = 500  # with encoder: steps from the mean w (the reference)
    encoder_steps: int = 100  # with encoder: steps from the encoder (and from the previous frame)
    clip: str = "../shared/samples/videos/grid_bbaf2n_crop256.mp4"  # with encoder: frames for the warm start
    clip_frames: int = 3  # with encoder: consecutive frames of the clip (0: no clip rows)
    child: bool = False  # internal: one measurement, printed as JSON
    batch: int = 1  # internal (child)
    loss_resolution: int = 0  # internal (child)


def run_one(args: BenchInversionConfig) -> dict:
    """Time ``args.steps`` inversion steps of one batch in this process."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    G = build_plan(args.plan, args.resolution, args.w_dim, args.channel_max).to(device)
    G.set_impl(resolve_impl(args.impl, device, G))
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
    if args.encoder:
        bench_starts(args)
        return
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
    common += [f"--impl={args.impl}"]
    common += [f"--precision={args.precision}", f"--joint-pass={args.joint_pass}"] + (
        ["--compile"] if args.compile else []
    )
    common += [f"--channel-max={args.channel_max}"] if args.channel_max is not None else []
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
    if not results:
        raise SystemExit(
            f"error: nothing to measure: every loss resolution of {args.loss_resolutions!r} is at or above the "
            f"generator's {args.resolution} px (use 0 for full resolution)"
        )
    if not ok:
        raise SystemExit("error: every measurement failed (see above)")
    if ok:
        base = next((r for r in ok if r["batch"] == 1 and r["loss_resolution"] == ok[0]["loss_resolution"]), ok[0])
        for r in ok:
            peak = f"{r['peak_bytes'] / base['peak_bytes']:.2f}x" if base["peak_bytes"] else "n/a (no baseline peak)"
            print(
                f"  batch {r['batch']} / batch {base['batch']} (LPIPS {r['loss_resolution'] or 'full'}): throughput "
                f"{r['images_per_hour'] / base['images_per_hour']:.2f}x, peak memory {peak}"
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


def _curve(G, targets, loss_fn, steps: int, w_init=None) -> tuple[torch.Tensor, torch.Tensor, float, torch.Tensor]:
    """Invert ``targets`` for ``steps`` steps: (MSE [steps + 1, N] and total loss [steps + 1, N] after k steps,
    k = 0..steps; seconds per image-step; the final latents)."""
    import time

    mse, total = [], []

    def record(step: int, terms: dict[str, torch.Tensor]) -> None:
        mse.append(terms["mse"].clone())
        total.append(sum(getattr(loss_fn.weights, k) * v for k, v in terms.items()))

    start = time.perf_counter()
    result = invert(G, targets, loss_fn, InverterOptions(steps=steps, log_every=0), w_init=w_init, callback=record)
    seconds = (time.perf_counter() - start) / max(1, steps * len(targets))
    mse.append(result.losses["mse"])
    total.append(result.losses["total"])
    return torch.stack(mse), torch.stack(total), seconds, result.w_plus


def steps_to_reach(curve: torch.Tensor, goal: torch.Tensor) -> list[int | None]:
    """Per image, the first k with ``curve[k] <= goal`` (None: not within the curve's steps)."""
    reached = curve <= goal[None]
    return [int(reached[:, i].nonzero()[0]) if reached[:, i].any() else None for i in range(curve.shape[1])]


def _median(values: list[float]) -> float:
    import statistics

    return statistics.median(values)


def _clip_targets(path: Path, frames: int, size: int) -> torch.Tensor | None:
    from inversion.targets import resize_square, to_tensor
    from reenactment.media.video import VideoReader

    if frames < 2 or not path.is_file():
        return None
    out = []
    with VideoReader(path) as reader:
        for frame in reader:
            h, w = frame.shape[:2]
            side = min(h, w)
            top, left = (h - side) // 2, (w - side) // 2
            out.append(to_tensor(resize_square(frame[top : top + side, left : left + side], size)))
            if len(out) == frames:
                break
    return torch.cat(out)


def bench_starts(args: BenchInversionConfig) -> dict:
    """Mean w vs encoder vs previous frame, MSE + delta-reg (the thesis's weights), one process, batch 1 passes.

    Held-out seeds: ``held_out`` images G(w) of untruncated seeds (``np.random.RandomState``, a stream the encoder's
    training never draws from). The target: after ``encoder_steps`` from the encoder, an MSE at least as low as after
    ``mean_steps`` from the mean; the steps ratio is ``mean_steps`` over the steps the encoder start needs to reach
    the mean start's final MSE. Clip: ``clip_frames`` consecutive frames; frame t > 0 starts from frame t-1's
    latent after ``mean_steps`` from the mean (the video warm start). Seconds per frame: the steps needed times
    the measured seconds per step (plus the encoder's forward pass for the encoder start).
    """
    import json as json_module
    import time
    from datetime import datetime, timezone

    import stylegan3
    from inversion.encoder import load_encoder, read_encoder
    from inversion.losses import LossWeights
    from stylegan3.sampling import synthesize, z_from_seeds

    device = torch.device(args.device)
    _, config = read_encoder(args.encoder)
    network = args.network or config["generator"]["name"]
    G = stylegan3.load(network, device=device)
    G.set_impl(resolve_impl(args.impl, device, G))
    encoder = load_encoder(args.encoder, G, network)
    loss_fn = InversionLoss(LossWeights(lpips=0, id=0))
    when = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%MZ")
    print(f"start benchmark ({when}): encoder {args.encoder} for {network}; MSE + delta-reg (0.1, 0.002); "
          f"{args.mean_steps} steps from the mean w, {args.encoder_steps} from the encoder or the previous frame; "
          f"{args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads")  # fmt: skip
    seeds = list(range(args.held_out_seed, args.held_out_seed + args.held_out))
    with torch.no_grad():
        w_true = G.mapping(z_from_seeds(seeds, G.z_dim).to(device), None)
        targets = synthesize(G, w_true)
    t = time.perf_counter()
    w_encoder = encoder.start(targets)
    encode_s = (time.perf_counter() - t) / len(targets)
    mean_mse, mean_total, mean_step_s, _ = _curve(G, targets, loss_fn, args.mean_steps)
    enc_mse, enc_total, enc_step_s, _ = _curve(G, targets, loss_fn, args.encoder_steps, w_encoder)
    # Every step costs the same (one batch-1 forward and backward of the same networks): the seconds per frame use
    # the seconds per step of all runs together, as a shared machine's load varies from run to run.
    runs = [(mean_step_s, args.mean_steps * len(targets)), (enc_step_s, args.encoder_steps * len(targets))]
    step_s = enc_step_s = sum(t * n for t, n in runs) / sum(n for _, n in runs)
    goal = mean_mse[-1]
    wins = (enc_mse[-1] <= goal).tolist()
    needed = steps_to_reach(enc_mse, goal)
    ratios = [
        args.mean_steps / max(1, k) if k is not None else args.mean_steps / (args.encoder_steps + 1) for k in needed
    ]
    print(f"held-out seeds {seeds[0]}-{seeds[-1]} (untruncated), per image:")
    header = f"MSE mean@{args.mean_steps:<4} MSE enc@{args.encoder_steps:<4} MSE enc@0"
    print(f"  seed     {header}  steps from the encoder to the mean's final MSE")
    for i, seed in enumerate(seeds):
        k = needed[i]
        print(f"  {seed}  {float(goal[i]):12.5f} {float(enc_mse[-1, i]):12.5f} {float(enc_mse[0, i]):10.5f}  "
              f"{'>' + str(args.encoder_steps) if k is None else k}")  # fmt: skip
    median_ratio = _median(ratios)
    print(f"target: {sum(wins)}/{len(wins)} images reach, after {args.encoder_steps} steps from the encoder, an MSE "
          f"at most the one after {args.mean_steps} steps from the mean (goal: >= 5 of 8)")  # fmt: skip
    print(
        f"median steps ratio (mean {args.mean_steps} / encoder's steps to the same MSE): {median_ratio:.1f}x"
        + (" (images not reached within the encoder's steps count as its steps + 1)" if None in needed else "")
    )
    enc_needed_total = steps_to_reach(enc_total, mean_total[-1])
    print(
        "per start, held-out seeds | median steps to the mean start's final loss (total) | seconds per frame | vs mean"
    )
    rows = {"mean": (args.mean_steps, args.mean_steps * step_s)}
    k_enc = _median([args.encoder_steps + 1 if k is None else k for k in enc_needed_total])
    rows["encoder"] = (k_enc, encode_s + max(1, k_enc) * enc_step_s)  # a start already there: one step to know it
    clip = _clip_targets(REPO / args.clip, args.clip_frames, G.img_resolution) if args.clip_frames else None
    report = {"held_out": {"seeds": seeds, "wins": sum(wins), "needed": needed, "median_ratio": median_ratio}}
    for name, (k, sec) in rows.items():
        print(f"  {name:8s} {k:8.1f} steps  {sec:8.3f} s  {rows['mean'][1] / sec:6.1f}x faster")
    if clip is not None:
        clip = clip.to(device)
        _, c_total, c_step, w_clip = _curve(G, clip, loss_fn, args.mean_steps)
        _, w_total, w_step, _ = _curve(G, clip[1:], loss_fn, args.encoder_steps, w_clip[:-1])
        runs += [(c_step, args.mean_steps * len(clip)), (w_step, args.encoder_steps * (len(clip) - 1))]
        t = time.perf_counter()
        w_enc = encoder.start(clip)
        c_encode = (time.perf_counter() - t) / len(clip)
        _, e_total, e_step, _ = _curve(G, clip, loss_fn, args.encoder_steps, w_enc)
        runs.append((e_step, args.encoder_steps * len(clip)))
        c_step = w_step = e_step = sum(t * n for t, n in runs) / sum(n for _, n in runs)
        k_warm = [args.encoder_steps + 1 if k is None else k for k in steps_to_reach(w_total, c_total[-1, 1:])]
        k_clip = [args.encoder_steps + 1 if k is None else k for k in steps_to_reach(e_total, c_total[-1])]
        print(f"per start, {len(clip)} frames of {args.clip} | median steps to the mean start's final loss | "
              "seconds per frame | vs mean")  # fmt: skip
        clip_rows = {
            "mean": (args.mean_steps, args.mean_steps * c_step),
            "encoder": (_median(k_clip), c_encode + max(1, _median(k_clip)) * e_step),
            "previous frame": (_median(k_warm), max(1, _median(k_warm)) * w_step),
        }
        for name, (k, sec) in clip_rows.items():
            print(f"  {name:14s} {k:8.1f} steps  {sec:8.3f} s  {clip_rows['mean'][1] / sec:6.1f}x faster")
        report["clip"] = {k: {"steps": v[0], "seconds": v[1]} for k, v in clip_rows.items()}
        print("(steps above the encoder's count: not reached within them)")
    report["held_out"]["rows"] = {k: {"steps": v[0], "seconds": v[1]} for k, v in rows.items()}
    report["seconds_per_step_by_run"] = [t for t, _ in runs]
    print("seconds per step, run by run (the shared machine's load): " + ", ".join(f"{t:.4f}" for t, _ in runs))
    if args.json:
        Path(args.json).write_text(json_module.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
