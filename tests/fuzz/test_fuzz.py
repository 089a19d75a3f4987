"""The fuzz suite: hostile and absurd input for every reader of user files, each case run by a worker process
under a time and memory cap (``harness.py``). The one property: every case is ``loaded`` or ``refused`` with one
line naming the file (or the config key), status 1 from a script; never a traceback, a hang or a crash.

Hypothesis (not Atheris): the inputs are structured (pickles in NVIDIA's layout, JSON and YAML configs, manifest
records, command lines) as much as they are bytes, Hypothesis's strategies describe both, shrink a failure to a
minimal input and run under pytest on any Python; Atheris needs a libFuzzer build and has no structured inputs.

Quick mode (``make test``): a fixed set of examples per target. Long mode: ``make fuzz`` (docs/testing.md).
"""

from __future__ import annotations

import dataclasses
import io
import json
import pickle
import struct
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import FIXTURES, REPO
from harness import MODE, Worker, check, examples, report, write_report
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

import stylegan3
from stylegan3 import legacy

GENERATOR_FIXTURE = "sg3t_1024_thin"  # the smallest NVIDIA pickle (200 KB)


# ---------------------------------------------------------------------------------------------------- the worker


@pytest.fixture(scope="module")
def worker():
    start = time.monotonic()
    w = Worker()
    yield w
    w.close()
    print("\nfuzz " + MODE + " mode:\n" + report())
    out = REPO / "out" / "fuzz"
    if MODE == "long":
        out.mkdir(parents=True, exist_ok=True)
        write_report(out / "last_run.json", time.monotonic() - start)


def run(worker: Worker, target: str, payload: dict, label: str, case: str) -> None:
    check(worker.run(target, payload, label), f"{label} {case}")


# -------------------------------------------------------------------------------------------- generic mutations

EDITS = ("flip", "set", "delete", "insert", "truncate", "repeat")


@st.composite
def mutated(draw, data: bytes, head: int = 64) -> bytes:
    """``data`` with 1 to 6 edits: bits flipped, bytes set, deleted, inserted or repeated, or the end cut off;
    ``head`` bytes at the start (headers) are hit as often as the rest."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(EDITS))
        n = len(out)
        if n == 0:
            out += draw(st.binary(min_size=1, max_size=8))
            continue
        span = min(n, head) if draw(st.booleans()) else n
        i = draw(st.integers(0, span - 1))
        if kind == "flip":
            out[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            blob = draw(st.sampled_from([b"\x00", b"\xff", b"\x7f\xff\xff\xff", b"\xff\xff\xff\xff\xff\xff\xff\x7f"]))
            out[i : i + len(blob)] = blob
        elif kind == "delete":
            del out[i : i + draw(st.integers(1, 64))]
        elif kind == "insert":
            out[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "truncate":
            del out[i:]
        else:
            out[i:i] = out[i : i + draw(st.integers(1, 64))] * draw(st.integers(1, 8))
    return bytes(out)


BIG = [0, -1, 1, 2**31, -(2**31), 2**63, 10**400, 1073741824]
FLOATS = [float("nan"), float("inf"), float("-inf"), 1e308, -0.0, 1e-320, 0.5]
leaf = st.one_of(
    st.sampled_from(BIG),
    st.integers(-(2**40), 2**40),
    st.sampled_from(FLOATS),
    st.floats(),
    st.text(max_size=12),
    st.none(),
    st.booleans(),
)
hostile = st.recursive(
    leaf, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4), max_leaves=8
)


def deep_list(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


def laughs(depth: int, width: int) -> list:
    """``width ** depth`` values in ``depth`` shared lists: a "billion laughs"."""
    value: list = [0]
    for _ in range(depth):
        value = [value] * width
    return value


# Values too large to print are drawn as their recipe and built in the test (a failure prints the recipe).
recipes = st.one_of(
    st.tuples(st.just("deep"), st.integers(20, 100)),
    st.tuples(st.just("laughs"), st.integers(10, 40), st.integers(2, 10)),
    st.tuples(st.just("huge-int"), st.integers(4301, 6000)),
)
json_recipes = st.one_of(
    st.tuples(st.just("deep"), st.integers(20, 3000)), st.tuples(st.just("huge-int"), st.integers(4301, 6000))
)


def cook(recipe: tuple):
    """The value of a recipe: a list nested ``n`` deep, ``w ** d`` values in ``d`` shared lists, a ``n``-digit int."""
    if recipe[0] == "deep":
        return deep_list(recipe[1])
    if recipe[0] == "laughs":
        return laughs(recipe[1], recipe[2])
    sys.set_int_max_str_digits(0)  # restored by restore_int_digits
    return int("9" * recipe[1])


def restore_int_digits() -> None:
    sys.set_int_max_str_digits(4300)


# --------------------------------------------------------------------------------------------- NVIDIA pickles


class _Call:
    """Pickles as ``func(*args)``."""

    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _persistence() -> types.FunctionType:
    """A stand-in ``torch_utils.persistence._reconstruct_persistent_obj``, so that pickles in NVIDIA's layout can be
    written; the loader maps the name to its own function and never calls this one."""
    module = sys.modules.get("torch_utils.persistence") or types.ModuleType("torch_utils.persistence")
    if not hasattr(module, "_reconstruct_persistent_obj"):

        def _reconstruct_persistent_obj(meta):
            raise AssertionError("never called")

        _reconstruct_persistent_obj.__module__ = module.__name__
        _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
        module._reconstruct_persistent_obj = _reconstruct_persistent_obj
        sys.modules.setdefault("torch_utils", types.ModuleType("torch_utils"))
        sys.modules[module.__name__] = module
    return module._reconstruct_persistent_obj


def _pickleable(record: legacy.PersistentRecord) -> _Call:
    state = dict(record.state)
    state["_modules"] = {k: _pickleable(v) if v is not None else None for k, v in state["_modules"].items()}
    meta = {"type": "class", "version": 6, "module_src": "", "class_name": record.class_name, "state": state}
    return _Call(_persistence(), meta)


class Inputs(types.SimpleNamespace):
    """A module fixture's base inputs, printed short when Hypothesis reports a failing case."""

    def __repr__(self) -> str:
        return f"<{', '.join(vars(self))}>"


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def nvidia():
    """The fixture's bytes, its G_ema record, its module paths and parameter names."""
    data = (FIXTURES / f"{GENERATOR_FIXTURE}.pkl").read_bytes()
    record = legacy.read_pickle(io.BytesIO(data))["G_ema"]
    record.state["_init_kwargs"] = _plain(record.state["_init_kwargs"])
    params = sorted(legacy.record_state_dict(record))
    return Inputs(data=data, record=record, params=params)


