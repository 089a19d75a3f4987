"""Loading: the restricted unpickler, stylegan2-ada-pytorch pickles, our format, known model names."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import types
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FIXTURES, fixture_arrays, load_fixture, run_script

import stylegan3
from stylegan3 import io as sgio
from stylegan3 import legacy


class _Exploit:
    """Pickles as a call of ``func(*args)``: what a malicious weights file does."""

    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _fake_persistent_module() -> types.ModuleType:
    """A stand-in ``torch_utils.persistence`` so that tests can write pickles in NVIDIA's layout."""
    module = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):  # never called: the loader maps this name to its own
        raise AssertionError("the real function must not be used")

    _reconstruct_persistent_obj.__module__ = module.__name__
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    module._reconstruct_persistent_obj = _reconstruct_persistent_obj
    sys.modules.setdefault("torch_utils", types.ModuleType("torch_utils"))
    sys.modules[module.__name__] = module
    return module


def _plain_dicts(value):
    if isinstance(value, dict):  # our EasyDict stand-in becomes a plain dict, OrderedDicts stay
        kind = dict if isinstance(value, legacy.EasyDict) else type(value)
        return kind((k, _plain_dicts(v)) for k, v in value.items())
    return value


def _to_pickleable(record: legacy.PersistentRecord, fn) -> _Exploit:
    state = {k: _plain_dicts(v) for k, v in record.state.items()}
    state["_modules"] = {k: _to_pickleable(v, fn) if v is not None else None for k, v in state["_modules"].items()}
    meta = {
        "type": "class",
        "version": 6,
        "module_src": "# placeholder",
        "class_name": record.class_name,
        "state": state,
    }
    return _Exploit(fn, meta)


@pytest.mark.parametrize(
    "payload, refused",
    [
        (lambda marker: _Exploit(os.system, f"touch {marker}"), "os.system" if os.name != "nt" else "nt.system"),
        (lambda marker: _Exploit(eval, f"open({str(marker)!r}, 'w').close()"), "builtins.eval"),
        (lambda marker: _Exploit(subprocess.call, ["touch", str(marker)]), "subprocess.call"),
    ],
    ids=["os.system", "builtins.eval", "subprocess"],
)
def test_pickle_that_runs_code_is_refused(tmp_path: Path, payload, refused: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": payload(marker)}))
    with pytest.raises(stylegan3.WeightsFileError, match=refused.replace(".", r"\.").replace("os", "(os|posix)")):
        stylegan3.load(path)
    assert not marker.exists(), "code from the pickle ran"


def test_code_hidden_in_tensor_bytes_is_refused(tmp_path: Path) -> None:
    """``torch.storage._load_from_bytes`` is allow-listed, but its bytes are read with weights_only."""
    marker = tmp_path / "pwned"
    inner = io.BytesIO()
    torch.save(_Exploit(os.system, f"touch {marker}"), inner, _use_new_zipfile_serialization=False)
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _Exploit(torch.storage._load_from_bytes, inner.getvalue())}))
    with pytest.raises(stylegan3.WeightsFileError, match="refused|not an NVIDIA network pickle"):
        stylegan3.load(path)
    assert not marker.exists(), "code from the tensor bytes ran"


def test_persistent_object_is_never_executed(tmp_path: Path) -> None:
    """A module_src that would run code is ignored; a foreign class in the network is refused."""
    fn = _fake_persistent_module()._reconstruct_persistent_obj
    marker = tmp_path / "pwned"
    record = legacy.read_pickle(FIXTURES / "sg2_64.pkl")["G_ema"]
    obj = _to_pickleable(record, fn)
    obj.args[0]["module_src"] = f"import os; os.system('touch {marker}')"
    path = tmp_path / "src.pkl"
    path.write_bytes(pickle.dumps({"G_ema": obj}))
    stylegan3.load(path)
    assert not marker.exists()
    obj.args[0]["state"]["_modules"]["extra"] = torch.nn.Linear(2, 2)
    path.write_bytes(pickle.dumps({"G_ema": obj}))
    with pytest.raises(stylegan3.WeightsFileError, match="torch.nn.modules.linear.Linear"):
        stylegan3.load(path)


