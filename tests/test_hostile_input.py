"""The 15 findings of the fuzz campaign of 2026-12-07 (issue 34), each with its minimal input: hostile weights files
and configs are refused in one line naming the file or key (status 1 from a script), before anything is built,
allocated or written; nothing hangs. The fuzz suite that looks for more is tests/fuzz/."""

from __future__ import annotations

import json
import os
import pickle
import time
from pathlib import Path

import pytest
import torch
from conftest import FIXTURES, run_script
from safetensors.torch import load_file, save_file
from test_bad_input import error_line
from test_loading import _fake_persistent_module, _to_pickleable

import stylegan3
from stylegan3 import legacy

FIXTURE = FIXTURES / "sg3t_1024_thin.pkl"  # the smallest NVIDIA pickle


def nvidia_pickle(path: Path, edit) -> Path:
    """The fixture's G_ema in NVIDIA's layout after ``edit(meta_state)``."""
    fn = _fake_persistent_module()._reconstruct_persistent_obj
    obj = _to_pickleable(legacy.read_pickle(FIXTURE)["G_ema"], fn)
    edit(obj.args[0]["state"])
    path.write_bytes(pickle.dumps({"G_ema": obj}))
    return path


def with_kwarg(key: str, value):
    def edit(state: dict) -> None:
        kwargs = dict(state["_init_kwargs"])
        head, _, sub = key.partition(".")
        kwargs[head] = {**kwargs.get(head, {}), sub: value} if sub else value
        state["_init_kwargs"] = kwargs

    return edit


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """The fixture in our format (generator.json + generator.safetensors)."""
    out = tmp_path_factory.mktemp("folder") / "G"
    stylegan3.save(stylegan3.load(FIXTURE), out)
    return out


def edited_folder(folder: Path, tmp_path: Path, edit_config=None, edit_weights=None) -> Path:
    out = tmp_path / "G"
    out.mkdir()
    config = json.loads((folder / "generator.json").read_text())
    text = edit_config(config) if edit_config else None
    (out / "generator.json").write_text(text if isinstance(text, str) else json.dumps(config))
    state = load_file(str(folder / "generator.safetensors"))
    if edit_weights:
        edit_weights(state)
    save_file(state, str(out / "generator.safetensors"))
    return out


def refused(path: Path, *words: str) -> str:
    """stylegan3.load(path) raises WeightsFileError naming ``path`` and ``words``, in one line, within 10 s."""
    start = time.monotonic()
    with pytest.raises(stylegan3.WeightsFileError) as info:
        stylegan3.load(path)
    message = str(info.value)
    assert time.monotonic() - start < 10, "took too long: expanded or built?"
    assert "\n" not in message and str(path) in message and len(message) < 1000, message
    assert all(w in message for w in words), message
    return message


# 1. _init_kwargs nested deeply: RecursionError from _plain.
def test_finding_01_deeply_nested_init_kwargs(tmp_path):
    deep: list = []
    for _ in range(100):
        deep = [deep]
    refused(nvidia_pickle(tmp_path / "G.pkl", with_kwarg("mapping_kwargs", {"num_layers": deep})), "deeper than 16")
    raw = tmp_path / "deep.pkl"  # 100,000 deep, opcode by opcode: refused by the scan before unpickling
    raw.write_bytes(b"\x80\x04}\x94\x8c\x05G_ema\x94" + b"(" * 100_000 + b"]" + b"l" * 100_000 + b"s.")
    refused(raw, "deeper than 200 levels")


# 2. Shared references in _init_kwargs ("billion laughs"): _plain copied 10^9 values, convert_pkl.py hung.
def test_finding_02_shared_references_are_refused_unexpanded(tmp_path):
    laughs: list = [0]
    for _ in range(9):
        laughs = [laughs] * 10  # 10^9 values in 9 shared lists
    path = nvidia_pickle(tmp_path / "G.pkl", with_kwarg("extra", laughs))
    assert path.stat().st_size < 250_000
    refused(path, "shared references")
    proc = run_script("convert_pkl", path, tmp_path / "out")
    error_line(proc, str(path), "shared references")
    assert not (tmp_path / "out").exists()


