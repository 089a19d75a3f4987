"""Pivotal tuning (inversion.tuning) with tiny networks and the full loss (MSE + LPIPS + ID + delta-reg, random-weight
loss networks): it halves W+'s reconstruction error on a real photo, leaves the original generator bit-equal,
keeps random latents in place with the locality term, and invert.py / reenact.py / the page use it end to end."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FIXTURES, SAMPLES, load_fixture, run_script, write_loss_weights
from test_bad_input import error_line

import stylegan3
from inversion.inverter import InverterOptions, invert
from inversion.losses import LossWeights, build_inversion_loss, mse_loss
from inversion.targets import to_tensor
from inversion.tuning import TuningOptions, latent_drift, locality_latents, locality_z, tune_generator
from reenactment.faces.align import load_target
from stylegan3.config import get_value
from stylegan3.images import read_image
from stylegan3.io import atomic_folder
from stylegan3.sampling import synthesize, to_uint8

PHOTO = SAMPLES / "images" / "london_021_neutral.jpg"
NETWORK = FIXTURES / "sg2_64.pkl"
DRIVING = SAMPLES / "images" / "grid_lrwp9a_frame010_openmouth.png"
STEPS = 30  # W+ steps and tuning steps of the library tests
ALPHA = 10.0  # locality radius for the 64 px fixture: its random latents lie 10-20 from the pivot (FFHQ's: PTI's 30)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> tuple[Path, Path]:
    return write_loss_weights(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def problem(weights):
    """The fixture generator, the full loss, an aligned London photo and its W+ inversion (the pivot)."""
    G = load_fixture("sg2_64").eval().requires_grad_(False)
    arcface, alexnet = weights
    loss = build_inversion_loss(LossWeights(), arcface_path=str(arcface), alexnet_path=str(alexnet))
    target = to_tensor(load_target(PHOTO, G.img_resolution, True, "dlib", "largest"))
    pivot = invert(G, target, loss, InverterOptions(steps=STEPS)).w_plus
    return G, loss, target, pivot


@pytest.fixture(scope="module")
def tuned(problem):
    """Tuning with and without the locality term, and the original's weights (copies) from before either."""
    G, loss, target, pivot = problem
    before = {k: v.clone() for k, v in G.state_dict().items()}
    runs = {
        locality: tune_generator(
            G, target, pivot, loss, TuningOptions("pti", STEPS, tune_locality=locality, tune_alpha=ALPHA)
        )
        for locality in (0.1, 0.0)
    }
    return runs, before


def test_tuning_halves_the_reconstruction_error_of_w_plus_alone(problem, tuned):
    G, loss, target, pivot = problem
    result = tuned[0][0.1]
    with torch.no_grad():
        w_plus_alone = mse_loss(synthesize(G, pivot), target).item()
        after = mse_loss(synthesize(result.generator, pivot), target).item()
    assert after <= 0.5 * w_plus_alone, (after, w_plus_alone)
    assert set(result.losses) == {"total", "mse", "lpips", "id", "delta_reg"}
    assert result.losses["mse"] == pytest.approx(after, rel=1e-5)
    with torch.no_grad():
        total_before = loss(synthesize(G, pivot), target, pivot)[0].item()
    assert result.losses["total"] < total_before
    assert [step for step, _ in result.history][:2] == [0, 10] and "locality" in result.history[-1][1]


def test_original_generator_is_unchanged_and_only_synthesis_is_tuned(problem, tuned):
    G = problem[0]
    runs, before = tuned
    after = G.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert not any(p.requires_grad for p in G.parameters())
    copy = runs[0.1].generator
    assert copy is not G and not any(p.requires_grad for p in copy.parameters())
    tuned_state = copy.state_dict()
    changed = {k for k in before if not torch.equal(tuned_state[k], before[k])}
    assert changed and all(k.startswith("synthesis.") for k in changed)


def test_the_locality_term_keeps_random_latents_in_place(problem, tuned):
    G, _, _, pivot = problem
    runs, _ = tuned
    z = locality_z(G.z_dim, 16, seed=999)  # not the tuning's own samples (seed 0)
    with torch.no_grad():
        w_random = G.mapping(z, None, truncation_psi=0.5)
    with_term = latent_drift(G, runs[0.1].generator, w_random).mean().item()
    without = latent_drift(G, runs[0.0].generator, w_random).mean().item()
    assert 0 < with_term < 0.8 * without, (with_term, without)


