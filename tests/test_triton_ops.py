"""The fused Triton filtered leaky ReLU against the reference op: on the CPU under the Triton interpreter, and on a
CUDA GPU (the tests marked ``cuda``).

The interpreter is chosen when ``stylegan3.triton_ops`` is first imported (its kernels are decorated then), and Triton
reads the variable again at each launch, so ``conftest.py`` sets ``TRITON_INTERPRET=1`` for the whole run unless it is
set already. ``TRITON_INTERPRET=0`` on a GPU machine runs the ``cuda`` tests and skips the interpreter's:

    TRITON_INTERPRET=0 python -m pytest -q -m cuda tests/test_triton_ops.py

Nothing else in the suite runs Triton: the CPU's torch.compile backend is C++. Shapes are small: the interpreter runs
each kernel program in NumPy. The layer plans are built here (no fixture files: a GPU machine may have none).
"""

from __future__ import annotations

import importlib
import os

import numpy as np
import pytest
import torch
from conftest import fixture_arrays, load_fixture
from test_parity import FLOAT32_GRAD_TOLERANCE, assert_close, reference_weight

from stylegan3 import ops
from stylegan3.bench import build_plan
from stylegan3.runtime import resolve_impl

if not os.environ.get("TRITON_INTERPRET"):
    os.environ["TRITON_INTERPRET"] = "1"
triton_ops = importlib.import_module("stylegan3.triton_ops")
interpreted = pytest.mark.skipif(
    not triton_ops.INTERPRETED, reason="the Triton interpreter is off (TRITON_INTERPRET=0, or imported before)"
)
_NO_CUDA = (
    "CUDA is not available"
    if not torch.cuda.is_available()
    else "the Triton interpreter is on: run with TRITON_INTERPRET=0"
    if triton_ops.INTERPRETED
    else triton_ops.unavailable_reason("cuda")
)
on_cuda = pytest.mark.skipif(_NO_CUDA is not None, reason=f"needs CUDA: {_NO_CUDA}")


def _plan_layers() -> list[tuple]:
    """Every distinct (up, down, fu, fd, padding) of the StyleGAN3 T and R layer plans at 1024 px (the same filters
    and paddings as NVIDIA's FFHQ models, as in the ``sg3*_1024_thin`` fixtures; the 64 px ones add nothing new),
    ToRGB included."""
    layers = {}
    for config in ("t", "r"):
        G = build_plan(config, 1024, w_dim=4, channel_max=1)
        for layer_name in G.synthesis.layer_names:
            layer = getattr(G.synthesis, layer_name)
            fu, fd = layer.up_filter, layer.down_filter
            key = (
                f"sg3{config}",
                layer.up_factor,
                layer.down_factor,
                None if fu is None else fu.shape[0],
                None if fd is None else tuple(fd.shape),
                tuple(layer.padding),
            )
            layers.setdefault(key, (layer.up_factor, layer.down_factor, fu, fd, list(layer.padding), layer.is_torgb))
    return [
        (f"{k[0]}-up{k[1]}-down{k[2]}-fu{k[3]}-fd{'x'.join(map(str, k[4] or ()))}-pad{k[5][0]}",) + v
        for k, v in layers.items()
    ]


PLAN_LAYERS = _plan_layers()
TOLERANCE = triton_ops.TOLERANCE  # x max|ref|: the tests' and the trial's


