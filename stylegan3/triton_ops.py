"""The filtered leaky ReLU of StyleGAN3 as fused Triton kernels (the CUDA fast path; tested on the CPU).

One kernel computes a tile of the final (downsampled) output per program, from the matching tile of the input:
bias, upsampling by ``up`` with ``fu``, gain, leaky ReLU, clamp and downsampling by ``down`` with ``fd``. The upsampled
activation lives only in registers, never in memory. Each 1-D pass over a tile is a small matrix product with a banded
matrix of filter taps built once on the host (``tl.dot``), so the upsampler multiplies only the non-zero taps of each
output phase (polyphase: no explicit zeros), and the downsampler computes only the kept pixels. The tiles start at
multiples of the resampling period, so one matrix per axis serves every tile. A radial (2-D) down filter is its
singular-value expansion, a few separable terms (StyleGAN3-R's 12x12 filters have 3-6 terms above float32 rounding).

The backward kernel gathers: each program computes a tile of the input gradient, recomputing the pre-activations it
needs from the input (nothing but ``x`` and ``b`` is saved), then ``gx = U^T (act'(u) * D^T gy)``, in chunks of the
pre-activations (several per tile and axis, one recomputation matrix for all) so that a tile's halo of ``ku`` taps is
paid once, not per block. The bias gradient is the sum of ``gx`` over batch and space.

Inputs may be float32, bfloat16 or float16; every tile is computed in float32 (on CUDA the products of a float32 input
run as ``tf32x3``, close to float32; those of half inputs as ``tf32``, whose 10-bit mantissa holds the taps better than
the input's own format, with operands rounded to the nearest tf32 first: the hardware truncates them). Outputs and
gradients are in the input's dtype. Launches run on their tensors' CUDA device, whatever the current one.
:func:`trial` runs every layer kind of a generator through the kernels against the fast path, once per process and
device: ``impl=auto`` trusts the kernels only after it (:func:`stylegan3.runtime.resolve_impl`).

What falls back to :func:`stylegan3.ops.filtered_lrelu` (the pure-PyTorch fast path): no filters at all (the ToRGB
layer: bias and clamp only, nothing to fuse), a 2-D up filter, up or down factors other than 1, 2 and 4, filters
longer than a tile allows (more than 64 taps), float64 inputs.

Kernels run on CUDA, or on the CPU under the Triton interpreter (``TRITON_INTERPRET=1`` set before the first import of
this module), which is how the tests check them against :func:`stylegan3.ops.filtered_lrelu_ref`.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import threading

import numpy as np
import torch

from . import ops

try:
    import triton
    import triton.language as tl
except ImportError as _err:  # pragma: no cover - Triton ships with PyTorch's CUDA wheels
    triton = None
    _IMPORT_ERROR = f"{type(_err).__name__}: {_err}"
else:
    _IMPORT_ERROR = None

# Decided when the kernels below are decorated: under the interpreter they run on CPU tensors only.
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
_BLOCKS = (16, 32, 64, 128)


def _gpu_tile_budget(dtype: torch.dtype) -> int:
    """Elements of the largest array a program may hold on a GPU (see :func:`_tile_budget`)."""
    return 32 * 32 if dtype == torch.float32 else 64 * 64


def _tile_budget(dtype: torch.dtype) -> int:
    """Elements of the largest array a program may hold. Tiles are as large as this allows: fewer programs, less
    halo per output (the matrix products cost more per output as tiles grow, a small share of the work here). On a
    GPU the arrays live in registers. Compiled for sm_90 here (ptxas -v; no GPU run): float32 (tf32x3 products, hi
    and lo halves of every operand) with 64 x 64 arrays used 255 registers and spilled 1.6 kB a thread, with 32 x 32
    arrays 168 (forward) and no spill; half inputs (tf32) with 64 x 64 arrays at 8 warps: 253-255 registers. The
    chunked backward (its tiling chooses 16-wide chunks) used 66-190 registers and spilled at most 32 bytes
    (docs/bench/triton_compile_sm90.log). The interpreter runs programs one after another at a fixed cost per
    operation: there the largest win."""
    if INTERPRETED:
        return 128 * 128
    return _gpu_tile_budget(dtype)


_SVD_REL = 2e-8  # singular values of a 2-D filter below this x the largest are dropped (below float32 rounding)
# The largest error allowed against the reference, x max|reference| (outputs and gradients): the tests' and the trial's.
TOLERANCE = {torch.float32: 2e-6, torch.bfloat16: 1e-2, torch.float16: 2e-3}
TRIAL_SHAPE = (1, 2, 24, 23)  # the trial's input per layer kind: several tiles per axis at the GPU's float32 budget
_TRIALS: dict[tuple[torch.device, str, torch.dtype], str | None] = {}  # (device, kind, dtype) -> why it failed
_TRIALS_LOCK = threading.Lock()


def unavailable_reason(device: torch.device | str) -> str | None:
    """Why the Triton kernels cannot run on ``device`` (one line), or None when they can."""
    device = torch.device(device)
    if triton is None:
        return f"Triton is not importable ({_IMPORT_ERROR})"
    if device.type == "cuda":
        if INTERPRETED:
            return "the Triton interpreter (TRITON_INTERPRET=1) runs kernels on CPU tensors only, not on CUDA"
        return None if torch.cuda.is_available() else "CUDA is not available"
    if device.type == "cpu":
        if INTERPRETED:
            return None
        return "Triton runs on the CPU only under its interpreter: set TRITON_INTERPRET=1 before starting Python"
    return f"Triton has no backend for {device.type} devices (it runs on CUDA, or on the CPU under TRITON_INTERPRET=1)"


def check_available(device: torch.device | str) -> None:
    """Raise a one-line RuntimeError when the Triton kernels cannot run on ``device``."""
    reason = unavailable_reason(device)
    if reason is not None:
        raise RuntimeError(f"impl 'triton' cannot run on {torch.device(device)}: {reason}")


def supports(x: torch.Tensor, fu: torch.Tensor | None, fd: torch.Tensor | None, up: int, down: int) -> bool:
    """Whether a fused kernel covers this layer (else :func:`filtered_lrelu` takes the pure-PyTorch fast path)."""
    if fu is None and fd is None:
        return False  # nothing to filter: bias + activation only
    if x.ndim != 4 or x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        return False
    if up not in (1, 2, 4) or down not in (1, 2, 4):
        return False
    if fu is not None and (fu.ndim != 1 or fu.shape[0] > 64):
        return False
    return fd is None or (fd.ndim == 1 or (fd.ndim == 2 and fd.shape[0] == fd.shape[1])) and fd.shape[0] <= 64


# ----------------------------------------------------------------------------------------
# Host side: per axis, the banded matrices of one tile and where each tile starts.


def _np2(n: int) -> int:
    return max(16, 1 << max(0, int(n) - 1).bit_length())


def _cdiv(a: int, b: int) -> int:
    return -((-a) // b)


def _up_matrix(fu: np.ndarray, up: int, p0: int, t0: int, i0: int, rows: int, cols: int) -> np.ndarray:
    """``M[t, i]``: weight of input ``i0 + i`` in upsampled sample ``t0 + t`` (per-axis gain ``up``)."""
    ku = len(fu)
    t = np.arange(rows)[:, None]
    i = np.arange(cols)[None, :]
    k = (i0 + i) * up + p0 - (t0 + t)
    ok = (k >= 0) & (k < ku)
    return np.where(ok, fu[np.clip(ku - 1 - k, 0, ku - 1)] * up, 0.0)


def _down_matrix(fd: np.ndarray, down: int, t0: int, o0: int, rows: int, cols: int) -> np.ndarray:
    """``M[o, t]``: weight of activation ``t0 + t`` in output ``o0 + o``."""
    kd = len(fd)
    o = np.arange(rows)[:, None]
    t = np.arange(cols)[None, :]
    k = (t0 + t) - (o0 + o) * down
    ok = (k >= 0) & (k < kd)
    return np.where(ok, fd[np.clip(kd - 1 - k, 0, kd - 1)], 0.0)


def _pad(m: np.ndarray, rows: int, cols: int) -> np.ndarray:
    out = np.zeros([rows, cols])
    out[: m.shape[0], : m.shape[1]] = m[:rows, :cols]
    return out


def _forward_axis(n: int, up: int, down: int, p0: int, p1: int, fu: np.ndarray, fds: list[np.ndarray], ba: int):
    """Tiling of one axis for the forward kernel with an activation block of ``ba`` samples, or None."""
    ku, kd = len(fu), len(fds[0])
    lu = n * up + p0 + p1 - ku + 1
    ly = (lu - kd) // down + 1
    if ly < 1:
        raise ValueError(f"filtered_lrelu: empty output along an axis (input {n}, padding {p0}, {p1})")
    to = (ba - kd) // down + 1
    if to >= ly:
        to = ly  # one tile: no alignment needed
    else:
        while to > 0 and (to * down) % up:
            to -= 1
    if to < 1:
        return None
    ta = (to - 1) * down + kd
    i0 = _cdiv(-p0, up)
    ti = (ta - 1 + ku - 1 - p0) // up - i0 + 1
    bo, ba_, bi = _np2(to), _np2(ta), _np2(ti)
    return {
        "n_out": ly,
        "tile": to,
        "tiles": _cdiv(ly, to),
        "in0": i0,
        "in_step": to * down // up,
        "blocks": (bo, ba_, bi),
        "U": _pad(_up_matrix(fu, up, p0, 0, i0, ta, ti), ba_, bi),  # [BA, BI]
        "D": [_pad(_down_matrix(fd, down, 0, 0, to, ta), bo, ba_) for fd in fds],  # [BO, BA] each
    }


def _backward_axis(
    n: int, up: int, down: int, p0: int, p1: int, fu: np.ndarray, fds: list[np.ndarray], cb: int, chunks: int
):
    """Tiling of one axis for the backward kernel (tiles of the input gradient), or None. The pre-activations that a
    tile's inputs reach are recomputed in ``chunks`` consecutive chunks of ``cb`` (a multiple of ``up`` and ``down``,
    so that one recomputation matrix serves every chunk; each chunk adds its share to the tile's gradient). With one
    chunk a tile of ``cb`` pre-activations keeps only ``(cb - ku) // up + 1`` inputs: 3 of 32 at ``up`` 4 with 24 taps;
    with several the halo of ``ku`` is paid once per tile instead."""
    ku, kd = len(fu), len(fds[0])
    if cb % up or cb % down:
        return None
    tg = (chunks * cb - ku) // up + 1
    if tg >= n:
        tg = n
    else:
        while tg > 0 and (tg * up) % down:
            tg -= 1
    if tg < 1:
        return None
    tb = (tg - 1) * up + ku  # the pre-activations that the tile's inputs reach
    if (chunks - 1) * cb >= tb:
        return None  # a chunk with nothing to do
    t0 = p0 - ku + 1  # the first of them
    # Only the pre-activations 0 .. valid - 1 reach an output (a negative padding crops the rest): per tile the
    # chunks that hold some of them, [first, last + 1); the others would add zeros.
    lu = n * up + p0 + p1 - ku + 1
    valid = ((lu - kd) // down) * down + kd
    ranges = []
    for tile in range(_cdiv(n, tg)):
        start = tile * tg * up + t0
        active = [c for c in range(chunks) if start + c * cb < valid and start + (c + 1) * cb > 0]
        ranges.append((active[0], active[-1] + 1) if active else (0, 0))
    i0 = _cdiv(t0 - p0, up)  # inputs that recompute a chunk's pre-activations (chunk c: from i0 + c * cb / up)
    ti = (t0 + cb - 1 + ku - 1 - p0) // up - i0 + 1
    o0 = _cdiv(t0 - kd + 1, down)  # outputs whose gradients reach them (chunk c: from o0 + c * cb / down)
    tgo = (t0 + cb - 1) // down - o0 + 1
    bg, bi, bgo = _np2(tg), _np2(ti), _np2(tgo)
    return {
        "tile": tg,
        "tiles": _cdiv(n, tg),
        "in0": i0,
        "in_step": tg,
        "gy0": o0,
        "gy_step": tg * up // down,
        "chunks": chunks,
        "chunk_ranges": np.asarray(ranges, dtype=np.int32),  # [tiles, 2]
        "chunk_in": cb // up,
        "chunk_gy": cb // down,
        "blocks": (bg, cb, bi, bgo),
        "U": _pad(_up_matrix(fu, up, p0, t0, i0, cb, ti), cb, bi),  # [BB, BI] recomputation, every chunk
        "DT": [_pad(_down_matrix(fd, down, t0, o0, tgo, cb).T, cb, bgo) for fd in fds],  # [BB, BGO] each
        # [chunks, BG, BB]: chunk c's share of the tile's input gradient
        "UT": np.stack([_pad(_up_matrix(fu, up, p0, t0 + c * cb, 0, cb, tg).T, bg, cb) for c in range(chunks)]),
    }


def _forward_cost(py, px, r):
    """Tensor multiply-adds of every program together, and the largest array one holds."""
    (boy, bay, biy), (box, bax, bix) = py["blocks"], px["blocks"]
    macs = bay * biy * bix + bay * bix * bax + r * (boy * bay * bax + boy * bax * box)
    return py["tiles"] * px["tiles"] * macs, max(bay * bax, bay * bix, biy * bix)


def _backward_cost(py, px, r):
    """Tensor multiply-adds of every program together (the chunks each runs), and the largest array one holds."""
    (bgy, bby, biy, boy), (bgx, bbx, bix, box) = py["blocks"], px["blocks"]
    chunk = bby * biy * bix + bby * bix * bbx + r * (bby * boy * box + bby * box * bbx) + bby * bbx * bgx
    row = bgy * bby * bgx  # once per row of chunks
    cy, cx = (int(np.diff(p["chunk_ranges"], axis=1).sum()) for p in (py, px))  # chunk rows, columns run in all
    largest = max(bby * bbx, bby * bix, biy * bix, bby * box, boy * box, bby * bgx, bgy * bgx)
    return cy * (cx * chunk + px["tiles"] * row), largest


def _best(ys: list[dict], xs: list[dict], cost, budget: int, least_work: bool):
    """The pair of per-axis tilings within ``budget`` with the fewest tiles, then the fewest chunks, then the least
    work per output (the interpreter's cost is per operation); ``least_work``: the least work, then the fewest tiles
    (a GPU's)."""
    best = None
    for py in ys:
        for px in xs:
            macs, size = cost(py, px)
            tiles = py["tiles"] * px["tiles"]
            chunks = py.get("chunks", 1) * px.get("chunks", 1)
            work = (macs, tiles) if least_work else (tiles, chunks, macs / tiles / (py["tile"] * px["tile"]))
            if size <= budget and (best is None or work < best[0]):
                best = (work, py, px)
    return None if best is None else best[1:]


def _separable_terms(fd: torch.Tensor | None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per-axis 1-D filters (y terms, x terms) whose outer products sum to ``fd``."""
    if fd is None:
        return [np.ones(1)], [np.ones(1)]
    f = fd.detach().to("cpu", torch.float64).numpy()
    if f.ndim == 1:
        return [f], [f]
    u, s, vt = np.linalg.svd(f)
    keep = [r for r in range(len(s)) if s[r] > _SVD_REL * s[0]] or [0]
    return [u[:, r] * math.sqrt(s[r]) for r in keep], [vt[r] * math.sqrt(s[r]) for r in keep]


def _round_tf32(m: np.ndarray) -> np.ndarray:
    """``m`` in float32, rounded to the nearest tf32 as the kernels round their data operands (:func:`_operand`)."""
    bits = np.ascontiguousarray(m, dtype=np.float32).view(np.int32)
    return ((bits + 0x1000) & -0x2000).view(np.float32)


_MAX_CHUNKS = 6  # per axis, in the backward's search


@functools.lru_cache(maxsize=256)
def _plan(h, w, up, down, padding, fu_key, fd_key, device, budget, tf32=False, least_work=True, max_chunks=_MAX_CHUNKS):
    fu = np.ones(1) if fu_key is None else np.asarray(fu_key[1], dtype=np.float64)
    fd = None if fd_key is None else torch.tensor(fd_key[1], dtype=torch.float64).reshape(fd_key[0])
    fys, fxs = _separable_terms(fd)
    x0, x1, y0, y1 = padding
    r = len(fys)

    def fwd(n, p0, p1, fds):
        return [t for b in _BLOCKS if (t := _forward_axis(n, up, down, p0, p1, fu, fds, b)) is not None]

    def bwd(n, p0, p1, fds):
        tilings = (
            _backward_axis(n, up, down, p0, p1, fu, fds, b, c) for b in _BLOCKS for c in range(1, max_chunks + 1)
        )
        return [t for t in tilings if t is not None]

    # The forward: the fewest tiles (its tiles waste little work). The backward: on a GPU the least work, which
    # several chunks per tile cut for up = 4; under the interpreter (a cost per program) the fewest tiles.
    f = _best(fwd(h, y0, y1, fys), fwd(w, x0, x1, fxs), lambda a, b: _forward_cost(a, b, r), budget, False)
    g = _best(bwd(h, y0, y1, fys), bwd(w, x0, x1, fxs), lambda a, b: _backward_cost(a, b, r), budget, least_work)
    if f is None or g is None:
        return None

    def tensor(m):
        m = _round_tf32(m) if tf32 else np.ascontiguousarray(m)
        return torch.as_tensor(m, dtype=torch.float32, device=device)

    (fy, fx), (gy, gx) = f, g
    return {
        "R": r,
        "fy": fy,
        "fx": fx,
        "gy": gy,
        "gx": gx,
        "f_uy": tensor(fy["U"]),
        "f_uxt": tensor(fx["U"].T),
        "f_dy": tensor(np.stack(fy["D"])),
        "f_dxt": tensor(np.stack([d.T for d in fx["D"]])),
        "b_uy": tensor(gy["U"]),
        "b_uxt": tensor(gx["U"].T),
        "b_dty": tensor(np.stack(gy["DT"])),
        "b_dtxt": tensor(np.stack([d.T for d in gx["DT"]])),
        "b_cy": torch.as_tensor(gy["chunk_ranges"], device=device),
        "b_cx": torch.as_tensor(gx["chunk_ranges"], device=device),
        "b_uty": tensor(gy["UT"]),  # [CY, BGY, BBY]
        "b_utxt": tensor(gx["UT"].transpose(0, 2, 1)),  # [CX, BBX, BGX]
    }


def _filter_key(f: torch.Tensor | None):
    """The filter's shape and values as a hashable plan key, read from the device once per filter tensor and kept
    on it (a layer's buffers are the same tensors every call: no host copy, so no CUDA sync, per forward); an
    in-place change of the filter (its version counter) reads it again. Inference tensors (a generator built or
    moved under ``torch.inference_mode``) have no version counter: theirs is read once (the layers design their
    filters at construction and never change them in place)."""
    if f is None:
        return None
    version = None if f.is_inference() else f._version
    cached = getattr(f, "_triton_filter_key", None)
    if cached is None or cached[0] != version:
        values = f.detach().to("cpu", torch.float64).reshape(-1).tolist()
        cached = (version, (tuple(f.shape), tuple(values)))
        f._triton_filter_key = cached
    return cached[1]


def plan_for(x_shape, fu, fd, up, down, padding, device, dtype=torch.float32, max_chunks: int = _MAX_CHUNKS):
    """The tilings and matrices of one layer shape and input dtype (cached), or None when no tiling fits.
    ``max_chunks``: of the backward's pre-activations per tile and axis (1: a tile of one block, as before issue 32)."""
    h, w = int(x_shape[-2]), int(x_shape[-1])
    fu_key, fd_key = _filter_key(fu), _filter_key(fd)
    tf32 = _precision(dtype) == "tf32"
    budget = _tile_budget(dtype)
    return _plan(h, w, up, down, tuple(padding), fu_key, fd_key, device, budget, tf32, _least_work(), max_chunks)


def gpu_plan(x_shape, fu, fd, up, down, padding, dtype=torch.float32, max_chunks: int = _MAX_CHUNKS):
    """:func:`plan_for` as a GPU tiles the layer (its tile budget, the least work), on the CPU: for counting work and
    compiling the kernels without a GPU, under the interpreter or not."""
    h, w = int(x_shape[-2]), int(x_shape[-1])
    pad = tuple(ops._parse_padding(padding))
    key = (_filter_key(fu), _filter_key(fd))
    tf32 = dtype != torch.float32
    return _plan(h, w, up, down, pad, *key, torch.device("cpu"), _gpu_tile_budget(dtype), tf32, True, max_chunks)


def tensor_macs(plan: dict, planes: int, dtype: torch.dtype) -> tuple[int, int]:
    """Multiply-adds that the ``tl.dot`` products of one forward and one backward launch over ``planes`` planes
    issue on a GPU (one plane per program; the padded blocks, as the tensor cores multiply them; a float32 input's
    ``tf32x3`` products count three times)."""
    passes = 3 if dtype == torch.float32 else 1
    r = plan["R"]
    fy, fx, gy, gx = plan["fy"], plan["fx"], plan["gy"], plan["gx"]
    return passes * planes * _forward_cost(fy, fx, r)[0], passes * planes * _backward_cost(gy, gx, r)[0]


def _least_work() -> bool:
    """Whether the backward's tiling minimises work (a GPU) rather than programs (the interpreter)."""
    return not INTERPRETED


# ----------------------------------------------------------------------------------------
# Kernels.

if triton is not None:

    @triton.jit
    def _load_matrix(ptr, ROWS: tl.constexpr, COLS: tl.constexpr):
        return tl.load(ptr + tl.arange(0, ROWS)[:, None] * COLS + tl.arange(0, COLS)[None, :])

    @triton.jit
    def _operand(v, PREC: tl.constexpr):
        """``v`` as a ``tl.dot`` operand: for ``tf32`` products rounded to the nearest tf32 (10-bit mantissa, ties
        away from zero), since the GPU's tf32 products truncate their float32 operands (no ``cvt.rna.tf32.f32`` in the
        PTX): a bias towards zero of about 2**-11 of every operand, which compounds over the layers."""
        if PREC == "tf32":
            v = ((v.to(tl.int32, bitcast=True) + 0x1000) & -0x2000).to(tl.float32, bitcast=True)
        return v

    @triton.jit
    def _left(m, v, P: tl.constexpr, M: tl.constexpr, K: tl.constexpr, N: tl.constexpr, PREC: tl.constexpr):
        """``m @ v[p]`` for every plane p; m: [M, K], v: [P, K, N] -> [P, M, N]."""
        v = _operand(v, PREC)
        if P == 1:
            out = tl.reshape(tl.dot(m, tl.reshape(v, [K, N]), input_precision=PREC), [1, M, N])
        else:
            out = tl.dot(tl.broadcast_to(m[None, :, :], [P, M, K]), v, input_precision=PREC)
        return out

    @triton.jit
    def _right(v, m, P: tl.constexpr, M: tl.constexpr, K: tl.constexpr, N: tl.constexpr, PREC: tl.constexpr):
        """``v[p] @ m`` for every plane p; v: [P, M, K], m: [K, N] -> [P, M, N]."""
        v = _operand(v, PREC)
        if P == 1:
            out = tl.reshape(tl.dot(tl.reshape(v, [M, K]), m, input_precision=PREC), [1, M, N])
        else:
            out = tl.dot(v, tl.broadcast_to(m[None, :, :], [P, K, N]), input_precision=PREC)
        return out

    @triton.jit
    def _window(planes, r0, c0, ROWS: tl.constexpr, COLS: tl.constexpr, NP, H, W):
        """Offsets and mask of [P, ROWS, COLS] windows starting at (r0, c0) of the planes ``planes`` ([P])."""
        rows = r0 + tl.arange(0, ROWS)
        cols = c0 + tl.arange(0, COLS)
        inside = ((rows >= 0) & (rows < H))[:, None] & ((cols >= 0) & (cols < W))[None, :]
        mask = (planes < NP)[:, None, None] & inside[None, :, :]
        offsets = planes.to(tl.int64)[:, None, None] * H * W + (rows[:, None] * W + cols[None, :])[None, :, :]
        return offsets, mask

    @triton.jit
    def _biased_input(x_ptr, b_ptr, planes, r0, c0, NP, C, H, W, HAS_BIAS: tl.constexpr, BI_Y: tl.constexpr,
                      BI_X: tl.constexpr):  # fmt: skip
        offsets, mask = _window(planes, r0, c0, BI_Y, BI_X, NP, H, W)
        x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        if HAS_BIAS:  # the bias of the input samples only: the padding stays zero
            bias = tl.load(b_ptr + planes % C, mask=planes < NP, other=0.0).to(tl.float32)
            x = tl.where(mask, x + bias[:, None, None], 0.0)
        return x

    @triton.jit
    def _fwd_kernel(
        x_ptr, b_ptr, y_ptr,
        uy_ptr, uxt_ptr, dy_ptr, dxt_ptr,
        NP, C, H, W, OH, OW,
        iy0, iy_step, ix0, ix_step, TOY, TOX,
        gain, slope, clamp,
        HAS_BIAS: tl.constexpr, HAS_CLAMP: tl.constexpr, R: tl.constexpr, P: tl.constexpr,
        BOY: tl.constexpr, BAY: tl.constexpr, BIY: tl.constexpr,
        BOX: tl.constexpr, BAX: tl.constexpr, BIX: tl.constexpr,
        PREC: tl.constexpr,
    ):  # fmt: skip
        planes = tl.program_id(0) * P + tl.arange(0, P)
        ty = tl.program_id(1)
        tx = tl.program_id(2)
        x = _biased_input(x_ptr, b_ptr, planes, iy0 + ty * iy_step, ix0 + tx * ix_step, NP, C, H, W, HAS_BIAS, BIY, BIX)
        # Upsampling: per axis one product with the polyphase matrix of the tile (the non-zero taps only).
        u = _left(_load_matrix(uy_ptr, BAY, BIY), x, P, BAY, BIY, BIX, PREC)
        u = _right(u, _load_matrix(uxt_ptr, BIX, BAX), P, BAY, BIX, BAX, PREC)  # [P, BAY, BAX] pre-activations
        a = tl.where(u > 0, u, u * slope) * gain
        if HAS_CLAMP:
            a = tl.minimum(tl.maximum(a, -clamp), clamp)
        # Downsampling: only the kept outputs, one separable term per singular value of the filter.
        acc = tl.zeros([P, BOY, BOX], dtype=tl.float32)
        for r in tl.static_range(R):
            d = _left(_load_matrix(dy_ptr + r * BOY * BAY, BOY, BAY), a, P, BOY, BAY, BAX, PREC)
            acc += _right(d, _load_matrix(dxt_ptr + r * BAX * BOX, BAX, BOX), P, BOY, BAX, BOX, PREC)
        offsets, mask = _window(planes, ty * TOY, tx * TOX, BOY, BOX, NP, OH, OW)
        own = ((tl.arange(0, BOY) < TOY)[:, None] & (tl.arange(0, BOX) < TOX)[None, :])[None, :, :]
        tl.store(y_ptr + offsets, acc.to(y_ptr.dtype.element_ty), mask=mask & own)

    @triton.jit
    def _bwd_kernel(
        x_ptr, b_ptr, gy_ptr, gx_ptr,
        uy_ptr, uxt_ptr, dty_ptr, dtxt_ptr, uty_ptr, utxt_ptr, cy_ptr, cx_ptr,
        NP, C, H, W, OH, OW,
        iy0, iy_step, ix0, ix_step, oy0, oy_step, ox0, ox_step, TGY, TGX,
        CIY, CIX, COY, COX,
        gain, slope, clamp,
        HAS_BIAS: tl.constexpr, HAS_CLAMP: tl.constexpr, R: tl.constexpr, P: tl.constexpr,
        BGY: tl.constexpr, BBY: tl.constexpr, BIY: tl.constexpr, BOY: tl.constexpr,
        BGX: tl.constexpr, BBX: tl.constexpr, BIX: tl.constexpr, BOX: tl.constexpr,
        PREC: tl.constexpr,
    ):  # fmt: skip
        planes = tl.program_id(0) * P + tl.arange(0, P)
        ty = tl.program_id(1)
        tx = tl.program_id(2)
        uy = _load_matrix(uy_ptr, BBY, BIY)
        uxt = _load_matrix(uxt_ptr, BIX, BBX)
        gx = tl.zeros([P, BGY, BGX], dtype=tl.float32)
        # The pre-activations that this tile's inputs reach, in chunks of BBY x BBX; chunk (cy, cx) starts CIY * cy,
        # CIX * cx inputs and COY * cy, COX * cx output gradients after the first. Only the chunks [cy0, cy1) x
        # [cx0, cx1) of this tile hold pre-activations that reach an output.
        cy0, cy1 = tl.load(cy_ptr + 2 * ty), tl.load(cy_ptr + 2 * ty + 1)
        cx0, cx1 = tl.load(cx_ptr + 2 * tx), tl.load(cx_ptr + 2 * tx + 1)
        for cy in range(cy0, cy1):
            row = tl.zeros([P, BBY, BGX], dtype=tl.float32)  # the x-adjoint of the upsampler over a row of chunks
            for cx in range(cx0, cx1):
                # The chunk's pre-activations, recomputed from the input.
                x = _biased_input(x_ptr, b_ptr, planes, iy0 + ty * iy_step + cy * CIY, ix0 + tx * ix_step + cx * CIX,
                                  NP, C, H, W, HAS_BIAS, BIY, BIX)  # fmt: skip
                u = _left(uy, x, P, BBY, BIY, BIX, PREC)
                u = _right(u, uxt, P, BBY, BIX, BBX, PREC)  # [P, BBY, BBX]
                deriv = tl.where(u > 0, gain, gain * slope)
                if HAS_CLAMP:  # no gradient where the output was clamped
                    a = tl.where(u > 0, u, u * slope) * gain
                    deriv = tl.where((a >= -clamp) & (a <= clamp), deriv, 0.0)
                # The gradient of the activation: the adjoint of the downsampler applied to the output gradient.
                offsets, mask = _window(planes, oy0 + ty * oy_step + cy * COY, ox0 + tx * ox_step + cx * COX, BOY, BOX,
                                        NP, OH, OW)  # fmt: skip
                g = tl.load(gy_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
                ga = tl.zeros([P, BBY, BBX], dtype=tl.float32)
                for r in tl.static_range(R):
                    t = _left(_load_matrix(dty_ptr + r * BBY * BOY, BBY, BOY), g, P, BBY, BOY, BOX, PREC)
                    ga += _right(t, _load_matrix(dtxt_ptr + r * BOX * BBX, BOX, BBX), P, BBY, BOX, BBX, PREC)
                ga = ga * deriv
                # The adjoint of the upsampler, per axis: the chunks' share of the tile's input gradient.
                row += _right(ga, _load_matrix(utxt_ptr + cx * BBX * BGX, BBX, BGX), P, BBY, BBX, BGX, PREC)
            gx += _left(_load_matrix(uty_ptr + cy * BGY * BBY, BGY, BBY), row, P, BGY, BBY, BGX, PREC)
        offsets, mask = _window(planes, ty * TGY, tx * TGX, BGY, BGX, NP, H, W)
        own = ((tl.arange(0, BGY) < TGY)[:, None] & (tl.arange(0, BGX) < TGX)[None, :])[None, :, :]
        tl.store(gx_ptr + offsets, gx.to(gx_ptr.dtype.element_ty), mask=mask & own)


def _precision(dtype: torch.dtype) -> str:
    if INTERPRETED:
        return "ieee"
    return "tf32x3" if dtype == torch.float32 else "tf32"


def _warps(largest: int) -> int:
    """Warps per program: 8 for 64 x 64 arrays (the registers of half inputs' tiles), else 4."""
    return 8 if largest >= 64 * 64 else 4


def _planes_per_program(planes: int, tile: int) -> int:
    """1 on a GPU; under the interpreter as many planes as keep a program's arrays near 4 MB (fewer programs)."""
    if not INTERPRETED:
        return 1
    p = 1
    while p < planes and 2 * p * tile <= 2**20:
        p *= 2
    return p


def _device_guard(device: torch.device) -> contextlib.AbstractContextManager:
    """Triton launches on the calling thread's current CUDA device and stream, whatever its tensors' device: make
    that the tensors' (``generate.py device=cuda:1`` never sets the current device; Gradio's worker threads start
    on device 0)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _forward(x, b, plan, gain, slope, clamp):
    n, c, h, w = x.shape
    fy, fx = plan["fy"], plan["fx"]
    y = torch.empty([n, c, fy["n_out"], fx["n_out"]], dtype=x.dtype, device=x.device)
    (boy, bay, biy), (box, bax, bix) = fy["blocks"], fx["blocks"]
    p = _planes_per_program(n * c, max(bay * bax, bay * bix))
    grid = (triton.cdiv(n * c, p), fy["tiles"], fx["tiles"])
    with _device_guard(x.device):
        _fwd_kernel[grid](
            x, x if b is None else b, y,
            plan["f_uy"], plan["f_uxt"], plan["f_dy"], plan["f_dxt"],
            n * c, c, h, w, y.shape[2], y.shape[3],
            fy["in0"], fy["in_step"], fx["in0"], fx["in_step"], fy["tile"], fx["tile"],
            float(gain), float(slope), 0.0 if clamp is None else float(clamp),
            HAS_BIAS=b is not None, HAS_CLAMP=clamp is not None, R=plan["R"], P=p,
            BOY=boy, BAY=bay, BIY=biy, BOX=box, BAX=bax, BIX=bix,
            PREC=_precision(x.dtype), num_warps=_warps(max(bay * bax, bay * bix, biy * bix)),
        )  # fmt: skip
    return y


def _backward(x, b, gy, plan, gain, slope, clamp):
    n, c, h, w = x.shape
    py, px = plan["gy"], plan["gx"]
    gx = torch.empty_like(x)
    (bgy, bby, biy, boy), (bgx, bbx, bix, box) = py["blocks"], px["blocks"]
    p = _planes_per_program(n * c, max(bby * bbx, bby * bix, bby * box))
    grid = (triton.cdiv(n * c, p), py["tiles"], px["tiles"])
    with _device_guard(x.device):
        _bwd_kernel[grid](
            x, x if b is None else b, gy, gx,
            plan["b_uy"], plan["b_uxt"], plan["b_dty"], plan["b_dtxt"], plan["b_uty"], plan["b_utxt"],
            plan["b_cy"], plan["b_cx"],
            n * c, c, h, w, gy.shape[2], gy.shape[3],
            py["in0"], py["in_step"], px["in0"], px["in_step"], py["gy0"], py["gy_step"], px["gy0"], px["gy_step"],
            py["tile"], px["tile"],
            py["chunk_in"], px["chunk_in"], py["chunk_gy"], px["chunk_gy"],
            float(gain), float(slope), 0.0 if clamp is None else float(clamp),
            HAS_BIAS=b is not None, HAS_CLAMP=clamp is not None, R=plan["R"], P=p,
            BGY=bgy, BBY=bby, BIY=biy, BOY=boy, BGX=bgx, BBX=bbx, BIX=bix, BOX=box,
            PREC=_precision(x.dtype), num_warps=_warps(max(bby * bbx, bby * bix, biy * bix, bby * box)),
        )  # fmt: skip
    return gx


class _TritonFilteredLReLU(torch.autograd.Function):
    """Fused forward; the backward recomputes the pre-activations from the saved input and bias."""

    @staticmethod
    def forward(ctx, x, b, plan, gain, slope, clamp):  # noqa: D102
        x = x.contiguous()
        b = None if b is None else b.contiguous()
        ctx.save_for_backward(x, b)
        ctx.args = (plan, gain, slope, clamp)
        return _forward(x, b, plan, gain, slope, clamp)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy):  # noqa: D102
        x, b = ctx.saved_tensors
        plan, gain, slope, clamp = ctx.args
        gx = _backward(x, b, gy.contiguous(), plan, gain, slope, clamp)
        gb = None
        if b is not None and ctx.needs_input_grad[1]:
            gb = gx.sum(dim=[0, 2, 3], dtype=torch.float32).to(b.dtype)
        return gx, gb, None, None, None, None


@torch.compiler.disable  # the launch and its host-side plan run eagerly; torch.compile breaks the graph around it
def filtered_lrelu(
    x: torch.Tensor,
    fu: torch.Tensor | None,
    fd: torch.Tensor | None,
    b: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: int | ops.Padding = 0,
    gain: float = math.sqrt(2),
    slope: float = 0.2,
    clamp: float | None = None,
) -> torch.Tensor:
    """Fused equivalent of :func:`stylegan3.ops.filtered_lrelu_ref`; x: [N, C, H, W].

    Shapes without a kernel (see the module docstring) take :func:`stylegan3.ops.filtered_lrelu`.
    """
    pad = ops._parse_padding(padding)
    if clamp is not None and clamp < 0:
        clamp = None
    if not supports(x, fu, fd, up, down):
        return ops.filtered_lrelu(x, fu, fd, b, up, down, pad, gain, slope, clamp)
    check_available(x.device)
    plan = plan_for(x.shape, fu, fd, up, down, pad, x.device, x.dtype)
    if plan is None:
        return ops.filtered_lrelu(x, fu, fd, b, up, down, pad, gain, slope, clamp)
    return _TritonFilteredLReLU.apply(x, b, plan, float(gain), float(slope), clamp)


# ----------------------------------------------------------------------------------------
# The trial: the kernels trusted on a device only after they have given the fast path's numbers there.


def layer_kinds(module: torch.nn.Module) -> dict[str, dict]:
    """The distinct filtered leaky ReLUs with a fused kernel among ``module``'s layers (those with a
    ``filtered_lrelu_args()`` method): a name per kind (factors, filter sizes, separable terms, padding, clamp) ->
    the first such layer's arguments. A generator without such layers (StyleGAN2's) has none."""
    kinds = {}
    probe = torch.empty([0, 0, 0, 0])
    for layer in module.modules():
        if not hasattr(layer, "filtered_lrelu_args"):
            continue
        args = layer.filtered_lrelu_args()
        fu, fd = args["fu"], args["fd"]
        if not supports(probe, fu, fd, args["up"], args["down"]):
            continue
        terms = len(_separable_terms(fd)[0])
        name = (
            f"up{args['up']}-down{args['down']}-fu{0 if fu is None else fu.shape[0]}"
            f"-fd{'x'.join(map(str, () if fd is None else fd.shape))}-terms{terms}"
            f"-pad{'_'.join(map(str, ops._parse_padding(args['padding'])))}"
            f"-slope{args['slope']:g}-clamp{args['clamp']}"
        )
        kinds.setdefault(name, args)
    return kinds


def _max_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """max|ours - reference| / max|reference| (NaN when ours has a NaN or inf)."""
    return ((ours.double() - reference).abs().max() / reference.abs().max().clamp_min(1e-30)).item()


def _trial_layer(args: dict, dtype: torch.dtype, device: torch.device) -> str | None:
    """One layer kind in one dtype on ``device`` against the fast path in float64 there: the forward at the layer's
    slope, then forward and backward at slope 1. (At the layer's slope a pre-activation within the products' rounding
    of the kink may take the other branch than the reference's: a gradient error of the comparison, not of the
    kernel.) Why it failed, in a few words, or None."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(TRIAL_SHAPE, generator=g).to(device, dtype)
    b = (0.3 * torch.randn(TRIAL_SHAPE[1], generator=g)).to(device, dtype)
    gy = None
    kwargs = {k: args[k] for k in ("up", "down", "padding", "gain", "slope", "clamp")}
    tol = TOLERANCE[dtype]
    with contextlib.ExitStack() as stack:  # a trial started under inference_mode, no_grad or autocast still runs
        stack.enter_context(torch.inference_mode(False))
        stack.enter_context(torch.enable_grad())
        stack.enter_context(torch.autocast(device.type, enabled=False))
        # Copies: a generator's filters may be inference tensors, which autograd cannot save.
        fu, fd = (
            None if f is None else f.detach().to(device, torch.float32, copy=True) for f in (args["fu"], args["fd"])
        )
        fu64, fd64 = (None if f is None else f.double() for f in (fu, fd))
        try:
            err = _max_error(
                filtered_lrelu(x, fu, fd, b, **kwargs), ops.filtered_lrelu(x.double(), fu64, fd64, b.double(), **kwargs)
            )
            if not err <= tol:
                return f"forward max error {err:.2g} x max|fast| > {tol:g}"
            kwargs["slope"] = 1.0
            xg, bg = x.clone().requires_grad_(), b.clone().requires_grad_()
            y = filtered_lrelu(xg, fu, fd, bg, **kwargs)
            gy = torch.randn(y.shape, generator=g).to(device, dtype)
            grads = torch.autograd.grad(y, [xg, bg], gy)
            xr, br = x.double().requires_grad_(), b.double().requires_grad_()
            ref = ops.filtered_lrelu(xr, fu64, fd64, br, **kwargs)
            ref_grads = torch.autograd.grad(ref, [xr, br], gy.double())
            for what, ours, theirs in zip(
                ("output", "input gradient", "bias gradient"), (y, *grads), (ref, *ref_grads)
            ):
                err = _max_error(ours, theirs)
                if not err <= tol:
                    return f"{what} at slope 1: max error {err:.2g} x max|fast| > {tol:g}"
        except Exception as exc:  # the first compile or launch: no C compiler, a backend without tf32x3, ...
            lines = str(exc).strip().splitlines()
            return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return None


def trial(
    module: torch.nn.Module,
    device: torch.device | str,
    dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.float16, torch.bfloat16),
) -> str | None:
    """Run every layer kind of ``module`` (:func:`layer_kinds`) in each of ``dtypes`` on ``device`` through the
    kernels, forward and backward, against the fast path within :data:`TOLERANCE`, once per process, device, kind
    and dtype (later calls read the result). Returns None when all agree, else one line naming the first kind and
    dtype that failed and why (also when the kernels cannot run on ``device`` at all)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    reason = unavailable_reason(device)
    if reason is not None:
        return reason
    for name, args in layer_kinds(module).items():
        for dtype in dtypes:
            key = (device, name, dtype)
            with _TRIALS_LOCK:
                if key not in _TRIALS:
                    _TRIALS[key] = _trial_layer(args, dtype, device)
                failed = _TRIALS[key]
            if failed is not None:
                return f"layer kind {name} in {str(dtype).removeprefix('torch.')}: {failed}"
    return None
