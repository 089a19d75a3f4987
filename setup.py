"""Installable package: ``pip install .`` (or ``make setup`` for a virtual environment with everything)."""

from pathlib import Path

from setuptools import find_packages, setup

requirements = [
    line.split("#")[0].strip()
    for line in Path(__file__).with_name("requirements.txt").read_text().splitlines()
    if line.split("#")[0].strip()
]

COMMANDS = [
    ("", "reenact"),
    ("-invert", "invert"),
    ("-invert-dataset", "invert_dataset"),
    ("-prepare-dataset", "prepare_dataset"),
    ("-train-mapper", "train_mapper"),
    ("-train-encoder", "train_encoder"),
    ("-evaluate", "evaluate"),
    ("-generate", "generate"),
    ("-convert-pkl", "convert_pkl"),
    ("-app", "app"),
    ("-demo", "demo"),
]

setup(
    name="landmark-reenact",
    version="0.1.0",
    description="One-shot landmark-driven face reenactment on a pretrained StyleGAN3",
    packages=find_packages(include=["stylegan3*", "inversion*", "reenactment*", "scripts"]),
    package_data={"reenactment": ["evaluation/*.yaml"]},
    python_requires=">=3.10",
    install_requires=requirements,
    extras_require={"mediapipe": ["mediapipe==0.10.21"]},
    # One command per script (scripts/NAME.py is also ``python -m scripts.NAME`` from the repository root).
    entry_points={"console_scripts": [f"reenact{suffix} = scripts.{module}:main" for suffix, module in COMMANDS]},
)