def _check(up, down, fu, fd, padding, torgb, clamp, dtype, shape=(1, 3, 24, 23), device="cpu") -> None:
    """The kernels on ``device`` against the reference op in float32 on the CPU: output, input and bias gradients."""
    torch.manual_seed(0)
    x = torch.randn(shape).to(dtype)
    b = 0.3 * torch.randn(shape[1]).to(dtype)
    gain, slope = (1.0, 1.0) if torgb else (2**0.5, 0.2)
    kwargs = dict(up=up, down=down, padding=padding, gain=gain, slope=slope, clamp=clamp)
    xd, bd = x.to(device).requires_grad_(), b.to(device).requires_grad_()
    fud, fdd = (None if f is None else f.to(device) for f in (fu, fd))
    if not triton_ops.supports(x, fu, fd, up, down):  # ToRGB (no filters): the fast path's numbers, same dtype
        out, fast = (op(xd, fud, fdd, bd, **kwargs) for op in (triton_ops.filtered_lrelu, ops.filtered_lrelu))
        torch.testing.assert_close(out, fast, rtol=0, atol=0)
        gy = torch.randn(out.shape).to(device, dtype)
        for ours, theirs in zip(torch.autograd.grad(out, [xd, bd], gy), torch.autograd.grad(fast, [xd, bd], gy)):
            torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
        return
    tol = TOLERANCE[dtype]
    xr, br = x.float().requires_grad_(), b.float().requires_grad_()
    ref = ops.filtered_lrelu_ref(xr, fu, fd, br, **kwargs)
    out = triton_ops.filtered_lrelu(xd, fud, fdd, bd, **kwargs)
    assert out.shape == ref.shape and out.dtype == dtype and out.device == xd.device
    torch.testing.assert_close(out.cpu().float(), ref, rtol=0, atol=tol * ref.abs().max().item())
    if xd.device.type == "cuda" and dtype != torch.float32:
        # tf32 products: a pre-activation within their rounding of a kink may take the other branch than the float32
        # reference's (an error of the comparison, not of the kernel): the gradients at slope 1, without kinks.
        kwargs.update(slope=1.0, clamp=None)
        ref = ops.filtered_lrelu_ref(xr, fu, fd, br, **kwargs)
        out = triton_ops.filtered_lrelu(xd, fud, fdd, bd, **kwargs)
    gy = torch.randn(ref.shape).to(dtype)
    ref_grads = torch.autograd.grad(ref, [xr, br], gy.float())
    grads = torch.autograd.grad(out, [xd, bd], gy.to(device))
    for what, ours, theirs in zip(("x", "bias"), grads, ref_grads):
        assert ours.dtype == dtype, what
        torch.testing.assert_close(ours.cpu().float(), theirs, rtol=0, atol=tol * theirs.abs().max().item(), msg=what)


@interpreted
@pytest.mark.parametrize("clamp", [None, 0.5])  # 0.5 binds on these inputs (the plans' 256 never would)
@pytest.mark.parametrize("layer", PLAN_LAYERS, ids=[layer[0] for layer in PLAN_LAYERS])
def test_plan_layers_float32(layer, clamp) -> None:
    _check(*layer[1:], clamp, torch.float32)


@interpreted
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("layer", PLAN_LAYERS, ids=[layer[0] for layer in PLAN_LAYERS])
def test_plan_layers_half(layer, dtype) -> None:
    _check(*layer[1:], 0.5, dtype)


@pytest.fixture
def gpu_tiling(monkeypatch: pytest.MonkeyPatch):
    """Plan and launch as on a GPU: one plane per program, the register budget, several tiles per axis."""
    monkeypatch.setattr(triton_ops, "_tile_budget", lambda dtype: 32 * 32)  # float32's on a GPU
    monkeypatch.setattr(triton_ops, "_planes_per_program", lambda planes, tile: 1)
    monkeypatch.setattr(triton_ops, "_least_work", lambda: True)  # the backward's tiling: a GPU's (chunks at up=4)
    triton_ops._plan.cache_clear()
    yield
    triton_ops._plan.cache_clear()


@interpreted
@pytest.mark.parametrize("index", [1, 4, 6], ids=lambda i: PLAN_LAYERS[i][0])
def test_gpu_tiling(index: int, gpu_tiling) -> None:
    """Tiles that start at multiples of the resampling period share one matrix per axis; P == 1 kernels; the
    backward's tiles recompute their pre-activations in chunks (at up=4 several tiles, and chunks skipped where a
    negative padding crops)."""
    up, down, fu, fd, padding, torgb = PLAN_LAYERS[index][1:]
    plan = triton_ops.plan_for((30, 29), fu, fd, up, down, padding, torch.device("cpu"))
    assert plan["fy"]["tiles"] > 1 and plan["gy"]["chunks"] > 1 and plan["gx"]["chunks"] > 1
    if up == 4:
        ranges = plan["gy"]["chunk_ranges"]
        assert plan["gy"]["tiles"] > 1 and np.diff(ranges, axis=1).sum() < len(ranges) * plan["gy"]["chunks"]
    _check(up, down, fu, fd, padding, torgb, 0.5, torch.float32, shape=(1, 1, 30, 29))


