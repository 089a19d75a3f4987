"""Typed script configs: dataclass defaults <- YAML file <- ``key=value`` overrides.

Unknown keys and values of the wrong type are errors, and the resolved config is written next to
every output, so a run can be repeated from its folder alone. Nested dataclasses take dotted keys
(``loss.lpips=0``).

Option groups are composed, not copied or inherited: a script config holds the library's option dataclasses as
fields. A group declared with :func:`inline` lends its keys to the config that holds it (``steps=200`` sets
``cfg.inverter.steps``), so one group of options (``TrackingOptions``, ``LossOptions``, ...) is declared once and
reads the same on every command line and in every YAML file and saved ``config.yaml``; an explicit field (no
``inline``) takes dotted keys. Two groups lending the same key to one config is an error.
(A library such as tyro or simple-parsing offers this too; ours is ~150 lines, keeps the YAML layering and the
``key=value`` overrides the README documents, and adds no dependency.)
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")
INLINE = "inline"


def inline(cls: type[T]) -> T:
    """A dataclass field holding an option group whose keys read as the holder's own (see the module docstring)."""
    return dataclasses.field(default_factory=cls, metadata={INLINE: True})


def _is_inline(f: dataclasses.Field) -> bool:
    return bool(f.metadata.get(INLINE))


def visible_fields(cls_or_obj: Any) -> dict[str, tuple[tuple[str, ...], dataclasses.Field]]:
    """The keys a config takes at its top level: ``{key: (path of inline groups to its owner, field)}``, in
    declaration order, inline groups' keys at the place of the group. Raises TypeError on a key given twice."""
    cls = cls_or_obj if isinstance(cls_or_obj, type) else type(cls_or_obj)
    hints = typing.get_type_hints(cls)
    out: dict[str, tuple[tuple[str, ...], dataclasses.Field]] = {}
    for f in dataclasses.fields(cls):
        if _is_inline(f):
            inner = visible_fields(hints[f.name])
            items = {k: ((f.name, *path), g) for k, (path, g) in inner.items()}
        else:
            items = {f.name: ((), f)}
        for key, value in items.items():
            if key in out:
                raise TypeError(f"{cls.__name__}: key {key!r} is given by two option groups")
            out[key] = value
    return out


