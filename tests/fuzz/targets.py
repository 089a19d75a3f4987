"""What the fuzz worker runs: one case of one target, in a fresh folder, classified as one of

- ``loaded``: the input was accepted (and, for a script, it finished with status 0);
- ``refused``: the documented refusal: one line, naming the file (or the config key), status 1 from a script;
- ``bad-message``: refused, but on several lines, or without naming the file or key;
- ``crash``: any other exception (a traceback the user would see), or another exit status.

(``timeout`` and ``died`` are decided by the parent, ``harness.Worker``.)
"""

from __future__ import annotations

import contextlib
import importlib
import io
import shutil
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path

from outcomes import library, refusal, selftest

import stylegan3
from inversion.dataset import frames_from_input, load_latents
from inversion.encoder import read_encoder
from reenactment.data.prepare import read_manifest
from reenactment.media.video import VideoReader, VideoReadError
from reenactment.model.mapper import load_mapper
from stylegan3.images import ImageReadError, read_image

WEIGHTS_REFUSALS = (stylegan3.WeightsFileError, stylegan3.WeightsNotFoundError)
WEIGHTS_REFUSALS = (stylegan3.WeightsFileError, stylegan3.WeightsNotFoundError)


def run(target: str, payload: dict) -> tuple[str, str]:
    work = Path(tempfile.mkdtemp(prefix="fuzz-"))
    try:
        for rel, data in payload.get("files", {}).items():
            path = work / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        return TARGETS[target](work, payload)
    except BaseException:
        return "crash", "the harness failed: " + traceback.format_exc()[-1500:]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _generator(work: Path, payload: dict) -> tuple[str, str]:
    path = work / payload["path"]
    return library(lambda: stylegan3.load(path), [str(path)], WEIGHTS_REFUSALS)


def _mapper(work: Path, payload: dict) -> tuple[str, str]:
    return library(lambda: load_mapper(work / "mapper"), [str(work / "mapper")], WEIGHTS_REFUSALS)


def _encoder(work: Path, payload: dict) -> tuple[str, str]:
    return library(lambda: read_encoder(work / "encoder"), [str(work / "encoder")], WEIGHTS_REFUSALS)


def _image(work: Path, payload: dict) -> tuple[str, str]:
    path = work / payload["path"]
    return library(lambda: read_image(path), [str(path)], (ImageReadError,))


def _video(work: Path, payload: dict) -> tuple[str, str]:
    path = work / payload["path"]

    def decode() -> None:
        with VideoReader(path) as reader:
            for _ in reader:
                pass

    return library(decode, [str(path)], (VideoReadError,))


def _manifest(work: Path, payload: dict) -> tuple[str, str]:
    path = work / "manifest.jsonl"
    first = library(lambda: frames_from_input(path), [str(path)], (ValueError,))  # invert_dataset.py's reader
    if first[0] != "loaded" and first[0] != "refused":
        return first
    second = library(lambda: read_manifest(path), [str(path)], (ValueError,))  # train_mapper.py's reader
    return second if second[0] != "loaded" or first[0] == "loaded" else first


def _shards(work: Path, payload: dict) -> tuple[str, str]:
    return library(lambda: load_latents(work), [str(work / "latents")], (ValueError,))


def _cli(work: Path, payload: dict) -> tuple[str, str]:
    """A script's ``main(argv)`` (or only its ``parse_cli`` with ``parse_only``), ``{work}`` in the arguments
    standing for the case's folder; a refusal must name one of ``names`` (the config file, the key)."""
    argv = [a.replace("{work}", str(work)) for a in payload["argv"]]
    names = [n.replace("{work}", str(work)) for n in payload["names"]]
    names += [repr(n)[1:-1] for n in names]  # a key with control characters is named escaped
    module = importlib.import_module(f"scripts.{payload['script']}")
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            if payload.get("parse_only"):
                from stylegan3.config import parse_cli

                parse_cli(getattr(module, payload["config"]), argv)
            else:
                module.main(argv)
    except SystemExit as exc:
        if exc.code in (0, None):
            return _finished(work, payload)
        if not isinstance(exc.code, str) or not exc.code.startswith("error: "):
            return "crash", f"exit status {exc.code!r}; stderr: {err.getvalue()[-1000:]}"
        if "Traceback" in err.getvalue():
            return "bad-message", err.getvalue()[-1500:]
        return refusal(exc.code, names)
    except BaseException:
        return "crash", traceback.format_exc()[-2000:]
    return _finished(work, payload)


def _finished(work: Path, payload: dict) -> tuple[str, str]:
    missing = [f for f in payload.get("expect_files", ()) if not (work / f).is_file()]
    if missing:
        return "crash", f"status 0 but {missing} not written"
    return "loaded", ""


TARGETS: dict[str, Callable[[Path, dict], tuple[str, str]]] = {
    "selftest": selftest,
    "generator": _generator,
    "mapper": _mapper,
    "encoder": _encoder,
    "image": _image,
    "video": _video,
    "manifest": _manifest,
    "shards": _shards,
    "cli": _cli,
}
