"""ArcFace IR-SE50: the published file's layout loads strictly, errors name the key, the ID crop frames the face."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SAMPLES, detector

import stylegan3
from inversion.arcface import (
    ARCFACE_FILE,
    IRSE50,
    IdentityEncoder,
    arcface_crop,
    identity_loss,
    load_arcface,
)

# Facts of model_ir_se50.pth, written down from the pSp layout (models/encoders/model_irse.py and helpers.py):
# 24 units in stages of 3, 4, 14, 3 with 64, 128, 256, 512 channels; the first unit of each stage
# strides by 2 and has a conv shortcut only where the width changes (units 3, 7 and 21).
NUM_KEYS = 397  # with BatchNorm's num_batches_tracked (54 BatchNorm layers)
NUM_PARAMETERS = 43_797_696
REPRESENTATIVE_SHAPES = {
    "input_layer.0.weight": (64, 3, 3, 3),
    "input_layer.1.running_var": (64,),
    "input_layer.2.weight": (64,),
    "body.0.res_layer.1.weight": (64, 64, 3, 3),
    "body.0.res_layer.5.fc1.weight": (4, 64, 1, 1),
    "body.3.shortcut_layer.0.weight": (128, 64, 1, 1),
    "body.3.shortcut_layer.1.bias": (128,),
    "body.3.res_layer.0.weight": (64,),
    "body.3.res_layer.3.weight": (128, 128, 3, 3),
    "body.20.res_layer.5.fc2.weight": (256, 16, 1, 1),
    "body.21.shortcut_layer.0.weight": (512, 256, 1, 1),
    "body.23.res_layer.4.running_mean": (512,),
    "output_layer.0.weight": (512,),
    "output_layer.3.weight": (512, 25088),
    "output_layer.3.bias": (512,),
    "output_layer.4.weight": (512,),
    "output_layer.4.running_var": (512,),
}


def _bn(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.{k}": (c,) for k in ("weight", "bias", "running_mean", "running_var")} | {
        f"{prefix}.num_batches_tracked": ()
    }


def expected_layout() -> dict[str, tuple[int, ...]]:
    """Key -> shape of the published state dict, spelled out independently of the module code."""
    keys = {"input_layer.0.weight": (64, 3, 3, 3), **_bn("input_layer.1", 64), "input_layer.2.weight": (64,)}
    unit, cin = 0, 64
    for depth, n in ((64, 3), (128, 4), (256, 14), (512, 3)):
        for _ in range(n):
            p = f"body.{unit}"
            if cin != depth:
                keys[f"{p}.shortcut_layer.0.weight"] = (depth, cin, 1, 1)
                keys.update(_bn(f"{p}.shortcut_layer.1", depth))
            keys.update(_bn(f"{p}.res_layer.0", cin))
            keys[f"{p}.res_layer.1.weight"] = (depth, cin, 3, 3)
            keys[f"{p}.res_layer.2.weight"] = (depth,)
            keys[f"{p}.res_layer.3.weight"] = (depth, depth, 3, 3)
            keys.update(_bn(f"{p}.res_layer.4", depth))
            keys[f"{p}.res_layer.5.fc1.weight"] = (depth // 16, depth, 1, 1)
            keys[f"{p}.res_layer.5.fc2.weight"] = (depth, depth // 16, 1, 1)
            unit, cin = unit + 1, depth
    keys.update(_bn("output_layer.0", 512))
    keys["output_layer.3.weight"] = (512, 512 * 7 * 7)
    keys["output_layer.3.bias"] = (512,)
    keys.update(_bn("output_layer.4", 512))
    return keys


def fake_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict with the published layout (running variances positive).

    The conv and linear weights are views into one random buffer: torch.save writes a shared storage
    once, so the file is ~50 MB instead of 175 MB and the tests stay fast.
    """
    g = torch.Generator().manual_seed(seed)
    layout = expected_layout()
    buffer = torch.randn(max(int(np.prod(s)) for s in layout.values()), generator=g) * 0.02
    state = {}
    for key, shape in layout.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1000)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        elif len(shape) == 1:
            state[key] = torch.randn(shape, generator=g) * 0.1 + (1.0 if key.endswith("weight") else 0.0)
        else:
            state[key] = buffer[: int(np.prod(shape))].view(shape)
    return state


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> tuple:
    path = tmp_path_factory.mktemp("arcface") / ARCFACE_FILE
    state = fake_state()
    torch.save(state, path)
    return path, state


def test_layout_matches_published_file():
    layout = expected_layout()
    assert len(layout) == NUM_KEYS
    params = [k for k in layout if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert sum(int(np.prod(layout[k])) for k in params) == NUM_PARAMETERS
    for key, shape in REPRESENTATIVE_SHAPES.items():
        assert layout[key] == shape, key
    model = IRSE50()
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == layout
    assert sum(p.numel() for p in model.parameters()) == NUM_PARAMETERS


TINY_STAGES = ((16, 1), (16, 1), (32, 1), (32, 1))  # same design (16-wide stem), ~100x cheaper


def test_load_strict_and_embeddings(weights_file):
    path, state = weights_file
    model = load_arcface(path=path)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    for key, value in state.items():
        assert torch.equal(model.state_dict()[key], value), key
    with pytest.raises(ValueError, match="112"):
        model(torch.zeros(1, 3, 128, 128))


def test_tiny_network_embeddings():
    model = IRSE50(stages=TINY_STAGES).eval()
    with torch.no_grad():
        emb = model(torch.rand(4, 3, 112, 112) * 2 - 1)
    assert emb.shape == (4, 512)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(4))