def to_dict(cfg: Any) -> dict[str, Any]:
    """``dataclasses.asdict`` with inline groups' keys merged into their holder (what a YAML file holds)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if _is_inline(f):
            out.update(to_dict(value))
        elif dataclasses.is_dataclass(value):
            out[f.name] = to_dict(value)
        else:
            out[f.name] = copy.deepcopy(value)
    return out


class ConfigError(ValueError):
    """A config key that does not exist or a value of the wrong type."""


# What one config value (a YAML file's or a key=value's) may hold, checked before it is looked at: a few KB of
# YAML aliases can stand for 10^9 values, and nesting thousands deep overflows any recursive reader.
MAX_VALUE_DEPTH = 32
MAX_VALUE_ITEMS = 100_000  # values, each shared reference counted each time it appears


@dataclasses.dataclass(frozen=True)
class Bounds:
    """The values a number may take: from ``lo`` to ``hi`` (None: no bound); ``above``: ``lo`` itself is refused;
    ``integer``: only ints (for settings that are not type-checked by a dataclass, such as a network's kwargs).

    A config class lists its bounds in ``LIMITS: ClassVar[dict[str, Bounds | tuple[str, ...]]]`` (a tuple: the
    allowed strings), beside its fields; they are checked whenever a YAML file or ``key=value`` sets the key."""

    lo: float | None = None
    hi: float | None = None
    above: bool = False
    integer: bool = False

    def check(self, key: str, value: Any) -> None:
        """ConfigError naming ``key`` unless ``value`` is a finite number within these bounds."""
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if self.integer and not (isinstance(value, int) and not isinstance(value, bool)):
            raise ConfigError(f"{key}: expected an integer, got {_brief(value)}")
        if not number or not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {_brief(value)}")
        low = self.lo is not None and (value <= self.lo if self.above else value < self.lo)
        if low or (self.hi is not None and value > self.hi):
            raise ConfigError(f"{key}: {_brief(value)} is out of range ({self})")
        return None

    def __str__(self) -> str:
        lo = None if self.lo is None else f"{'above' if self.above else 'at least'} {_number(self.lo)}"
        hi = None if self.hi is None else f"at most {_number(self.hi)}"
        return ", ".join(x for x in (lo, hi) if x) or "any number"


NOT_EMPTY = "not empty"  # a LIMITS entry: the text may not be empty (an output folder: "" would be the cwd)


def _number(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() and abs(x) >= 1000 else f"{x:g}"


def check_limit(key: str, value: Any, limit: Bounds | tuple[str, ...] | str) -> None:
    """ConfigError naming ``key`` unless ``value`` is within ``limit``: Bounds, a tuple of allowed strings, or
    NOT_EMPTY."""
    if isinstance(limit, Bounds):
        limit.check(key, value)
    elif limit == NOT_EMPTY:
        if not str(value).strip():
            raise ConfigError(f"{key}: may not be empty")
    elif value not in limit:
        raise ConfigError(f"{key}: {_brief(value)} is not one of {', '.join(limit)}")


MAX_SETTING_DEPTH = 3  # a network's kwargs: mapping_kwargs is one level down


def check_settings(settings: dict, limits: dict[str, Bounds | tuple[str, ...] | str], max_items: int = 64) -> None:
    """A network's constructor arguments (read from a weights file) before anything is built: every number finite
    and at most 32 bits, every list or dict at most ``max_items`` long, strings short, nothing nested deeper than
    ``MAX_SETTING_DEPTH``, and each key of ``limits`` within its limit (``a.b``: key b of the mapping a; ``a[]``:
    every item of the list a; a missing or None value is left to the constructor). ConfigError naming the key."""
    if not isinstance(settings, dict):
        raise ConfigError(f"expected a mapping of settings, got {type(settings).__name__}")
    _check_plain(settings, "", 0, max_items)
    for key, limit in limits.items():
        head, _, sub = key.partition(".")
        value = settings.get(head.removesuffix("[]"))
        if sub:
            if value is not None and not isinstance(value, dict):
                raise ConfigError(f"{head}: expected a mapping, got {type(value).__name__}")
            value = (value or {}).get(sub)
        if value is None:
            continue
        if head.endswith("[]"):
            if not isinstance(value, (list, tuple)):
                raise ConfigError(f"{head[:-2]}: expected a list, got {type(value).__name__}")
            for i, item in enumerate(value):
                check_limit(f"{head[:-2]}[{i}]", item, limit)
        else:
            check_limit(key, value, limit)


def _check_plain(value: Any, key: str, depth: int, max_items: int) -> None:
    if depth > MAX_SETTING_DEPTH:
        raise ConfigError(f"{key}: nests deeper than {MAX_SETTING_DEPTH} levels")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}: expected a finite number, got {value}")
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 32:
        raise ConfigError(f"{key}: an integer of {value.bit_length()} bits is out of range")
    if isinstance(value, str) and len(value) > 64:
        raise ConfigError(f"{key}: a string of {len(value)} characters")
    if isinstance(value, (list, tuple, dict)):
        if len(value) > max_items:
            raise ConfigError(f"{key or 'settings'}: {len(value)} entries (at most {max_items})")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for k, v in items:
            _check_plain(v, f"{key}.{k}" if key else str(k), depth + 1, max_items)


def _brief(value: Any) -> str:
    from .io import brief

    return brief(value)


def check_value_size(value: Any, key: str) -> None:
    """ConfigError naming ``key`` for a value nested deeper than ``MAX_VALUE_DEPTH`` or holding more than
    ``MAX_VALUE_ITEMS`` values (shared references, such as YAML aliases, counted each time): refused unexpanded."""
    budget = MAX_VALUE_ITEMS
    todo = [(value, 0)]
    while todo:
        item, depth = todo.pop()
        budget -= 1
        if budget < 0:
            raise ConfigError(f"{key}: holds more than {MAX_VALUE_ITEMS:,} values (YAML aliases expanded)")
        if depth > MAX_VALUE_DEPTH:
            raise ConfigError(f"{key}: nests deeper than {MAX_VALUE_DEPTH} levels")
        if isinstance(item, dict):
            todo += [(x, depth + 1) for pair in item.items() for x in pair]
        elif isinstance(item, (list, tuple, set)):
            todo += [(x, depth + 1) for x in item]


def _check(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _check(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: {_brief(value)} does not fit {hint}")
    if hint is type(None):
        if value is None:
            return None
        raise ConfigError(f"{key}: expected null, got {_brief(value)}")
    if hint is Any:
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {_brief(value)}")
        (item,) = typing.get_args(hint)[:1] or (Any,)
        return [_check(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {_brief(value)}")
        return dict(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            raise ConfigError(f"{key}: {_brief(value)} is too large") from None
    if hint is float and isinstance(value, str):  # YAML 1.1 reads 1e-8 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if hint is float and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}: expected a finite number, got {value}")
    if hint is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return _brief(value) if isinstance(value, int) and value.bit_length() > 200 else str(value)  # seeds=7
    if isinstance(hint, type) and not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"{key}: expected {getattr(hint, '__name__', hint)}, got {_brief(value)}")
    return value


def set_value(obj: Any, key: str, value: Any) -> None:
    """Set the (dotted, possibly inline) config ``key`` of ``obj`` to ``value``, checked against its type hint;
    ConfigError for an unknown key or a value of the wrong type."""
    _apply(obj, key, value)


def get_value(obj: Any, key: str) -> Any:
    """The value of the (dotted, possibly inline) config ``key`` of ``obj``; ConfigError for an unknown key."""
    head, _, rest = key.partition(".")
    fields = visible_fields(obj)
    if head not in fields:
        raise ConfigError(f"unknown config key '{head}'; valid keys: {', '.join(sorted(fields))}")
    for name in fields[head][0]:
        obj = getattr(obj, name)
    value = getattr(obj, head)
    return get_value(value, rest) if rest else value


def _apply(obj: Any, key: str, value: Any, prefix: str = "") -> None:
    head, _, rest = key.partition(".")
    fields = visible_fields(obj)
    if head not in fields:
        raise ConfigError(f"unknown config key '{(prefix + head)[:80]}'; valid keys: {', '.join(sorted(fields))}")
    path, _ = fields[head]
    for name in path:  # an inline group's key: set it on the group
        obj = getattr(obj, name)
    hints = typing.get_type_hints(type(obj))
    current = getattr(obj, head)
    if dataclasses.is_dataclass(current):
        if rest:
            _apply(current, rest, value, f"{prefix}{head}.")
            return
        if not isinstance(value, dict):
            raise ConfigError(f"{prefix}{head}: expected a mapping")
        for k, v in value.items():
            _apply(current, str(k), v, f"{prefix}{head}.")
        return
    if rest:
        raise ConfigError(f"'{prefix}{head}' has no sub-keys")
    value = _check(value, hints[head], prefix + head)
    limit = getattr(type(obj), "LIMITS", {}).get(head)
    if limit is not None and value is not None:
        check_limit(prefix + head, value, limit)
    setattr(obj, head, value)


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Build ``cls()`` then apply the YAML file at ``path`` and ``key=value`` overrides in order."""
    visible_fields(cls)  # two option groups lending one key: an error in the class, whatever is given
    cfg = cls()
    if path is not None:
        try:
            text = Path(path).read_bytes().decode("utf-8")
        except UnicodeDecodeError as err:
            raise ConfigError(f"{path}: not a UTF-8 text file (byte {err.start})") from None
        except OSError as err:
            raise ConfigError(f"{path}: cannot read it ({err.strerror or err})") from None
        data = _parse_yaml(text, str(path)) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        check_value_size(data, str(path))
        for key, value in data.items():
            try:
                _apply(cfg, str(key), value)
            except ConfigError as err:
                raise ConfigError(f"{path}: {err}") from None
    for item in overrides or []:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"override '{_brief(item)[1:-1]}' is not of the form key=value")
        value = _parse_yaml(text, key.strip()) if text.strip() else ""
        check_value_size(value, key.strip())
        try:
            _apply(cfg, key.strip(), value)
        except ConfigError as err:
            if key.strip() not in str(err):  # a key such as "." or "a..b": name it as given
                raise ConfigError(f"{_brief(key.strip())}: {err}") from None
            raise
    return cfg