def test_locality_samples_lie_at_alpha_and_bad_options_are_refused():
    G = load_fixture("sg2_64")
    pivot = G.mean_w() + 0.3
    w_r = locality_latents(G, pivot, locality_z(G.z_dim, 4), 7.5)
    torch.testing.assert_close((w_r - pivot).flatten(1).norm(dim=1), torch.full((4,), 7.5))
    for bad, name in (({"tune": "yes"}, "tune must be one of none, pti"), ({"tune_steps": -1}, "tune_steps"),
                      ({"tune_lr": -1e-3}, "tune_lr"), ({"tune_locality": float("nan")}, "tune_locality")):  # fmt: skip
        with pytest.raises(ValueError, match=name):
            TuningOptions(**bad).check()


def test_atomic_folder_keeps_the_old_folder_when_writing_fails(tmp_path):
    folder = tmp_path / "generator"
    atomic_folder(folder, lambda tmp: (tmp / "a").write_text("old"))

    def interrupted(tmp: Path) -> None:
        (tmp / "a").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_folder(folder, interrupted)
    assert [p.name for p in tmp_path.iterdir()] == ["generator"] and (folder / "a").read_text() == "old"


def test_invert_script_writes_a_tuned_generator_folder(tmp_path, weights, monkeypatch):
    arcface, alexnet = weights
    digest = hashlib.sha256(NETWORK.read_bytes()).hexdigest()
    out = tmp_path / "inv"
    args = [PHOTO, "--network", NETWORK, "--out", out, "steps=10", f"arcface={arcface}", f"alexnet={alexnet}"]
    proc = run_script("invert", *args, "tune=pti", "tune_steps=10", cache=tmp_path / "c")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((out / "losses.json").read_text())
    for key in ("before_tuning", "final"):
        assert {"mse", "lpips", "id", "delta_reg", "psnr"} <= report[key].keys()
    assert report["final"]["mse"] < report["before_tuning"]["mse"] and report["tuning"]["steps"] == 10
    # The folder renders the saved latent as the saved reconstruction, and loads as any network= does.
    G = stylegan3.load(out / "generator")
    latent = torch.from_numpy(np.load(out / "latent.npy"))[None]
    with torch.no_grad():
        np.testing.assert_array_equal(to_uint8(synthesize(G, latent))[0], read_image(out / "reconstruction.png"))
        assert mse_loss(synthesize(G, latent), to_tensor(read_image(out / "target.png"))).item() == pytest.approx(
            report["final"]["mse"], abs=2e-3
        )  # the reconstruction is stored as 8-bit
    assert read_image(out / "comparison.png").shape == (64, 3 * 64, 3)  # target | W+ alone | tuned
    assert hashlib.sha256(NETWORK.read_bytes()).hexdigest() == digest
    # A kill during tuning (here an interrupt at its third step) leaves no generator/ folder, nor any half of one.
    import scripts.invert

    def killed(*a, **k):
        def stop(step, terms):
            if step == 2:
                raise KeyboardInterrupt

        return tune_generator(*a, **{**k, "callback": stop})

    monkeypatch.setattr(scripts.invert, "tune_generator", killed)
    with pytest.raises(KeyboardInterrupt):
        run_script("invert", *args, "--out", tmp_path / "killed", "steps=2", "tune=pti", cache=tmp_path / "c")
    assert not (tmp_path / "killed" / "generator").exists()
    assert not [p for p in (tmp_path / "killed").iterdir() if "generator" in p.name]


def test_bad_tuning_settings_are_one_line_errors_before_any_work(tmp_path):
    for script, extra in (("invert", ["--out", tmp_path / "o"]), ("reenact", [DRIVING, "-o", tmp_path / "o.png",
                                                                             "--mapper", tmp_path / "m"])):  # fmt: skip
        for bad, named in (("tune=full", "tune must be one of none, pti, got 'full'"), ("tune_steps=-5", "tune_steps"),
                           ("tune_lr=-0.1", "tune_lr")):  # fmt: skip
            proc = run_script(script, PHOTO, *extra, "--network", NETWORK, "tune=pti", bad, cache=tmp_path / "c")
            error_line(proc, named)
    assert not (tmp_path / "o").exists() and not (tmp_path / "c").exists()


