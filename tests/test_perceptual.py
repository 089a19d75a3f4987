"""LPIPS (AlexNet): per-image distances, gradients, the torchvision trunk mapped into lpips' slices, clear misses."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

import stylegan3
from inversion.perceptual import ALEXNET_FILE, LPIPS, resolve_alexnet

# torchvision AlexNet `features` entries and the lpips slice each lands in (lpips keeps torchvision's indices)
TRUNK_MAP = {
    "features.0": "slice1.0",
    "features.3": "slice2.3",
    "features.6": "slice3.6",
    "features.8": "slice4.8",
    "features.10": "slice5.10",
}


@pytest.fixture(scope="module")
def random_lpips() -> LPIPS:
    return LPIPS(_random_backbone=True)


@pytest.fixture(scope="module")
def alexnet_file(tmp_path_factory):
    """torchvision's AlexNet state dict with random weights; the classifier (unused by LPIPS, 57M values) is
    stored as zero-stride placeholders of the right shapes so the file stays small."""
    torch.manual_seed(0)
    state = torchvision.models.alexnet(weights=None).state_dict()
    state = {k: v if k.startswith("features.") else torch.zeros(()).expand(v.shape) for k, v in state.items()}
    path = tmp_path_factory.mktemp("hub") / ALEXNET_FILE
    torch.save(state, path)
    return path, state


def test_distance_per_image_symmetric_and_zero_on_self(random_lpips):
    torch.manual_seed(0)
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    y = torch.rand(3, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        d_xy, d_yx, d_xx = random_lpips(x, y), random_lpips(y, x), random_lpips(x, x)
    assert d_xy.shape == (3,) and (d_xy > 0).all()
    torch.testing.assert_close(d_xy, d_yx)
    torch.testing.assert_close(d_xx, torch.zeros(3), atol=1e-7, rtol=0)
    with torch.no_grad():  # one image's distance does not depend on the rest of the batch
        torch.testing.assert_close(random_lpips(x[1:2], y[1:2]), d_xy[1:2])
    with pytest.raises(ValueError, match="shape"):
        random_lpips(x, y[:2])


def test_frozen_eval_and_differentiable(random_lpips):
    random_lpips.train()
    assert not random_lpips.training and not any(m.training for m in random_lpips.modules())
    assert not any(p.requires_grad for p in random_lpips.parameters())
    x = (torch.rand(2, 3, 64, 64) * 2 - 1).requires_grad_(True)
    y = torch.rand(2, 3, 64, 64) * 2 - 1
    random_lpips(x, y).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0 and torch.isfinite(x.grad).all()


def test_linear_heads_from_the_lpips_wheel(random_lpips):
    import lpips

    heads_file = Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"
    shipped = torch.load(heads_file, map_location="cpu", weights_only=True)
    assert len(shipped) == 5
    own = random_lpips.net.state_dict()
    for key, value in shipped.items():
        assert torch.equal(own[key], value), key


def test_alexnet_trunk_mapped_into_slices(alexnet_file):
    path, state = alexnet_file
    model = LPIPS(alexnet_path=path)
    trunk = model.net.net.state_dict()
    assert len(trunk) == 2 * len(TRUNK_MAP)
    for src, dst in TRUNK_MAP.items():
        for kind in ("weight", "bias"):
            assert torch.equal(trunk[f"{dst}.{kind}"], state[f"{src}.{kind}"]), (src, dst, kind)


def test_alexnet_found_in_torch_hub_cache(tmp_path, monkeypatch, alexnet_file):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / ALEXNET_FILE).symlink_to(alexnet_file[0])
    assert resolve_alexnet() == tmp_path / "checkpoints" / ALEXNET_FILE


def test_wrong_alexnet_file_names_the_entry(tmp_path, alexnet_file):
    state = dict(alexnet_file[1])
    state["features.6.weight"] = torch.zeros(10, 192, 3, 3)
    del state["features.10.bias"]
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"features\.10\.bias") as info:
        LPIPS(alexnet_path=path)
    assert "features.6.weight" in str(info.value)


def test_missing_alexnet_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("REENACT_OFFLINE", "1")
    monkeypatch.setenv("REENACT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(stylegan3.WeightsNotFoundError, match=ALEXNET_FILE) as info:
        LPIPS()
    message = str(info.value)
    assert str(tmp_path / "cache" / "torchvision" / ALEXNET_FILE) in message
    assert "download.pytorch.org" in message
