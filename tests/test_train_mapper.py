"""Mapper training data and train_mapper.py on a synthetic dataset: pairs and splits, the loss falls 10x, a killed
run resumes to the same numbers, torchrun with two CPU processes, the image-space loss."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import load_fixture

from inversion.dataset import read_shard, write_shard
from reenactment.data.mapper_data import LandmarkPairs
from reenactment.model.mapper import MappingNetwork, load_mapper
from reenactment.model.training import (
    LOG_FILE,
    MapperTrainer,
    TrainMapperConfig,
    latent_loss,
    read_log_csv,
    train_mapper,
)
from stylegan3.config import load_config

REPO = Path(__file__).resolve().parents[1]
SCRIPT = ["-m", "scripts.train_mapper"]  # run from REPO (cwd)
SMOKE = REPO / "configs" / "train_mapper_smoke.yaml"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same thread count in every run: bit-identical sums
IDENTITIES, FRAMES, DIRECTIONS = 8, 24, 3


def base_face() -> np.ndarray:
    """A frontal 70-point face layout in a 1024 px aligned frame: [70, 2] (x, y)."""
    p = np.zeros((70, 2))
    t = np.pi - np.pi * np.arange(17) / 16
    p[0:17] = np.stack([512 + 230 * np.cos(t), 470 + 300 * np.sin(t)], 1)  # jaw
    s = np.linspace(0, 1, 5)
    p[17:22] = np.stack([330 + 150 * s, 380 - 20 * np.sin(np.pi * s)], 1)  # brows
    p[22:27] = np.stack([544 + 150 * s, 380 - 20 * np.sin(np.pi * s)], 1)
    p[27:31] = np.stack([np.full(4, 512), np.linspace(430, 560, 4)], 1)  # nose
    p[31:36] = np.stack([np.linspace(465, 559, 5), 585 + 10 * np.sin(np.pi * s)], 1)
    a6, a12, a8 = (2 * np.pi * np.arange(n) / n for n in (6, 12, 8))
    for k, cx in ((36, 410), (42, 614)):  # eyes
        p[k : k + 6] = np.stack([cx + 45 * np.cos(a6), 455 + 14 * np.sin(a6)], 1)
    p[48:60] = np.stack([512 + 95 * np.cos(a12), 690 + 32 * np.sin(a12)], 1)  # lips
    p[60:68] = np.stack([512 + 60 * np.cos(a8), 690 + 12 * np.sin(a8)], 1)
    p[68], p[69] = (410, 455), (614, 455)  # pupils
    return p


def face(c: np.ndarray, scale: float, shift: np.ndarray) -> np.ndarray:
    """The layout with the mouth opened by c[0], the eyes by c[1] and the brows raised by c[2] (each in [-1, 1]),
    then scaled and shifted (the identity's face geometry)."""
    p = base_face()
    mouth = np.r_[48:68]
    p[mouth[p[mouth, 1] > 690], 1] += 40 * (c[0] + 1)
    p[6:11, 1] += 20 * (c[0] + 1)  # chin
    for k in (36, 42):
        p[k + np.array([1, 2]), 1] -= 25 * (c[1] + 1)
        p[k + np.array([4, 5]), 1] += 15 * (c[1] + 1)
    p[17:27, 1] -= 50 * c[2]
    return (p - 512) * scale + 512 + shift


def make_dataset(folder: Path, G: torch.nn.Module, identities: int = IDENTITIES, frames: int = FRAMES) -> Path:
    """Write a prepare_dataset.py-style manifest and an invert_dataset.py-style latents folder (``folder/inverted``).

    Latents come from the sg2_64 fixture's mapping: each identity's source w_s = G.mapping(z); each driving frame
    w_d = w_s + sum_k c_k D_k for random coefficients c in [-1, 1]^3 and fixed directions D_k, and its landmarks
    are the identity's face moved by the same c. So w_d - w_s is a function of the landmarks alone, as the
    mapping network assumes. Frame 0 of each identity (c = 0) is its source.
    """
    rng = np.random.RandomState(0)
    with torch.no_grad():
        w_id = G.mapping(torch.from_numpy(rng.randn(identities, G.z_dim).astype(np.float32)), None).numpy()
    directions = rng.randn(DIRECTIONS, G.num_ws, G.w_dim).astype(np.float32)
    records, ids, ws = [], [], []
    for i in range(identities):
        scale, shift = 1 + 0.05 * rng.randn(), 10 * rng.randn(2)
        video = f"p{i}_front"
        for t in range(frames):
            c = np.zeros(DIRECTIONS) if t == 0 else rng.uniform(-1, 1, DIRECTIONS)
            records.append(
                {
                    "identity": f"p{i}",
                    "video": video,
                    "frame": t,
                    "time": t / 25,
                    "image": f"frames/p{i}/{video}/{t:06d}.png",
                    "landmarks": np.round(face(c, scale, shift), 2).tolist(),
                    "source_score": float(t),
                    "is_source": t == 0,
                }
            )
            ids.append(f"{video}/{t:06d}")
            ws.append(w_id[i] + np.tensordot(c, directions, 1).astype(np.float32))
        records.append({"identity": f"p{i}", "video": video, "frame": frames, "skipped": "no face"})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "prepare_options.json").write_text(json.dumps({"size": 1024}))
    ws_all = np.stack(ws)
    for k in range(0, len(ids), 50):
        write_shard(folder / "inverted", k // 50, ids[k : k + 50], ws_all[k : k + 50], {}, [0] * len(ids[k : k + 50]))
    return folder


@pytest.fixture(scope="module")
def generator() -> torch.nn.Module:
    return load_fixture("sg2_64")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, generator) -> Path:
    return make_dataset(tmp_path_factory.mktemp("synthetic"), generator)


