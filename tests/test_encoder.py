"""The encoder start (inversion.encoder, train_encoder.py): training lowers its latent error, it starts closer than
the mean w on held-out samples, a missing, corrupt or foreign encoder is a one-line error, a stopped training
resumes bit for bit, and init=encoder:DIR works in invert.py, invert_dataset.py (whose run.json refuses another
encoder) and the reenactment cache key."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FIXTURES, load_fixture, write_loss_weights
from safetensors.torch import load_file

from inversion.dataset import load_latents
from inversion.encoder import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    EncoderMismatchError,
    InitOptions,
    LatentEncoder,
    load_encoder,
    read_encoder,
    save_encoder,
)
from inversion.encoder_training import LOG_FILE, STATE_FILE, sample_pairs
from inversion.inverter import InverterOptions, invert
from inversion.losses import InversionLoss, LossWeights
from inversion.targets import to_tensor
from reenactment.pipeline import SourceInversion, source_cache_key
from scripts import invert as invert_script
from scripts import invert_dataset, train_encoder
from stylegan3 import WeightsFileError, WeightsNotFoundError
from stylegan3.images import read_image, write_image
from stylegan3.sampling import synthesize, to_uint8, z_from_seeds

NET = str(FIXTURES / "sg2_64.pkl")
# A tiny encoder on a pool of the 64 px fixture's samples: seconds on one core.
TINY = ["input_size=32", "channels=[16,32,32]", "hidden=64", "batch_size=16", "pool_size=128", "lr=3e-3",
        "warmup_steps=5", "val_size=32", "device=cpu", "tensorboard=false"]  # fmt: skip


@pytest.fixture(scope="module")
def G():
    return load_fixture("sg2_64")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("encoder")
    train_encoder.main(["--network", NET, "--out", str(out), *TINY, "steps=120", "log_every=40"])
    return out


def held_out(G, n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """(w, G(w)) of untruncated seeds from np.random.RandomState: not the training stream."""
    with torch.no_grad():
        w = G.mapping(z_from_seeds(list(range(1000, 1000 + n)), G.z_dim), None)
        return w, synthesize(G, w)


def test_training_lowers_the_latent_error(trained):
    rows = [line.split(",") for line in (trained / LOG_FILE).read_text().splitlines()]
    header, rows = rows[0], [dict(zip(rows[0], r)) for r in rows[1:]]
    assert header[0] == "step" and [int(r["step"]) for r in rows] == [40, 80, 120]
    val = [float(r["val_latent_error"]) for r in rows]
    mean = float(rows[0]["mean_latent_error"])
    assert val[-1] < val[0] and val[-1] < 0.9 * mean, (val, mean)
    config = json.loads((trained / CONFIG_FILE).read_text())
    assert config["training"]["steps"] == 120 and config["generator"]["name"] == NET
    assert config["init_kwargs"]["channels"] == [16, 32, 32]


def test_encoder_starts_closer_than_the_mean_w(G, trained):
    encoder = load_encoder(trained, G, NET)
    w, images = held_out(G)
    start = encoder.start(images)
    mean = G.mean_w()[None]
    assert (start - w).square().mean() < 0.9 * (mean - w).square().mean()
    with torch.no_grad():
        image_error = (synthesize(G, start) - images).square().flatten(1).mean(1)
        mean_error = (synthesize(G, mean) - images).square().flatten(1).mean(1)
    assert image_error.mean() < mean_error.mean()
    # Image by image: an image's start does not depend on its batch.
    assert torch.equal(start[1:2], encoder.start(images[1:2]))


def test_untrained_encoder_is_the_mean_start(G):
    encoder = LatentEncoder(G.num_ws, G.w_dim, input_size=32, channels=[8, 8], hidden=8)
    encoder.w_mean.copy_(G.mean_w())
    _, images = held_out(G, 2)
    assert torch.equal(encoder.start(images), G.mean_w()[None].expand(2, -1, -1))


def test_missing_corrupt_or_foreign_encoders_are_refused(G, trained, tmp_path):
    with pytest.raises(WeightsNotFoundError, match="missing encoder.json and encoder.safetensors"):
        read_encoder(tmp_path / "nothing")
    corrupt = tmp_path / "corrupt"
    shutil.copytree(trained, corrupt)
    data = (corrupt / WEIGHTS_FILE).read_bytes()
    (corrupt / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsFileError, match="not a complete safetensors file"):
        load_encoder(corrupt, G)
    (corrupt / CONFIG_FILE).write_text("{not json")
    with pytest.raises(WeightsFileError, match="not a readable JSON config"):
        load_encoder(corrupt, G)
    other = load_fixture("sg3t_64")
    with pytest.raises(EncoderMismatchError, match=r"trained for .*sg2_64\.pkl .* not for sg3t") as err:
        load_encoder(trained, other, "sg3t_64.pkl")
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="init must be 'mean' or 'encoder:DIR'"):
        InitOptions("encoders:x").load(G)
    # Through a script: one line, no traceback.
    image = tmp_path / "face.png"
    write_image(image, to_uint8(held_out(G, 1)[1])[0])
    common = [str(image), "--no-align", "--steps", "1", "--out", str(tmp_path / "o"), "loss.lpips=0", "loss.id=0"]
    cases = [(FIXTURES / "sg3t_64.pkl", trained, "trained for"), (NET, corrupt, "not a readable JSON config"),
             (NET, tmp_path / "nothing", "missing encoder.json")]  # fmt: skip
    for network, folder, text in cases:
        with pytest.raises(SystemExit) as exit_info:
            invert_script.main([*common, "--network", str(network), f"init=encoder:{folder}"])
        message = str(exit_info.value.code)
        assert message.startswith("error: ") and text in message and "\n" not in message


def test_stopped_training_resumes_bit_for_bit(tmp_path):
    args = ["--network", NET, *TINY, "steps=8", "log_every=2", "checkpoint_every=3", "pool_size=32", "val_size=0"]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train_encoder.main([*args, "--out", str(whole)])
    train_encoder.main([*args, "--out", str(parts), "stop_after=5"])  # checkpoints at 3 and at the stop, 5
    assert (parts / STATE_FILE).is_file() and not (parts / WEIGHTS_FILE).exists()
    with pytest.raises(WeightsNotFoundError, match="training has not finished"):
        read_encoder(parts)
    with pytest.raises(SystemExit, match="other settings .*lr: 0.003 -> 0.001"):
        train_encoder.main([*args, "--out", str(parts), "lr=1e-3"])
    train_encoder.main([*args, "--out", str(parts)])
    a, b = load_file(str(whole / WEIGHTS_FILE)), load_file(str(parts / WEIGHTS_FILE))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log_a, log_b = ([r.split(",")[:5] for r in (d / LOG_FILE).read_text().splitlines()] for d in (whole, parts))
    assert log_a == log_b  # the same losses at every logged step (seconds aside)


@pytest.fixture(scope="module")
def loss_files(tmp_path_factory) -> list[str]:
    arcface, alexnet = write_loss_weights(tmp_path_factory.mktemp("weights"))
    return [f"arcface={arcface}", f"alexnet={alexnet}"]


def test_invert_script_starts_from_the_encoder(G, trained, tmp_path, loss_files):
    _, images = held_out(G, 1)
    path = tmp_path / "face.png"
    write_image(path, to_uint8(images)[0])
    start = load_encoder(trained, G).start(to_tensor(read_image(path)))
    args = [str(path), "--no-align", "--network", NET, f"init=encoder:{trained}", *loss_files]  # the full loss
    out = invert_script.main([*args, "--steps", "0", "--out", str(tmp_path / "zero")])
    assert np.array_equal(np.load(out / "latent.npy"), start[0].numpy())
    out = invert_script.main([*args, "--steps", "3", "--out", str(tmp_path / "three")])
    report = json.loads((out / "losses.json").read_text())
    assert report["steps"] == 3 and {"mse", "lpips", "id", "delta_reg"} <= report["final"].keys()


def test_invert_dataset_with_an_encoder_and_its_run_record(G, trained, tmp_path):
    frames = tmp_path / "frames"
    _, images = held_out(G, 3)
    for i, image in enumerate(to_uint8(images)):
        write_image(frames / f"f{i}.png", image)
    base = ["--input", str(frames), "--network", NET, "loss.lpips=0", "loss.id=0", "shard_size=2"]
    out = tmp_path / "latents"
    invert_dataset.main([*base, "--out", str(out), "steps=0", f"init=encoder:{trained}"])
    latents = load_latents(out)
    encoder = load_encoder(trained, G)
    starts = encoder.start(torch.cat([to_tensor(read_image(frames / f"f{i}.png")) for i in range(3)]))
    for i in range(3):
        assert np.array_equal(latents[f"f{i}.png"], starts[i].numpy())
    settings = json.loads((out / "run.json").read_text())["settings"]
    assert settings["init"] == f"encoder:{trained}" and len(settings["encoder"]) == 64
    invert_dataset.main([*base, "--out", str(out), "steps=0", f"init=encoder:{trained}"])  # the same: resumes
    # Another encoder (other weights in a folder of the same name) is refused, naming it.
    other = tmp_path / "other"
    shutil.copytree(trained, other)
    encoder.fc.bias.data += 0.01
    save_encoder(encoder, other, json.loads((trained / CONFIG_FILE).read_text())["generator"], {})
    for init, text in ((f"encoder:{other}", "encoder: '"), ("mean", f"init: 'encoder:{trained}' -> None")):
        with pytest.raises(SystemExit, match="other settings") as err:
            invert_dataset.main([*base, "--out", str(out), "steps=0", f"init={init}"])
        assert text in str(err.value.code)
    # The mean start records no init: folders from before it existed resume.
    mean_out = tmp_path / "mean"
    invert_dataset.main([*base, "--out", str(mean_out), "steps=1"])
    assert "init" not in json.loads((mean_out / "run.json").read_text())["settings"]


def test_source_cache_key_holds_the_encoder(G, trained, tmp_path):
    align = {"backend": "dlib", "tilt": "eyes"}
    mean = source_cache_key(b"img", G, SourceInversion(), align)
    with_encoder = SourceInversion(start=InitOptions(f"encoder:{trained}"))
    key_a = source_cache_key(b"img", G, with_encoder, align, with_encoder.start.load(G))
    other = LatentEncoder(**read_encoder(trained)[0].init_kwargs)
    key_b = source_cache_key(b"img", G, with_encoder, align, other)
    assert len({mean, key_a, key_b}) == 3
    # The mean start's key is the one from before init (and tune) existed (cached latents stay valid).
    import hashlib

    from inversion.tuning import TuningOptions
    from stylegan3.config import to_dict
    from stylegan3.io import network_fingerprint

    digest = hashlib.sha256(b"img")
    digest.update(network_fingerprint(G).encode())
    newer = {"init", *to_dict(TuningOptions())}
    old = {k: v for k, v in to_dict(SourceInversion()).items() if k not in newer}
    digest.update(json.dumps({"inversion": old, "align": align}, sort_keys=True).encode())
    assert mean == digest.hexdigest()[:32]


def test_sample_pairs_mix_styles(G):
    generator = torch.Generator().manual_seed(0)
    w, images = sample_pairs(G, 16, generator, mixing_prob=1.0)
    assert images.shape == (16, 3, 64, 64) and w.shape == (16, G.num_ws, G.w_dim)
    rows_differ = (w[:, 1:] != w[:, :1]).any(-1)  # a mixed sample's rows change at its crossover
    assert rows_differ.any(1).all()
    plain, _ = sample_pairs(G, 4, torch.Generator().manual_seed(0), mixing_prob=0.0)
    assert torch.equal(plain, plain[:, :1].expand_as(plain))


def test_inversion_from_the_encoder_is_lower_at_equal_steps(G, trained):
    """Sanity check of the target on a tiny budget: from the encoder, 10 steps of MSE + delta-reg end lower than
    10 steps from the mean on most held-out images."""
    encoder = load_encoder(trained, G)
    _, images = held_out(G, 4)
    loss = InversionLoss(LossWeights(lpips=0, id=0))
    opts = InverterOptions(steps=10, log_every=0)
    from_encoder = invert(G, images, loss, opts, w_init=encoder.start(images)).losses["mse"]
    from_mean = invert(G, images, loss, opts).losses["mse"]
    assert (from_encoder < from_mean).sum() >= 3, (from_encoder, from_mean)


def test_source_inversion_starts_from_the_encoder_and_caches_apart(G, trained, tmp_path, monkeypatch):
    from conftest import SAMPLES, detector

    from inversion.losses import LossOptions
    from reenactment.pipeline import prepare_source

    monkeypatch.setenv("REENACT_CACHE", str(tmp_path / "cache"))
    photo, device = SAMPLES / "images" / "london_003_neutral.jpg", torch.device("cpu")
    mse_only = LossOptions(loss=LossWeights(lpips=0, id=0))
    settings = SourceInversion(InverterOptions(steps=0), mse_only, InitOptions(f"encoder:{trained}"))
    source = prepare_source(G, photo, detector("dlib"), settings, device)
    start = load_encoder(trained, G).start(to_tensor(source.aligned))[0]
    assert not source.cached and torch.equal(source.w_s, start)
    assert prepare_source(G, photo, detector("dlib"), settings, device).cached
    mean = prepare_source(G, photo, detector("dlib"), SourceInversion(InverterOptions(steps=0), mse_only), device)
    assert not mean.cached and torch.equal(mean.w_s, G.mean_w())