def _edited_pickle(record: legacy.PersistentRecord, edit) -> bytes:
    """The record with one edit applied to a copy of the states it touches, pickled in NVIDIA's layout."""
    import copy

    clone = copy.copy(record)
    clone.state = dict(record.state)
    edit(clone)
    return pickle.dumps({"G_ema": _pickleable(clone)}, protocol=4)


KWARG_KEYS = ["z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "channel_base", "channel_max",
              "num_layers", "num_critical", "margin_size", "first_cutoff", "conv_kernel", "filter_size",
              "lrelu_upsampling", "magnitude_ema_beta", "conv_clamp", "output_scale", "num_fp16_res",
              "mapping_kwargs", "mapping_kwargs.num_layers", "mapping_kwargs.layer_features",
              "synthesis_kwargs"]  # fmt: skip


def _set_kwarg(clone: legacy.PersistentRecord, key: str, value) -> None:
    kwargs = dict(clone.state["_init_kwargs"])
    head, _, sub = key.partition(".")
    if sub:
        kwargs[head] = {**(kwargs.get(head) or {}), sub: value}
    else:
        kwargs[head] = value
    clone.state["_init_kwargs"] = kwargs


def _hostile_tensor(kind: str, like: torch.Tensor):
    return {
        "str": "weights",
        "int": 7,
        "none-module": None,
        "ndarray": np.zeros(tuple(like.shape), np.float32),
        "complex": torch.zeros(like.shape, dtype=torch.complex64),
        "nan": torch.full(like.shape, float("nan")),
        "inf": torch.full(like.shape, float("inf")),
        "shape": torch.zeros((*like.shape, 2)),
        "scalar": torch.zeros(()),
        "int-tensor": torch.zeros(like.shape, dtype=torch.int64),
        "half": torch.zeros(like.shape, dtype=torch.float16),
        "huge-view": torch.zeros(()).expand(1 << 20, 1 << 20),
    }[kind]


