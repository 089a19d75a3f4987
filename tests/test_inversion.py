"""W+ inversion: convergence, batch = singles, the regulariser's gradient, early stop, warm start, the script."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import FIXTURES, SAMPLES, ScriptRun, load_fixture, run_script, write_loss_weights
from PIL import Image

from inversion.inverter import InverterOptions, invert
from inversion.losses import IdentityLoss, InversionLoss, LossWeights, build_inversion_loss, delta_reg, mse_loss
from stylegan3.sampling import synthesize

MSE_ONLY = LossWeights(lpips=0.0, id=0.0)  # MSE + delta-reg: no pretrained networks needed


@pytest.fixture(scope="module")
def G():
    return load_fixture("sg2_64").eval().requires_grad_(False)


def targets_near_mean(G, n: int, scale: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of known W+ latents: the mean w plus a random offset per row."""
    g = torch.Generator().manual_seed(seed)
    w_true = G.mean_w()[None] + scale * torch.randn((n, G.num_ws, G.w_dim), generator=g)
    with torch.no_grad():
        return synthesize(G, w_true), w_true


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 10 * torch.log10(4.0 / mse_loss(x, y))  # images in [-1, 1]: peak-to-peak 2


def test_inverting_a_generated_image_reaches_30_db(G):
    targets, _ = targets_near_mean(G, 2, scale=0.06)
    with torch.no_grad():
        start = synthesize(G, G.mean_w()[None]).expand_as(targets)
    result = invert(G, targets, InversionLoss(MSE_ONLY), InverterOptions(steps=200))
    with torch.no_grad():
        final = psnr(synthesize(G, result.w_plus), targets)
    assert (psnr(start, targets) < 25).all()
    assert (final >= 30).all(), final
    torch.testing.assert_close(result.losses["mse"], mse_loss(synthesize(G, result.w_plus), targets))


@pytest.fixture(scope="module")
def full_loss(tmp_path_factory) -> InversionLoss:
    """Eq. 3.5 with all four terms, its ArcFace and AlexNet read from random-weight files."""
    arcface, alexnet = write_loss_weights(tmp_path_factory.mktemp("weights"))
    return build_inversion_loss(LossWeights(), arcface_path=str(arcface), alexnet_path=str(alexnet))


def test_batch_equals_single_runs(G, full_loss):
    # Bit for bit, with the full loss: each image's pass runs on its own, so the kernels' summation order (which
    # depends on the batch size) cannot differ from a single run's, on any CPU.
    targets, _ = targets_near_mean(G, 2, scale=0.2, seed=1)
    opts = InverterOptions(steps=3)
    batch = invert(G, targets, full_loss, opts)
    singles = [invert(G, targets[i : i + 1], full_loss, opts) for i in range(2)]
    assert torch.equal(batch.w_plus, torch.cat([s.w_plus for s in singles]))
    for term in ("total", "mse", "lpips", "id", "delta_reg"):
        assert torch.equal(batch.losses[term], torch.cat([s.losses[term] for s in singles])), term
    assert not torch.equal(batch.w_plus[0], batch.w_plus[1])


def test_joint_pass_is_close_to_single_runs(G):
    # One pass for the whole batch: the same problem, equal up to float32 summation order only.
    targets, _ = targets_near_mean(G, 2, scale=0.2, seed=1)
    loss = InversionLoss(MSE_ONLY)
    joint = invert(G, targets, loss, InverterOptions(steps=3, joint_pass=True)).w_plus
    singles = torch.cat([invert(G, targets[i : i + 1], loss, InverterOptions(steps=3)).w_plus for i in range(2)])
    torch.testing.assert_close(joint, singles, rtol=0, atol=1e-3)


def test_identity_target_is_never_stale(G):
    # A new target batch in the memory of the previous one (the allocator reuses freed blocks; here forced with
    # one numpy buffer): the ID term must follow the new target, not the embedding of the old one.
    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 64 * 64, 16))
    loss = InversionLoss(LossWeights(lpips=0), identity=IdentityLoss(encoder))
    first, _ = targets_near_mean(G, 2, scale=0.3, seed=2)
    second, _ = targets_near_mean(G, 2, scale=0.3, seed=3)
    buffer = first.numpy().copy()
    opts = InverterOptions(steps=1)
    invert(G, torch.from_numpy(buffer), loss, opts)
    buffer[...] = second.numpy()
    reused = invert(G, torch.from_numpy(buffer), loss, opts)
    fresh = invert(G, second.clone(), InversionLoss(LossWeights(lpips=0), identity=IdentityLoss(encoder)), opts)
    assert torch.equal(reused.losses["id"], fresh.losses["id"])
    assert torch.equal(reused.w_plus, fresh.w_plus)


def test_delta_reg_gradient_matches_finite_differences():
    w = torch.randn(2, 5, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: delta_reg(x), (w,))
    # And the value is eq. 3.4: sum over i >= 1 of ||w_i - w_0||^2.
    expected = sum(((w[:, i] - w[:, 0]) ** 2).sum(-1) for i in range(1, 5))
    torch.testing.assert_close(delta_reg(w), expected)
    assert delta_reg(w[:, :1].expand(-1, 5, -1)).abs().max() == 0