@interpreted
def test_other_shapes_and_fallbacks() -> None:
    """Odd filters and factors the plans do not use; what has no kernel gives the fast path's numbers."""
    g = torch.Generator().manual_seed(3)
    odd5, radial6 = torch.randn(5, generator=g), torch.randn(6, 6, generator=g)
    _check(4, 2, odd5, radial6, [7, 3, 2, 9], False, 0.5, torch.float32)  # full-rank 2-D filter, asymmetric taps
    _check(1, 2, None, odd5, [1, 2, 3, 0], False, None, torch.float32)
    _check(2, 1, odd5, None, [-1, 3, 2, 2], False, 0.5, torch.float32)
    x = torch.randn(1, 2, 9, 9, dtype=torch.float64)
    for args in [(None, None, None, 1, 1), (torch.randn(4, 4), None, None, 2, 1)]:
        assert not triton_ops.supports(x.float(), *args[:2], *args[3:])
    assert not triton_ops.supports(x, odd5, radial6, 2, 2)  # float64
    torch.testing.assert_close(
        triton_ops.filtered_lrelu(x, odd5.double(), None, up=2), ops.filtered_lrelu(x, odd5.double(), None, up=2)
    )


@interpreted
def test_backward_keeps_only_the_input() -> None:
    x = torch.randn(1, 4, 16, 16, requires_grad=True)
    fu, fd = PLAN_LAYERS[0][3], PLAN_LAYERS[0][4]
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        triton_ops.filtered_lrelu(x, fu, fd, torch.zeros(4), up=2, down=2, padding=[9, 8, 9, 8])
    assert saved and max(saved) <= x.numel()


