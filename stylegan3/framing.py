"""Where a generator's faces sit in its square: the crop its training images were made with.

A ``Framing`` is relative to FFHQ's crop (``reenactment.faces.align.face_crop``): FFHQ's square has side
``max(2 x eye distance, 1.8 x eye-to-mouth distance)`` and centre ``eye_mid + 0.1 x eye_to_mouth``. A framing scales
that side by ``side`` and puts the centre at ``eye_mid + centre x eye_to_mouth``. Every generator names its framing
(``G.framing``); the face front end aligns photos and videos with it, so that a face lands where the generator draws
faces.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Framing:
    """A face crop relative to FFHQ's: ``side`` x FFHQ's side, centred ``centre`` of the way from the eye midpoint
    to the mouth centre (FFHQ: 1.0 and 0.1)."""

    name: str
    side: float
    centre: float

    def __post_init__(self) -> None:
        if not (0.05 <= self.side <= 20.0) or not (-5.0 <= self.centre <= 5.0):
            raise ValueError(f"framing {self.name!r}: side must be in [0.05, 20] and centre in [-5, 5]")


FFHQ = Framing("ffhq", 1.0, 0.1)
# DigiFace-1M's tight crop, measured on 200 samples of digiface-dcgan-64 (dlib landmarks on 4x upscaled samples;
# the medians of the FFHQ crop's side and centre relative to the sample's square): docs/bench/digiface_framing.log.
DIGIFACE = Framing("digiface", 0.78, 0.09)

FRAMINGS: dict[str, Framing] = {f.name: f for f in (FFHQ, DIGIFACE)}


def get_framing(framing: str | Framing) -> Framing:
    """A ``Framing`` from itself or its name (``ffhq``, ``digiface``); an unknown name is a ValueError naming them."""
    if isinstance(framing, Framing):
        return framing
    if framing not in FRAMINGS:
        raise ValueError(f"unknown framing {framing!r}: use one of {', '.join(FRAMINGS)}")
    return FRAMINGS[framing]
