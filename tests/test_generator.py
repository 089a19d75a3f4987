"""Generator conveniences: mean w, noise modes, seeds, configs and the generate script."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import FIXTURES, load_fixture
from PIL import Image

from stylegan3.config import ConfigError, load_config
from stylegan3.sampling import make_grid, parse_seeds, z_from_seeds


def test_mean_w_is_the_thesis_average_and_is_cached() -> None:
    G = load_fixture("sg3r_64")
    z = np.random.RandomState(123).randn(300, G.z_dim).astype(np.float32)
    expected = G.mapping(torch.from_numpy(z), None).mean(dim=0)
    calls = []
    handle = G.mapping.register_forward_hook(lambda *args: calls.append(1))
    mean = G.mean_w(n=300, seed=123, batch_size=128)
    assert mean.shape == (G.num_ws, G.w_dim)
    torch.testing.assert_close(mean, expected, rtol=0, atol=1e-5)
    assert torch.equal(mean[0], mean[-1])
    assert len(calls) == 3  # 300 in batches of 128
    assert torch.equal(G.mean_w(n=300, seed=123), mean)
    assert len(calls) == 3, "second call should come from the cache"
    with torch.no_grad():
        G.mapping.fc0.weight.mul_(2)  # new weights: the cache must not be used
    assert not torch.allclose(G.mean_w(n=300, seed=123), mean)
    handle.remove()


def test_stylegan2_noise_modes() -> None:
    G = load_fixture("sg2_64")
    with torch.no_grad():  # the fixture's noise strengths are zero, as at initialisation
        for name, param in G.named_parameters():
            if name.endswith("noise_strength"):
                param.fill_(0.1)
    ws = G.mapping(torch.from_numpy(np.random.RandomState(0).randn(1, G.z_dim).astype(np.float32)), None)
    with torch.no_grad():
        const1, const2 = G.synthesis(ws, noise_mode="const"), G.synthesis(ws, noise_mode="const")
        rand1, rand2 = G.synthesis(ws, noise_mode="random"), G.synthesis(ws, noise_mode="random")
        none = G.synthesis(ws, noise_mode="none")
    assert torch.equal(const1, const2)
    assert not torch.equal(rand1, rand2)
    assert not torch.equal(none, const1)
    with pytest.raises(ValueError, match="noise_mode"):
        G.synthesis(ws, noise_mode="sometimes")


def test_seeds_and_grid() -> None:
    assert parse_seeds("0-3,10") == [0, 1, 2, 3, 10]
    assert parse_seeds(7) == [7]
    with pytest.raises(ValueError):
        parse_seeds("a-b")
    z = z_from_seeds([5, 6], 8)
    np.testing.assert_array_equal(z[1].numpy(), np.random.RandomState(6).randn(8).astype(np.float32))
    images = np.arange(5 * 2 * 3 * 3, dtype=np.uint8).reshape(5, 2, 3, 3)
    grid = make_grid(images, columns=3)
    assert grid.shape == (4, 9, 3)
    np.testing.assert_array_equal(grid[2:4, 3:6], images[4])
    assert grid[2:4, 6:9].max() == 0


@dataclass
class _Inner:
    lpips: float = 1.5


@dataclass
class _Cfg:
    steps: int = 10
    name: str = "x"
    cutoff: int | None = None
    loss: _Inner = field(default_factory=_Inner)


def test_config_overrides_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"steps": 20, "loss": {"lpips": 0}}))
    cfg = load_config(_Cfg, path, ["cutoff=8", "loss.lpips=0.5", "name=12"])
    assert (cfg.steps, cfg.cutoff, cfg.loss.lpips, cfg.name) == (20, 8, 0.5, "12")
    assert load_config(_Cfg, None, ["cutoff=null"]).cutoff is None
    for bad, message in [("stpes=3", "unknown config key 'stpes'"), ("steps=1.5", "steps"), ("loss.x=1", "loss.x")]:
        with pytest.raises(ConfigError, match=message):
            load_config(_Cfg, None, [bad])


def test_generate_script_writes_images_and_config(tmp_path: Path) -> None:
    from scripts.generate import main

    out = main([f"network={FIXTURES / 'sg3t_64.pkl'}", "seeds=1-2", "grid=false", f"out={tmp_path}"])
    files = sorted(p.name for p in out.iterdir())
    assert files == ["config.yaml", "seed0001.png", "seed0002.png"]
    img = np.asarray(Image.open(out / "seed0001.png"))
    assert img.shape == (64, 64, 3) and img.std() > 1
    assert yaml.safe_load((out / "config.yaml").read_text())["seeds"] == "1-2"
    # A grid of four from an untrained full-width network at its smallest size (16 px: 64 px took 4x as long).
    out = main(["network=random", "seeds=0-3", "random_resolution=16", f"out={tmp_path / 'grid'}"])
    assert np.asarray(Image.open(out / "grid.png")).shape == (32, 32, 3)