def test_stylegan2_ada_pickle_with_nested_synthesis_kwargs(tmp_path: Path) -> None:
    fn = _fake_persistent_module()._reconstruct_persistent_obj
    record = legacy.read_pickle(FIXTURES / "sg2_64.pkl")["G_ema"]
    obj = _to_pickleable(record, fn)
    kwargs = dict(obj.args[0]["state"]["_init_kwargs"])
    synthesis = {k: kwargs.pop(k) for k in ("channel_base", "channel_max", "num_fp16_res", "conv_clamp")}
    kwargs["synthesis_kwargs"] = {**synthesis, "architecture": "skip"}
    obj.args[0]["state"]["_init_kwargs"] = kwargs
    path = tmp_path / "ada.pkl"
    path.write_bytes(pickle.dumps({"G": None, "D": None, "G_ema": obj}))
    G = stylegan3.load(path)
    arrays = fixture_arrays("sg2_64")
    with torch.no_grad():
        img = G.synthesis(torch.from_numpy(arrays["ws_plus"]), noise_mode="const").numpy()
    assert np.abs(img - arrays["img_plus"]).max() <= 1e-4 * arrays["img_plus"].std()


@pytest.mark.parametrize("name", ["sg3r_64", "sg3t_64", "sg2_64"])
def test_safetensors_round_trip_is_bit_exact(tmp_path: Path, name: str) -> None:
    G = load_fixture(name)
    stylegan3.save(G, tmp_path / "net")
    assert sorted(p.name for p in (tmp_path / "net").iterdir()) == ["generator.json", "generator.safetensors"]
    G2 = stylegan3.load(tmp_path / "net")
    ws = torch.from_numpy(fixture_arrays(name)["ws_plus"])
    z = torch.from_numpy(fixture_arrays(name)["z"])
    with torch.no_grad():
        assert torch.equal(G.mapping(z, None, truncation_psi=0.7), G2.mapping(z, None, truncation_psi=0.7))
        assert torch.equal(G.synthesis(ws, noise_mode="const"), G2.synthesis(ws, noise_mode="const"))
    for key, value in G.state_dict().items():
        assert torch.equal(value, G2.state_dict()[key]), key


def test_convert_pkl_script(tmp_path: Path) -> None:
    out = tmp_path / "converted"
    result = run_script("convert_pkl", FIXTURES / "sg3t_64.pkl", out)
    assert result.returncode == 0, result.stderr
    G = stylegan3.load(out)
    assert G.num_ws == 16 and G.img_resolution == 64


def test_wrong_files_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(stylegan3.WeightsNotFoundError, match="not found"):
        stylegan3.load(tmp_path / "missing.pkl")
    (tmp_path / "empty").mkdir()
    with pytest.raises(stylegan3.WeightsNotFoundError, match="generator.json"):
        stylegan3.load(tmp_path / "empty")
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"not a pickle at all")
    with pytest.raises(stylegan3.WeightsFileError, match="refused|not an NVIDIA network pickle"):
        stylegan3.load(bad)


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("REENACT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("REENACT_OFFLINE", raising=False)
    return tmp_path / "cache"


def test_known_name_offline_says_what_to_fetch(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(sgio.urllib.request, "urlopen", no_network)
    with pytest.raises(stylegan3.WeightsNotFoundError) as err:
        stylegan3.load("stylegan3-r-ffhq-1024x1024")
    message = str(err.value)
    assert stylegan3.KNOWN_MODELS["stylegan3-r-ffhq-1024x1024"] in message
    assert str(cache / "stylegan" / "stylegan3-r-ffhq-1024x1024.pkl") in message
    assert "download failed" in message
    assert not list(cache.rglob("*.part")), "a failed download left a partial file"
    monkeypatch.setenv("REENACT_OFFLINE", "1")
    with pytest.raises(stylegan3.WeightsNotFoundError, match="REENACT_OFFLINE"):
        stylegan3.load("stylegan2-ffhq-1024x1024")


def test_known_name_downloads_once_then_uses_the_cache(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_urlopen(url, timeout=None):
        calls.append(url)
        return io.BytesIO((FIXTURES / "sg3r_64.pkl").read_bytes())

    monkeypatch.setattr(sgio.urllib.request, "urlopen", fake_urlopen)
    G = stylegan3.load("stylegan3-t-ffhq-1024x1024")
    assert calls == [stylegan3.KNOWN_MODELS["stylegan3-t-ffhq-1024x1024"]]
    assert (cache / "stylegan" / "stylegan3-t-ffhq-1024x1024.pkl").is_file()
    G2 = stylegan3.load("stylegan3-t-ffhq-1024x1024.pkl")
    assert len(calls) == 1
    assert G.num_ws == G2.num_ws


def test_directly_built_network_round_trips(tmp_path: Path) -> None:
    torch.manual_seed(0)
    G = stylegan3.StyleGAN3Generator(
        z_dim=16, c_dim=0, w_dim=16, img_resolution=32, img_channels=3, channel_base=256, channel_max=16
    ).eval()
    stylegan3.save(G, tmp_path / "net")
    G2 = stylegan3.load(tmp_path / "net")
    ws = torch.randn(1, G.num_ws, 16)
    with torch.no_grad():
        assert torch.equal(G.synthesis(ws), G2.synthesis(ws))
