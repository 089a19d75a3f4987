"""digiface-dcgan-64: the DigiFace-1M DCGAN of the gan-face-generate wheel as a generator of the project. Its
weights load strictly, it draws faces dlib finds, the known name resolves offline, bad files are one line, it
round-trips through our format, photos align to its framing, and inverting a real photo works (with every loss term
that applies to it)."""

from __future__ import annotations

import importlib.metadata
import zipfile

import numpy as np
import pytest
import torch
from conftest import FIXTURES, SAMPLES, detector, load_fixture, run_script, write_loss_weights
from PIL import Image
from test_bad_input import error_line

import stylegan3
from inversion.inverter import InverterOptions, invert
from inversion.losses import LossWeights, build_inversion_loss, mse_loss
from inversion.targets import to_tensor
from reenactment.faces.align import load_target
from reenactment.faces.landmarks import NoFaceError, eye_centres
from stylegan3 import io as sio
from stylegan3.framing import FFHQ
from stylegan3.interface import check_generator
from stylegan3.sampling import generate

NAME = "digiface-dcgan-64"
PHOTO = SAMPLES / "images" / "london_021_neutral.jpg"


@pytest.fixture(scope="module")
def G():
    return stylegan3.load(NAME)


def wheel_state() -> dict[str, torch.Tensor]:
    return torch.load(sio.packaged_model_file(NAME), map_location="cpu", weights_only=True)["netG_state_dict"]


def test_wheel_state_dict_loads_strictly_every_key_and_shape(G):
    state = wheel_state()
    assert len(state) == 5 + 4 * 5  # 5 transposed convs, 4 BatchNorms of 5 entries each (weight .. batches)
    renamed = sio.networks_dcgan.import_tutorial_state(G, state)
    own = G.state_dict()
    assert set(renamed) == set(own)
    for key, value in state.items():  # the wheel's tensors are ours, unchanged, under the renamed keys
        i = int(key.split(".")[1])
        ours = f"mapping.net.{key[5:]}" if i < 3 else f"synthesis.net.{i - 3}.{key.split('.', 2)[2]}"
        assert own[ours].shape == value.shape and torch.equal(own[ours], value), key
    # One key short, or one shape off: refused by name.
    short = {k: v for k, v in state.items() if k != "main.4.weight"}
    narrow = {**state, "main.0.weight": state["main.0.weight"][:, :256]}
    for broken in (short, narrow):
        with pytest.raises(sio.WeightsFileError, match="main|mapping.net.0.weight|synthesis.net.1.weight"):
            sio.load_state_strict(G, sio.networks_dcgan.import_tutorial_state(G, broken), "wheel")


def test_generator_interface_is_met_by_every_implementation(G):
    for net in (G, load_fixture("sg3t_64"), load_fixture("sg2_64")):
        check_generator(net)
    assert (G.num_ws, G.w_dim, G.img_resolution, G.z_dim) == (16, 512, 64, 100)
    assert G.framing.name == "digiface" and load_fixture("sg3t_64").framing == FFHQ
    ws = G.mapping(torch.randn(3, 100), None)
    assert ws.shape == (3, 16, 512) and (ws >= 0).all()  # after the first block's ReLU
    assert torch.allclose(G.mapping.w_avg, G.mean_w())  # truncation's centre is the mean W+
    half = G.mapping(torch.randn(3, 100, generator=torch.Generator().manual_seed(1)), None, truncation_psi=0.5)
    full = G.mapping(torch.randn(3, 100, generator=torch.Generator().manual_seed(1)), None)
    torch.testing.assert_close(half, G.mapping.w_avg.lerp(full, 0.5))
    images = {mode: G.synthesis(ws, noise_mode=mode) for mode in ("const", "random", "none")}
    assert all(torch.equal(images["const"], img) for img in images.values())  # no noise inputs
    with pytest.raises(ValueError, match="noise_mode"):
        G.synthesis(ws, noise_mode="bogus")
    for impl in ("fast", "reference", "triton"):
        G.set_impl(impl)  # plain convolutions: every impl renders the same
    with pytest.raises(ValueError, match="impl"):
        G.set_impl("cuda")


def test_dlib_finds_faces_in_its_samples(G):
    images = generate(G, list(range(20)))
    found = 0
    for image in images:
        big = np.asarray(Image.fromarray(image).resize((256, 256), Image.Resampling.BICUBIC))
        try:
            detector("dlib")(big)
            found += 1
        except NoFaceError:
            pass
    print(f"dlib found a face in {found} of 20 samples")
    assert found >= 12


def test_photos_align_where_it_draws_faces(G):
    """Eyes and mouth of an aligned London photo (dlib on the aligned 64 px image) sit where dlib finds them on the
    generator's own samples; FFHQ's looser crop puts the mouth 0.085 of the square higher (measured: 0.727 against
    the samples' 0.811 on london_021)."""

    def parts(image: np.ndarray) -> np.ndarray:
        big = np.asarray(Image.fromarray(image).resize((256, 256), Image.Resampling.BICUBIC))
        points = (detector("dlib")(big) + 0.5) / 4 - 0.5
        return np.stack([*eye_centres(points), (points[48] + points[54]) / 2]) / 64

    samples = []
    for image in generate(G, list(range(20))):
        try:
            samples.append(parts(image))
        except NoFaceError:
            pass
    mean = np.mean(samples, axis=0)
    for name in ("london_021_neutral.jpg", "london_087_neutral.jpg"):  # neutral: a smile lifts the mouth corners
        photo = parts(load_target(SAMPLES / "images" / name, 64, framing=G.framing))
        print(name, "largest deviation from the samples' mean", np.abs(photo - mean).max())
        assert np.abs(photo - mean).max() < 0.045, (name, photo, mean)
    ffhq = parts(load_target(PHOTO, 64, framing="ffhq"))
    assert np.abs(ffhq - mean).max() > 0.07