def _set_param(record: legacy.PersistentRecord, name: str, kind: str) -> None:
    """Replace parameter ``name`` (dotted) of the record tree, copying the states on its path."""
    *path, leaf = name.split(".")
    node = record
    for part in path:
        modules = dict(node.state["_modules"])
        import copy

        child = copy.copy(modules[part])
        child.state = dict(child.state)
        modules[part] = child
        node.state["_modules"] = modules
        node = child
    group = "_parameters" if leaf in node.state["_parameters"] else "_buffers"
    entries = dict(node.state[group])
    entries[leaf] = _hostile_tensor(kind, entries[leaf])
    node.state[group] = entries


TENSOR_KINDS = ["str", "int", "ndarray", "complex", "nan", "inf", "shape", "scalar", "int-tensor", "half",
                "huge-view"]  # fmt: skip


def _opcode_program(kind: str, n: int, width: int) -> bytes:
    """Hostile pickles written opcode by opcode: ``{"G_ema": X}`` with X nested ``n`` deep, or a chain of ``n``
    shared containers of ``width`` references each (lists, tuples, frozensets of tuples: hashing expands them)."""
    head = b"\x80\x04}\x94\x8c\x05G_ema\x94"
    if kind == "deep-list":
        body = b"(" * n + b"]" + b"l" * n
    elif kind == "deep-dict":
        body = b"}" + b"\x8c\x01k}" * n + b"s" * n  # {"k": {"k": ...}}
    else:
        get = lambda m: b"h" + bytes([m]) if m < 256 else b"j" + struct.pack("<I", m)  # noqa: E731
        body = (b"]" if kind == "laughs-list" else b")") + b"\x940"  # memo 2 (0: the dict, 1: "G_ema"), popped
        for i in range(2, n + 2):  # memo i + 1 holds ``width`` references to memo i
            body += b"(" + get(i) * width + (b"l" if kind == "laughs-list" else b"t") + b"\x940"
        body += b"(" + get(n + 2) + b"\x91" if kind == "laughs-frozenset" else get(n + 2)
    return head + body + b"s."


@given(data=st.data())
@examples(quick=6)
def test_pickle_bytes(worker, nvidia, data):
    """NVIDIA's pickle with bytes flipped, cut, inserted or repeated."""
    blob = data.draw(mutated(nvidia.data, head=256))
    run(worker, "generator", {"files": {"G.pkl": blob}, "path": "G.pkl"}, "pickle: bytes", f"{len(blob)} bytes")


@given(key=st.sampled_from(KWARG_KEYS) | st.text(max_size=8), value=hostile, recipe=st.none() | recipes)
@examples(quick=8)
def test_pickle_init_kwargs(worker, nvidia, key, value, recipe):
    """One constructor argument of the generator replaced by a hostile value (sizes, NaN, strings, deep or
    shared structures, huge integers)."""
    if recipe is not None:
        value = cook(recipe)
    try:
        blob = _edited_pickle(nvidia.record, lambda r: _set_kwarg(r, key, value))
    finally:
        restore_int_digits()
    value = recipe or value
    run(
        worker, "generator", {"files": {"G.pkl": blob}, "path": "G.pkl"}, "pickle: _init_kwargs", f"{key}={value!r:.80}"
    )


@given(index=st.integers(0, 10_000), kind=st.sampled_from(TENSOR_KINDS))
@examples(quick=4)
def test_pickle_parameters(worker, nvidia, index, kind):
    """One parameter or buffer replaced by something else: a str, an ndarray, complex, NaN, mis-shaped, a view."""
    name = nvidia.params[index % len(nvidia.params)]
    blob = _edited_pickle(nvidia.record, lambda r: _set_param(r, name, kind))
    run(worker, "generator", {"files": {"G.pkl": blob}, "path": "G.pkl"}, "pickle: parameters", f"{name}={kind}")


@given(
    kind=st.sampled_from(["deep-list", "deep-dict", "laughs-list", "laughs-tuple", "laughs-frozenset"]),
    n=st.integers(1, 100_000),
    width=st.integers(1, 12),
)
@examples(quick=4)
def test_pickle_structures(worker, kind, n, width):
    """Pickles written opcode by opcode: nesting up to 100,000 deep, chains of shared references."""
    n = n if kind.startswith("deep") else min(n, 60)
    blob = _opcode_program(kind, n, width)
    run(worker, "generator", {"files": {"G.pkl": blob}, "path": "G.pkl"}, "pickle: structures", f"{kind} {n}x{width}")


