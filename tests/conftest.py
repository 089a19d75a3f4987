"""Shared test helpers: the shared fixtures and samples live beside the repository in ../shared."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np

import stylegan3

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
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
