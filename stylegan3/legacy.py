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
import os
import pickle
import pickletools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle refers to a global outside the allow-list, or holds a structure too deep or too large to build."""


# Limits of what a network pickle may hold, checked on its opcodes before anything is built. NVIDIA's pickles nest
# about 20 deep and hold some 10^5 values; a few KB of shared references can stand for 10^9 values (a "billion
# laughs"), which hashing, copying or printing would expand.
MAX_PICKLE_DEPTH = 200  # containers inside containers
MAX_PICKLE_VALUES = 10_000_000  # values an object holds with every shared reference written out
MAX_KWARGS_DEPTH = 16  # the constructor arguments (``_init_kwargs``): NVIDIA's nest 3 deep
MAX_KWARGS_VALUES = 10_000  # values in the constructor arguments (NVIDIA's: some 20)
MAX_MODULE_DEPTH = 64  # sub-modules inside sub-modules (NVIDIA's generators: 4)


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


class _Node:
    """What the opcode scan knows of an object on the pickle's stack: how many values it holds when every shared
    reference is written out, and how deep its containers nest. Shared (memo) references are the same node."""

    __slots__ = ("values", "depth")

    def __init__(self, values: int = 1, depth: int = 0) -> None:
        self.values, self.depth = values, depth

    def add(self, children: list[_Node]) -> _Node:
        if children:
            self.values += sum(c.values for c in children)
            self.depth = max(self.depth, 1 + max(c.depth for c in children))
        if self.values > MAX_PICKLE_VALUES:
            raise UnsafePickleError(
                f"refused: an object would hold more than {MAX_PICKLE_VALUES:,} values once its shared references "
                "are expanded (a 'billion laughs' structure)"
            )
        if self.depth > MAX_PICKLE_DEPTH:
            raise UnsafePickleError(f"refused: containers nest deeper than {MAX_PICKLE_DEPTH} levels")
        return self


_MARK = object()
_IN_PLACE = {"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"}  # they add to the object below


def check_structure(file: io.IOBase) -> None:
    """Refuse (UnsafePickleError) a pickle whose objects nest deeper than ``MAX_PICKLE_DEPTH`` or would hold more
    than ``MAX_PICKLE_VALUES`` values with their shared references expanded, from its opcodes alone: nothing is
    built, hashed or called. A malformed stream is left to the unpickler to report."""
    stack: list[Any] = []
    memo: dict[Any, _Node] = {}
    try:
        for op, arg, _ in pickletools.genops(file):
            name = op.name
            if name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
                if stack and stack[-1] is not _MARK:
                    memo[len(memo) if name == "MEMOIZE" else arg] = stack[-1]
                continue
            if name in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo.get(arg) or _Node())
                continue
            before = [s.name for s in op.stack_before]
            popped: list[Any] = []
            if "stackslice" in before:
                while stack and stack[-1] is not _MARK:
                    popped.append(stack.pop())
                if stack:
                    stack.pop()
                below = before.index("mark")
            else:
                below = len(before)
            for _ in range(below):
                popped.append(stack.pop() if stack else _Node())
            popped.reverse()  # bottom first
            children = [c for c in popped if isinstance(c, _Node)]
            if name == "DUP":
                stack += children * 2
            elif name in _IN_PLACE and children:
                stack.append(children[0].add(children[1:]))
            else:
                for kind in op.stack_after:
                    stack.append(_MARK if kind.name == "mark" else _Node().add(children))
    except UnsafePickleError:
        raise
    except Exception:  # a malformed stream: the unpickler says what is wrong with it
        return


def read_pickle(file: str | os.PathLike | io.IOBase) -> Any:
    """Unpickle ``file`` with the allow-list; persistent objects come back as PersistentRecord.

    The opcodes are scanned first (``check_structure``): a structure too deep or too large is refused before any
    object is built."""
    if isinstance(file, (str, bytes)) or hasattr(file, "__fspath__"):
        with open(file, "rb") as f:
            return read_pickle(f)
    start = file.tell()
    check_structure(file)
    file.seek(start)
    return _RestrictedUnpickler(file).load()


def record_state_dict(record: PersistentRecord, prefix: str = "") -> dict[str, torch.Tensor]:
    """Flatten a record tree into a state dict (persistent parameters and buffers).

    Refused (UnpicklingError): a parameter or buffer that is not a tensor, a sub-module that appears twice in the
    tree (shared) or sub-modules nested deeper than ``MAX_MODULE_DEPTH``."""
    out: dict[str, torch.Tensor] = {}
    _collect_state(record, prefix, out, set(), 0)
    return out


def _collect_state(record: PersistentRecord, prefix: str, out: dict, seen: set[int], depth: int) -> None:
    if depth > MAX_MODULE_DEPTH:
        raise pickle.UnpicklingError(f"sub-modules nest deeper than {MAX_MODULE_DEPTH} levels at {prefix!r}")
    if id(record) in seen:
        raise pickle.UnpicklingError(f"sub-module {prefix.rstrip('.')} appears twice in the network (shared)")
    seen.add(id(record))
    state = record.state
    skip = state.get("_non_persistent_buffers_set", ())
    for group in ("_parameters", "_buffers"):
        entries = state.get(group, {})
        if not isinstance(entries, dict):
            raise pickle.UnpicklingError(f"{prefix}{group} is a {type(entries).__name__}, not a dict")
        for key, value in entries.items():
            if value is None or (group == "_buffers" and key in skip):
                continue
            if not isinstance(value, torch.Tensor):
                raise pickle.UnpicklingError(f"{prefix}{key} is a {type(value).__name__}, not a tensor")
            out[prefix + str(key)] = value.detach()
    modules = state.get("_modules", {})
    if not isinstance(modules, dict):
        raise pickle.UnpicklingError(f"{prefix}_modules is a {type(modules).__name__}, not a dict")
    for key, child in modules.items():
        if child is None:
            continue
        if not isinstance(child, PersistentRecord):
            raise pickle.UnpicklingError(f"sub-module {prefix}{key} is not a persistent network object")
        _collect_state(child, f"{prefix}{key}.", out, seen, depth + 1)


def record_init_kwargs(record: PersistentRecord) -> dict:
    """Constructor arguments of a persistent object as keyword arguments (plain types).

    Arguments nested deeper than ``MAX_KWARGS_DEPTH`` or holding more than ``MAX_KWARGS_VALUES`` values (shared
    references counted each time) raise UnpicklingError: they are refused, not copied."""
    budget = [MAX_KWARGS_VALUES]
    init_kwargs = record.state.get("_init_kwargs", {})
    if not isinstance(init_kwargs, dict):
        raise pickle.UnpicklingError(f"_init_kwargs is a {type(init_kwargs).__name__}, not a dict")
    kwargs = _plain(init_kwargs, budget, 0)
    args = record.state.get("_init_args", ())
    if not isinstance(args, (list, tuple)):
        raise pickle.UnpicklingError(f"_init_args is a {type(args).__name__}, not a tuple")
    names = ["z_dim", "c_dim", "w_dim", "img_resolution", "img_channels"]
    for name, value in zip(names, args):
        kwargs[name] = _plain(value, budget, 0)
    return kwargs


def _plain(value: Any, budget: list[int], depth: int) -> Any:
    """``value`` with dicts, lists and numpy scalars as plain Python; ``budget[0]``: values still allowed."""
    budget[0] -= 1
    if budget[0] < 0:
        raise pickle.UnpicklingError(
            f"_init_kwargs hold more than {MAX_KWARGS_VALUES:,} values (shared references expanded): refused"
        )
    if depth > MAX_KWARGS_DEPTH:
        raise pickle.UnpicklingError(f"_init_kwargs nest deeper than {MAX_KWARGS_DEPTH} levels: refused")
    if isinstance(value, dict):
        return {_plain_key(k): _plain(v, budget, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, budget, depth + 1) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _plain_key(key: Any) -> str:
    if not isinstance(key, (str, int, float, bool)) or (isinstance(key, int) and key.bit_length() > 64):
        raise pickle.UnpicklingError(f"_init_kwargs has a key of type {type(key).__name__}: refused")
    return str(key)