def test_starts_from_the_thesis_mean_w_or_a_warm_start(G):
    targets, w_true = targets_near_mean(G, 2, scale=0.1)
    loss = InversionLoss(MSE_ONLY)
    none = invert(G, targets, loss, InverterOptions(steps=0))
    torch.testing.assert_close(none.w_plus, G.mean_w(10000, 123)[None].expand(2, -1, -1))
    warm = invert(G, targets, loss, InverterOptions(steps=0), w_init=w_true)
    torch.testing.assert_close(warm.w_plus, w_true)
    assert warm.losses["mse"].max() < 1e-10


def test_early_stop_freezes_each_image(G):
    targets, _ = targets_near_mean(G, 2, scale=0.1)
    loss = InversionLoss(MSE_ONLY)
    # No step can improve by 100%: every image stops after patience + 1 updates, like a 4-step run.
    stopped = invert(G, targets, loss, InverterOptions(steps=50, early_stop_patience=3, early_stop_min_delta=1.0))
    short = invert(G, targets, loss, InverterOptions(steps=4))
    assert stopped.steps_run == [4, 4]
    torch.testing.assert_close(stopped.w_plus, short.w_plus, rtol=0, atol=0)
    assert invert(G, targets, loss, InverterOptions(steps=6)).steps_run == [6, 6]  # off by default


def test_losses_need_their_networks_and_identity_is_per_image():
    with pytest.raises(ValueError, match="loss.lpips=0"):
        InversionLoss(LossWeights())
    encoder = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 16))
    ident = IdentityLoss(encoder)
    x = torch.randn(3, 3, 8, 8)
    torch.testing.assert_close(ident(x, x), torch.zeros(3), atol=1e-6, rtol=0)
    other = torch.randn(3, 3, 8, 8)
    value = ident(x, other)
    assert value.shape == (3,) and (value > 0).all() and (value <= 2).all()
    total, terms = InversionLoss(LossWeights(lpips=0), identity=ident)(x, other, torch.zeros(3, 4, 2))
    assert set(terms) == {"mse", "id", "delta_reg"} and total.shape == (3,)
    torch.testing.assert_close(total, 0.1 * terms["mse"] + 0.05 * terms["id"])


def run(args: list[str], env: dict[str, str] | None = None) -> ScriptRun:
    """``python -m scripts.X ARGS`` with ``env`` added to the environment, in this process."""
    assert args[0] == "-m" and args[1].startswith("scripts.")
    return run_script(args[1].removeprefix("scripts."), *args[2:], env=env)


def test_invert_script(tmp_path, G):
    out = tmp_path / "inv"
    photo = SAMPLES / "images" / "london_021_neutral.jpg"
    net = str(FIXTURES / "sg2_64.pkl")
    proc = run(
        [
            "-m",
            "scripts.invert",
            str(photo),
            "--network",
            net,
            "--steps",
            "5",
            "--out",
            str(out),
            "loss.lpips=0",
            "loss.id=0",
        ]
    )
    assert proc.returncode == 0, proc.stderr
    latent = np.load(out / "latent.npy")
    assert latent.shape == (G.num_ws, G.w_dim) and latent.dtype == np.float32
    assert Image.open(out / "reconstruction.png").size == (64, 64)
    assert Image.open(out / "comparison.png").size == (128, 64)
    report = json.loads((out / "losses.json").read_text())
    assert report["steps"] == 5 and {"mse", "delta_reg", "psnr"} <= report["final"].keys()
    # Unaligned and not square: a one-line error, not a traceback.
    proc = run(
        [
            "-m",
            "scripts.invert",
            str(SAMPLES / "images" / "lisa2_small_offcenter.jpg"),
            "--no-align",
            "--network",
            net,
            "--steps",
            "1",
            "--out",
            str(tmp_path / "x"),
            "loss.lpips=0",
            "loss.id=0",
        ]
    )
    assert proc.returncode != 0 and "must be square" in proc.stderr and "Traceback" not in proc.stderr


def test_invert_script_names_missing_weights(tmp_path):
    env = {
        "REENACT_OFFLINE": "1",
        "REENACT_CACHE": str(tmp_path / "cache"),
        "TORCH_HOME": str(tmp_path / "th"),
        "PATH": "/usr/bin:/bin",
    }
    photo = SAMPLES / "images" / "london_021_neutral.jpg"
    args = [str(photo), "--network", str(FIXTURES / "sg2_64.pkl"), "--steps", "1", "--out", str(tmp_path / "o")]
    cases = (
        ("loss.lpips=0", ["model_ir_se50.pth", str(tmp_path / "cache")]),
        ("loss.id=0", ["alexnet-owt-7be5be79.pth"]),
    )
    for switched_off, named in cases:
        proc = run(["-m", "scripts.invert", *args, switched_off], env=env)
        assert proc.returncode != 0 and all(text in proc.stderr for text in named)