# -------------------------------------------------------------------------- our weights, mapper and encoder folders


def _folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.fixture(scope="module")
def folders(tmp_path_factory, nvidia):
    from inversion.encoder import LatentEncoder, save_encoder
    from reenactment.model.mapper import MappingNetwork, save_mapper

    root = tmp_path_factory.mktemp("folders")
    stylegan3.save(stylegan3.load(FIXTURES / f"{GENERATOR_FIXTURE}.pkl"), root / "generator")
    torch.manual_seed(0)
    save_mapper(MappingNetwork(image_size=16, num_ws=2, w_dim=4, channels=(4, 4), hidden=8), root / "mapper")
    encoder = LatentEncoder(num_ws=2, w_dim=4, input_size=16, channels=(4, 4), blocks=1, hidden=8)
    save_encoder(encoder, root / "encoder", generator={}, training={})
    return Inputs(**{name: _folder_bytes(root / name) for name in ("generator", "mapper", "encoder")})


def _json_paths(value, prefix=()) -> list[tuple]:
    paths = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            paths += _json_paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value[:4]):
            paths += _json_paths(v, (*prefix, i))
    return paths


def _json_set(config, path: tuple, value):
    if not path:
        return value
    config = dict(config) if isinstance(config, dict) else list(config)
    config[path[0]] = _json_set(config[path[0]], path[1:], value)
    return config


json_hostile = st.one_of(
    hostile,
    json_recipes,  # cooked by json_text
    st.sampled_from(["", "landmark-reenact/stylegan", "stylegan3", "stylegan2", "dcgan", 2, 1.5, True]),
)


def json_text(value) -> str:
    """JSON of ``value`` with its recipes (tuples: JSON has none) cooked; NaN and Infinity as Python writes them."""

    def cooked(v):
        if isinstance(v, tuple):
            return cook(v)
        if isinstance(v, dict):
            return {k: cooked(x) for k, x in v.items()}
        if isinstance(v, list):
            return [cooked(x) for x in v]
        return v

    try:
        return json.dumps(cooked(value), allow_nan=True)
    except RecursionError:
        return "[" * 5000 + "]" * 5000
    finally:
        restore_int_digits()


@st.composite
def folder_case(draw, files: dict[str, bytes], config_name: str, weights_name: str) -> dict[str, bytes]:
    files = dict(files)
    how = draw(st.sampled_from(["value", "value", "config-bytes", "weights-bytes", "missing"]))
    if how == "value":
        config = json.loads(files[config_name])
        path = draw(st.sampled_from(_json_paths(config)))
        config = _json_set(config, path, draw(json_hostile))
        files[config_name] = json_text(config).encode()
    elif how == "config-bytes":
        files[config_name] = draw(mutated(files[config_name]))
    elif how == "weights-bytes":
        header = 8 + struct.unpack("<Q", files[weights_name][:8])[0]
        files[weights_name] = draw(mutated(files[weights_name], head=header))
    else:
        del files[draw(st.sampled_from([config_name, weights_name]))]
    return files


@given(data=st.data())
@examples(quick=6)
def test_generator_folder(worker, folders, data):
    files = data.draw(folder_case(folders.generator, "generator.json", "generator.safetensors"))
    payload = {"files": {f"generator/{k}": v for k, v in files.items()}, "path": "generator"}
    run(worker, "generator", payload, "folder: generator", str(sorted(files)))


@given(data=st.data())
@examples(quick=3)
def test_mapper_folder(worker, folders, data):
    files = data.draw(folder_case(folders.mapper, "mapper.json", "mapper.safetensors"))
    run(worker, "mapper", {"files": {f"mapper/{k}": v for k, v in files.items()}}, "folder: mapper", "")


@given(data=st.data())
@examples(quick=3)
def test_encoder_folder(worker, folders, data):
    files = data.draw(folder_case(folders.encoder, "encoder.json", "encoder.safetensors"))
    run(worker, "encoder", {"files": {f"encoder/{k}": v for k, v in files.items()}}, "folder: encoder", "")