def test_finding_02_hash_bomb_is_refused_from_the_opcodes(tmp_path):
    """A frozenset of 2^60 shared tuples would hash forever while unpickling: the opcode scan refuses it first."""
    body = b")\x94"  # memo 2 (0: the dict, 1: "G_ema")
    for i in range(2, 62):  # memo i + 1: (memo i, memo i)
        body += b"(" + b"h" + bytes([i]) + b"h" + bytes([i]) + b"t\x94"
    path = tmp_path / "bomb.pkl"
    path.write_bytes(b"\x80\x04}\x94\x8c\x05G_ema\x94" + body + b"(h" + bytes([62]) + b"\x91s.")
    refused(path, "billion laughs")


# 3. Hostile sizes built the network before any check (RuntimeError, OverflowError, ZeroDivisionError).
@pytest.mark.parametrize(
    "key, value, words",
    [
        ("z_dim", -1, "z_dim: -1 is out of range"),
        ("channel_max", -512, "channel_max: -512 is out of range"),
        ("w_dim", 1 << 40, "w_dim"),
        ("c_dim", 10**9, "c_dim"),
        ("img_resolution", 0, "img_resolution: 0 is out of range"),
        ("img_resolution", float("inf"), "img_resolution: expected a finite number"),
        ("img_resolution", 2**400, "img_resolution: an integer of 401 bits"),
        ("num_critical", 14, "num_critical must be smaller than num_layers"),
    ],
)
def test_finding_03_hostile_sizes_are_refused_before_building(tmp_path, folder, monkeypatch, key, value, words):
    from stylegan3 import networks_stylegan3

    def never(*args, **kwargs):
        raise AssertionError("the network was being built")

    monkeypatch.setattr(networks_stylegan3.SynthesisNetwork, "__init__", never)
    refused(nvidia_pickle(tmp_path / "G.pkl", with_kwarg(key, value)), words)

    def edit(config):
        config["init_kwargs"][key] = value
        return json.dumps(config).replace("Infinity", "1e400")  # JSON's 1e400 is inf

    refused(edited_folder(folder, tmp_path, edit_config=edit), "generator.json", words)


# 4. mapping_kwargs.num_layers=1000000 in generator.json hung while building.
def test_finding_04_a_million_mapping_layers(tmp_path, folder):
    path = edited_folder(
        folder, tmp_path, edit_config=lambda c: c["init_kwargs"]["mapping_kwargs"].update(num_layers=10**6)
    )
    refused(path, "mapping_kwargs.num_layers: 1000000 is out of range")


# 5. A parameter that is a str in a pickle: AttributeError in load_state_strict.
def test_finding_05_a_parameter_that_is_a_string(tmp_path):
    def edit(state):
        mapping = state["_modules"]["mapping"].args[0]["state"]
        mapping["_buffers"] = {**mapping["_buffers"], "w_avg": "not a tensor"}

    refused(nvidia_pickle(tmp_path / "G.pkl", edit), "w_avg is a str, not a tensor")


# 6. generator.json nested 100,000 deep: RecursionError; an integer of 5,000 digits: the line named no file.
def test_finding_06_json_too_deep_and_huge_integers(tmp_path, folder):
    deep = edited_folder(folder, tmp_path, edit_config=lambda c: "[" * 100_000 + "]" * 100_000)
    refused(deep, "generator.json", "nests too deep")
    (tmp_path / "G").rename(tmp_path / "G_deep")
    huge = edited_folder(
        folder, tmp_path, edit_config=lambda c: json.dumps(c).replace('"z_dim": 64', '"z_dim": ' + "9" * 5000)
    )
    refused(huge, "generator.json", "4300")


# 7. --config not UTF-8: UnicodeDecodeError; YAML 5,000 deep: RecursionError; a YAML alias bomb as a value hung.
def test_finding_07_config_files(tmp_path):
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("seeds: 0  # caf\u00e9\n".encode("latin-1"))
    error_line(run_script("generate", "--config", latin, f"out={tmp_path / 'o'}"), str(latin), "not a UTF-8 text file")
    deep = tmp_path / "deep.yaml"
    deep.write_text("seeds: " + "[" * 5000 + "]" * 5000 + "\n")
    error_line(run_script("generate", "--config", deep, f"out={tmp_path / 'o'}"), str(deep), "nests too deep")
    bomb = tmp_path / "bomb.yaml"
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    bomb.write_text("\n".join(lines) + "\nseeds: *a8\n")
    start = time.monotonic()
    error_line(run_script("generate", "--config", bomb, f"out={tmp_path / 'o'}"), str(bomb), "more than 100,000 values")
    assert time.monotonic() - start < 10
    assert not (tmp_path / "o").exists()


