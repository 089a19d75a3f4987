"""Bad input gets one line naming the file and the problem, never a traceback, and costs no earlier results:
unusable weights files in every script that loads them, unreadable or mismatched images in evaluate.py."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FIXTURES, SAMPLES, ScriptRun, run_script
from PIL import Image

import stylegan3
from reenactment.model.mapper import WEIGHTS_FILE, MappingNetwork, save_mapper

PHOTO = SAMPLES / "images" / "london_003_neutral.jpg"
DRIVING = SAMPLES / "images" / "grid_lrwp9a_frame010_openmouth.png"


def run(script: str, *args: object, cache: Path) -> ScriptRun:
    return run_script(script, *args, cache=cache)


def error_line(proc: ScriptRun, *names: str) -> str:
    """The run failed with exactly one line ``error: ...`` of its own (not glued to a progress bar) that names
    ``names``, and without a traceback."""
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.split("\n") if "error: " in line]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert all(name in lines[0] for name in names), lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def bad_weights(tmp_path_factory) -> dict[str, Path]:
    """Weights files a user may end up with: missing, empty, text, a truncated pickle, a torch.save file and a
    pickle that holds no StyleGAN network."""
    root = tmp_path_factory.mktemp("bad_weights")
    good = (FIXTURES / "sg2_64.pkl").read_bytes()
    files = {
        "missing": root / "missing.pkl",
        "empty": root / "empty.pkl",
        "text": root / "text.pkl",
        "truncated": root / "truncated.pkl",
        "torch_save": root / "torch_save.pkl",
        "foreign": root / "foreign.pkl",
    }
    files["empty"].write_bytes(b"")
    files["text"].write_text("<html>404 Not Found</html>\n")
    files["truncated"].write_bytes(good[: len(good) // 2])
    torch.save({"G_ema": torch.zeros(3)}, files["torch_save"])
    files["foreign"].write_bytes(pickle.dumps({"G_ema": {"weights": [1.0, 2.0]}, "D": None}))
    return files


def test_generate_names_every_unusable_weights_file(bad_weights, tmp_path):
    for kind, path in bad_weights.items():
        proc = run("generate.py", f"network={path}", "seeds=0", f"out={tmp_path / kind}", cache=tmp_path / "c")
        line = error_line(proc, str(path))
        assert ("not found" in line) if kind == "missing" else ("is unusable" in line), line
        assert not (tmp_path / kind).exists()


def test_loaders_raise_one_error_type(bad_weights):
    for kind, path in bad_weights.items():
        expected = stylegan3.WeightsNotFoundError if kind == "missing" else stylegan3.WeightsFileError
        with pytest.raises(expected, match=path.name):
            stylegan3.load(path)
    err = pytest.raises(stylegan3.WeightsFileError, stylegan3.load, bad_weights["truncated"]).value
    assert err.path == bad_weights["truncated"] and "ends early" in err.problem
    assert pickle.loads(pickle.dumps(err)).path == err.path  # crosses process boundaries intact


def test_truncated_pickle_in_invert_reenact_convert(bad_weights, tmp_path):
    truncated = bad_weights["truncated"]
    cache = tmp_path / "c"
    proc = run("invert.py", PHOTO, "--network", truncated, "--out", tmp_path / "inv", "steps=1", cache=cache)
    error_line(proc, str(truncated), "ends early")
    proc = run("convert_pkl.py", truncated, tmp_path / "converted", cache=cache)
    error_line(proc, str(truncated), "ends early")
    assert not (tmp_path / "converted").exists()
    mapper = save_mapper(MappingNetwork(image_size=128, num_ws=10, w_dim=64, channels=(8,) * 8), tmp_path / "m")
    proc = run("reenact.py", PHOTO, DRIVING, "-o", tmp_path / "o.png", "--network", truncated, "--mapper", mapper,
               cache=cache)  # fmt: skip
    error_line(proc, str(truncated), "ends early")


def test_reenact_names_a_truncated_mapper_and_a_broken_arcface_on_a_line_of_its_own(tmp_path):
    torch.manual_seed(0)
    model = MappingNetwork(image_size=128, num_ws=10, w_dim=64, channels=(8, 8, 16, 16, 32, 32, 32, 32))
    good = save_mapper(model, tmp_path / "good")
    bad = save_mapper(model, tmp_path / "bad")
    data = (bad / WEIGHTS_FILE).read_bytes()
    (bad / WEIGHTS_FILE).write_bytes(data[: len(data) // 3])
    common = [PHOTO, DRIVING, "-o", tmp_path / "o.png", "--network", FIXTURES / "sg2_64.pkl", "steps=2"]
    proc = run("reenact.py", *common, "--mapper", bad, "loss.lpips=0", "loss.id=0", cache=tmp_path / "c")
    error_line(proc, str(bad / WEIGHTS_FILE), "safetensors")
    # The ArcFace file is read while the source's inversion bar is on screen: the error still gets its own line.
    empty = tmp_path / "model_ir_se50.pth"
    empty.write_bytes(b"")
    proc = run("reenact.py", *common, "--mapper", good, "loss.lpips=0", f"arcface={empty}", cache=tmp_path / "c")
    error_line(proc, str(empty), "empty")
    assert not (tmp_path / "o.png").exists()


def test_broken_alexnet_file_in_invert(tmp_path):
    text = tmp_path / "alexnet-owt-7be5be79.pth"
    text.write_text("not weights")
    proc = run("invert.py", PHOTO, "--network", FIXTURES / "sg2_64.pkl", "--out", tmp_path / "inv", "steps=1",
               f"alexnet={text}", "loss.id=0", cache=tmp_path / "c")  # fmt: skip
    error_line(proc, str(text), "not a readable PyTorch state dict")
    assert not (tmp_path / "inv").exists()


@pytest.fixture()
def eval_folders(tmp_path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    real, fake = tmp_path / "real", tmp_path / "fake"
    for folder in (real, fake):
        folder.mkdir()
    for name in ("a", "b", "c"):
        image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(image).save(real / f"{name}.png")
        Image.fromarray(np.clip(image.astype(int) + 9, 0, 255).astype(np.uint8)).save(fake / f"{name}.png")
    return real, fake


def test_evaluate_bad_images_are_one_line_and_keep_the_earlier_results(eval_folders, tmp_path):
    real, fake = eval_folders
    out = tmp_path / "E"
    args = ["inversion", "--real", real, "--fake", fake, "--out", out, "dlib_identity=false"]
    proc = run("evaluate.py", *args, cache=tmp_path / "c")
    assert proc.returncode == 0, proc.stderr[-2000:]
    before = {name: (out / name).read_bytes() for name in ("config.yaml", "metrics.json", "metrics.md")}
    buf = io.BytesIO()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(buf, format="PNG")
    cases = {
        "empty": (b"", "file is empty (0 bytes)"),
        "text": (b"just some text\n", "not an image format Pillow recognises"),
        "truncated": (buf.getvalue()[:-30], "not a readable image"),  # the header reads, the pixels do not
    }
    for kind, (content, problem) in cases.items():
        (fake / "b.png").write_bytes(content)
        proc = run("evaluate.py", *args, "batch_size=1", "compare_thesis=true", cache=tmp_path / "c")
        error_line(proc, str(fake / "b.png"), problem)
        # The folder still holds the first run's config with the first run's numbers.
        assert {name: (out / name).read_bytes() for name in before} == before, kind
    Image.fromarray(np.zeros((48, 40, 3), np.uint8)).save(fake / "b.png")
    proc = run("evaluate.py", *args, cache=tmp_path / "c")
    error_line(proc, str(real / "b.png"), str(fake / "b.png"), "is 32x32 but", "is 40x48", "size=N")
    proc = run("evaluate.py", *args, "size=32", cache=tmp_path / "c")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "size: 32" in (out / "config.yaml").read_text()
    assert (out / "metrics.json").read_bytes() != before["metrics.json"]
