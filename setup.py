"""Installable package: ``pip install .`` (or ``make setup`` for a virtual environment with everything)."""

from pathlib import Path

from setuptools import find_packages, setup

requirements = [
    line.split("#")[0].strip()
    for line in Path(__file__).with_name("requirements.txt").read_text().splitlines()
    if line.split("#")[0].strip()
]

setup(
    name="landmark-reenact",
    version="0.1.0",
    description="One-shot landmark-driven face reenactment on a pretrained StyleGAN3",
    packages=find_packages(include=["stylegan3*", "inversion*", "reenactment*"]),
    python_requires=">=3.10",
    install_requires=requirements,
    extras_require={"mediapipe": ["mediapipe==0.10.21"]},
)
