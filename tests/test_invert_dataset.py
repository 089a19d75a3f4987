"""invert_dataset.py: shards, a kill and a rerun, torchrun with two processes, sequential warm start, the full loss
against single runs, refused reruns, failed frames recorded and retried."""

from __future__ import annotations

import json
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
from conftest import FIXTURES, LONDON, SAMPLES, run_script, write_loss_weights
from PIL import Image

import stylegan3
from inversion.dataset import frames_from_input, load_latents, make_shards
from inversion.inverter import InverterOptions, invert
from inversion.losses import LossWeights, build_inversion_loss
from inversion.targets import resize_square, to_tensor
from scripts import invert_dataset
from stylegan3.images import read_image

REPO = Path(__file__).resolve().parents[1]
COMMON = ["--network", str(FIXTURES / "sg2_64.pkl"), "loss.lpips=0", "loss.id=0", "batch_size=2", "shard_size=2"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # same thread count in every process: bit-identical sums


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory) -> Path:
    """Eight 64 px square face crops (centre crops of the London photos, resized)."""
    folder = tmp_path_factory.mktemp("frames")
    for name in LONDON[:8]:
        image = Image.open(SAMPLES / "images" / name).convert("RGB")
        image.resize((64, 64), Image.Resampling.LANCZOS).save(folder / name.replace(".jpg", ".png"))
    return folder


def cmd(inp: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "scripts.invert_dataset", "--input", str(inp), "--out", str(out), *COMMON, *extra]


def in_process(inp: Path, out: Path, *extra: str) -> Path:
    """invert_dataset.py's main in this process (its thread count for the reference runs too)."""
    return invert_dataset.main(cmd(inp, out, *extra)[3:])