@interpreted
def test_where_triton_cannot_run(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "mps" in triton_ops.unavailable_reason("mps")
    assert triton_ops.unavailable_reason("cpu") is None  # interpreted
    monkeypatch.setattr(triton_ops, "INTERPRETED", False)
    reason = triton_ops.unavailable_reason("cpu")
    assert "TRITON_INTERPRET=1" in reason and "\n" not in reason
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        load_fixture("sg2_64").set_impl("triton")
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        resolve_impl("triton", torch.device("cpu"))
    assert resolve_impl("auto", torch.device("cpu")) == "fast"
    assert resolve_impl("reference", torch.device("cpu")) == "reference"
    with pytest.raises(ValueError, match="impl must be one of"):
        resolve_impl("cuda", torch.device("cpu"))


@interpreted
def test_generator_parity_sg3t_64() -> None:
    """The whole 64 px StyleGAN3-T fixture with impl=triton against NVIDIA's image and W+ gradient (first sample)."""
    name = "sg3t_64"
    G = load_fixture(name)
    G.set_impl("triton")
    arrays = fixture_arrays(name)
    ws = torch.from_numpy(arrays["ws_plus"][:1]).requires_grad_()
    img = G.synthesis(ws, noise_mode="const")
    assert_close(img.detach().numpy(), arrays["img_plus"][:1], 1e-4, f"{name} img_plus (triton)")
    weight = reference_weight(name, tuple(arrays["img_plus"].shape))[:1]
    (img * weight).sum().backward()
    tol = FLOAT32_GRAD_TOLERANCE.get(name, 1e-3)
    assert_close(ws.grad.numpy(), arrays["grad_ws_plus"][:1], tol, f"{name} grad (triton)")
    assert np.isfinite(ws.grad.numpy()).all()


@pytest.fixture
def gpu_tf32(monkeypatch: pytest.MonkeyPatch):
    """The products as on a GPU, emulated in the interpreter's ``tl.dot``: ``tf32`` for half inputs, whose operands
    the hardware truncates to tf32 (the low 13 mantissa bits dropped; sm_90's ``wgmma``/``mma.sync`` take them so);
    ``tf32x3`` for float32 inputs (each operand split into its nearest tf32, ``cvt.rna``, and the rest; three truncating
    products: big x big + big x small + small x big)."""
    from triton._C.libtriton import ir
    from triton.runtime import interpreter

    dot = interpreter.InterpreterBuilder.create_dot

    def truncate(v: np.ndarray) -> np.ndarray:
        return (v.view(np.int32) & -0x2000).view(np.float32)

    def emulated_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        if input_precision == ir.INPUT_PRECISION.TF32:
            a, b = (interpreter.TensorHandle(truncate(h.data), h.dtype) for h in (a, b))
        elif input_precision == ir.INPUT_PRECISION.TF32x3:
            big = [((h.data.view(np.int32) + 0x1000) & -0x2000).view(np.float32) for h in (a, b)]
            small = [truncate(h.data - g) for h, g in zip((a, b), big)]
            acc = np.matmul(big[0], small[1]) + np.matmul(small[0], big[1]) + np.matmul(big[0], big[1])
            return interpreter.TensorHandle((acc + d.data).astype(np.float32), d.dtype.scalar)
        return dot(self, a, b, d, input_precision, max_num_imprecise_acc)

    monkeypatch.setattr(interpreter.InterpreterBuilder, "create_dot", emulated_dot)
    monkeypatch.setattr(triton_ops, "_precision", lambda dtype: "tf32x3" if dtype == torch.float32 else "tf32")
    triton_ops._plan.cache_clear()
    yield
    triton_ops._plan.cache_clear()


@interpreted
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=["fp16", "fp32"])
def test_gpu_products_within_tolerance_and_unbiased(gpu_tf32, dtype) -> None:
    """Every layer kind with the GPU's products (emulated): float16 through truncating tf32 products, which the kernels
    feed operands rounded to the nearest tf32 (else a bias towards zero), and float32 through tf32x3: the errors
    within the tests' (and the trial's) tolerance, no bias. The gradient at slope 1 (no kink): there a pre-activation
    within rounding of the kink may take the other branch than the float32 reference's, an error of the comparison,
    not of the products."""
    figures = []
    for name, up, down, fu, fd, padding, _torgb in PLAN_LAYERS:
        if fu is None and fd is None:
            continue  # ToRGB: the fast path
        torch.manual_seed(0)
        x = torch.randn(1, 3, 24, 23).to(dtype).requires_grad_()
        b = (0.3 * torch.randn(3)).to(dtype)
        xr = x.detach().double().requires_grad_()
        fu64, fd64, b64 = fu.double(), fd.double(), b.double()
        kwargs = dict(up=up, down=down, padding=padding, clamp=0.5)
        ref = ops.filtered_lrelu_ref(xr, fu64, fd64, b64, **kwargs)
        out = triton_ops.filtered_lrelu(x, fu, fd, b, **kwargs)
        kwargs.update(slope=1.0, clamp=None)
        ref_lin, lin = (
            ops.filtered_lrelu_ref(xr, fu64, fd64, b64, **kwargs),
            triton_ops.filtered_lrelu(x, fu, fd, b, **kwargs),
        )
        gy = torch.randn(ref.shape).to(dtype)
        (ref_gx,), (gx,) = torch.autograd.grad(ref_lin, [xr], gy.double()), torch.autograd.grad(lin, [x], gy)
        for what, ours, theirs in (("y", out, ref), ("gx", gx, ref_gx)):
            diff = ours.double() - theirs
            scale = theirs.abs().max().item()
            bias = (diff * theirs.sign()).mean().item()  # truncation shrinks every product towards zero
            figures.append((f"{name} {what}", diff.abs().max().item() / scale, bias / scale))
    for what, err, bias in figures:
        print(f"{what}: max error {err:.2e}, mean error away from zero {bias:+.2e} (x max|ref|)")
    assert max(err for _, err, _ in figures) <= TOLERANCE[dtype]
    assert max(abs(bias) for _, _, bias in figures) <= TOLERANCE[dtype] / 4  # float16: 5e-4


@pytest.fixture
def fresh_trials(monkeypatch: pytest.MonkeyPatch):
    """No trial results from earlier tests (the trial runs once per process, device, kind and dtype)."""
    monkeypatch.setattr(triton_ops, "_TRIALS", {})
    triton_ops._plan.cache_clear()
    yield
    triton_ops._plan.cache_clear()