def test_load_without_batch_counters(tmp_path, weights_file):
    """Files saved before PyTorch 0.4.1 have no num_batches_tracked; they still load."""
    _, state = weights_file
    path = tmp_path / "old.pth"
    torch.save({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, path)
    model = load_arcface(path=path)
    assert torch.equal(model.output_layer[3].weight, state["output_layer.3.weight"])


@pytest.mark.parametrize("fault", ["missing", "shape", "unexpected"])
def test_load_errors_name_the_key(tmp_path, weights_file, fault):
    state = dict(weights_file[1])
    key = "body.7.res_layer.5.fc1.weight"
    if fault == "missing":
        del state[key]
    elif fault == "shape":
        state[key] = torch.zeros(8, 128, 1, 1)
    else:
        key = "output_layer.5.weight"
        state[key] = torch.zeros(3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=key.replace(".", r"\.")) as info:
        load_arcface(path=path)
    assert {"missing": "missing", "shape": "mis-shaped", "unexpected": "unexpected"}[fault] in str(info.value)


def test_missing_file_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("REENACT_OFFLINE", "1")
    monkeypatch.setenv("REENACT_CACHE", str(tmp_path))
    with pytest.raises(stylegan3.WeightsNotFoundError, match=ARCFACE_FILE) as info:
        load_arcface()
    assert str(tmp_path / "arcface" / ARCFACE_FILE) in str(info.value)
    with pytest.raises(stylegan3.WeightsNotFoundError, match="nowhere.pth"):
        IdentityEncoder.from_pretrained(tmp_path / "nowhere.pth")


def _crop_coords(points: np.ndarray) -> np.ndarray:
    """Where 1024-px aligned coordinates land in the 112-px ArcFace crop."""
    return (points * 256 / 1024 - np.array([32, 35])) * 112 / 188


def test_crop_frames_eyes_and_mouth_of_aligned_face():
    from reenactment.faces.align import align_face, transform_points
    from stylegan3.images import read_image

    image = read_image(SAMPLES / "images" / "london_003_neutral.jpg")
    points = detector("dlib")(image)
    aligned, transform = align_face(image, points, size=1024)
    carried = transform_points(transform, points)

    tensor = torch.from_numpy(aligned.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    crop = arcface_crop(tensor)
    assert crop.shape == (1, 3, 112, 112) and crop.min() >= -1 and crop.max() <= 1

    inner = _crop_coords(carried[17:68])
    assert (inner >= 0).all() and (inner < 112).all(), inner
    eyes_y = _crop_coords(carried[36:48])[:, 1]
    mouth_y = _crop_coords(carried[48:68])[:, 1]
    assert (eyes_y < 56).all() and (mouth_y >= 56).all(), (eyes_y, mouth_y)

    # the crop's pixels follow the same geometry: a block painted at the mouth centre lands at its carried position
    mouth = carried[48:60].mean(axis=0)
    marker = torch.zeros(1, 3, 1024, 1024)
    cx, cy = np.round(mouth).astype(int)
    marker[:, :, cy - 8 : cy + 8, cx - 8 : cx + 8] = 1
    mass = arcface_crop(marker)[0, 0]
    ys, xs = torch.meshgrid(torch.arange(112.0) + 0.5, torch.arange(112.0) + 0.5, indexing="ij")
    centroid = np.array([(mass * xs).sum() / mass.sum(), (mass * ys).sum() / mass.sum()])
    expected = _crop_coords(np.array([cx, cy], dtype=np.float64))
    assert np.abs(centroid - expected).max() < 1.0, (centroid, expected)


def test_identity_loss_per_image():
    torch.manual_seed(0)
    encoder = IdentityEncoder(IRSE50(stages=TINY_STAGES))
    encoder.train()
    assert not encoder.training and not encoder.backbone.training
    x = (torch.rand(2, 3, 64, 64) * 2 - 1).requires_grad_(True)
    y = torch.rand(2, 3, 64, 64) * 2 - 1
    same = identity_loss(y, y.clone(), encoder)
    assert same.shape == (2,)
    torch.testing.assert_close(same, torch.zeros(2), atol=1e-5, rtol=0)
    loss = identity_loss(x, y, encoder)
    assert loss.shape == (2,) and (loss >= -1e-6).all() and (loss <= 2 + 1e-6).all()
    loss.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # per image: one image's loss does not depend on another image of the batch
    loss_one = identity_loss(x[1:2].detach(), y[1:2], encoder)
    torch.testing.assert_close(loss_one, loss[1:2].detach(), atol=1e-5, rtol=1e-4)