def one_thread_in_process(inp: Path, out: Path, *extra: str) -> Path:
    """invert_dataset.py's main in this process with one thread, as the killed and torchrun processes run (ENV),
    so that their sums are bit-identical to it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return in_process(inp, out, *extra)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def full_run(frames_dir, tmp_path_factory) -> Path:
    return one_thread_in_process(frames_dir, tmp_path_factory.mktemp("latents_full"), "steps=20")


def test_outputs(full_run, frames_dir):
    latents = load_latents(full_run)
    assert sorted(latents) == sorted(p.name for p in frames_dir.glob("*.png"))
    assert all(w.shape == (10, 64) and w.dtype == np.float32 for w in latents.values())
    log = [json.loads(line) for line in (full_run / "losses.jsonl").read_text().splitlines()]
    assert len(log) == 8 and all({"id", "steps", "loss_mse", "loss_delta_reg", "loss_total"} <= r.keys() for r in log)
    assert json.loads((full_run / "index.json").read_text())["frames"] == 8
    assert len(list((full_run / "latents").glob("shard_*.npz"))) == 4


def test_killed_and_rerun_is_bit_identical(frames_dir, full_run, tmp_path):
    out = tmp_path / "resumed"
    proc = subprocess.Popen(
        cmd(frames_dir, out, "steps=20"), cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not list((out / "latents").glob("shard_*.npz")):
        time.sleep(0.02)
    assert proc.poll() is None, "finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted(p.name for p in (out / "latents").glob("shard_*.npz"))
    assert 1 <= len(done) < 4 and not (out / "losses.jsonl").exists()
    one_thread_in_process(frames_dir, out, "steps=20")  # the rerun
    a, b = load_latents(out), load_latents(full_run)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert (out / "losses.jsonl").read_text() == (full_run / "losses.jsonl").read_text()
    assert not list(out.rglob("*.tmp")) and not list(out.rglob("*.partial"))


def test_torchrun_two_processes_equal_one(frames_dir, full_run, tmp_path):
    # Unequal work (6 frames in shards of 2: rank 0 gets shards 0 and 2, rank 1 shard 1). The ranks used to meet in
    # a barrier at the end, where a rank with hours less work waited past NCCL's 10-minute timeout; now each rank
    # finishes on its own and the last one to finish merges.
    out = tmp_path / "ddp"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone"]
    proc = subprocess.run(
        launcher + cmd(frames_dir, out, "steps=20", "limit=6")[1:],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = load_latents(out), load_latents(full_run)
    assert len(a) == 6 and all(np.array_equal(a[k], b[k]) for k in a)
    merged = proc.stdout.count("all 3 shards done")
    waited = proc.stdout.count("the last rank to finish merges the shards")
    assert merged >= 1 and merged + waited == 2, proc.stdout[-2000:]
    assert json.loads((out / "index.json").read_text())["frames"] == 6
    assert len((out / "losses.jsonl").read_text().splitlines()) == 6


def test_sequential_warm_start(tmp_path):
    # A manifest of two "videos" of three frames each (the same photo crops, in frame order).
    folder = tmp_path / "m"
    (folder / "frames").mkdir(parents=True)
    lines = []
    for v, names in enumerate([LONDON[:3], LONDON[3:6]]):
        for t, name in enumerate(names):
            rel = f"frames/v{v}_{t}.png"
            Image.open(SAMPLES / "images" / name).convert("RGB").resize((64, 64)).save(folder / rel)
            lines.append(json.dumps({"identity": f"p{v}", "video": f"v{v}", "frame": t, "image": rel}))
    lines.insert(2, json.dumps({"identity": "p0", "video": "v0", "frame": 9, "skipped": "no face"}))
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    frames = frames_from_input(folder / "manifest.jsonl")
    assert [f.id for f in frames][:3] == ["v0/000000", "v0/000001", "v0/000002"]
    assert [len(s) for s in make_shards(frames, 2, by_video=True)] == [3, 3]
    out = tmp_path / "lat"
    extra = ["steps=12", "warm_start=sequential", "warm_steps=4"]
    in_process(folder / "manifest.jsonl", out, *extra)
    steps = {json.loads(x)["id"]: json.loads(x)["steps"] for x in (out / "losses.jsonl").read_text().splitlines()}
    assert steps == {"v0/000000": 12, "v0/000001": 4, "v0/000002": 4, "v1/000000": 12, "v1/000001": 4, "v1/000002": 4}


def test_bad_input_is_a_clear_error(tmp_path):
    run = run_script("invert_dataset", *cmd(tmp_path / "nope.jsonl", tmp_path / "o")[3:])
    assert run.returncode == 1 and "input not found" in run.stderr and "Traceback" not in run.stderr


def test_full_loss_latents_and_losses_equal_single_runs(frames_dir, tmp_path):
    # All four terms, random-weight ArcFace and AlexNet files; batch = shard = 2, so every shard brings new targets
    # (a cached ID embedding keyed by the target's address served later shards an earlier shard's identity).
    arcface, alexnet = write_loss_weights(tmp_path / "weights")
    weights = [f"arcface={arcface}", f"alexnet={alexnet}", "loss.lpips=1.5", "loss.id=0.05"]
    out = in_process(frames_dir, tmp_path / "full", "steps=1", "limit=4", *weights)
    log = {r["id"]: r for r in map(json.loads, (out / "losses.jsonl").read_text().splitlines())}
    latents = load_latents(out)
    G = stylegan3.load(FIXTURES / "sg2_64.pkl")
    frames = frames_from_input(frames_dir)[:4]
    assert sorted(log) == sorted(latents) == sorted(f.id for f in frames)
    for frame in frames:
        target = to_tensor(resize_square(read_image(frame.path), G.img_resolution))
        loss = build_inversion_loss(LossWeights(), arcface_path=str(arcface), alexnet_path=str(alexnet))
        single = invert(G, target, loss, InverterOptions(steps=1))
        assert np.array_equal(latents[frame.id], single.w_plus[0].numpy()), frame.id
        for term in ("total", "mse", "lpips", "id", "delta_reg"):
            assert log[frame.id][f"loss_{term}"] == round(float(single.losses[term][0]), 6), (frame.id, term)


def test_rerun_with_other_settings_or_frames_is_refused(frames_dir, full_run):
    config = (full_run / "config.yaml").read_text()
    cases = [
        (["steps=21"], "other settings (steps: 20 -> 21)"),
        (["steps=20", "lr=0.02"], "other settings (lr: 0.01 -> 0.02)"),
        (["steps=20", "loss.delta_reg=0.01"], "other settings (loss:"),
        (["steps=20", "shard_size=3"], "other settings (shard_size: 2 -> 3)"),
        (["steps=20", "limit=6"], "0 frames are new, 2 are gone"),
    ]
    for extra, message in cases:
        with pytest.raises(SystemExit) as info:
            in_process(frames_dir, full_run, *extra)
        assert message in str(info.value) and "fresh=true" in str(info.value), info.value
    assert (full_run / "config.yaml").read_text() == config
    # The batch size changes no latent (each image has its own pass): a rerun with another one is fine.
    in_process(frames_dir, full_run, "steps=20", "batch_size=3")


def test_failed_frames_are_recorded_retried_and_fresh_starts_over(frames_dir, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    good = sorted(frames_dir.glob("*.png"))
    shutil.copy(good[0], folder / "a.png")
    (folder / "b.png").write_bytes(b"not an image")
    shutil.copy(good[2], folder / "c.png")
    out = tmp_path / "out"
    in_process(folder, out, "steps=2")
    assert "1 frames failed" in capsys.readouterr().out
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert [(f["id"], f["path"]) for f in failures] == [("b.png", str(folder / "b.png"))]
    assert "cannot read image" in failures[0]["reason"] and "b.png" in failures[0]["reason"]
    assert json.loads((out / "index.json").read_text())["failed"] == 1
    before = load_latents(out)
    assert sorted(before) == ["a.png", "c.png"]
    # The image is fixed: the next run inverts only that frame, into its shard, as an uninterrupted run would.
    shutil.copy(good[1], folder / "b.png")
    in_process(folder, out, "steps=2")
    after = load_latents(out)
    assert sorted(after) == ["a.png", "b.png", "c.png"]
    assert all(np.array_equal(after[k], before[k]) for k in before)
    G = stylegan3.load(FIXTURES / "sg2_64.pkl")
    target = to_tensor(resize_square(read_image(good[1]), G.img_resolution))
    single = invert(G, target, build_inversion_loss(LossWeights(lpips=0, id=0)), InverterOptions(steps=2))
    assert np.array_equal(after["b.png"], single.w_plus[0].numpy())
    assert [json.loads(x)["id"] for x in (out / "losses.jsonl").read_text().splitlines()] == ["a.png", "b.png", "c.png"]
    assert (out / "failures.jsonl").read_text() == "" and json.loads((out / "index.json").read_text())["failed"] == 0
    assert "frames failed" not in capsys.readouterr().out
    # fresh=true: other settings are taken, and nothing of the earlier run is left.
    in_process(folder, out, "steps=1", "limit=1", "fresh=true")
    assert sorted(load_latents(out)) == ["a.png"]
    assert [json.loads(x)["steps"] for x in (out / "losses.jsonl").read_text().splitlines()] == [1]