# 8. seeds=5-1: ValueError traceback; seeds=0-99999999999: MemoryError.
@pytest.mark.parametrize(
    "seeds, words",
    [("5-1", "seeds: the range 5-1 runs backwards"), ("0-99999999999", "seeds: 99999999999 is too large"),
     ("0-200000", "asks for 200,001 images")],
)  # fmt: skip
def test_finding_08_seed_lists(tmp_path, seeds, words):
    error_line(run_script("generate", f"seeds={seeds}", f"out={tmp_path / 'o'}"), words)
    assert not (tmp_path / "o").exists()


# 9. noise_mode=bogus: ValueError inside the forward pass, after work started.
def test_finding_09_noise_mode_is_checked_before_any_work(tmp_path):
    error_line(run_script("generate", "noise_mode=bogus", f"out={tmp_path / 'o'}"), "noise_mode", "random, const, none")
    assert not (tmp_path / "o").exists()


# 10. invert.py lr=nan: a traceback from Adam after config.yaml was written; out= wrote into the current folder.
def test_finding_10_invert_checks_its_values_before_writing(tmp_path):
    photo = tmp_path / "face.png"
    error_line(run_script("invert", photo, "lr=nan", f"out={tmp_path / 'o'}"), "lr: expected a finite number")
    error_line(run_script("invert", photo, "lr=0", f"out={tmp_path / 'o'}"), "lr: 0.0 is out of range (above 0")
    assert not (tmp_path / "o").exists()
    error_line(run_script("invert", photo, "out="), "out: may not be empty")


# 11. prepare_dataset.py identity=(?P<identity>: re.error traceback; size=-1: ValueError traceback.
def test_finding_11_prepare_identity_pattern_and_size(tmp_path):
    out = tmp_path / "prepared"
    proc = run_script("prepare_dataset", f"input={tmp_path}", f"output={out}", "identity=(?P<identity>")
    error_line(proc, "identity pattern '(?P<identity>' is not a regular expression")
    error_line(
        run_script("prepare_dataset", f"input={tmp_path}", f"output={out}", "size=-1"), "size: -1 is out of range"
    )
    assert not out.exists()


# 12. network=random random_resolution=1073741824 hung.
def test_finding_12_random_resolution(tmp_path):
    start = time.monotonic()
    proc = run_script("generate", "network=random", "random_resolution=1073741824", f"out={tmp_path / 'o'}")
    error_line(proc, "random_resolution: 1073741824 is out of range (at least 4, at most 4,096)")
    assert time.monotonic() - start < 10


# 13. Refused CLI values exited with status 2 and argparse's usage block; a !!python/object tag: four lines.
def test_finding_13_parse_errors_are_one_line_and_status_1(tmp_path):
    proc = run_script("generate", "--bogus", f"out={tmp_path / 'o'}")
    assert "usage:" not in proc.stderr
    error_line(proc, "unrecognized arguments: --bogus")
    tagged = tmp_path / "tag.yaml"
    tagged.write_text("seeds: !!python/object/apply:os.system ['echo pwned']\n")
    line = error_line(run_script("generate", "--config", tagged), str(tagged), "could not determine a constructor")
    assert "line 1" in line
    error_line(run_script("generate", "truncation_psi=!!python/object:os.system"), "truncation_psi")


# 14. Accepted silently: any format_version; complex64 or NaN weights; NaN truncation_psi and loss.mse; steps=-1;
# fps=0 and NaN in prepare_dataset.py.
@pytest.mark.parametrize("version", [2, 0, "1", None, 1.5, float("nan")])
def test_finding_14_format_version_is_checked(tmp_path, folder, version):
    def edit(config):
        if version is None:
            del config["format_version"]
        else:
            config["format_version"] = version

    refused(edited_folder(folder, tmp_path, edit_config=edit), "generator.json", "format")


@pytest.mark.parametrize("kind", ["complex", "nan", "inf", "int"])
def test_finding_14_weights_with_nan_or_complex_entries(tmp_path, folder, kind):
    key = "synthesis.input.weight"

    def edit(state):
        value = state[key]
        state[key] = {
            "complex": value.to(torch.complex64),
            "nan": value.clone().fill_(float("nan")),
            "inf": value.clone().fill_(float("inf")),
            "int": value.to(torch.int32),
        }[kind]

    refused(edited_folder(folder, tmp_path, edit_weights=edit), "generator.safetensors", key)


