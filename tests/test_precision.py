"""Mixed precision of the inversion: bf16 and fp16 autocast against fp32 (full loss), and fp16's loss scaling."""

from __future__ import annotations

import pytest
import torch
from conftest import load_fixture, write_loss_weights

from inversion.inverter import InverterOptions, invert
from inversion.losses import InversionLoss, LossWeights, build_inversion_loss
from inversion.precision import autocast, loss_scaler
from stylegan3.sampling import synthesize

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def G():
    return load_fixture("sg2_64").eval().requires_grad_(False)


@pytest.fixture(scope="module")
def full_loss(tmp_path_factory) -> InversionLoss:
    arcface, alexnet = write_loss_weights(tmp_path_factory.mktemp("weights"))
    return build_inversion_loss(LossWeights(), arcface_path=str(arcface), alexnet_path=str(alexnet))


@pytest.fixture(scope="module")
def target(G) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    w_true = G.mean_w()[None] + 0.2 * torch.randn((1, G.num_ws, G.w_dim), generator=g)
    with torch.no_grad():
        return synthesize(G, w_true)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_latents_match_fp32(G, full_loss, target, precision):
    # Tolerance: the latents' distance from the fp32 run's, relative to how far fp32 moved from the mean w, is
    # under 10% after 4 steps of the full loss. A step the fp16 loss scaler skipped moved nothing, so fp16 is
    # compared with fp32 over the steps it took (here the first: 2^16 times the loss overflowed float16).
    run = invert(G, target, full_loss, InverterOptions(steps=4, precision=precision))
    if precision == "bf16":
        assert run.skipped_steps == 0
    assert run.skipped_steps < 4
    fp32_run = invert(G, target, full_loss, InverterOptions(steps=4 - run.skipped_steps))
    start = G.mean_w()[None]
    moved = (fp32_run.w_plus - start).norm()
    assert moved > 0
    assert not torch.equal(run.w_plus, fp32_run.w_plus)  # autocast did change the arithmetic
    assert (run.w_plus - fp32_run.w_plus).norm() / moved < 0.10
    assert run.w_plus.dtype == torch.float32
    for term in ("total", "mse", "lpips", "id", "delta_reg"):
        value = run.losses[term]
        assert value.dtype == torch.float32 and torch.isfinite(value).all(), term
    torch.testing.assert_close(run.losses["total"], fp32_run.losses["total"], rtol=0.1, atol=1e-4)
    # The ID term stays float32: bf16's 8-bit cosine gave 1 - cos = -0.0078 (negative) before.
    assert (run.losses["id"] >= 0).all()


def test_fp16_gradient_underflows_without_loss_scaling():
    # A 1e-4-weighted mean over 65536 pixels: each pixel's gradient is 1.5e-9, under float16's smallest
    # subnormal (6e-8), as the per-pixel gradients of a mean loss at 1024 px are.
    torch.manual_seed(0)
    layer = torch.nn.Linear(16, 65536)
    x = torch.randn(1, 16)

    def grad(precision: str, scaled: bool) -> torch.Tensor:
        w = x.clone().requires_grad_(True)
        scaler = loss_scaler(precision, CPU)
        with autocast(precision, CPU):
            loss = 1e-4 * layer(w).float().mean()
        (scaler.scale(loss) if scaled else loss).backward()
        return w.grad / (scaler.get_scale() if scaled and scaler.is_enabled() else 1.0)

    reference = grad("fp32", False)
    assert reference.abs().min() > 0
    assert torch.count_nonzero(grad("fp16", False)) == 0  # flushed to zero
    torch.testing.assert_close(grad("fp16", True), reference, rtol=1e-2, atol=0)


