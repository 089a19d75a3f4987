"""Benchmark the generator: fast ops vs reference ops (or Triton), forward and forward+backward.

Each (path, pass) runs in a fresh process so that peak memory is its own; the figures come from
one invocation and are printed as ratios. Peak memory: on CPU the peak resident set size above the
process's size before the pass, on CUDA ``torch.cuda.max_memory_allocated`` above the same baseline.
``--precision`` runs the pass under autocast, ``--compile`` through ``torch.compile`` (compiled in the untimed
warm-up pass). The last lines are the issue-13 table row: NVIDIA's fused CUDA ops are not part of this project,
so their time (and the ratio to it) is for a run of NVIDIA's code on the same machine.

Each measurement also times the filtered leaky ReLUs alone (every StyleGAN3 layer's op on inputs of its shape, the
same pass) and divides their memory floor (forward: read x, write y; backward: read x and gy, write gx) by that time:
the achieved bytes/s, against the device's peak (CUDA: from its memory clock and bus width; ``peak_gbps`` overrides).
The ratios compare every impl with the first of ``--impls``. Triton on the CPU runs only under its interpreter
(``TRITON_INTERPRET=1``): such timings check that the bench runs, they are no speed figures.

    python scripts/bench_generator.py                       # SG3-R layer plan at 256 px on CPU
    python scripts/bench_generator.py --config t --resolution 1024 --device cuda --amp
    python scripts/bench_generator.py --config r --resolution 1024 --device cuda --precision bf16 --compile
    python scripts/bench_generator.py --config r --resolution 1024 --device cuda --impls fast,triton --batch 8
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from inversion.precision import PRECISIONS, autocast
from stylegan3 import ops
from stylegan3.bench import PLANS, build_plan, time_and_peak
from stylegan3.compile import compiled_synthesis
from stylegan3.config import parse_cli

REPO = Path(__file__).resolve().parents[1]
CHILD = [sys.executable, "-m", "scripts.bench_generator"]  # each measurement in its own process


@dataclass
class BenchGeneratorConfig:
    ALIASES: ClassVar[dict[str, str]] = {"--config": "plan"}  # --config r: the layer plan (not a YAML file here)
    plan: str = "r"  # StyleGAN3 config t or r, or sg2
    resolution: int = 256  # output resolution of the layer plan
    w_dim: int = 512
    channel_max: int | None = None  # at most this many channels per layer (smoke runs; None: the plan's)
    batch: int = 1
    device: str = "cpu"
    amp: bool = False  # float16 in the high-resolution layers (CUDA)
    precision: str = "fp32"  # autocast dtype of the pass: fp32, bf16, fp16
    compile: bool = False  # torch.compile the synthesis network
    checkpointing: bool = False  # per-layer gradient checkpointing (fast path)
    warmup: int | None = None  # untimed passes first (default 0 CPU, 2 CUDA)
    repeats: int | None = None  # timed passes (default 1 CPU, 5 CUDA)
    impls: str = "fast,reference"  # ops implementations to compare: fast, reference, triton (ratios to the first)
    peak_gbps: float | None = None  # the device's peak memory bandwidth in GB/s (default: CUDA's own figures)
    passes: str = "fwd,fwdbwd"
    json: str | None = None  # also write the figures here
    child: bool = False  # internal: one measurement, printed as JSON
    impl: str = "fast"  # internal (child): the ops implementation
    pass_: str = "fwd"  # internal (child): fwd or fwdbwd


def run_one(args: BenchGeneratorConfig) -> dict:
    """Time one pass of one path in this process; returns seconds and peak memory in bytes."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    G = build_plan(args.plan, args.resolution, args.w_dim, args.channel_max).to(device)
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
    op_seconds, op_bytes = time_filtered_lrelu(G, args, device)
    return {"seconds": seconds / args.repeats, "peak_bytes": peak, "op_seconds": op_seconds, "op_floor_bytes": op_bytes}


def time_filtered_lrelu(G, args: BenchGeneratorConfig, device: torch.device) -> tuple[float | None, int]:
    """Seconds of every StyleGAN3 layer's filtered leaky ReLU alone in one pass (on random inputs of the layer's
    shape and dtype) and the bytes that pass must move at least; (None, 0) for StyleGAN2."""
    from stylegan3.networks_stylegan3 import SynthesisLayer

    layers = [m for m in G.modules() if isinstance(m, SynthesisLayer)]
    if not layers:
        return None, 0
    if args.impl == "triton":
        from stylegan3 import triton_ops

        op = triton_ops.filtered_lrelu
    else:
        op = ops.filtered_lrelu_ref if args.impl == "reference" else ops.filtered_lrelu
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.precision]
    backward = args.pass_ == "fwdbwd"
    calls, floor = [], 0
    gen = torch.Generator().manual_seed(2)
    for layer in layers:
        layer_dtype = torch.float16 if args.amp and layer.use_fp16 and device.type == "cuda" else dtype
        h, w = (int(s) + layer.conv_kernel - 1 for s in layer.in_size[::-1])
        x = torch.randn([args.batch, layer.out_channels, h, w], generator=gen).to(device, layer_dtype)
        kwargs = dict(
            fu=layer.up_filter, fd=layer.down_filter, b=layer.bias.detach().to(device, layer_dtype),
            up=layer.up_factor, down=layer.down_factor, padding=layer.padding,
            gain=1.0 if layer.is_torgb else 2**0.5, slope=1.0 if layer.is_torgb else 0.2, clamp=layer.conv_clamp,
        )  # fmt: skip
        with torch.no_grad():
            y_numel = op(x, **kwargs).numel()
        size = x.element_size()
        floor += (x.numel() + y_numel) * size + ((2 * x.numel() + y_numel) * size if backward else 0)
        gy = torch.randn([y_numel], generator=gen).to(device, layer_dtype) if backward else None
        calls.append((x.requires_grad_(backward), kwargs, gy))

    def passes() -> None:
        for _ in range(args.repeats):
            for x, kwargs, gy in calls:
                with torch.set_grad_enabled(backward):
                    y = op(x, **kwargs)
                    if backward:
                        torch.autograd.grad(y, [x], gy.reshape(y.shape))

    for _ in range(args.warmup or 1):  # at least once: Triton compiles each kernel on its first call
        passes()
    seconds, _ = time_and_peak(passes, device)
    return seconds / args.repeats, floor