def test_finding_14_nan_weights_in_a_pickle(tmp_path):
    def edit(state):
        mapping = state["_modules"]["mapping"].args[0]["state"]
        mapping["_buffers"] = {
            **mapping["_buffers"],
            "w_avg": torch.full_like(mapping["_buffers"]["w_avg"], float("nan")),
        }

    refused(nvidia_pickle(tmp_path / "G.pkl", edit), "mapping.w_avg holds NaN")


@pytest.mark.parametrize(
    "script, args, words",
    [
        ("generate", ["truncation_psi=nan"], "truncation_psi: expected a finite number, got nan"),
        ("invert", ["face.png", "loss.mse=nan"], "loss.mse: expected a finite number"),
        ("invert", ["face.png", "loss.lpips=-1"], "loss.lpips: -1.0 is out of range"),
        ("invert", ["face.png", "steps=-1"], "steps: -1 is out of range"),
        ("prepare_dataset", ["fps=0"], "fps: 0.0 is out of range (above 0"),
        ("prepare_dataset", ["fps=nan"], "fps: expected a finite number"),
        ("prepare_dataset", ["jpeg_quality=101"], "jpeg_quality: 101 is out of range"),
    ],
)
def test_finding_14_nonsense_values(tmp_path, script, args, words):
    out_key = "output" if script == "prepare_dataset" else "out"
    extra = [f"input={tmp_path}"] if script == "prepare_dataset" else []
    error_line(run_script(script, *args, *extra, f"{out_key}={tmp_path / 'o'}"), words)
    assert not (tmp_path / "o").exists()


# 15. generator.safetensors was written with mode 0600 although the atomic writer promises the umask's.
@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_finding_15_weights_files_get_the_umasks_permissions(tmp_path, umask):
    old = os.umask(umask)
    try:
        stylegan3.save(stylegan3.load(FIXTURE), tmp_path / "G")
    finally:
        os.umask(old)
    for name in ("generator.safetensors", "generator.json"):
        assert (tmp_path / "G" / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_what_loads_today_still_loads(folder):
    """NVIDIA's layouts (every shared fixture) and our folder load within the limits (every config in configs/
    against its dataclass, with the LIMITS: tests/test_config.py)."""
    for pkl in sorted(FIXTURES.glob("*.pkl")):
        assert stylegan3.load(pkl).img_resolution > 0
    assert stylegan3.load(folder).img_resolution == 1024


# Found by the fuzz suite's first long run (tests/fuzz), after the 15 above.
def test_fuzz_finding_video_metadata_that_is_not_utf8(tmp_path):
    """An MP4 whose metadata (here the encoder tag) is not UTF-8: PyAV raised UnicodeDecodeError from av.open; the
    video is read (the metadata is not ours to judge)."""
    import numpy as np

    from reenactment.media.video import VideoReader, VideoWriter

    clip = tmp_path / "clip.mp4"
    with VideoWriter(clip, fps=25, preset="ultrafast") as writer:
        for t in range(4):
            writer.write(np.full((32, 32, 3), 40 * t, np.uint8))
    data = clip.read_bytes()
    assert b"Lavf" in data
    clip.write_bytes(data.replace(b"Lavf", b"\xffavf", 1))
    with VideoReader(clip) as reader:
        assert len(list(reader)) == 4


def test_fuzz_finding_a_key_of_dots_is_named_as_given():
    """``.=nan``: the refusal named the key '' (what is left of "." after splitting at the dots)."""
    error_line(run_script("convert_pkl", ".=nan"), "'.'", "unknown config key")


def test_fuzz_finding_a_yaml_integer_of_5000_digits(tmp_path):
    """PyYAML's int() of over 4300 digits raised ValueError (not a YAMLError): a traceback."""
    error_line(run_script("generate", "seeds=" + "1" * 5000, f"out={tmp_path / 'o'}"), "seeds", "4300")
    config = tmp_path / "c.yaml"
    config.write_text("truncation_psi: " + "7" * 5000 + "\n")
    error_line(run_script("generate", "--config", config, f"out={tmp_path / 'o'}"), str(config), "4300")


def test_fuzz_finding_random_resolution_not_a_power_of_two_names_the_users_keys(tmp_path):
    """random_plan=sg2 random_resolution=5 was refused as 'img_resolution: 5 is not a power of two', a key the user
    never typed."""
    proc = run_script("generate", "network=random", "random_plan=sg2", "random_resolution=5", f"out={tmp_path / 'o'}")
    error_line(proc, "random_plan=sg2 random_resolution=5", "not a power of two")