def train_cmd(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        *SCRIPT,
        "--config",
        str(SMOKE),
        f"manifest={data / 'manifest.jsonl'}",
        f"latents={data / 'inverted'}",
        f"out={out}",
        *extra,
    ]


def smoke_config(data: Path, out: Path, *extra: str) -> TrainMapperConfig:
    paths = [f"manifest={data / 'manifest.jsonl'}", f"latents={data / 'inverted'}", f"out={out}"]
    return load_config(TrainMapperConfig, SMOKE, paths + list(extra))


@contextlib.contextmanager
def one_thread():
    """Run in this process with the subprocesses' single thread, so sums are bit-identical to theirs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def full_run(dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "full"
    with one_thread():
        train_mapper(smoke_config(dataset, out))
    return out


# ----- the dataset


def test_pairs_are_source_and_frame_of_one_identity(dataset):
    ds = LandmarkPairs(dataset / "manifest.jsonl", dataset / "inverted", image_size=64)
    assert len(ds) == IDENTITIES * FRAMES and ds.frame_size == 1024 and (ds.num_ws, ds.w_dim) == (10, 64)
    for pair in ds.pairs:
        assert pair.source == f"{pair.identity}_front/000000" and pair.driving.startswith(f"{pair.identity}_front/")
    assert {p.driving for p in ds.pairs} == {f"p{i}_front/{t:06d}" for i in range(IDENTITIES) for t in range(FRAMES)}
    item = ds[FRAMES + 5]
    assert item["source"] == "p1_front/000000" and item["driving"] == "p1_front/000005"
    assert item["L_s"].shape == (64, 64, 3) and item["L_s"].dtype == np.uint8
    assert set(np.unique(item["L_d"])) == {0, 153}
    assert item["w_s"].shape == (10, 64) and item["w_s"].dtype == np.float32
    self_pair = ds[FRAMES]
    assert np.array_equal(self_pair["L_s"], self_pair["L_d"]) and np.array_equal(self_pair["w_s"], self_pair["w_d"])


def test_identity_split_keeps_each_identity_whole(dataset):
    ds = LandmarkPairs(dataset / "manifest.jsonl", dataset / "inverted", image_size=64)
    train, val = ds.split_indices("identity", 0.25, seed=3)
    train_ids = {ds.pairs[k].identity for k in train}
    val_ids = {ds.pairs[k].identity for k in val}
    assert len(val_ids) == 2 and not train_ids & val_ids and len(train) + len(val) == len(ds)
    assert ds.split_indices("identity", 0.25, seed=3) == (train, val)  # deterministic
    frame_train, frame_val = ds.split_indices("frame", 0.1, seed=3)
    assert len(frame_val) == round(0.1 * len(ds)) and sorted(frame_train + frame_val) == list(range(len(ds)))
    with pytest.raises(ValueError, match="split must be"):
        ds.split_indices("video")


def test_missing_latents_are_named_or_dropped(dataset, caplog):
    records = [json.loads(x) for x in (dataset / "manifest.jsonl").read_text().splitlines()]
    ds = LandmarkPairs(records, dataset / "inverted", image_size=64)
    latents = {p.driving: ds.latents[ds._row[p.driving]] for p in ds.pairs}
    for frame in ("p2_front/000007", "p5_front/000011", "p3_front/000000"):  # the last is p3's source
        del latents[frame]
    with pytest.raises(ValueError, match=r"3 of 192 frames have no latent \(p2_front/000007, p3_front/000000"):
        LandmarkPairs(records, latents, image_size=64)
    with caplog.at_level(logging.WARNING):
        kept = LandmarkPairs(records, latents, image_size=64, allow_missing=True)
    assert len(kept) == len(ds) - FRAMES - 2 and "p3" not in kept.identities
    assert "3 of 192 frames have no latent" in caplog.text and "1 identities are left out" in caplog.text
    no_source = [{**r, "is_source": False} if r.get("identity") == "p4" else r for r in records]
    with pytest.raises(ValueError, match="1 identities have no frame marked is_source: p4"):
        LandmarkPairs(no_source, latents, image_size=64, allow_missing=True)
    with pytest.raises(ValueError, match="contradicts"):
        LandmarkPairs(dataset / "manifest.jsonl", dataset / "inverted", frame_size=512)


# ----- training


def train_pair_loss(model: torch.nn.Module, data: Path, cfg: TrainMapperConfig) -> float:
    """The latent loss of ``model`` (eval mode) over the training pairs of ``cfg``'s split."""
    ds = LandmarkPairs(data / "manifest.jsonl", data / "inverted", cfg.architecture.image_size)
    train, _ = ds.split_indices(cfg.split, cfg.val_fraction, cfg.seed)
    items = [ds[k] for k in train]
    w_s = torch.from_numpy(np.stack([it["w_s"] for it in items]))
    w_d = torch.from_numpy(np.stack([it["w_d"] for it in items]))
    with torch.no_grad():
        w_pred = model.eval().predict(w_s, np.stack([it["L_d"] for it in items]), np.stack([it["L_s"] for it in items]))
    return latent_loss(w_pred, w_d, cfg.latent_loss_weight).item()


