"""StyleGAN2 / StyleGAN3 generators in pure PyTorch, loading NVIDIA's pickles without running them; and the project's
base, which every other package may import: configs, image files, weights and atomic files, runtime, sampling."""

from .io import KNOWN_MODELS, WeightsFileError, WeightsNotFoundError, build, cache_dir, fetch_weights, load, save
from .legacy import UnsafePickleError
from .networks_stylegan2 import Generator as StyleGAN2Generator
from .networks_stylegan3 import Generator as StyleGAN3Generator

__all__ = [
    "KNOWN_MODELS",
    "StyleGAN2Generator",
    "StyleGAN3Generator",
    "UnsafePickleError",
    "WeightsFileError",
    "WeightsNotFoundError",
    "build",
    "cache_dir",
    "fetch_weights",
    "load",
    "save",
]