# ------------------------------------------------------------------------------------------ images and videos


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    from reenactment.media.video import VideoWriter

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    images = {}
    for fmt, kwargs in {"png": {}, "jpg": {"quality": 80}, "gif": {}, "bmp": {}}.items():
        buf = io.BytesIO()
        image = Image.fromarray(pixels)
        (image.convert("P") if fmt == "gif" else image).save(buf, format="jpeg" if fmt == "jpg" else fmt, **kwargs)
        images[fmt] = buf.getvalue()
    buf = io.BytesIO()
    Image.fromarray(pixels[..., 0].astype(np.uint16) * 257).save(buf, format="png")
    images["png16"] = buf.getvalue()
    video = tmp_path_factory.mktemp("video") / "clip.mp4"
    with VideoWriter(video, fps=25, preset="ultrafast") as writer:
        for t in range(6):
            writer.write(np.roll(np.repeat(np.repeat(pixels, 2, 0), 2, 1)[:32, :32], t, axis=1))
    return Inputs(images=images, video=video.read_bytes())


@given(fmt=st.sampled_from(["png", "jpg", "gif", "bmp", "png16"]), data=st.data())
@examples(quick=5)
def test_images(worker, media, fmt, data):
    blob = data.draw(mutated(media.images[fmt], head=48))
    name = f"photo.{'png' if fmt == 'png16' else fmt}"
    run(worker, "image", {"files": {name: blob}, "path": name}, "images", fmt)


@given(data=st.data())
@examples(quick=4)
def test_videos(worker, media, data):
    blob = data.draw(mutated(media.video, head=256))
    run(worker, "video", {"files": {"clip.mp4": blob}, "path": "clip.mp4"}, "videos", f"{len(blob)} bytes")


# ------------------------------------------------------------------------------------ manifests and latent shards


def _record(video: str, frame: int, source: bool) -> dict:
    points = [[100.0 + i, 200.0 + i / 2] for i in range(70)]
    return {"identity": "anna", "video": video, "frame": frame, "image": f"frames/anna/{video}/{frame:06d}.png",
            "landmarks": points, "source_score": 0.5 + frame, "is_source": source}  # fmt: skip


MANIFEST = [_record("v1", 0, True), _record("v1", 1, False), {"identity": "bob", "video": "v2", "frame": None,
            "skipped": "unreadable: no frames"}]  # fmt: skip


@given(data=st.data())
@examples(quick=4)
def test_manifests(worker, data):
    how = data.draw(st.sampled_from(["value", "value", "bytes", "line"]))
    records = [dict(r) for r in MANIFEST]
    if how == "value":
        i = data.draw(st.integers(0, len(records) - 1))
        key = data.draw(st.sampled_from(sorted(records[i])) | st.text(max_size=6))
        records[i][key] = data.draw(json_hostile)
    lines = [json_text(r) for r in records]
    if how == "line":
        lines.insert(data.draw(st.integers(0, len(lines))), data.draw(st.sampled_from(["[]", "1", '"x"', "null",
                     "{", "\udcff".encode("utf-8", "surrogateescape").decode("latin-1"), "[" * 100000])))  # fmt: skip
    blob = "\n".join(lines).encode("utf-8", "surrogateescape")
    if how == "bytes":
        blob = data.draw(mutated(blob))
    run(worker, "manifest", {"files": {"manifest.jsonl": blob}}, "manifests", how)


@pytest.fixture(scope="module")
def shard():
    buf = io.BytesIO()
    w = np.random.default_rng(0).standard_normal((3, 2, 4)).astype(np.float32)
    np.savez(buf, ids=np.array(["v1/000000", "v1/000001", "v1/000002"]), w=w, steps=np.array([5, 5, 5]))
    return buf.getvalue()


@given(data=st.data())
@examples(quick=4)
def test_latent_shards(worker, shard, data):
    how = data.draw(st.sampled_from(["bytes", "arrays"]))
    if how == "bytes":
        blob = data.draw(mutated(shard, head=128))
    else:
        arrays = {"ids": np.array(["a", "b"]), "w": np.zeros((2, 2, 4), np.float32)}
        name = data.draw(st.sampled_from(["ids", "w", "extra"]))
        arrays[name] = data.draw(st.sampled_from([
            np.array([1, 2]), np.zeros((2, 2, 4), np.complex64), np.full((2, 2, 4), np.nan, np.float32),
            np.zeros((3,), np.float32), np.array(["x"] * 2, dtype=object), np.zeros((2, 2, 4), np.float64),
            np.zeros((0,)), np.array("scalar")]))  # fmt: skip
        if name == "w" or name == "ids":
            buf = io.BytesIO()
            np.savez(buf, **arrays)
            blob = buf.getvalue()
        else:
            blob = shard
    run(worker, "shards", {"files": {"latents/shard_00000.npz": blob}}, "latent shards", how)


