"""The whole path, offline, in a few minutes on a CPU: prepare -> invert -> train -> reenact.

python scripts/demo.py                         # tiny UNTRAINED networks on a photo that ships with scikit-image
python scripts/demo.py network=stylegan3-r-ffhq-1024x1024 mapper=runs/mapper source=me.jpg driving=talk.mp4

Without ``network`` and ``mapper`` it builds everything itself: the source is the astronaut photo shipped in
scikit-image (Eileen Collins, NASA, public domain); the driving clip is made from it (head sway, a mouth that
opens and closes, a tone for sound); a tiny random StyleGAN2 (64 px) stands in for the generator, and a tiny
mapping network is trained for a few epochs on latents inverted for a few steps. The networks are untrained,
so the output is not a face: the demo shows that every stage runs and what each writes. With ``network`` and
``mapper`` it runs reenact.py on real files with the thesis's inversion settings.
"""

from __future__ import annotations

import math
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.ndimage import map_coordinates

import stylegan3
from reenactment.app import mark_untrained
from reenactment.faces.landmarks import LandmarkDetector
from reenactment.media.video import VideoWriter
from stylegan3.config import parse_cli
from stylegan3.images import read_image, write_image


@dataclass
class DemoConfig:
    out: str = "out/demo"  # everything goes here
    network: str | None = None  # a real generator (.pkl, folder or known name); with mapper: reenact only
    mapper: str | None = None  # a real MAPPER_DIR from train_mapper.py
    source: str | None = None  # source photo (default: scikit-image's astronaut)
    driving: str | None = None  # driving clip (default: one made from the source photo)
    frames: int = 50  # length of the made-up driving clip (25 fps)


def astronaut_path() -> Path:
    """scikit-image's bundled astronaut photo (public domain)."""
    import skimage.data

    return Path(skimage.data.__file__).parent / "astronaut.png"


def mouth_opening(t: int, fps: float = 25.0) -> float:
    """0..1: the made-up speaker opens the mouth about twice a second."""
    return max(0.0, math.sin(2 * math.pi * 2.2 * t / fps)) ** 1.5


def make_driving_clip(photo: np.ndarray, out: Path, frames: int = 50, fps: float = 25.0, mirror: bool = False) -> Path:
    """A talking-head clip made from one photo: crop around the face, sway the head, open the mouth by pushing
    the lower lip and chin down, and add a tone as the sound track. Returns the mp4 path."""
    points = LandmarkDetector("dlib")(photo, name="the demo photo")
    centre = points[27:48].mean(axis=0)
    side = 2.6 * (points[:, 0].max() - points[:, 0].min())
    size = 256
    scale = side / size
    mouth = (points[62] + points[66]) / 2
    lip_gap = float(np.linalg.norm(points[48] - points[54]))  # mouth width, in photo pixels
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    out.parent.mkdir(parents=True, exist_ok=True)
    wav = out.with_suffix(".wav")
    _write_tone(wav, frames / fps, fps)
    with VideoWriter(out, fps, audio_from=wav) as writer:
        for t in range(frames):
            angle = math.radians(4.0 * math.sin(2 * math.pi * t / (fps * 2.0)))
            shift = np.array([6.0 * math.sin(2 * math.pi * t / (fps * 3.0)), 3.0 * math.cos(2 * math.pi * t / fps)])
            # Output pixel -> photo position: rotate and scale about the face centre.
            u, v = (xx - size / 2) * scale, (yy - size / 2) * scale
            c, s = math.cos(angle), math.sin(angle)
            px = centre[0] + c * u - s * v + shift[0]
            py = centre[1] + s * u + c * v + shift[1]
            # Open the mouth: below the lip line, sample from higher up (the lower lip and chin move down).
            a = mouth_opening(t, fps) * 0.35 * lip_gap
            below = np.clip((py - mouth[1]) / (0.3 * lip_gap), 0, 1) * np.exp(-(((px - mouth[0]) / lip_gap) ** 2))
            fade = np.exp(-np.clip(py - mouth[1] - lip_gap, 0, None) / lip_gap)
            py = py - a * below * fade
            frame = np.stack([map_coordinates(photo[..., k], [py, px], order=1, mode="nearest") for k in range(3)], -1)
            writer.write(frame[:, ::-1] if mirror else frame)
    wav.unlink()
    return out