def test_loss_scaler_unscales_exactly_and_skips_non_finite_steps():
    gradient = torch.tensor([1e-9, -3e-6, 2.5e-3, 7.0])

    def adam_step(scaler, g: torch.Tensor) -> tuple[torch.Tensor, torch.optim.Adam]:
        p = torch.ones(4, requires_grad=True)
        opt = torch.optim.Adam([p], lr=0.01)
        scaler.scale((p * g).sum()).backward()
        scaler.step(opt)
        scaler.update()
        return p.detach(), opt

    plain, _ = adam_step(loss_scaler("fp32", CPU), gradient)
    scaler = loss_scaler("fp16", CPU)
    assert scaler.is_enabled() and not loss_scaler("bf16", CPU).is_enabled()
    scaled, _ = adam_step(scaler, gradient)
    assert torch.equal(scaled, plain)  # scale 2^16 and back: exact in float32
    assert not torch.equal(plain, torch.ones(4))
    for bad in (float("nan"), float("inf")):
        scaler = loss_scaler("fp16", CPU)
        before = scaler.get_scale()
        p, opt = adam_step(scaler, torch.tensor([1.0, bad, 1.0, 1.0]))
        assert torch.equal(p, torch.ones(4))  # the step was skipped: the latents did not move
        assert not opt.state  # and Adam's moments were not touched
        assert scaler.get_scale() == before / 2


class _PoisonedLoss(torch.nn.Module):
    """The given loss, with the total of its ``bad_call``-th call made NaN (a step whose gradient overflowed)."""

    def __init__(self, loss: InversionLoss, bad_call: int) -> None:
        super().__init__()
        self.loss, self.bad_call, self.calls = loss, bad_call, 0
        self.weights = loss.weights  # invert() checks the terms against the generator (check_loss_applies)

    def target_features(self, target: torch.Tensor) -> dict:
        return self.loss.target_features(target)

    def forward(self, image, target, w_plus, features=None):
        total, terms = self.loss(image, target, w_plus, features)
        self.calls += 1
        return (total * float("nan") if self.calls == self.bad_call else total), terms


def test_fp16_inversion_skips_a_step_with_nan_gradients(G, target):
    loss = InversionLoss(LossWeights(lpips=0.0, id=0.0))
    opts = InverterOptions(steps=3, precision="fp16", log_every=0)
    poisoned = invert(G, target, _PoisonedLoss(loss, bad_call=2), opts)  # step 1's gradients are NaN
    clean = invert(G, target, loss, opts)
    assert poisoned.skipped_steps == clean.skipped_steps + 1
    assert torch.isfinite(poisoned.w_plus).all()
    # Skipping moved nothing: the latents are those of a clean run one step shorter (up to float16 rounding at
    # the halved scale, against steps of lr = 0.01), and not those of the clean 3-step run.
    shorter = invert(G, target, loss, InverterOptions(steps=2, precision="fp16", log_every=0))
    torch.testing.assert_close(poisoned.w_plus, shorter.w_plus, rtol=0, atol=5e-4)
    assert (poisoned.w_plus - clean.w_plus).abs().max() > 2e-3


def test_unknown_precision_is_refused(G, target):
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, fp16, got 'fp8'"):
        invert(G, target, InversionLoss(LossWeights(lpips=0.0, id=0.0)), InverterOptions(steps=1, precision="fp8"))


def test_a_run_folder_from_before_precision_resumes_when_it_was_fp32(tmp_path):
    import json

    from inversion.dataset import RUN_FILE, check_run

    record = {"settings": {"steps": 20, "precision": "fp32", "compile": False}, "shards": [["a/000000"]]}
    old = {"settings": {"steps": 20, "mixed_precision": False, "compile": False}, "shards": [["a/000000"]]}
    (tmp_path / RUN_FILE).write_text(json.dumps(old))
    check_run(tmp_path, record)  # the same arithmetic: resumes
    with pytest.raises(ValueError, match="precision: 'fp32' -> 'bf16'"):
        check_run(tmp_path, record | {"settings": record["settings"] | {"precision": "bf16"}})
    old["settings"]["mixed_precision"] = True  # CUDA float16 layers: no equal today
    (tmp_path / RUN_FILE).write_text(json.dumps(old))
    with pytest.raises(ValueError, match="other settings.*mixed_precision: True -> None.*precision: None -> 'fp32'"):
        check_run(tmp_path, record)