@pytest.fixture(scope="module")
def mapper_dir(tmp_path_factory) -> Path:
    from reenactment.model.mapper import MappingNetwork, save_mapper

    torch.manual_seed(0)
    model = MappingNetwork(image_size=128, num_ws=10, w_dim=64, channels=(8, 8, 16, 16, 32, 32, 32, 32))
    return save_mapper(model, tmp_path_factory.mktemp("mapper"))


def test_reenact_tunes_once_and_reuses_the_cached_generator(tmp_path, weights, mapper_dir, monkeypatch):
    import reenactment.pipeline

    arcface, alexnet = weights
    cache = tmp_path / "cache"

    def reenact(out: Path, *extra: str):
        return run_script("reenact", PHOTO, DRIVING, "-o", out, "--network", NETWORK, "--mapper", mapper_dir,
                          "steps=3", f"arcface={arcface}", f"alexnet={alexnet}", *extra, cache=cache)  # fmt: skip

    # The latent's cache key is the one without tuning: latents cached before tune existed stay valid.
    from reenactment.pipeline import SourceInversion, source_cache_key

    G, align = load_fixture("sg2_64"), {"backend": "dlib", "tilt": "eyes"}
    pti = SourceInversion(tuning=TuningOptions("pti", 5))
    assert source_cache_key(b"img", G, pti, align) == source_cache_key(b"img", G, SourceInversion(), align)
    proc = reenact(tmp_path / "tuned.png", "tune=pti", "tune_steps=5")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "tuned generator: tuned in 5 steps" in proc.stdout
    (folder,) = (cache / "latents").glob("*.generator")
    assert len(list((cache / "latents").glob("*.npy"))) == 1  # the latent beside it, under its old key
    # Second run: the latent and the tuned generator come from the cache; tuning would fail the test.
    monkeypatch.setattr(reenactment.pipeline, "tune_generator", lambda *a, **k: pytest.fail("tuned again"))
    proc = reenact(tmp_path / "again.png", "tune=pti", "tune_steps=5")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "source latent: from the cache" in proc.stdout and "tuned generator: from the cache" in proc.stdout
    tuned, again = read_image(tmp_path / "tuned.png"), read_image(tmp_path / "again.png")
    np.testing.assert_array_equal(tuned, again)
    # Without tuning (the same cached latent) the frame is the original generator's: another image.
    proc = reenact(tmp_path / "plain.png")
    assert proc.returncode == 0 and "tuned generator" not in proc.stdout, proc.stderr[-2000:]
    assert np.abs(read_image(tmp_path / "plain.png").astype(int) - tuned).mean() > 1
    assert [p.name for p in (cache / "latents").glob("*.generator")] == [folder.name]


def test_the_page_tunes_on_request_and_reuses_the_cache(tmp_path, weights, mapper_dir, monkeypatch):
    from inversion.losses import LossOptions
    from reenactment.app import OPTIONS, AppConfig, Reenactment, RunOptions, describe, run_options

    arcface, alexnet = weights
    monkeypatch.setenv("REENACT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("REENACT_OFFLINE", "1")
    cfg = AppConfig(network=[str(NETWORK)], mapper=[str(mapper_dir)], device="cpu", steps=3,
                    losses=LossOptions(arcface=str(arcface), alexnet=str(alexnet)),
                    tuning=TuningOptions(tune_steps=4))  # fmt: skip
    server = Reenactment(cfg, tmp_path)
    options = RunOptions(network=str(NETWORK), mapper=str(mapper_dir), steps=3, tune="pti")
    stages: list[str] = []
    first = server.run(tmp_path, PHOTO, DRIVING, options, lambda stage, done, total: stages.append(stage))
    assert first.tuned == "tuned" and "tuning the generator" in stages
    assert "tuned on the source" in describe(first, options)
    second = server.run(tmp_path, PHOTO, DRIVING, options, lambda *a: None)
    assert second.tuned == "cached" and second.cached
    np.testing.assert_array_equal(first.inversion, second.inversion)  # G_tuned(w_s), from the cached generator
    with pytest.raises(ValueError, match="tune must be one of"):
        server.check_request(RunOptions(network=str(NETWORK), mapper=str(mapper_dir), tune="full"))
    # The options panel has the choice, and it reaches RunOptions.tune.
    panel = [get_value(RunOptions(), o.key) if o.field != "tune" else "pti" for o in OPTIONS]
    assert run_options(panel).tune == "pti"