def _write_tone(path: Path, seconds: float, fps: float, rate: int = 16000) -> None:
    t = np.arange(int(seconds * rate)) / rate
    envelope = np.array([mouth_opening(int(x * fps), fps) for x in t])
    signal = 0.3 * envelope * np.sin(2 * np.pi * 220 * t)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes((signal * 32767).astype("<i2").tobytes())


def tiny_generator(out: Path) -> Path:
    """A random StyleGAN2 at 64 px (UNTRAINED), saved in our format."""
    torch.manual_seed(0)
    kwargs = {"z_dim": 64, "c_dim": 0, "w_dim": 64, "img_resolution": 64, "img_channels": 3,
              "channel_base": 2048, "channel_max": 64, "mapping_kwargs": {"num_layers": 2}}  # fmt: skip
    G = stylegan3.build("stylegan2", kwargs)
    stylegan3.save(G, out)
    mark_untrained(out, "A random StyleGAN2 at 64 px made by scripts/demo.py (make demo).")
    return out


def run_real(cfg: DemoConfig, out: Path) -> Path:
    from scripts import reenact

    source = cfg.source or str(astronaut_path())
    driving = cfg.driving or str(make_driving_clip(read_image(source), out / "driving.mp4", cfg.frames))
    return reenact.main([source, driving, "-o", str(out / "reenacted.mp4"), "--network", cfg.network,
                         "--mapper", cfg.mapper, "--concat"])  # fmt: skip


def main(argv: list[str] | None = None) -> Path:
    cfg = parse_cli(DemoConfig, argv, __doc__)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.network and cfg.mapper:
        return run_real(cfg, out)
    if cfg.network or cfg.mapper:
        raise SystemExit("error: give both network= and mapper= to run on real files, or neither for the demo")
    from scripts import invert_dataset, prepare_dataset, reenact, train_mapper

    print("DEMO with tiny UNTRAINED networks: the outputs show the pipeline running, they are not faces.")
    source_path = Path(cfg.source or astronaut_path())
    photo = read_image(source_path)
    data = out / "data"
    print("1/5 driving clips made from the photo (head sway, mouth, a tone as sound)")
    driving = cfg.driving or str(make_driving_clip(photo, data / "speaker" / "talk.mp4", cfg.frames))
    make_driving_clip(photo, data / "mirrored" / "talk.mp4", cfg.frames, mirror=True)
    write_image(out / "source.png", np.asarray(Image.fromarray(photo)))
    print("2/5 prepare_dataset.py: detect, align, store frames + landmarks + manifest")
    prepared = prepare_dataset.main(["--input", str(data), "--output", str(out / "prepared"), "identity=folder",
                                     "size=64", "image_format=jpg", "workers=1"])  # fmt: skip
    generator = tiny_generator(out / "generator")
    print(f"3/5 invert_dataset.py: every frame into W+ with an UNTRAINED 64 px StyleGAN2 ({generator})")
    latents = invert_dataset.main(["--input", str(prepared / "manifest.jsonl"), "--out", str(out / "latents"),
                                   "--network", str(generator), "steps=8", "batch_size=8", "loss.lpips=0",
                                   "loss.id=0"])  # fmt: skip
    print("4/5 train_mapper.py: a tiny mapping network, a few epochs")
    mapper = out / "mapper"
    smoke = Path(__file__).resolve().parents[1] / "configs" / "train_mapper_smoke.yaml"
    train_mapper.main(["--config", str(smoke), "--manifest", str(prepared / "manifest.jsonl"),
                       "--latents", str(latents), "--out", str(mapper), "epochs=3", "split=frame",
                       "tensorboard=false"])  # fmt: skip
    mark_untrained(mapper, "A tiny mapper trained for 3 epochs on latents of an untrained generator (make demo).")
    print("5/5 reenact.py: the source photo driven by the clip, with its sound")
    result = reenact.main([str(source_path), driving, "-o", str(out / "reenacted.mp4"), "--network", str(generator),
                           "--mapper", str(mapper), "steps=30", "loss.lpips=0", "loss.id=0", "--concat"])  # fmt: skip
    print(
        f"demo done: {result} (driving | source | result). The networks were UNTRAINED: see the README for real runs."
    )
    return result


if __name__ == "__main__":
    main()
