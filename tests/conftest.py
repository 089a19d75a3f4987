"""Shared test helpers: the shared fixtures and samples live beside the repository in ../shared."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch

# The Triton kernels run on the CPU under Triton's interpreter, chosen when stylegan3.triton_ops is first imported:
# set for the whole run, so that whichever test file imports it first (a set_impl or resolve_impl test), the
# kernels of tests/test_triton_ops.py are interpreted (it skips when they are not).
os.environ.setdefault("TRITON_INTERPRET", "1")

import stylegan3  # noqa: E402

# Under pytest-xdist (make test: two workers) each worker and the scripts it starts get an equal share of the cores,
# so two workers do not fight over every core (a 2-core machine ran one inversion test 10x slower that way).
if os.environ.get("PYTEST_XDIST_WORKER"):
    _threads = max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    torch.set_num_threads(_threads)
    os.environ["OMP_NUM_THREADS"] = str(_threads)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FIXTURES = SHARED / "fixtures" / "stylegan"
FIXTURE_NAMES = ["sg3t_64", "sg3r_64", "sg3t_1024_thin", "sg3r_1024_thin", "sg2_64"]


@cache
def fixture_info() -> dict[str, dict]:
    return {e["name"]: e for e in json.loads((FIXTURES / "fixtures.json").read_text())}


@cache
def fixture_arrays(name: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / f"{name}.npz") as data:
        return {k: data[k] for k in data.files}


def load_fixture(name: str):
    return stylegan3.load(FIXTURES / f"{name}.pkl")


SAMPLES = SHARED / "samples"
GRID_CLIPS = ["grid_bbaf2n", "grid_lbax4n", "grid_lrwp9a", "grid_lwbsza"]
LONDON = sorted(p.name for p in (SAMPLES / "images").glob("london_*.jpg"))


@cache
def detector(backend: str):
    from reenactment.faces.landmarks import LandmarkDetector

    return LandmarkDetector(backend)


@cache
def grid_frames(clip: str) -> tuple[np.ndarray, ...]:
    """All 75 frames of a GRID clip (360x288 RGB), decoded once per test session."""
    from reenactment.media.video import VideoReader

    with VideoReader(SAMPLES / "videos" / f"{clip}.mpg") as reader:
        return tuple(reader)


@cache
def grid_track(clip: str, backend: str) -> np.ndarray:
    """[75, 70, 2] landmarks of a GRID clip with one backend (raises NoFaceError on a miss)."""
    det = detector(backend)
    return np.stack([det(frame, name=f"{clip} frame {t}") for t, frame in enumerate(grid_frames(clip))])


def write_loss_weights(folder: Path) -> tuple[Path, Path]:
    """Random-weight files for the full inversion loss: ``model_ir_se50.pth`` (a tiny IR-SE network with the
    published file's names, loaded by the same strict loader) and torchvision's ``alexnet-owt-7be5be79.pth`` (the
    classifier, unused by LPIPS, as zero-stride placeholders). Returns (arcface, alexnet) paths."""
    import torch
    import torchvision

    from inversion.arcface import ARCFACE_FILE, IRSE50
    from inversion.perceptual import ALEXNET_FILE

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    arcface = folder / ARCFACE_FILE
    torch.save(IRSE50(stages=((16, 1), (32, 1), (48, 1), (64, 1)), embedding_dim=32).state_dict(), arcface)
    state = torchvision.models.alexnet(weights=None).state_dict()
    state = {k: v if k.startswith("features.") else torch.zeros(()).expand(v.shape) for k, v in state.items()}
    alexnet = folder / ALEXNET_FILE
    torch.save(state, alexnet)
    return arcface, alexnet


@dataclass
class ScriptRun:
    """What a finished script run left: its exit status and everything it printed (as ``subprocess.run``)."""

    returncode: int
    stdout: str
    stderr: str


def run_script(script: str, *args: object, cache: Path | None = None, env: dict[str, str] | None = None) -> ScriptRun:
    """Run ``scripts/<script>.py``'s ``main(argv)`` in this process as a user's shell would see it: exit status 0,
    1 for ``SystemExit("error: ...")`` (the message on stderr, as Python prints it) and 1 with the traceback on
    stderr for an uncaught exception. Saves a Python start-up per run (~3 s of CPU with torch, av and dlib).
    ``cache``: ``REENACT_CACHE`` (and ``TORCH_HOME`` inside it), downloads off; ``env``: more variables, restored
    afterwards. Kill/resume and console-entry tests still start real processes."""
    import contextlib
    import importlib
    import io
    import traceback

    module = importlib.import_module(f"scripts.{Path(script).stem}")
    variables = dict(env or {})
    if cache is not None:
        variables |= {"REENACT_CACHE": str(cache), "REENACT_OFFLINE": "1", "TORCH_HOME": str(cache / "torch")}
    saved = {k: os.environ.get(k) for k in variables}
    out, err = io.StringIO(), io.StringIO()
    code = 0
    os.environ.update(variables)
    cwd = os.getcwd()
    os.chdir(REPO)  # where the scripts are run from (configs/ and relative paths)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                module.main([str(a) for a in args])
            except SystemExit as exc:
                if isinstance(exc.code, str):
                    print(exc.code, file=sys.stderr)
                    code = 1
                else:
                    code = exc.code or 0
            except Exception:
                traceback.print_exc()
                code = 1
    finally:
        os.chdir(cwd)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        from tqdm import tqdm

        for bar in list(getattr(tqdm, "_instances", ())):  # a bar left open by a failed run
            bar.close()
    return ScriptRun(code, out.getvalue(), err.getvalue())


# The longest test files first (by their durations on a fresh clone, cold inductor cache): pytest-xdist's loadfile
# hands files to the two workers in collection order, and a long file that starts last left the other worker idle
# for up to a minute at the end of the run.
LONGEST_FIRST = ("test_parity.py", "test_compile.py", "test_invert_dataset.py", "test_prepare.py",
                 "test_prepare_safety.py", "test_app.py", "test_train_mapper.py", "test_reenact.py",
                 "test_warm_batch.py", "test_inversion.py", "test_demo.py", "test_faces.py")  # fmt: skip


def pytest_collection_modifyitems(config, items) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