def _parse_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load(text)``; a YAML error or nesting too deep for the parser as one ConfigError naming ``where``."""
    try:
        return yaml.safe_load(text)
    except RecursionError:
        raise ConfigError(f"{where}: YAML nests too deep") from None
    except ValueError as err:  # a number of over 4300 digits
        raise ConfigError(f"{where}: not a usable YAML value ({' '.join(str(err).split())[:120]})") from None
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err)
        mark = getattr(err, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ConfigError(f"{where}: not valid YAML: {' '.join(str(problem).split())}{at}") from None


_BOOL_WORDS = {"true", "false", "yes", "no", "on", "off", "1", "0"}


def _flags_to_overrides(argv: list[str], cls: type) -> list[str]:
    """Also accept ``--key value``, ``--key=value`` and ``--no-key`` (booleans) for top-level config keys, and
    bare positional values for the fields named in the class attribute ``POSITIONAL`` (in order; a list field
    takes every bare value from there on), and the short flags of ``ALIASES``."""
    fields = {k: f for k, (_, f) in visible_fields(cls).items()}
    hints = typing.get_type_hints(cls)  # a positional list field is the config's own (not an inline group's)
    positional = list(getattr(cls, "POSITIONAL", ()))
    gathered: dict[str, list[str]] = {}  # list fields' bare values
    aliases = dict(getattr(cls, "ALIASES", {}))  # short flags, e.g. {"-o": "output"}
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in aliases:
            arg = f"--{aliases[arg]}"
        key, sep, value = arg[2:].partition("=")
        key = key.replace("-", "_")
        if arg == "--config" and i + 1 < len(argv):  # its value is a file, not a positional
            out += [arg, argv[i + 1]]
            i += 2
            continue
        if arg.startswith("--no-") and key[3:] in fields and not sep:
            out.append(f"{key[3:]}=false")
        elif arg.startswith("--") and key in fields:
            is_bool = fields[key].type in (bool, "bool")
            if not sep and is_bool and (i + 1 >= len(argv) or argv[i + 1].lower() not in _BOOL_WORDS):
                value = "true"  # a bare boolean flag: --concat
            elif not sep:
                if i + 1 >= len(argv):
                    raise SystemExit(f"error: --{key} needs a value")
                value = argv[i + 1]
                i += 1
            out.append(f"{key}={value}")
        elif not arg.startswith("-") and "=" not in arg and positional:
            if typing.get_origin(hints.get(positional[0])) is list:
                gathered.setdefault(positional[0], []).append(arg)
            else:
                out.append(f"{positional.pop(0)}={arg}")
        else:
            out.append(arg)
        i += 1
    return out + [f"{name}={json.dumps(values)}" for name, values in gathered.items()]  # JSON is YAML


def parse_cli(cls: type[T], argv: list[str] | None, description: str = "") -> T:
    """``[--config FILE] [key=value ...]`` (or ``--key value``); ``--help`` lists every key with its default."""
    import argparse
    import sys

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> typing.NoReturn:  # one line and status 1, as every refused value
            exit_with_error(f"{message} (--help lists the keys)")

    lines = [f"  {k} = {v!r}" for k, v in to_dict(cls()).items()]
    parser = Parser(
        description=description,
        epilog="config keys (defaults):\n" + "\n".join(lines),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, help="YAML file with config values")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, applied after --config")
    args = parser.parse_args(_flags_to_overrides(sys.argv[1:] if argv is None else argv, cls))
    try:
        return load_config(cls, args.config, args.overrides)
    except (ConfigError, OSError) as err:
        exit_with_error(err)


def config_yaml(cfg: Any) -> str:
    """The resolved config as YAML text (what ``save_config`` writes)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    from .io import atomic_write

    atomic_write(path, config_yaml(cfg))


def exit_with_error(err: BaseException | str) -> typing.NoReturn:
    """End a script with ``error: <err>`` (exit status 1) on a line of its own.

    Open tqdm progress bars are closed first and left on screen with their newline, so the message does not land
    at the end of a half-drawn bar, and the user still sees how far the run got.
    """
    from tqdm import tqdm

    for bar in sorted(getattr(tqdm, "_instances", ()), key=lambda b: -getattr(b, "pos", 0)):
        bar.leave = True
        bar.close()
    raise SystemExit("error: " + " ".join(str(err).split()))
