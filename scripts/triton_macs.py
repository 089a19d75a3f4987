"""Count the tensor multiply-adds of the Triton filtered leaky ReLU per layer of the StyleGAN3 layer plans.

For each layer of the T and R plans at ``resolution`` with ``batch`` images: the multiply-adds that the ``tl.dot``
products of the forward and the backward kernel issue on a GPU (its tile budgets, one plane per program, the padded
blocks; float32 inputs' ``tf32x3`` products count three times), for float32 and half (bfloat16/float16) inputs.
Counted from the tilings, no GPU needed (under ``TRITON_INTERPRET=1`` too). ``max_chunks=1`` gives the backward's
tiling before issue 32 (one block of pre-activations per tile). ``trial=true`` also times the trial that ``impl=auto``
runs before it trusts the kernels on ``device`` (the plans' layer kinds in three dtypes; on the CPU under
``TRITON_INTERPRET=1``), and counts the kernel configurations it compiles on a GPU.

    python -m scripts.triton_macs                     # T and R at 1024 px, batch 8
    python -m scripts.triton_macs max_chunks=1        # the single-block backward
    python -m scripts.triton_macs trial=true device=cuda
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from stylegan3.bench import build_plan
from stylegan3.config import parse_cli


@dataclass
class TritonMacsConfig:
    plans: str = "t,r"  # StyleGAN3 layer plans
    resolution: int = 1024
    batch: int = 8  # images per pass
    max_chunks: int = 6  # the backward's chunks of pre-activations per tile and axis (1: one block, as before)
    trial: bool = False  # also time impl=auto's trial of the plans' layer kinds on device
    device: str = "cpu"  # where the trial runs (cpu: under TRITON_INTERPRET=1)


def layer_macs(G: torch.nn.Module, batch: int, dtype: torch.dtype, max_chunks: int) -> list[tuple[str, int, int]]:
    """(layer, forward, backward) multiply-adds of every layer of ``G`` with a fused kernel."""
    from stylegan3 import triton_ops

    rows = []
    for name in G.synthesis.layer_names:
        layer = getattr(G.synthesis, name)
        args = layer.filtered_lrelu_args()
        shape = [batch, layer.out_channels, *(int(s) + layer.conv_kernel - 1 for s in layer.in_size[::-1])]
        if not triton_ops.supports(torch.empty(0, 0, 0, 0), args["fu"], args["fd"], args["up"], args["down"]):
            continue  # ToRGB: the fast path
        plan = triton_ops.gpu_plan(
            shape, args["fu"], args["fd"], args["up"], args["down"], args["padding"], dtype, max_chunks
        )
        rows.append((name, *triton_ops.tensor_macs(plan, batch * layer.out_channels, dtype)))
    return rows


def main(argv: list[str] | None = None) -> None:
    cfg = parse_cli(TritonMacsConfig, argv, __doc__)
    if cfg.trial:
        from stylegan3.runtime import resolve_device

        plans = torch.nn.ModuleList([build_plan(plan, cfg.resolution, 4, 1) for plan in cfg.plans.split(",")])
        time_trial(plans, resolve_device(cfg.device))
    print(f"# tensor multiply-adds (T = 1e12) at batch {cfg.batch}, max_chunks={cfg.max_chunks}")
    for plan in cfg.plans.split(","):
        G = build_plan(plan, cfg.resolution)
        totals = {}
        for label, dtype in (("fp32", torch.float32), ("half", torch.bfloat16)):
            rows = layer_macs(G, cfg.batch, dtype, cfg.max_chunks)
            for name, fwd, bwd in rows:
                layer = getattr(G.synthesis, name)
                print(
                    f"{plan.upper()} {cfg.resolution} {name} up{layer.up_factor} down{layer.down_factor} "
                    f"{label}: forward {fwd / 1e12:.3f} T, backward {bwd / 1e12:.3f} T ({bwd / fwd:.2f}x)"
                )
            totals[label] = (sum(r[1] for r in rows), sum(r[2] for r in rows))
        for label, (fwd, bwd) in totals.items():
            print(f"{plan.upper()} {cfg.resolution} all layers {label}: forward {fwd / 1e12:.1f} T, backward "
                  f"{bwd / 1e12:.1f} T ({bwd / fwd:.2f}x)")  # fmt: skip


def time_trial(G: torch.nn.Module, device: torch.device) -> None:
    """Run impl=auto's trial of ``G``'s layer kinds on ``device`` in this fresh process and print its time."""
    import time

    from stylegan3 import triton_ops

    kinds = triton_ops.layer_kinds(G)
    configs = set()
    for args in kinds.values():
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            p = triton_ops.gpu_plan(
                triton_ops.TRIAL_SHAPE, *(args[k] for k in ("fu", "fd", "up", "down", "padding")), dtype
            )
            configs.add(("forward", dtype, p["R"], p["fy"]["blocks"], p["fx"]["blocks"]))
            configs.add(("backward", dtype, p["R"], p["gy"]["blocks"], p["gx"]["blocks"]))
    start = time.perf_counter()
    reason = triton_ops.trial(G, device)
    seconds = time.perf_counter() - start
    print(f"trial on {device}: {len(kinds)} layer kinds x 3 dtypes in {seconds:.1f} s, "
          f"{'passed' if reason is None else 'failed: ' + reason}; {len(configs)} kernel configurations (a GPU's "
          "tiling; compiled at a GPU's first trial, then read from Triton's cache)")  # fmt: skip


if __name__ == "__main__":
    main()
