"""The mapping network: the thesis's size and layer plan, its input conversion, prediction, save and load."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from reenactment.faces.landmark_image import render_landmark_image
from reenactment.model.mapper import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    MappingNetwork,
    landmark_delta,
    load_mapper,
    save_mapper,
)

TINY = {"image_size": 64, "num_ws": 10, "w_dim": 64, "channels": (8, 16, 16, 32, 32, 32), "hidden": 32}


def test_thesis_parameter_count_and_spatial_sizes():
    torch.manual_seed(0)
    f = MappingNetwork()
    assert sum(p.numel() for p in f.parameters()) == 18_890_624
    assert f.fc.in_features == 512 * 4 * 4 and f.out.out_features == 16 * 512
    sides, x = [], torch.zeros(2, 3, 580, 580)
    with torch.no_grad():
        for block in f.blocks:
            x = block(x)
            sides.append(x.shape[-1])
        assert sides == [290, 145, 72, 36, 18, 9, 4, 4]
        assert f(torch.zeros(2, 3, 580, 580)).shape == (2, 16, 512)
    kernels = [b.conv.kernel_size for b in f.blocks]
    assert kernels == [(5, 5)] + [(3, 3)] * 7
    assert all(b.act.negative_slope == 0.01 for b in f.blocks)


def test_head_follows_image_size_and_small_inputs_are_refused():
    f = MappingNetwork(image_size=128, num_ws=4, w_dim=8, channels=(4, 4, 4, 4, 4, 4, 4, 8), hidden=16)
    assert f.feature_side == 1 and f.fc.in_features == 8
    assert MappingNetwork(image_size=256, channels=(4,) * 8, hidden=8).fc.in_features == 4 * 2 * 2
    with pytest.raises(ValueError, match="too small.*at least 128"):
        MappingNetwork(image_size=64)
    with pytest.raises(ValueError, match=r"expected a landmark delta \[N, 3, 128, 128\]"):
        f(torch.zeros(1, 3, 64, 64))


def test_landmark_delta_conversion():
    points = np.stack([np.linspace(300, 700, 70), np.linspace(350, 750, 70)], axis=1)
    L_s = render_landmark_image(points, 64)
    L_d = render_landmark_image(points + [0, 40], 64)
    delta = landmark_delta(L_d[None], L_s)
    assert delta.shape == (1, 3, 64, 64) and delta.dtype == torch.float32
    np.testing.assert_allclose(np.unique(delta.numpy()), [-0.6, 0.0, 0.6], atol=1e-6)  # strokes: 153 = 0.6 * 255
    expected = (L_d.astype(np.float32) - L_s.astype(np.float32)).transpose(2, 0, 1)[None] / 255
    assert torch.equal(delta, torch.from_numpy(expected))
    # float images in [0, 1], channels first, give the same
    chw = torch.from_numpy(np.stack([L_d, L_s]).transpose(0, 3, 1, 2).astype(np.float32) / 255)
    assert torch.equal(landmark_delta(chw[:1], chw[1]), delta)
    with pytest.raises(ValueError, match="uint8 or float"):
        landmark_delta(L_d.astype(np.int32), L_s)


def test_predict_is_source_plus_displacement():
    torch.manual_seed(1)
    f = MappingNetwork(**TINY).eval()
    points = np.stack([np.linspace(300, 700, 70), np.linspace(350, 750, 70)], axis=1)
    L_s = render_landmark_image(points, 64)
    L_d = np.stack([render_landmark_image(points + [0, k], 64) for k in (0, 20, 40)])
    w_s = torch.randn(10, 64)
    with torch.no_grad():
        w = f.predict(w_s, L_d, L_s)
        assert w.shape == (3, 10, 64)
        assert torch.equal(w, w_s + f(landmark_delta(L_d, L_s)))
        assert torch.equal(f.predict(w_s[None].expand(3, -1, -1), L_d, np.stack([L_s] * 3)), w)


def test_save_load_round_trip_is_bit_exact(tmp_path):
    torch.manual_seed(2)
    f = MappingNetwork(**TINY)
    f.train()
    with torch.no_grad():  # move the BatchNorm statistics away from their initial values
        f(torch.rand(4, 3, 64, 64) * 2 - 1)
    f.eval()
    save_mapper(f, tmp_path / "m", extra={"epoch": 3}, frame_size=512)
    config = json.loads((tmp_path / "m" / CONFIG_FILE).read_text())
    assert config["init_kwargs"] == f.init_kwargs and config["extra"] == {"epoch": 3}
    assert config["landmarks"]["image_size"] == 64 and config["landmarks"]["frame_size"] == 512
    g = load_mapper(tmp_path / "m")
    assert not g.training and g.init_kwargs == f.init_kwargs and g.landmark_settings["frame_size"] == 512
    a, b = f.state_dict(), g.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(f(x), g(x))
    assert not list((tmp_path / "m").glob("*.tmp"))
    assert MappingNetwork(**g.init_kwargs).init_kwargs == f.init_kwargs


def test_load_mapper_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"missing {CONFIG_FILE} and {WEIGHTS_FILE}"):
        load_mapper(tmp_path)
    save_mapper(MappingNetwork(**TINY), tmp_path)
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    config["init_kwargs"]["hidden"] = 16
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ValueError, match="shape"):
        load_mapper(tmp_path)
    (tmp_path / WEIGHTS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=f"missing {WEIGHTS_FILE}"):
        load_mapper(tmp_path)