def test_training_lowers_the_loss_tenfold(dataset, full_run):
    cfg = load_config(TrainMapperConfig, SMOKE)
    history = read_log_csv(full_run / LOG_FILE)
    assert [r["epoch"] for r in history] == list(range(1, cfg.epochs + 1))
    trained = load_mapper(full_run)
    torch.manual_seed(cfg.seed)  # the trainer's initial weights
    untrained = MappingNetwork(num_ws=10, w_dim=64, **dataclasses.asdict(cfg.architecture))
    before, after = train_pair_loss(untrained, dataset, cfg), train_pair_loss(trained, dataset, cfg)
    first, last = history[0], history[-1]
    print(
        f"training-pair loss {before:.3f} -> {after:.3f} ({before / after:.1f}x); training loss epoch 1 "
        f"{first['train_loss']:.3f}, epoch {last['epoch']} {last['train_loss']:.3f}; "
        f"val {first['val_loss']:.3f} -> {last['val_loss']:.3f}"
    )
    assert after * 10 <= before and after * 10 <= history[0]["train_loss"]
    assert history[-1]["train_loss"] * 5 <= history[0]["train_loss"]
    assert history[-1]["val_loss"] * 2 <= history[0]["val_loss"]  # unseen identities improve too
    config = json.loads((full_run / "mapper.json").read_text())
    assert config["landmarks"]["frame_size"] == 1024 and config["extra"]["epoch"] == cfg.epochs
    assert (full_run / "config.yaml").is_file() and json.loads((full_run / "latest.json").read_text())["epoch"] == 15


def test_killed_run_resumes_to_identical_losses_and_weights(dataset, full_run, tmp_path, caplog):
    out, epochs = tmp_path / "killed", 6
    cmd = train_cmd(dataset, out, f"epochs={epochs}")
    proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = out / "latest.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if latest.is_file() and json.loads(latest.read_text())["epoch"] >= 2:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stopped_at = json.loads(latest.read_text())["epoch"]
    assert 2 <= stopped_at < epochs and not (out / "mapper.safetensors").exists()
    with pytest.raises(FileNotFoundError, match="training has not finished"):
        load_mapper(out)
    with one_thread(), caplog.at_level(logging.INFO):
        train_mapper(smoke_config(dataset, out, f"epochs={epochs}"))  # the same run, continued
    assert f"resuming {out} after epoch {stopped_at}" in caplog.text

    def numbers(run: Path) -> list[tuple]:
        return [(r["epoch"], r["train_loss"], r["val_loss"], r["lr"]) for r in read_log_csv(run / LOG_FILE)]

    # Nothing depends on the total number of epochs, so the 15-epoch run's first 6 epochs are this run.
    assert numbers(out) == numbers(full_run)[:epochs]
    a = load_mapper(out).state_dict()
    b = load_mapper(full_run / "checkpoints" / f"epoch_{epochs:03d}").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not list(out.rglob("*.tmp"))


def test_resume_refuses_other_settings_and_a_used_folder(dataset, full_run):
    with pytest.raises(ValueError, match=r"other settings \(lr: 0.001 -> 0.002\)"):
        train_mapper(smoke_config(dataset, full_run, "lr=0.002"))
    with pytest.raises(ValueError, match="already holds checkpoints"):
        train_mapper(smoke_config(dataset, full_run, "resume=false"))


