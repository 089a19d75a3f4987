"""The helpers every package shares, defined once: the atomic writer, image and video suffixes, device
resolution, torchrun's environment, the float -> uint8 image conversion."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FIXTURES, LONDON, SAMPLES, run_script
from PIL import Image

from inversion.dataset import frames_from_input
from reenactment.data.prepare import find_jobs
from stylegan3.images import IMAGE_SUFFIXES, write_image
from stylegan3.io import atomic_write
from stylegan3.runtime import DistEnv, resolve_device
from stylegan3.sampling import to_uint8


@pytest.fixture
def umask_022():
    before = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(before)


def test_atomic_files_honour_the_umask(tmp_path, umask_022):
    # Results on a shared box must be readable by the group and others when the umask allows it (not 0600).
    atomic_write(tmp_path / "a.json", "{}")
    atomic_write(tmp_path / "b.bin", lambda name: Path(name).write_bytes(b"x"))
    write_image(tmp_path / "c.png", np.zeros((4, 4, 3), np.uint8))
    for name in ("a.json", "b.bin", "c.png"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name
    os.umask(0o077)
    atomic_write(tmp_path / "d.json", "{}")
    assert stat.S_IMODE((tmp_path / "d.json").stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.bin", "c.png", "d.json"]  # no leftovers


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    atomic_write(tmp_path / "x.txt", "old")

    def fails(name: str) -> None:
        Path(name).write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "x.txt", fails)
    assert (tmp_path / "x.txt").read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_what_prepare_takes_invert_dataset_takes(tmp_path):
    # One list of image suffixes: a .tif photo that prepare_dataset.py aligns is also inverted.
    image = Image.open(SAMPLES / "images" / LONDON[0]).convert("RGB").resize((64, 64))
    names = [f"x_{suffix[1:]}{suffix}" for suffix in IMAGE_SUFFIXES]  # distinct stems: one video id each
    for name in names:
        image.save(tmp_path / name)
    found = sorted(f.id for f in frames_from_input(tmp_path))
    assert found == sorted(names)
    assert sorted(j.rel for j in find_jobs(tmp_path)[0]) == found


def test_to_uint8_is_one_rounding():
    # generate.py, invert.py, previews and reenact.py all turn [-1, 1] into pixels the same way: round((x + 1) *
    # 127.5) in float32, ties to even (numpy's rounding, computed here independently); halfway values included.
    ties = (np.arange(255, dtype=np.float64) + 0.5) / 127.5 - 1
    x = np.concatenate([np.linspace(-1.2, 1.2, 1 << 20, dtype=np.float32), ties.astype(np.float32)])
    expected = np.round((np.clip(x, -1, 1) + np.float32(1)) * np.float32(127.5)).astype(np.uint8)
    got = to_uint8(torch.from_numpy(x).view(1, 1, 1, -1).expand(1, 3, 1, -1))[0, 0, :, 0]
    assert np.array_equal(got, expected)


def test_device_and_torchrun_environment():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda:1" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto", local_rank=1) == torch.device(expected)
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        resolve_device("gpu")
    assert DistEnv.from_environ({}) == DistEnv(0, 1, 0)
    env = DistEnv.from_environ({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (env.rank, env.world, env.local_rank, env.is_main) == (3, 4, 1, False)


def test_scripts_name_an_unknown_device_in_one_line(tmp_path):
    photo = SAMPLES / "images" / LONDON[0]
    net = str(FIXTURES / "sg2_64.pkl")
    commands = [
        ["invert", str(photo), "--network", net, "--out", str(tmp_path / "i"), "device=gpu"],
        ["invert_dataset", "--input", str(tmp_path), "--out", str(tmp_path / "d"), "device=gpu"],
    ]
    for command in commands:
        proc = run_script(*command)
        assert proc.returncode != 0 and "unknown device 'gpu'" in proc.stderr and "Traceback" not in proc.stderr
