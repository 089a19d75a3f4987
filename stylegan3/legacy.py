"""Read NVIDIA's network pickles without running any code from them.

NVIDIA's pickles store each network as ``torch_utils.persistence._reconstruct_persistent_obj(meta)``,
where ``meta`` holds the module's Python source (which the official loader ``exec``s), its class
name and its ``__dict__`` (``_init_kwargs``, ``_parameters``, ``_buffers``, ``_modules``). Here a
restricted unpickler resolves only an allow-list of globals, to stand-ins or to functions that
cannot run code; anything else is refused before it is called. The source is never looked at.
"""

from __future__ import annotations

import collections
import copyreg
import io
import pickle
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle refers to a global outside the allow-list."""


class EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict`` (a dict with attribute access)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as err:
            raise AttributeError(name) from err


@dataclass
class PersistentRecord:
    """What a persistent NVIDIA object was: its class name and its ``__dict__``; never executed."""

    class_name: str
    state: dict
    extra: dict = field(default_factory=dict)


def _reconstruct_persistent_obj(meta: dict) -> PersistentRecord:
    if not isinstance(meta, dict) or meta.get("type") != "class" or "state" not in meta:
        raise pickle.UnpicklingError("malformed persistent object in network pickle")
    return PersistentRecord(class_name=str(meta.get("class_name")), state=dict(meta["state"]))


def _load_storage_from_bytes(data: bytes) -> Any:
    """Safe replacement of ``torch.storage._load_from_bytes`` (which loads with weights_only=False)."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


try:  # numpy >= 2 (numpy 1.x may have a partial numpy._core without multiarray)
    from numpy._core import multiarray as _NUMPY_MULTIARRAY
except ImportError:
    from numpy.core import multiarray as _NUMPY_MULTIARRAY

_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("dnnlib", "EasyDict"): EasyDict,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "object"): object,
    ("builtins", "dict"): dict,
    ("copyreg", "_reconstructor"): copyreg._reconstructor,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): np.ndarray,
}
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    for _name in ("_reconstruct", "scalar"):
        _ALLOWED[(_module, _name)] = getattr(_NUMPY_MULTIARRAY, _name)


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refused global '{module}.{name}': not on the allow-list of a network pickle "
                "(this loader never runs code from a weights file)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refused persistent id in network pickle")


def read_pickle(file: str | io.IOBase) -> Any:
    """Unpickle ``file`` with the allow-list; persistent objects come back as PersistentRecord."""
    if isinstance(file, (str, bytes)) or hasattr(file, "__fspath__"):
        with open(file, "rb") as f:
            return _RestrictedUnpickler(f).load()
    return _RestrictedUnpickler(file).load()


def record_state_dict(record: PersistentRecord, prefix: str = "") -> dict[str, torch.Tensor]:
    """Flatten a record tree into a state dict (persistent parameters and buffers)."""
    state = record.state
    out: dict[str, torch.Tensor] = {}
    skip = set(state.get("_non_persistent_buffers_set", ()))
    for key, value in state.get("_parameters", {}).items():
        if value is not None:
            out[prefix + key] = value.detach() if isinstance(value, torch.Tensor) else value
    for key, value in state.get("_buffers", {}).items():
        if value is not None and key not in skip:
            out[prefix + key] = value
    for key, child in state.get("_modules", {}).items():
        if child is None:
            continue
        if not isinstance(child, PersistentRecord):
            raise pickle.UnpicklingError(f"sub-module {prefix + key} is not a persistent network object")
        out.update(record_state_dict(child, prefix + key + "."))
    return out


def record_init_kwargs(record: PersistentRecord) -> dict:
    """Constructor arguments of a persistent object as keyword arguments (plain types)."""
    kwargs = _plain(dict(record.state.get("_init_kwargs", {})))
    args = list(record.state.get("_init_args", ()))
    names = ["z_dim", "c_dim", "w_dim", "img_resolution", "img_channels"]
    for name, value in zip(names, args):
        kwargs[name] = _plain(value)
    return kwargs


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