# --------------------------------------------------------------------------------- configs: YAML and key=value

SCRIPTS = {  # script -> its config class
    "generate": "GenerateConfig",
    "invert": "InvertConfig",
    "invert_dataset": "InvertDatasetConfig",
    "prepare_dataset": "PrepareConfig",
    "reenact": "ReenactConfig",
    "evaluate": "EvaluateConfig",
    "convert_pkl": "ConvertConfig",
    "latent_clips": "LatentClipsConfig",
}


@pytest.fixture(scope="module")
def config_keys():
    import importlib

    from stylegan3.config import to_dict

    keys = {}
    for script, cls_name in SCRIPTS.items():
        cls = getattr(importlib.import_module(f"scripts.{script}"), cls_name)
        flat = []
        for key, value in to_dict(cls()).items():
            flat += [f"{key}.{k}" for k in value] if isinstance(value, dict) else [key]
        keys[script] = flat
    keys["train_mapper"] = []
    return keys


YAML_VALUES = ["nan", ".nan", ".inf", "-.inf", "-1", "0", "1e400", "1e999", "10" * 2600, "!!python/object:os.system",
               "!!python/object/apply:os.system [echo]", "&a [*a, *a]", "[" * 60, "{a: 1}", "[1, 2]", "~", "", "yes",
               "0x10", "'x'", "\"\\u0000\"", "- a", "a: b: c", "*missing", "1_000", "2026-12-07", "? a",
               "(?P<identity>"]  # fmt: skip
key_chars = st.characters(min_codepoint=48, max_codepoint=122) | st.sampled_from("._-")


@given(script=st.sampled_from(sorted(SCRIPTS)), data=st.data())
@examples(quick=6)
def test_key_value(worker, config_keys, script, data):
    """``key=value`` on the command line of every script: parsed and checked, or refused naming the key."""
    key = data.draw(st.sampled_from(config_keys[script]) | st.text(key_chars, min_size=1, max_size=10))
    value = data.draw(st.sampled_from(YAML_VALUES) | st.text(max_size=20))
    name = key.partition("=")[0].strip() or "config key"  # what the refusal must name
    payload = {"script": script, "config": SCRIPTS[script], "argv": [f"{key}={value}"], "names": [name],
               "parse_only": True}  # fmt: skip
    run(worker, "cli", payload, "config: key=value", f"{script} {key}={value!r:.60}")


def _alias_bomb(depth: int) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, depth)]
    return "\n".join(lines) + "\n"


@given(script=st.sampled_from(sorted(SCRIPTS)), data=st.data())
@examples(quick=6)
def test_config_file(worker, config_keys, script, data):
    """``--config FILE``: YAML of hostile values, alias bombs, deep nesting, tags, bytes that are not UTF-8."""
    how = data.draw(st.sampled_from(["values", "values", "bytes", "bomb", "deep", "tag", "latin1"]))
    shipped = (
        (REPO / "configs" / f"{script}.yaml").read_bytes()
        if (REPO / "configs" / f"{script}.yaml").is_file()
        else b"{}\n"
    )
    if how == "values":
        keys = data.draw(st.lists(st.sampled_from(config_keys[script]) | st.text(key_chars, max_size=8), min_size=1,
                                  max_size=3))  # fmt: skip
        doc = {k: data.draw(hostile | st.sampled_from(YAML_VALUES)) for k in keys}
        try:
            sys.set_int_max_str_digits(0)
            text = yaml.safe_dump(doc).encode()
        finally:
            sys.set_int_max_str_digits(4300)
    elif how == "bytes":
        text = data.draw(mutated(shipped))
    elif how == "bomb":
        key = data.draw(st.sampled_from(config_keys[script]))
        text = (_alias_bomb(data.draw(st.integers(2, 12))) + f"{key}: *a1\n").encode()
    elif how == "deep":
        n = data.draw(st.integers(40, 20_000))
        text = (f"{config_keys[script][0]}: " + "[" * n + "]" * n + "\n").encode()
    elif how == "tag":
        text = b"steps: !!python/object/apply:os.system ['echo pwned']\n"
    else:
        text = shipped + "# caf\u00e9\n".encode("latin-1")
    payload = {"script": script, "config": SCRIPTS[script], "argv": ["--config", "{work}/c.yaml"],
               "names": ["{work}/c.yaml"], "parse_only": True, "files": {"c.yaml": text}}  # fmt: skip
    run(worker, "cli", payload, "config: --config", f"{script} {how}")