def peak_bandwidth(args: BenchGeneratorConfig) -> float | None:
    """Bytes/s: ``peak_gbps``, else CUDA's memory clock (kHz, double data rate) x bus width; None on the CPU."""
    if args.peak_gbps is not None:
        return args.peak_gbps * 1e9
    if not args.device.startswith("cuda"):
        return None
    props = torch.cuda.get_device_properties(torch.device(args.device))
    clock, bus = getattr(props, "memory_clock_rate", 0), getattr(props, "memory_bus_width", 0)
    return 2 * clock * 1e3 * bus / 8 if clock and bus else None


def op_summary(r: dict, peak: float | None) -> str:
    if r.get("op_seconds") is None:
        return ""
    rate = r["op_floor_bytes"] / r["op_seconds"]
    share = f", {100 * rate / peak:.1f}% of peak {peak / 1e9:.0f} GB/s" if peak else ", peak unknown (peak_gbps=)"
    return (
        f"   filtered lrelu alone {r['op_seconds']:8.3f} s, floor {r['op_floor_bytes'] / 1e9:.3f} GB, "
        f"{rate / 1e9:.3g} GB/s{share}"
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_cli(BenchGeneratorConfig, argv, __doc__)
    if args.plan not in PLANS:
        raise SystemExit(f"error: plan must be one of {', '.join(sorted(PLANS))}, got {args.plan!r}")
    if args.precision not in PRECISIONS:
        raise SystemExit(f"error: precision must be one of {', '.join(PRECISIONS)}, got {args.precision!r}")
    cuda = args.device.startswith("cuda")
    args.warmup = (2 if cuda else int(args.compile)) if args.warmup is None else args.warmup
    args.repeats = (5 if cuda else 1) if args.repeats is None else args.repeats
    if args.child:
        print(json.dumps(run_one(args)))
        return

    common = [
        f"--plan={args.plan}", f"--resolution={args.resolution}", f"--w-dim={args.w_dim}",
        f"--batch={args.batch}", f"--device={args.device}", f"--warmup={args.warmup}", f"--repeats={args.repeats}",
        f"--precision={args.precision}",
    ] + (["--amp"] if args.amp else []) + (["--checkpointing"] if args.checkpointing else [])  # fmt: skip
    common += ["--compile"] if args.compile else []
    common += [f"--channel-max={args.channel_max}"] if args.channel_max is not None else []
    results: dict[str, dict[str, dict]] = {}
    precision = ("float16 layers, " if args.amp else "") + args.precision + (", compiled" if args.compile else "")
    print(
        f"StyleGAN generator benchmark: config {args.plan.upper()}, {args.resolution} px, w_dim {args.w_dim}, "
        f"batch {args.batch}, {args.device}, {precision}{', checkpointing' if args.checkpointing else ''}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    peak = peak_bandwidth(args)
    for impl in args.impls.split(","):
        for pass_ in args.passes.split(","):
            cmd = [
                sys.executable,
                "-m",
                f"scripts.{Path(__file__).stem}",
                "--child",
                f"--impl={impl}",
                f"--pass_={pass_}",
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
            print(
                f"  {impl:9s} {pass_:6s} {r['seconds']:8.3f} s   peak {r['peak_bytes'] / 2**20:9.0f} MiB"
                + op_summary(r, peak),
                flush=True,
            )
    impls = args.impls.split(",")
    for pass_ in args.passes.split(","):
        base = results.get(impls[0], {}).get(pass_, {})
        for impl in impls[1:]:
            r = results.get(impl, {}).get(pass_, {})
            if "seconds" not in base or "seconds" not in r:
                continue
            line = (
                f"  {pass_:6s} {impl}/{impls[0]}: time {r['seconds'] / base['seconds']:.2f}x "
                f"(speed-up {base['seconds'] / r['seconds']:.2f}x), "
                f"peak memory {r['peak_bytes'] / max(base['peak_bytes'], 1):.2f}x"
            )
            if r.get("op_seconds") and base.get("op_seconds"):
                line += f"; filtered lrelu alone {r['op_seconds'] / base['op_seconds']:.2f}x"
            print(line)
    fast = results.get("fast", {}).get("fwdbwd", {})
    if "seconds" in fast:
        print("| what | measured | goal |")
        print("| --- | --- | --- |")
        print(
            f"| generator fwd+bwd, batch {args.batch}, {precision} | {fast['seconds']:.3f} s (ours, fast ops); "
            f"NVIDIA's fused CUDA ops: not run here, ratio open | within 1.2x of NVIDIA's |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()
