"""scripts/train_demo_networks.py (prepare -> invert -> train a mapper for digiface-dcgan-64) on two short clips, the
split by named speakers, per-video source frames, and a mapper tied to its generator's fingerprint."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from conftest import SAMPLES, run_script

import stylegan3
from reenactment.data.mapper_data import LandmarkPairs
from reenactment.model.mapper import load_mapper
from reenactment.pipeline import check_networks
from stylegan3.io import network_fingerprint


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The train command on two clips (one speaker each) with tiny settings; the second speaker validates."""
    root = tmp_path_factory.mktemp("demo_networks")
    clips = root / "clips"
    for speaker, clip in (("spk1", "grid_lbax4n.mpg"), ("spk2", "grid_lrwp9a.mpg")):
        (clips / speaker).mkdir(parents=True)
        os.symlink(SAMPLES / "videos" / clip, clips / speaker / clip)
    out = root / "run"
    args = [f"clips={clips}", f"out={out}", "fps=2", "val_identities=[spk2]",
            "invert_overrides=[steps=2, warm_steps=1]",
            'mapper_overrides=[epochs=1, image_size=32, "channels=[4, 4]", hidden=8, batch_size=2]']  # fmt: skip
    proc = run_script("train_demo_networks", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, args


def test_train_command_runs_end_to_end_and_resumes(run):
    out, args = run
    record = json.loads((out / "shipped" / "training_record.json").read_text())
    assert record["split"] == {"by": "identity", "validation": ["spk2"], "training": ["spk1"]}
    assert set(record["seconds"]) == {"prepare", "invert", "train_mapper"}
    assert record["data"]["frames_per_identity"] == {"spk1": 6, "spk2": 6}  # 3 s clips at 2 fps
    assert [int(row["epoch"]) for row in record["losses"]] == [1]
    shards = {p: p.stat().st_mtime_ns for p in (out / "latents" / "latents").glob("shard_*.npz")}
    assert shards
    proc = run_script("train_demo_networks", *args)  # a rerun resumes every step: no frame is inverted again
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in shards} == shards


def test_the_mapper_is_float16_and_tied_to_its_generator(run):
    out, _ = run
    from safetensors.torch import load_file

    dtypes = {t.dtype for t in load_file(out / "shipped" / "mapper.safetensors").values() if t.is_floating_point()}
    assert dtypes == {torch.float16}  # (BatchNorm's batch counters stay integers)
    G = stylegan3.load("digiface-dcgan-64")
    mapper = load_mapper(out / "shipped")
    assert mapper.made_for == {"name": "digiface-dcgan-64", "fingerprint": network_fingerprint(G)}
    check_networks(G, mapper)
    other = stylegan3.build("dcgan", G.init_kwargs)  # the same W+ shape, other weights
    with pytest.raises(ValueError, match="trained for digiface-dcgan-64"):
        check_networks(other, mapper)
    check_networks(other, load_mapper(out / "mapper"))  # a mapper that names no generator: shapes only


def test_named_validation_speakers_and_per_video_sources(run):
    out, _ = run
    manifest, latents = out / "prepared" / "manifest.jsonl", out / "latents"
    pairs = LandmarkPairs(manifest, latents, 32)
    train, val = pairs.split_indices("identity", 0.1, 0, ["spk2"])
    assert {pairs.pairs[k].identity for k in val} == {"spk2"} and {pairs.pairs[k].identity for k in train} == {"spk1"}
    with pytest.raises(ValueError, match="nobody"):
        pairs.split_indices("identity", 0.1, 0, ["nobody"])
    by_video = LandmarkPairs(manifest, latents, 32, source="video")
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    for pair in by_video.pairs:  # each driving frame's source is the best source frame of its own video
        video = pair.driving.rsplit("/", 1)[0]
        candidates = [r for r in records if r["video"] == video]
        best = min(candidates, key=lambda r: r["source_score"])
        assert pair.source == f"{video}/{best['frame']:06d}"
    assert len({p.source for p in by_video.pairs}) == 2
    with pytest.raises(ValueError, match="source must be"):
        LandmarkPairs(manifest, latents, 32, source="speaker")
    assert np.isfinite(by_video.latents).all()
