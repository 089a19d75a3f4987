"""Compile the Triton filtered leaky ReLU kernels of every StyleGAN3 layer plan for a GPU without one.

For each distinct kernel configuration of the T and R plans at ``resolution`` (tile blocks, separable terms, dtype)
the forward and backward kernels are compiled for ``arch`` (default sm_90, H100/H200) and the bundled ``ptxas -v``
reports registers and spills per thread: the check that the tile budget of ``stylegan3.triton_ops`` fits the
registers, made on a machine with no GPU. Needs Triton's NVIDIA backend (CUDA wheels of PyTorch); not under
TRITON_INTERPRET=1.

    python scripts/check_triton_compile.py                  # sm_90, 1024 px plans
    python scripts/check_triton_compile.py --arch 80 --plans r
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass

import torch

from stylegan3.bench import build_plan
from stylegan3.config import parse_cli


@dataclass
class CheckTritonCompileConfig:
    plans: str = "t,r"  # StyleGAN3 layer plans
    resolution: int = 1024
    arch: int = 90  # CUDA compute capability, e.g. 80 (A100), 90 (H100/H200)
    dtypes: str = "fp32,bf16"  # input dtypes (fp16 compiles as bf16 does)


def _compile(kernel, consts: dict, warps: int, dtype: str, arch: int) -> str:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    names = kernel.arg_names
    data = ("x_ptr", "b_ptr", "y_ptr", "gy_ptr", "gx_ptr")
    signature = {}
    for name in names:
        if name in consts:
            signature[name] = "constexpr"
        elif name in ("cy_ptr", "cx_ptr"):  # the backward's chunk ranges per tile
            signature[name] = "*i32"
        elif name.endswith("_ptr"):
            signature[name] = "*" + (dtype if name in data else "fp32")
        else:
            signature[name] = "fp32" if name in ("gain", "slope", "clamp") else "i32"
    source = ASTSource(kernel, signature, constexprs={(names.index(k),): v for k, v in consts.items()})
    compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options={"num_warps": warps})
    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    with tempfile.TemporaryDirectory() as tmp:
        ptx = os.path.join(tmp, "kernel.ptx")
        with open(ptx, "w") as f:
            f.write(compiled.asm["ptx"])
        out = subprocess.run(
            [ptxas, "-v", f"-arch=sm_{arch}{'a' if arch == 90 else ''}", ptx, "-o", os.devnull],
            capture_output=True,
            text=True,
        ).stderr
    regs = next((line.split("Used")[1].split(",")[0].strip() for line in out.splitlines() if "Used" in line), "?")
    spill = next((line.split(",")[1].strip() for line in out.splitlines() if "spill stores" in line), "?")
    return f"{regs}, {spill}"


def main(argv: list[str] | None = None) -> None:
    cfg = parse_cli(CheckTritonCompileConfig, argv, __doc__)
    from stylegan3 import triton_ops
    from stylegan3.networks_stylegan3 import SynthesisLayer

    if triton_ops.INTERPRETED:
        raise SystemExit("error: unset TRITON_INTERPRET: this compiles the kernels for a GPU")
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    seen = set()
    for plan in cfg.plans.split(","):
        G = build_plan(plan, cfg.resolution)
        for layer in G.modules():
            if not isinstance(layer, SynthesisLayer) or layer.is_torgb:
                continue
            h, w = (int(s) + layer.conv_kernel - 1 for s in layer.in_size[::-1])
            for name in cfg.dtypes.split(","):
                dtype = dtypes[name]
                p = triton_ops.gpu_plan(
                    (h, w), layer.up_filter, layer.down_filter, layer.up_factor, layer.down_factor, layer.padding, dtype
                )
                fy, fx, gy, gx = (p[k]["blocks"] for k in ("fy", "fx", "gy", "gx"))
                key = (name, p["R"], fy, fx, gy, gx)
                if key in seen:
                    continue
                seen.add(key)
                common = dict(HAS_BIAS=True, HAS_CLAMP=True, R=p["R"], P=1, PREC=triton_ops._precision(dtype))
                fwd = dict(common, BOY=fy[0], BAY=fy[1], BIY=fy[2], BOX=fx[0], BAX=fx[1], BIX=fx[2])
                bwd = dict(common, BGY=gy[0], BBY=gy[1], BIY=gy[2], BOY=gy[3], BGX=gx[0], BBX=gx[1], BIX=gx[2])
                bwd["BOX"] = gx[3]
                warps_f = triton_ops._warps(max(fy[1] * fx[1], fy[1] * fx[2], fy[2] * fx[2]))
                warps_b = triton_ops._warps(max(gy[1] * gx[1], gy[1] * gx[2], gy[2] * gx[2], gy[1] * gx[3]))
                type_ = "bf16" if name != "fp32" else "fp32"
                print(
                    f"{plan.upper()} {layer.extra_repr().split(', kernel')[0]} {name} R={p['R']}: "
                    f"forward blocks {fy}x{fx} {warps_f} warps: "
                    f"{_compile(triton_ops._fwd_kernel, fwd, warps_f, type_, cfg.arch)}; "
                    f"backward blocks {gy}x{gx} {warps_b} warps: "
                    f"{_compile(triton_ops._bwd_kernel, bwd, warps_b, type_, cfg.arch)}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
