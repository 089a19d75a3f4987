"""Photos with two faces: invert.py and reenact.py take the largest by default, say so in one line, and take
another with face=INDEX. The test photo puts a large colour face and a small grey one side by side, so which
face was used shows in the result's colours, without asking the code under test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from conftest import FIXTURES, SAMPLES, ScriptRun, run_script
from PIL import Image
from test_arcface import fake_state

from inversion.arcface import ARCFACE_FILE
from inversion.perceptual import ALEXNET_FILE
from reenactment.model.mapper import MappingNetwork, save_mapper

DRIVING = SAMPLES / "images" / "grid_lrwp9a_frame010_openmouth.png"
LARGE, SMALL, GAP = 600, 380, 420  # face photo sides and the grey gap between them, pixels


@pytest.fixture(scope="module")
def two_faces(tmp_path_factory) -> Path:
    """A 1400x600 photo: London 003 in colour at 600 px on the left, London 061 in greyscale at 380 px on the
    right, on a mid-grey background."""
    canvas = Image.new("RGB", (LARGE + GAP + SMALL, LARGE), (128, 128, 128))
    canvas.paste(Image.open(SAMPLES / "images" / "london_003_neutral.jpg").resize((LARGE, LARGE)), (0, 0))
    grey = Image.open(SAMPLES / "images" / "london_061_neutral.jpg").convert("L").convert("RGB")
    canvas.paste(grey.resize((SMALL, SMALL)), (LARGE + GAP, (LARGE - SMALL) // 2))
    path = tmp_path_factory.mktemp("faces") / "two_faces.png"
    canvas.save(path)
    return path


@pytest.fixture(scope="module")
def loss_files(tmp_path_factory) -> tuple[Path, Path]:
    """Random-weight ArcFace IR-SE50 and AlexNet files in the published layouts, for the full inversion loss."""
    root = tmp_path_factory.mktemp("loss_weights")
    torch.save(fake_state(), root / ARCFACE_FILE)
    torch.manual_seed(0)
    state = torchvision.models.alexnet(weights=None).state_dict()
    state = {k: v if k.startswith("features.") else torch.zeros(()).expand(v.shape) for k, v in state.items()}
    torch.save(state, root / ALEXNET_FILE)
    return root / ARCFACE_FILE, root / ALEXNET_FILE


def run(script: str, *args: object, cache: Path) -> ScriptRun:
    return run_script(script, *args, cache=cache)


def face_note(stdout: str) -> str:
    (line,) = [line for line in stdout.splitlines() if "faces found" in line]
    return line


def colourfulness(image: np.ndarray) -> float:
    """Mean spread of the three channels per pixel over the middle half: 0 for a grey picture."""
    h, w = image.shape[:2]
    middle = image[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4].astype(int)
    return float((middle.max(axis=2) - middle.min(axis=2)).mean())


def test_invert_takes_the_largest_face_or_the_one_asked_for(two_faces, loss_files, tmp_path):
    arcface, alexnet = loss_files
    common = [two_faces, "--network", FIXTURES / "sg2_64.pkl", "steps=2", f"arcface={arcface}", f"alexnet={alexnet}"]
    proc = run("invert.py", *common, "--out", tmp_path / "largest", cache=tmp_path / "c")
    assert proc.returncode == 0, proc.stderr[-2000:]
    note = face_note(proc.stdout)
    assert "2 faces found" in note and "using face=0 (the largest)" in note and str(two_faces) in note
    assert colourfulness(np.asarray(Image.open(tmp_path / "largest" / "target.png"))) > 10
    proc = run("invert.py", *common, "face=1", "--out", tmp_path / "other", cache=tmp_path / "c")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "using face=1" in face_note(proc.stdout)
    assert colourfulness(np.asarray(Image.open(tmp_path / "other" / "target.png"))) < 1
    losses = (tmp_path / "other" / "losses.json").read_text()
    assert all(f'"{term}"' in losses for term in ("mse", "lpips", "id", "delta_reg"))  # the full loss ran
    proc = run("invert.py", *common, "face=2", "--out", tmp_path / "none", cache=tmp_path / "c")
    assert proc.returncode == 1 and "error: face=2 requested but only 2 found in" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_reenact_pastes_into_the_face_it_says_it_took(two_faces, tmp_path):
    torch.manual_seed(0)
    mapper = save_mapper(MappingNetwork(image_size=128, num_ws=10, w_dim=64, channels=(8,) * 8), tmp_path / "m")
    latent = tmp_path / "w.npy"
    np.save(latent, np.zeros((10, 64), np.float32))
    photo = np.asarray(Image.open(two_faces)).astype(int)
    for face, note_text, side in (("largest", "using face=0 (the largest)", "left"), ("1", "using face=1", "right")):
        out = tmp_path / f"{face}.png"
        proc = run("reenact.py", two_faces, DRIVING, "-o", out, "--network", FIXTURES / "sg2_64.pkl", "--mapper",
                   mapper, f"latent={latent}", f"face={face}", "--paste-back", cache=tmp_path / "c")  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert note_text in face_note(proc.stdout)
        changed = np.abs(np.asarray(Image.open(out)).astype(int) - photo).max(axis=2) > 20
        left, right = changed[:, :LARGE].sum(), changed[:, LARGE + GAP :].sum()
        assert (left > 100 * max(right, 1)) if side == "left" else (right > 100 * max(left, 1)), (left, right)