def _small_generator():
    return build_plan("t", 16, w_dim=8, channel_max=2)


@interpreted
def test_trial_passes_once_per_device_and_kind(fresh_trials, monkeypatch: pytest.MonkeyPatch) -> None:
    G = _small_generator()
    kinds = triton_ops.layer_kinds(G)
    assert kinds and all("slope0.2" in name for name in kinds)  # ToRGB (no filters) has no kernel: not tried
    assert triton_ops.trial(G, "cpu", dtypes=(torch.float32,)) is None
    assert set(triton_ops._TRIALS) == {(torch.device("cpu"), name, torch.float32) for name in kinds}
    monkeypatch.setattr(triton_ops, "_trial_layer", lambda *args: pytest.fail("tried twice"))
    assert triton_ops.trial(G, "cpu", dtypes=(torch.float32,)) is None
    assert triton_ops.layer_kinds(build_plan("sg2", 16, w_dim=8, channel_max=2)) == {}  # nothing to try


@interpreted
def test_trial_names_a_failed_launch_and_a_mismatch(fresh_trials, monkeypatch: pytest.MonkeyPatch) -> None:
    G = _small_generator()
    first = next(iter(triton_ops.layer_kinds(G)))
    # float32 products in tf32 (10-bit mantissa): the fast path's numbers missed by far more than the tolerance.
    with monkeypatch.context() as m:
        m.setattr(triton_ops, "_precision", lambda dtype: "tf32")
        reason = triton_ops.trial(G, "cpu", dtypes=(torch.float32,))
    assert reason.startswith(f"layer kind {first} in float32: forward max error ") and "\n" not in reason
    assert float(reason.split("max error ")[1].split()[0]) > TOLERANCE[torch.float32]
    monkeypatch.setattr(triton_ops, "_TRIALS", {})
    triton_ops._plan.cache_clear()

    class NoCompiler:  # what a slim image without gcc gives at the first launch
        def __getitem__(self, grid):
            raise RuntimeError("Failed to find C compiler. Please specify via CC environment variable.\nmore")

    monkeypatch.setattr(triton_ops, "_fwd_kernel", NoCompiler())
    reason = triton_ops.trial(G, "cpu", dtypes=(torch.bfloat16,))
    message = "RuntimeError: Failed to find C compiler. Please specify via CC environment variable."
    assert reason == f"layer kind {first} in bfloat16: {message}"