def test_known_name_resolves_offline_and_round_trips(G, tmp_path, monkeypatch):
    monkeypatch.setenv("REENACT_OFFLINE", "1")
    monkeypatch.setenv("REENACT_CACHE", str(tmp_path / "empty_cache"))
    H = stylegan3.load(NAME)
    assert sio.network_fingerprint(H) == sio.network_fingerprint(G)
    folder = stylegan3.save(G, tmp_path / "digiface")
    K = stylegan3.load(folder)
    assert sio.network_fingerprint(K) == sio.network_fingerprint(G)
    z = torch.randn(2, 100, generator=torch.Generator().manual_seed(0))
    assert torch.equal(K(z, None), G(z, None))


def test_missing_wheel_and_damaged_file_are_one_line(tmp_path, monkeypatch):
    out = tmp_path / "out"

    def not_installed(name: str):
        raise importlib.metadata.PackageNotFoundError(name)

    with monkeypatch.context() as m:
        m.setattr(sio.importlib.metadata, "distribution", not_installed)
        line = error_line(run_script("generate", f"network={NAME}", "seeds=0", f"out={out}", cache=tmp_path))
    assert "pip install --no-deps gan-face-generate==1.1.1" in line
    real = sio.packaged_model_file(NAME)
    truncated = tmp_path / "weights.tar"
    truncated.write_bytes(real.read_bytes()[: real.stat().st_size // 3])
    foreign = tmp_path / "foreign.tar"
    torch.save({"netD_state_dict": {"w": torch.zeros(2)}}, foreign)
    for bad, problem in ((truncated, "not a readable PyTorch file"), (foreign, "netG_state_dict")):
        monkeypatch.setattr(sio, "packaged_model_file", lambda name, bad=bad: bad)
        line = error_line(run_script("generate", f"network={NAME}", "seeds=0", f"out={out}", cache=tmp_path))
        assert str(bad) in line and problem in line
    assert not out.exists()
    assert zipfile.is_zipfile(real)  # the installed file was only read


@pytest.fixture(scope="module")
def full_loss(tmp_path_factory):
    """MSE, LPIPS and ArcFace with random-weight networks written here; the delta-regulariser is off: it has no
    meaning for this generator (refused below)."""
    arcface, alexnet = write_loss_weights(tmp_path_factory.mktemp("weights"))
    weights = LossWeights(mse=0.1, lpips=0.05, id=0.01, delta_reg=0.0)
    return build_inversion_loss(weights, None, str(arcface), str(alexnet))


def test_inverting_a_london_photo_reaches_a_psnr_floor(G, full_loss):
    target = to_tensor(load_target(PHOTO, 64, framing=G.framing))
    options = InverterOptions(steps=60, lr=0.02, log_every=0)
    result = invert(G, target, full_loss, options)
    assert set(result.losses) >= {"mse", "lpips", "id"}
    with torch.no_grad():
        start = mse_loss(G.synthesis(G.mean_w()[None]), target)
        end = mse_loss(G.synthesis(result.w_plus), target)
    psnr = lambda mse: float(10 * torch.log10(4 / mse))  # noqa: E731 (images span 2: peak^2 = 4)
    print(f"PSNR: mean start {psnr(start):.2f} dB, after 60 steps {psnr(end):.2f} dB")
    assert psnr(end) >= 23.0 and psnr(end) > psnr(start) + 10


def test_delta_reg_is_refused_for_it_in_one_line(G, tmp_path):
    loss = build_inversion_loss(LossWeights(mse=0.1, lpips=0, id=0, delta_reg=0.002))
    with pytest.raises(ValueError, match="loss.delta_reg=0"):
        invert(G, torch.zeros(1, 3, 64, 64), loss, InverterOptions(steps=1))
    proc = run_script("invert", PHOTO, f"network={NAME}", "loss.lpips=0", "loss.id=0", "steps=1", f"out={tmp_path}/o")
    error_line(proc, "loss.delta_reg=0")


def test_invert_py_with_its_config_and_generate_py(tmp_path):
    out = tmp_path / "inv"
    proc = run_script("invert", "--config", "configs/invert_digiface.yaml", PHOTO, "steps=40", f"out={out}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    latent = np.load(out / "latent.npy")
    assert latent.shape == (16, 512) and np.isfinite(latent).all()
    assert np.asarray(Image.open(out / "reconstruction.png")).shape == (64, 64, 3)
    proc = run_script("generate", f"network={NAME}", "seeds=0-3", f"out={tmp_path / 'gen'}", "truncation_psi=0.7")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert np.asarray(Image.open(tmp_path / "gen" / "grid.png")).shape == (128, 128, 3)  # 2 x 2 faces of 64 px


def test_prepared_framing_must_match_the_generator(tmp_path):
    from scripts.invert_dataset import check_framing

    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("")
    (tmp_path / "prepare_options.json").write_text('{"framing": "ffhq"}')
    with pytest.raises(ValueError, match="framing=digiface"):
        check_framing(str(manifest), stylegan3.load(NAME))
    check_framing(str(manifest), stylegan3.load(FIXTURES / "sg2_64.pkl"))  # an FFHQ generator: fine