GENERATE_VALUES = {
    "seeds": ["5-1", "0-99999999999", "-1", "1,,2", "4294967295", "4294967296", "x", "1-2-3", "0", "3-3"],
    "truncation_psi": ["nan", "inf", "-1", "0.5", "1e300", "x"],
    "truncation_cutoff": ["-1", "0", "3", "1000", "nan", "null"],
    "noise_mode": ["bogus", "const", "random", "none", ""],
    "batch_size": ["0", "-1", "1", "3", "1e9", "2.5"],
    "random_plan": ["t", "r", "sg2", "x", ""],
    "random_resolution": ["0", "3", "5", "16", "17", "1073741824", "1e400", "-16", "nan"],
    "grid": ["true", "false", "2", "maybe"],
    "out": ["", "{work}/o2"],
}


@given(pairs=st.dictionaries(st.sampled_from(sorted(GENERATE_VALUES)), st.just(None), min_size=1, max_size=3),
       data=st.data())  # fmt: skip
@examples(quick=3)
def test_generate_runs(worker, pairs, data):
    """generate.py run through, untrained 16 px networks: hostile values refused before any work, the rest runs.
    A valid case makes one image (a StyleGAN3 at 16 px takes seconds per image on one busy core: more would read as
    a hang to the time cap)."""
    argv = ["network=random", "random_resolution=16", "seeds=0", "out={work}/o"]
    for key in pairs:
        argv.append(f"{key}={data.draw(st.sampled_from(GENERATE_VALUES[key]))}")
    payload = {"script": "generate", "argv": argv, "names": list(pairs), "expect_files": []}
    run(worker, "cli", payload, "script: generate.py", " ".join(argv[4:]))


@pytest.mark.parametrize(
    "what, kind",
    [
        ("hang", "timeout"),
        ("allocate", "crash"),
        ("die", "died"),
        ("two-lines", "bad-message"),
        ("anon", "bad-message"),
    ],
)
def test_the_harness_reports_what_breaks_the_property(bare_worker, what, kind):
    """The property can fail: a hang, an allocation past the memory cap, a dying worker, a refusal on two lines
    and one naming no file are each reported as such, and the worker is back for the next case."""
    outcome = bare_worker.run("selftest", {"what": what}, "harness self-check", timeout=1.0)
    assert outcome.kind == kind, outcome
    assert not check_passes(outcome)
    assert bare_worker.run("selftest", {"what": "anon"}, "harness self-check").kind == "bad-message"


def check_passes(outcome) -> bool:
    try:
        check(outcome, "self-check")
    except AssertionError:
        return False
    return True


@pytest.fixture(scope="module")
def bare_worker():
    w = Worker(bare=True)
    yield w
    w.close()


def test_dataclass_limits_hold_their_defaults():
    """Every script's defaults lie within its LIMITS (a limit that refused a default would refuse every run)."""
    import importlib

    from stylegan3.config import check_limit, visible_fields

    for script, cls_name in SCRIPTS.items():
        cls = getattr(importlib.import_module(f"scripts.{script}"), cls_name)
        cfg = cls()
        for key, (path, _) in visible_fields(cls).items():
            owner = cfg
            for name in path:
                owner = getattr(owner, name)
            limit = getattr(type(owner), "LIMITS", {}).get(key)
            value = getattr(owner, key)
            if limit is not None and value not in (None, ""):
                check_limit(key, value, limit)
            if dataclasses.is_dataclass(value):
                for f in dataclasses.fields(value):
                    sub = getattr(type(value), "LIMITS", {}).get(f.name)
                    if sub is not None:
                        check_limit(f"{key}.{f.name}", getattr(value, f.name), sub)