def test_resume_refuses_other_data_but_not_a_moved_copy(dataset, full_run, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(dataset, moved)
    with one_thread():
        train_mapper(smoke_config(moved, full_run))  # the same data in another place: resumes (no epoch is left)
    other = tmp_path / "other"
    shutil.copytree(dataset, other)
    shard = read_shard(other / "inverted", 0)
    shard["w"][3] += 0.5  # one latent of another inversion
    write_shard(other / "inverted", 0, shard["ids"], shard["w"], shard["losses"], shard["steps"])
    with pytest.raises(ValueError, match="trained on other data"):
        train_mapper(smoke_config(other, full_run))
    lines = (other / "manifest.jsonl").read_text().splitlines()
    shutil.copy(dataset / "inverted" / "latents" / "shard_000000.npz", other / "inverted" / "latents")
    (other / "manifest.jsonl").write_text("\n".join(lines[:-3] + lines[-2:]) + "\n")  # one frame fewer
    with pytest.raises(ValueError, match="trained on other data"):
        train_mapper(smoke_config(other, full_run))


def test_torchrun_two_cpu_processes(dataset, tmp_path):
    out = tmp_path / "ddp"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone"]
    cmd = launcher + train_cmd(dataset, out, "epochs=2", "val_fraction=0.125")[1:]
    proc = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "on 2 process(es)" in proc.stderr
    assert [r["epoch"] for r in read_log_csv(out / LOG_FILE)] == [1, 2]
    mapper = load_mapper(out / "checkpoints" / "epoch_002")
    final = load_mapper(out)
    assert all(torch.equal(a, b) for a, b in zip(mapper.state_dict().values(), final.state_dict().values()))
    state = torch.load(out / "checkpoints" / "epoch_002" / "training_state.pt", weights_only=True)
    assert state["epoch"] == 2 and state["world_size"] == 2


def test_image_space_loss_through_the_generator(generator, tmp_path):
    import stylegan3

    data = make_dataset(tmp_path / "small", generator, identities=3, frames=6)
    stylegan3.save(generator, tmp_path / "G")
    extra = ["epochs=1", "batch_size=4", "val_fraction=0.3", "image_loss_weight=1.0", f"network={tmp_path / 'G'}"]
    trainer = MapperTrainer(smoke_config(data, tmp_path / "run", *extra))
    assert trainer.generator is not None and not any(p.requires_grad for p in trainer.generator.parameters())
    trainer.fit()
    row = read_log_csv(tmp_path / "run" / LOG_FILE)[0]
    assert np.isfinite(row["train_loss"]) and np.isfinite(row["val_loss"])
    batch = next(iter(torch.utils.data.DataLoader(trainer.val_set, batch_size=4)))
    model = trainer.mapper.eval()
    with torch.no_grad():
        w_pred = model.predict(batch["w_s"], batch["L_d"], batch["L_s"])
        assert trainer._loss(model, batch) > latent_loss(w_pred, batch["w_d"])  # the image term adds to it
    with pytest.raises(ValueError, match="needs network="):
        MapperTrainer(smoke_config(data, tmp_path / "run3", *extra[:4]))


def test_thesis_config_is_the_default():
    cfg = load_config(TrainMapperConfig, REPO / "configs" / "train_mapper.yaml")
    assert cfg == TrainMapperConfig()
    assert (cfg.lr, cfg.beta1, cfg.beta2, cfg.eps, cfg.batch_size, cfg.epochs) == (2e-4, 0.9, 0.999, 1e-4, 32, 20)
    assert (cfg.latent_loss_weight, cfg.architecture.image_size, cfg.split, cfg.val_fraction) == (
        10.0,
        580,
        "identity",
        0.1,
    )


def test_loader_workers_start_once_per_run(dataset, tmp_path, monkeypatch):
    # The DataLoaders were made anew every epoch: num_workers processes started (and imported torch) each time.
    from torch.utils.data import dataloader

    starts = []
    original = dataloader._MultiProcessingDataLoaderIter.__init__

    def counting(self, loader):
        starts.append(loader.dataset)
        original(self, loader)

    monkeypatch.setattr(dataloader._MultiProcessingDataLoaderIter, "__init__", counting)
    trainer = MapperTrainer(smoke_config(dataset, tmp_path / "run", "epochs=3", "num_workers=1"))
    with one_thread():
        trainer.fit()
    assert len(starts) == 2  # one start for the training loader, one for validation, over three epochs
    assert {id(d) for d in starts} == {id(trainer.train_set), id(trainer.val_set)}
