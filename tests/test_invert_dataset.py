"""invert_dataset.py: shards, a kill and a rerun, torchrun with two processes, sequential warm start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, LONDON, SAMPLES
from PIL import Image

from inversion.dataset import frames_from_input, load_latents, make_shards

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
    return [sys.executable, "scripts/invert_dataset.py", "--input", str(inp), "--out", str(out), *COMMON, *extra]


@pytest.fixture(scope="module")
def full_run(frames_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("latents_full")
    proc = subprocess.run(cmd(frames_dir, out, "steps=20"), cwd=REPO, env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return out


def test_outputs(full_run, frames_dir):
    latents = load_latents(full_run)
    assert sorted(latents) == sorted(p.name for p in frames_dir.glob("*.png"))
    assert all(w.shape == (10, 64) and w.dtype == np.float32 for w in latents.values())
    log = [json.loads(line) for line in (full_run / "losses.jsonl").read_text().splitlines()]
    assert len(log) == 8 and all({"id", "steps", "mse", "delta_reg", "total"} <= r.keys() for r in log)
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
    rerun = subprocess.run(cmd(frames_dir, out, "steps=20"), cwd=REPO, env=ENV, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    a, b = load_latents(out), load_latents(full_run)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert (out / "losses.jsonl").read_text() == (full_run / "losses.jsonl").read_text()
    assert not list(out.rglob("*.tmp"))


def test_torchrun_two_processes_equal_one(frames_dir, full_run, tmp_path):
    out = tmp_path / "ddp"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517"]
    proc = subprocess.run(
        launcher + cmd(frames_dir, out, "steps=20")[1:], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = load_latents(out), load_latents(full_run)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


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
    proc = subprocess.run(
        cmd(folder / "manifest.jsonl", out, *extra), cwd=REPO, env=ENV, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    steps = {json.loads(x)["id"]: json.loads(x)["steps"] for x in (out / "losses.jsonl").read_text().splitlines()}
    assert steps == {"v0/000000": 12, "v0/000001": 4, "v0/000002": 4, "v1/000000": 12, "v1/000001": 4, "v1/000002": 4}


def test_bad_input_is_a_clear_error(tmp_path):
    proc = subprocess.run(
        cmd(tmp_path / "nope.jsonl", tmp_path / "o"), cwd=REPO, env=ENV, capture_output=True, text=True
    )
    assert proc.returncode != 0 and "input not found" in proc.stderr and "Traceback" not in proc.stderr