def test_auto_uses_triton_only_after_its_trial(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    cuda = torch.device("cuda", 1)
    G = _small_generator()
    tried = []
    monkeypatch.setattr(triton_ops, "unavailable_reason", lambda device: None)  # as on a CUDA machine
    monkeypatch.setattr(triton_ops, "trial", lambda module, device: tried.append((module, device)) or None)
    assert resolve_impl("auto", cuda, G) == "triton" and resolve_impl("triton", cuda, G) == "triton"
    assert tried == [(G, cuda), (G, cuda)]
    tried.clear()
    assert resolve_impl("auto", cuda) == "triton"  # no generator: the T and R plans' layer kinds
    kinds = triton_ops.layer_kinds(tried[0][0])
    assert any(name.startswith("up4-down2-fu24-fd12x12") for name in kinds)  # R's radial filters
    assert any(name.startswith("up4-down2-fu24-fd12-") for name in kinds)  # T's separable ones
    why = "layer kind up2-down2 in float16: forward max error 0.0031 x max|fast| > 0.002"
    monkeypatch.setattr(triton_ops, "trial", lambda module, device: why)
    with caplog.at_level("WARNING", logger="stylegan3.runtime"):
        assert resolve_impl("auto", cuda, G) == "fast"
        assert resolve_impl("auto", cuda, G) == "fast"
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and why in lines[0] and "cuda:1" in lines[0] and "impl=fast" in lines[0]
    with pytest.raises(ValueError, match=f"impl=triton cannot run on cuda:1: {why}"):
        resolve_impl("triton", cuda, G)
    assert resolve_impl("fast", cuda, G) == "fast" and resolve_impl("reference", cuda, G) == "reference"


@interpreted
def test_generators_built_or_moved_under_inference_mode(fresh_trials) -> None:
    """Inference tensors have no version counter (the filter keys read it): the Triton ops render such generators
    as the fast path does (fast and reference never read it), and their trial runs."""
    torch.manual_seed(0)
    with torch.inference_mode():
        built = _small_generator()
    torch.manual_seed(0)
    moved = _small_generator()  # the same weights
    with torch.inference_mode():
        moved = moved.to(torch.float64).float()
    ws = torch.randn(1, built.num_ws, built.w_dim)
    with torch.inference_mode():
        fast = built.synthesis(ws)
        built.set_impl("triton")
        moved.set_impl("triton")
        for G in (built, moved):
            torch.testing.assert_close(G.synthesis(ws), fast, rtol=0, atol=1e-5 * fast.abs().max().item())
        # The trial itself runs with gradients, whatever the mode of its caller.
        assert triton_ops.trial(built, "cpu", dtypes=(torch.float32,)) is None


def test_launches_run_under_the_tensors_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """Triton launches on the current CUDA device: every launch sits inside a guard made current on its tensors'."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    guard = triton_ops._device_guard(torch.device("cuda", 1))
    assert isinstance(guard, torch.cuda.device) and guard.idx == 1
    entered, launches = [], []

    class Guard:
        def __init__(self, device):
            self.device = device

        def __enter__(self):
            entered.append(self.device)

        def __exit__(self, *exc):
            entered.append(None)

    class Kernel:
        def __init__(self, name):
            self.name = name

        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                tensors = [a for a in args if isinstance(a, torch.Tensor)]
                launches.append((self.name, entered[-1] if entered else None, {t.device for t in tensors[:3]}))

            return launch

    monkeypatch.setattr(triton_ops, "_device_guard", Guard)
    monkeypatch.setattr(triton_ops, "_fwd_kernel", Kernel("fwd"))
    monkeypatch.setattr(triton_ops, "_bwd_kernel", Kernel("bwd"))
    up, down, fu, fd, padding = PLAN_LAYERS[1][1:6]
    plan = triton_ops.plan_for((24, 23), fu, fd, up, down, padding, torch.device("cpu"))
    cuda = torch.device("cuda", 1)
    with FakeTensorMode(allow_non_fake_inputs=True):  # tensors on cuda:1 without a GPU
        x = torch.empty([1, 2, 24, 23], device=cuda)
        y = triton_ops._forward(x, torch.empty([2], device=cuda), plan, 2**0.5, 0.2, None)
        triton_ops._backward(x, None, torch.empty(y.shape, device=cuda), plan, 2**0.5, 0.2, 256.0)
    assert launches == [("fwd", cuda, {cuda}), ("bwd", cuda, {cuda})]
    assert entered == [cuda, None, cuda, None]


# ----------------------------------------------------------------------------------------
# On a CUDA GPU (pytest -m cuda with TRITON_INTERPRET=0; skipped elsewhere, with the reason).

CUDA_SHAPE = (2, 3, 48, 45)  # several tiles per axis at the GPU's budgets, both plane counts > 1


@pytest.mark.cuda
@on_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("layer", PLAN_LAYERS, ids=[layer[0] for layer in PLAN_LAYERS])
def test_plan_layers_cuda(layer, dtype) -> None:
    for clamp in (None, 0.5):
        _check(*layer[1:], clamp, dtype, shape=CUDA_SHAPE, device="cuda")


@pytest.mark.cuda
@on_cuda
@pytest.mark.skipif(_NO_CUDA is None and torch.cuda.device_count() < 2, reason="needs a second GPU")
def test_second_gpu_while_the_current_is_the_first() -> None:
    """Tensors on cuda:1 while the current device is cuda:0 (a Gradio worker thread, generate.py device=cuda:1):
    the launches run on cuda:1 and give its numbers; the current device stays cuda:0."""
    with torch.cuda.device(0):
        for index in (1, 4):
            _check(*PLAN_LAYERS[index][1:], 0.5, torch.float32, shape=CUDA_SHAPE, device="cuda:1")
        assert torch.cuda.current_device() == 0


@pytest.mark.cuda
@on_cuda
def test_trial_passes_on_cuda(fresh_trials) -> None:
    """The trial of impl=auto on this GPU: the T and R plans' layer kinds in the three dtypes."""
    assert triton_ops.trial(build_plan("r", 1024, w_dim=4, channel_max=1), "cuda") is None
    assert resolve_impl("auto", torch.device("cuda", torch.cuda.current_device())) == "triton"


@pytest.mark.cuda
@on_cuda
def test_r1024_forward_backward_against_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 1024 px R plan (64 channels at most), impl=triton against impl=fast: the image and its W+ gradient, in float32
    (TF32 off) and mixed precision (NVIDIA's float16 layers), within the parity tests' tolerances."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    torch.manual_seed(0)
    G = build_plan("r", 1024, w_dim=64, channel_max=64).cuda()
    ws = G.mapping(torch.randn(1, G.z_dim, device="cuda"), None)
    weight = torch.randn(1, 3, 1024, 1024, device="cuda")
    for force_fp32, tol_image, tol_grad in ((True, 1e-4, 1e-3), (False, 2e-3, 2e-3)):
        results = {}
        for impl in ("fast", "triton"):
            G.set_impl(impl)
            w = ws.detach().clone().requires_grad_()
            image = G.synthesis(w, force_fp32=force_fp32)
            (image.float() * weight).sum().backward()
            results[impl] = (image.detach().float().cpu().numpy(), w.grad.cpu().numpy())
        what = "float32" if force_fp32 else "mixed"
        assert_close(results["triton"][0], results["fast"][0], tol_image, f"R 1024 image ({what})")
        assert_close(results["triton"][1], results["fast"][1], tol_grad, f"R 1024 W+ gradient ({what})")


@interpreted
def test_counted_multiply_adds_are_the_kernels(gpu_tiling, monkeypatch: pytest.MonkeyPatch) -> None:
    """triton_ops.tensor_macs (what scripts/triton_macs.py prints) against the products the kernels issue: each
    tl.dot's M x K x N counted in the interpreter, forward and backward of an up=4 layer tiled as on a GPU."""
    from triton.runtime import interpreter

    counted = []
    dot = interpreter.InterpreterBuilder.create_dot

    def counting_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        (m, k), n = a.data.shape, b.data.shape[1]
        counted.append(m * k * n)
        return dot(self, a, b, d, input_precision, max_num_imprecise_acc)

    monkeypatch.setattr(interpreter.InterpreterBuilder, "create_dot", counting_dot)
    up, down, fu, fd, padding = PLAN_LAYERS[1][1:6]
    x = torch.randn(1, 1, 30, 29, requires_grad=True)
    y = triton_ops.filtered_lrelu(x, fu, fd, None, up=up, down=down, padding=padding)
    forward = sum(counted)
    counted.clear()
    y.backward(torch.randn(y.shape))
    plan = triton_ops.plan_for(x.shape, fu, fd, up, down, padding, torch.device("cpu"))
    # tf32x3 on a GPU: three products per dot of a float32 input; the interpreter's dot is one.
    assert triton_ops.tensor_macs(plan, 1, torch.float32) == (3 * forward, 3 * sum(counted))
    assert sum(counted) > 0


def test_up4_float32_backward_costs_at_most_twice_its_forward() -> None:
    """Counted tensor multiply-adds of every up=4 layer of the T and R 1024 plans, float32, batch 8, as a GPU tiles
    them: the backward at most 2x the forward (a single block of pre-activations per tile cost up to 11x)."""
    from scripts.triton_macs import layer_macs

    for config in ("t", "r"):
        G = build_plan(config, 1024, w_dim=4, channel_max=1)
        for name, forward, backward in layer_macs(G, 8, torch.float32, triton_ops._MAX_CHUNKS):
            if getattr(G.synthesis, name).up_factor == 4:
                assert backward <= 2 * forward, (config, name, backward / forward)
        before = layer_macs(G, 8, torch.float32, 1)
        assert max(b / f for _, f, b in before) > 2  # what the chunks changed
