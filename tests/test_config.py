"""The config machinery (stylegan3.config) and every YAML file in configs/ against its dataclass."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from stylegan3.config import ConfigError, config_yaml, get_value, inline, load_config, parse_cli, set_value, to_dict

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
# configs/NAME.yaml -> the dataclass it configures. Files ending in _smoke.yaml (quick runs) or _fast.yaml (presets)
# (settings for digiface-dcgan-64) are overrides; every other file is the command's defaults written out, and must
# say exactly what the dataclass says.
CLASSES = {
    "app": "reenactment.app:AppConfig",
    "evaluate": "scripts.evaluate:EvaluateConfig",
    "generate": "scripts.generate:GenerateConfig",
    "invert": "scripts.invert:InvertConfig",
    "invert_dataset": "scripts.invert_dataset:InvertDatasetConfig",
    "prepare_dataset": "scripts.prepare_dataset:PrepareConfig",
    "reenact": "scripts.reenact:ReenactConfig",
    "train_demo_networks": "scripts.train_demo_networks:TrainDemoNetworksConfig",
    "train_encoder": "inversion.encoder_training:TrainEncoderConfig",
    "train_mapper": "reenactment.model.training:TrainMapperConfig",
}
OVERRIDE_SUFFIXES = ("_smoke", "_fast", "_digiface")


def base_stem(stem: str) -> str:
    for suffix in OVERRIDE_SUFFIXES:
        stem = stem.removesuffix(suffix)
    return stem


def config_class(stem: str) -> type:
    module, _, name = CLASSES[base_stem(stem)].partition(":")
    return getattr(importlib.import_module(module), name)


def flat_keys(data: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in data.items():
        if isinstance(value, dict) and value:
            keys |= flat_keys(value, f"{prefix}{key}.")
        else:
            keys.add(prefix + key)
    return keys


def test_every_config_file_has_a_class():
    stems = {base_stem(p.stem) for p in CONFIGS.glob("*.yaml")}
    assert stems <= set(CLASSES), f"configs without a class in this test: {sorted(stems - set(CLASSES))}"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_config_file_loads_against_its_dataclass(path):
    cls = config_class(path.stem)
    cfg = load_config(cls, path)  # unknown keys and wrong types raise
    if path.stem.endswith(OVERRIDE_SUFFIXES):
        return
    written = yaml.safe_load(path.read_text())
    defaults = to_dict(cls())
    assert flat_keys(written) == flat_keys(defaults), (
        f"{path.name} lacks {sorted(flat_keys(defaults) - flat_keys(written))}, "
        f"has extra {sorted(flat_keys(written) - flat_keys(defaults))}"
    )
    differing = sorted(k for k in flat_keys(defaults) if get_value(cfg, k) != get_value(cls(), k))
    assert not differing, f"{path.name} disagrees with {cls.__name__}'s defaults on {differing}"


@dataclass
class Inner:
    steps: int = 10
    rate: float = 0.5


@dataclass
class Weights:
    a: float = 1.0


@dataclass
class Holder:
    name: str = "x"
    inner: Inner = inline(Inner)
    weights: Weights = field(default_factory=Weights)
    flag: bool = False


def test_inline_groups_lend_their_keys(tmp_path):
    cfg = load_config(Holder, None, ["steps=20", "weights.a=2", "rate=1"])
    assert (cfg.inner.steps, cfg.inner.rate, cfg.weights.a) == (20, 1.0, 2.0)
    assert to_dict(cfg) == {"name": "x", "steps": 20, "rate": 1.0, "weights": {"a": 2.0}, "flag": False}
    (tmp_path / "c.yaml").write_text(config_yaml(cfg))  # a saved config reloads to the same config
    assert load_config(Holder, tmp_path / "c.yaml") == cfg
    assert parse_cli(Holder, ["--steps", "3", "--flag"]).inner.steps == 3
    set_value(cfg, "steps", 4)
    assert get_value(cfg, "steps") == 4 and get_value(cfg, "weights.a") == 2.0
    with pytest.raises(ConfigError, match="unknown config key 'inner'"):
        set_value(cfg, "inner", 1)  # the group itself is not a key
    with pytest.raises(ConfigError, match="expected int"):
        set_value(cfg, "steps", "many")


def test_two_groups_lending_one_key_is_an_error():
    @dataclass
    class Clash:
        inner: Inner = inline(Inner)
        steps: int = 3

    with pytest.raises(TypeError, match="'steps' is given by two option groups"):
        load_config(Clash)
