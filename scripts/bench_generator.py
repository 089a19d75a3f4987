"""Benchmark the generator: fast ops vs reference ops, forward and forward+backward.

Each (path, pass) runs in a fresh process so that peak memory is its own; the figures come from
one invocation and are printed as ratios. Peak memory: on CPU the peak resident set size above the
process's size before the pass, on CUDA ``torch.cuda.max_memory_allocated`` above the same baseline.
``--precision`` runs the pass under autocast, ``--compile`` through ``torch.compile`` (compiled in the untimed
warm-up pass). The last lines are the issue-13 table row: NVIDIA's fused CUDA ops are not part of this project,
so their time (and the ratio to it) is for a run of NVIDIA's code on the same machine.

    python scripts/bench_generator.py                       # SG3-R layer plan at 256 px on CPU
    python scripts/bench_generator.py --config t --resolution 1024 --device cuda --amp
    python scripts/bench_generator.py --config r --resolution 1024 --device cuda --precision bf16 --compile
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

from inversion.precision import PRECISIONS, autocast
from stylegan3.bench import PLANS, build_plan, time_and_peak
from stylegan3.compile import compiled_synthesis

REPO = Path(__file__).resolve().parents[1]
CHILD = [sys.executable, "-m", "scripts.bench_generator"]  # each measurement in its own process


def run_one(args: argparse.Namespace) -> dict:
    """Time one pass of one path in this process; returns seconds and peak memory in bytes."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    G = build_plan(args.config, args.resolution, args.w_dim).to(device)
    G.set_impl(args.impl)
    G.set_gradient_checkpointing(args.checkpointing)
    ws = G.mean_w(n=100).unsqueeze(0).repeat(args.batch, 1, 1).to(device)
    ws = ws + 0.1 * torch.randn(ws.shape, generator=torch.Generator().manual_seed(1)).to(device)
    backward = args.pass_ == "fwdbwd"
    force_fp32 = not args.amp
    synthesis = compiled_synthesis(G).synthesis if args.compile else G.synthesis

    def step() -> None:
        w = ws.clone().requires_grad_(backward)
        with torch.set_grad_enabled(backward):
            with autocast(args.precision, device):
                img = synthesis(w, force_fp32=force_fp32)
            if backward:
                img.float().square().mean().backward()

    for _ in range(args.warmup):
        step()

    def timed() -> None:
        for _ in range(args.repeats):
            step()

    seconds, peak = time_and_peak(timed, device)
    return {"seconds": seconds / args.repeats, "peak_bytes": peak}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=sorted(PLANS), default="r", help="StyleGAN3 config T or R, or sg2")
    parser.add_argument("--resolution", type=int, default=256, help="output resolution of the layer plan")
    parser.add_argument("--w-dim", type=int, default=512)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="float16 in the high-resolution layers (CUDA)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32", help="autocast dtype of the pass")
    parser.add_argument("--compile", action="store_true", help="torch.compile the synthesis network")
    parser.add_argument("--checkpointing", action="store_true", help="per-layer gradient checkpointing (fast path)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed passes first (default 0 CPU, 2 CUDA)")
    parser.add_argument("--repeats", type=int, default=None, help="timed passes (default 1 CPU, 5 CUDA)")
    parser.add_argument("--impls", default="fast,reference")
    parser.add_argument("--passes", default="fwd,fwdbwd")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--impl", default="fast", help=argparse.SUPPRESS)
    parser.add_argument("--pass", dest="pass_", default="fwd", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    args.warmup = (2 if cuda else int(args.compile)) if args.warmup is None else args.warmup
    args.repeats = (5 if cuda else 1) if args.repeats is None else args.repeats
    if args.child:
        print(json.dumps(run_one(args)))
        return

    common = [
        f"--config={args.config}", f"--resolution={args.resolution}", f"--w-dim={args.w_dim}",
        f"--batch={args.batch}", f"--device={args.device}", f"--warmup={args.warmup}", f"--repeats={args.repeats}",
        f"--precision={args.precision}",
    ] + (["--amp"] if args.amp else []) + (["--checkpointing"] if args.checkpointing else [])  # fmt: skip
    common += ["--compile"] if args.compile else []
    results: dict[str, dict[str, dict]] = {}
    precision = ("float16 layers, " if args.amp else "") + args.precision + (", compiled" if args.compile else "")
    print(
        f"StyleGAN generator benchmark: config {args.config.upper()}, {args.resolution} px, w_dim {args.w_dim}, "
        f"batch {args.batch}, {args.device}, {precision}{', checkpointing' if args.checkpointing else ''}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    for impl in args.impls.split(","):
        for pass_ in args.passes.split(","):
            cmd = [
                sys.executable,
                "-m",
                f"scripts.{Path(__file__).stem}",
                "--child",
                f"--impl={impl}",
                f"--pass={pass_}",
                *common,
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
            if proc.returncode != 0:  # e.g. out of memory: report it and go on
                reason = (proc.stderr.strip().splitlines() or ["unknown error"])[-1][:200]
                results.setdefault(impl, {})[pass_] = {"error": reason}
                print(f"  {impl:9s} {pass_:6s} failed: {reason}", flush=True)
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            results.setdefault(impl, {})[pass_] = r
            print(f"  {impl:9s} {pass_:6s} {r['seconds']:8.3f} s   peak {r['peak_bytes'] / 2**20:9.0f} MiB", flush=True)
    for pass_ in args.passes.split(","):
        f, r = results.get("fast", {}).get(pass_, {}), results.get("reference", {}).get(pass_, {})
        if "seconds" in f and "seconds" in r:
            print(
                f"  {pass_:6s} fast/reference: time {f['seconds'] / r['seconds']:.2f}x "
                f"(speed-up {r['seconds'] / f['seconds']:.2f}x), "
                f"peak memory {f['peak_bytes'] / max(r['peak_bytes'], 1):.2f}x"
            )
    fast = results.get("fast", {}).get("fwdbwd", {})
    if "seconds" in fast:
        print("| what | measured | goal |")
        print("| --- | --- | --- |")
        print(
            f"| generator fwd+bwd, batch {args.batch}, {precision} | {fast['seconds']:.3f} s (ours, fast ops); "
            f"NVIDIA's fused CUDA ops: not run here, ratio open | within 1.2x of NVIDIA's |"
        )
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "results": results}, indent=2))


if __name__ == "__main__":
    main()
