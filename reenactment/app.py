"""The reenactment web page (Gradio): upload a source photo and a driving clip, pick options, watch the progress,
play and download the result with its sound.

Everything a request touches lives in its own temporary folder under the app's work folder, deleted when the
response has been sent: the uploads are copied in (from Gradio's upload folder only), the result is written there.
Networks and mappers are chosen from the lists the server was started with, never from a path in a request.
The page makes no request outside the machine: analytics off, no share link, the theme's fonts are local.

The options panel is the table ``OPTIONS``: one ``Option`` (which field of ``RunOptions`` / ``DrivingOptions`` it
sets, and the widget that shows it) per control. A new reenactment option is one entry there.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from inversion.encoder import InitOptions
from inversion.inverter import InverterOptions
from inversion.losses import LossOptions
from inversion.precision import check_precision
from inversion.tuning import TUNE_MODES, TuningOptions
from stylegan3.config import ConfigError, get_value, inline, set_value
from stylegan3.images import IMAGE_SUFFIXES
from stylegan3.runtime import DistEnv, init_distributed, resolve_device, resolve_impl
from stylegan3.sampling import synthesize, to_uint8

from .faces.landmarks import LandmarkDetector, NoFaceError
from .media.video import VIDEO_SUFFIXES, VideoReadError, probe_video
from .pipeline import DrivingOptions

log = logging.getLogger("reenactment.app")

# A file with this name inside a generator or mapper folder marks it as untrained (``make demo`` writes it).
UNTRAINED_MARKER = "UNTRAINED"


@dataclass
class AppConfig:
    """scripts/app.py: what the server offers and how it runs (configs/app.yaml)."""

    network: str | list[str] = "out/demo/generator"  # generators offered in the page: paths or known names
    mapper: str | list[str] = "out/demo/mapper"  # mappers offered (MAPPER_DIRs from train_mapper.py)
    host: str = "127.0.0.1"  # address to serve on (localhost only by default)
    port: int = 7860  # 0: any free port
    device: str = "auto"  # auto (cuda if available), cpu, cuda, mps
    impl: str = "auto"  # generator ops: auto (triton on CUDA after a passed trial, else fast), fast, reference, triton
    backend: str = "dlib"  # landmark backend: dlib or mediapipe
    steps: int = 1000  # the page's default number of inversion steps (thesis: 1000)
    max_steps: int = 2000  # the most inversion steps a request may ask for
    max_frames: int = 3000  # the longest driving clip accepted, in frames (2 minutes at 25 fps)
    max_file_size: str = "200mb"  # the largest upload
    batch_size: int = 8  # driving frames per generator batch (see the README for the GPU memory it takes)
    precision: str = "fp32"  # fp32, bf16 or fp16: the sources' inversion and the frames' generator under autocast
    cache: bool = True  # cache source latents under $REENACT_CACHE/latents
    losses: LossOptions = inline(LossOptions)  # the sources' inversion loss: loss.*, loss_resolution, arcface, alexnet
    start: InitOptions = inline(InitOptions)  # init: mean, or encoder:DIR (made for the network; one network then)
    tuning: TuningOptions = inline(TuningOptions)  # tune: the page's default (none or pti); tune_steps, tune_lr, ...
    examples: list[str] = field(default_factory=lambda: ["../shared/samples"])  # folders of example photos/clips
    work_dir: str | None = None  # per-request folders go here (None: a new folder in the system's temp dir)

    @property
    def networks(self) -> list[str]:
        return [self.network] if isinstance(self.network, str) else list(self.network)

    @property
    def mappers(self) -> list[str]:
        return [self.mapper] if isinstance(self.mapper, str) else list(self.mapper)


@dataclass
class RunOptions:
    """What one request may choose (the page's options panel)."""

    network: str = ""  # one of AppConfig.networks
    mapper: str = ""  # one of AppConfig.mappers
    steps: int = 1000  # inversion steps for the source
    tune: str = "none"  # pti: tune the generator on the source once (cached), every frame rendered with it
    paste_back: bool = False  # the reenacted face back into the source photo
    concat: bool = False  # driving | source | result side by side
    show_landmarks: bool = False  # with concat: a last panel with the target landmarks the mapper is shown
    driving: DrivingOptions = field(default_factory=DrivingOptions)


Widget = Callable[[Any, Any, AppConfig], Any]  # (gradio module, default value, config) -> component


@dataclass(frozen=True)
class Option:
    """One control of the options panel: it sets ``field`` of ``RunOptions`` (``group="run"``) or of its
    ``DrivingOptions`` (``group="driving"``); ``widget`` builds the Gradio component from the field's default."""

    group: str
    field: str
    widget: Widget

    @property
    def key(self) -> str:
        """The option's config key in ``RunOptions``."""
        return self.field if self.group == "run" else f"{self.group}.{self.field}"


def short_names(names: Sequence[str]) -> list[str]:
    """What the page calls each network: its file or folder name, the whole path where two would look alike."""
    short = [Path(n).name or n for n in names]
    return [s if short.count(s) == 1 else n for s, n in zip(short, names)]


def _choice(names: Callable[[AppConfig], list[str]], label: str) -> Widget:
    def widget(gr, default, cfg: AppConfig):
        choices = list(zip(short_names(names(cfg)), names(cfg)))  # (shown, value): the value never leaves the list
        return gr.Dropdown(choices, value=choices[0][1], label=label)

    return widget


# The options panel, in page order. A new reenactment option is one entry here (and a field of RunOptions or
# DrivingOptions).
OPTIONS: tuple[Option, ...] = (
    Option("run", "network", _choice(lambda cfg: cfg.networks, "Generator")),
    Option("run", "mapper", _choice(lambda cfg: cfg.mappers, "Mapping network")),
    Option(
        "run", "steps", lambda gr, d, cfg: gr.Slider(1, cfg.max_steps, value=cfg.steps, step=1, label="Inversion steps")
    ),  # fmt: skip
    Option(
        "run",
        "tune",
        lambda gr, d, cfg: gr.Radio(list(TUNE_MODES), value=cfg.tuning.tune, label="Tune the generator (PTI, slower)"),
    ),
    Option("driving", "smooth", lambda gr, d, cfg: gr.Checkbox(value=d, label="Smooth the driving landmarks")),
    Option("driving", "motion", lambda gr, d, cfg: gr.Radio(["relative", "absolute"], value=d, label="Motion")),
    Option("driving", "pose", lambda gr, d, cfg: gr.Radio(["driving", "source"], value=d, label="Head pose from")),
    Option(
        "driving",
        "reference",
        lambda gr, d, cfg: gr.Textbox(value=d, label="Reference frame (relative): best, first or a frame number"),
    ),
    Option(
        "driving",
        "motion_scale",
        lambda gr, d, cfg: gr.Slider(0.0, 2.0, value=d, step=0.05, label="Motion scale (0: source, 1: as driven)"),
    ),
    Option(
        "driving",
        "regions",
        lambda gr, d, cfg: gr.Textbox(value=d, label="Regions: all, expression, lips, eyes, brows, pose (comma list)"),
    ),
    Option("run", "paste_back", lambda gr, d, cfg: gr.Checkbox(value=d, label="Paste the face back into the photo")),
    Option("run", "concat", lambda gr, d, cfg: gr.Checkbox(value=d, label="Side by side: driving | source | result")),
    Option("run", "show_landmarks", lambda gr, d, cfg: gr.Checkbox(value=d, label="Side by side: landmark panel")),
)


def run_options(values: Sequence[Any], options: Sequence[Option] = OPTIONS) -> RunOptions:
    """The panel's values (in ``options`` order) as ``RunOptions``; a value of the wrong type is a ValueError."""

    result = RunOptions()
    for option, value in zip(options, values, strict=True):
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # sliders send floats
        try:
            set_value(result, option.key, value)
        except ConfigError as err:
            raise ValueError(f"option {err}") from None
    return result


def is_untrained(path: str) -> bool:
    """A generator or mapper folder that carries the ``UNTRAINED`` marker (the ``make demo`` networks)."""
    return (Path(path) / UNTRAINED_MARKER).is_file()


def mark_untrained(directory: str | os.PathLike, what: str) -> None:
    """Write the ``UNTRAINED`` marker into a network folder (``what``: how it was made)."""
    (Path(directory) / UNTRAINED_MARKER).write_text(f"{what}\nIts outputs are not faces.\n")


def check_config(cfg: AppConfig) -> None:
    """Refuse a config the server cannot serve, before anything loads: one line naming the problem."""
    from stylegan3.io import KNOWN_MODELS

    if not cfg.networks or not cfg.mappers:
        raise ValueError("give at least one network and one mapper")
    for name in cfg.networks:
        if name.removesuffix(".pkl") not in KNOWN_MODELS and not Path(name).exists():
            raise ValueError(f"network not found: {name} (a .pkl, a weights folder or a known name)")
    for name in cfg.mappers:
        if not (Path(name) / "mapper.json").is_file():
            raise ValueError(f"mapper not found: {name} has no mapper.json (a folder written by train_mapper.py)")
    if not 1 <= cfg.steps <= cfg.max_steps:
        raise ValueError(f"steps={cfg.steps} must be between 1 and max_steps={cfg.max_steps}")
    cfg.tuning.check()


@dataclass
class RunResult:
    """One finished request: the output file (mp4, or png for a driving image) in the request folder, and what
    the page shows beside it."""

    output: Path
    is_video: bool
    aligned: np.ndarray  # [res, res, 3] uint8: the aligned source
    inversion: np.ndarray  # [res, res, 3] uint8: G(w_s)
    frames: int
    missing: int  # driving frames without a face
    fps: float | None
    cached: bool  # the source latent came from the cache
    tuned: str  # the generator: "none" (as loaded), "tuned" (PTI, this request) or "cached" (PTI, from the cache)
    untrained: bool
    timings: dict[str, float]  # seconds per stage


Progress = Callable[[str, int, int | None], None]  # (stage, done, total)


class Reenactment:
    """The server's side of the page: networks loaded once and kept, one request at a time."""

    def __init__(self, cfg: AppConfig, work_dir: Path) -> None:
        self.cfg = cfg
        self.work_dir = work_dir
        self.device = resolve_device(cfg.device)
        init_distributed(self.device, DistEnv())  # as reenact.py: cuDNN's benchmark mode on CUDA (no process group)
        resolve_impl(cfg.impl, self.device)  # a bad value (or impl=triton failing its trial) fails at start
        check_precision(cfg.precision)
        self._networks: OrderedDict[tuple[str, str], nn.Module] = OrderedDict()
        self._detector: LandmarkDetector | None = None
        self._lock = threading.Lock()

    def _load(self, kind: str, name: str) -> nn.Module:
        import stylegan3

        from .model.mapper import load_mapper

        key = (kind, name)
        if key not in self._networks:
            loader = stylegan3.load if kind == "network" else load_mapper
            self._networks[key] = loader(name, device=self.device).eval()
            if kind == "network":  # the Triton kernels' trial covers this network's layers
                self._networks[key].set_impl(resolve_impl(self.cfg.impl, self.device, self._networks[key]))
            while len(self._networks) > 4:  # two generator/mapper pairs
                self._networks.popitem(last=False)
        self._networks.move_to_end(key)
        return self._networks[key]

    def detector(self) -> LandmarkDetector:
        if self._detector is None:
            self._detector = LandmarkDetector(self.cfg.backend)
        return self._detector

    def check_request(self, options: RunOptions) -> None:
        if options.network not in self.cfg.networks:
            raise ValueError(f"unknown network {options.network!r}: choose one of {self.cfg.networks}")
        if options.mapper not in self.cfg.mappers:
            raise ValueError(f"unknown mapper {options.mapper!r}: choose one of {self.cfg.mappers}")
        if not 1 <= options.steps <= self.cfg.max_steps:
            raise ValueError(f"inversion steps must be between 1 and {self.cfg.max_steps}, got {options.steps}")
        dataclasses.replace(self.cfg.tuning, tune=options.tune).check()
        options.driving.check()

    def run(self, folder: Path, source: Path, driving: Path, options: RunOptions, progress: Progress) -> RunResult:
        """Reenact ``source`` (a photo) with ``driving`` (a clip or an image), both inside ``folder``, into
        ``folder``. Bad input raises ValueError / NoFaceError / OSError with a message naming the file."""
        from .pipeline import Reenactor, SourceInversion, check_networks, is_image, prepare_source, reenact

        self.check_request(options)
        timings: dict[str, float] = {}
        start = time.perf_counter()
        if is_image(driving):
            from stylegan3.images import read_image

            read_image(driving)  # unreadable: refused before the inversion, not after
            total_frames = 1
        else:
            total_frames = probe_video(driving).frame_count
            if total_frames > self.cfg.max_frames:
                raise ValueError(f"{driving.name}: {total_frames} frames; this server takes at most "
                                 f"{self.cfg.max_frames}")  # fmt: skip
        with self._lock:
            G = self._load("network", options.network)
            mapper = self._load("mapper", options.mapper)
            check_networks(G, mapper)
            detector = self.detector()
            timings["load"] = time.perf_counter() - start
            t = time.perf_counter()
            cfg = self.cfg
            tuning = dataclasses.replace(cfg.tuning, tune=options.tune)
            settings = SourceInversion(
                InverterOptions(steps=options.steps, precision=cfg.precision), cfg.losses, cfg.start, tuning
            )
            progress("inverting the source", 0, options.steps)
            src = prepare_source(
                G, source, detector, settings, self.device, options.driving.tracking.tilt, cfg.cache,
                lambda step, losses: progress("inverting the source", step + 1, options.steps),
                tune_progress=lambda step, losses: progress("tuning the generator", step + 1, tuning.tune_steps),
            )  # fmt: skip
            with torch.no_grad():
                inversion = to_uint8(synthesize(src.renderer(G), src.w_s[None].to(self.device)))[0]
            timings["invert"] = time.perf_counter() - t
            t = time.perf_counter()
            counts = {"tracked": 0, "written": 0}

            def tracked() -> None:  # called as each driving frame's landmarks are looked for
                timings["landmarks"] = time.perf_counter() - t
                counts["tracked"] += 1
                progress("finding driving landmarks", counts["tracked"], total_frames)

            def written(n: int) -> None:
                counts["written"] += n
                progress("reenacting frames", counts["written"], total_frames)

            reenactor = Reenactor(G, mapper, src, self.device, cfg.precision)
            result = reenact(
                reenactor, driving, folder / "reenacted.mp4", detector, options=options.driving,
                batch_size=cfg.batch_size, concat=options.concat, paste_back=options.paste_back,
                show_landmarks=options.show_landmarks, on_frames=written, on_tracked=tracked,
            )  # fmt: skip
            timings["reenact"] = time.perf_counter() - t - timings["landmarks"]
        timings["total"] = time.perf_counter() - start
        output = result.output
        return RunResult(
            output=output,
            is_video=not is_image(output),
            aligned=src.aligned,
            inversion=inversion,
            frames=result.frames,
            missing=result.missing,
            fps=result.fps,
            cached=src.cached,
            tuned="none" if src.tuned_generator is None else ("cached" if src.tuned_cached else "tuned"),
            untrained=is_untrained(options.network) or is_untrained(options.mapper),
            timings=timings,
        )


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def take_upload(upload: str | None, what: str, suffixes: Sequence[str], uploads: Path, folder: Path) -> Path:
    """Copy an uploaded file (a path in Gradio's upload folder ``uploads``, nothing else) into the request
    ``folder`` as ``what`` + its suffix. Returns the copy."""
    if not upload:
        raise ValueError(f"no {what} file: upload one or pick an example")
    path = Path(upload)
    if not _inside(path, uploads) or not path.is_file():
        raise ValueError(f"{path.name}: not an uploaded file")
    suffix = path.suffix.lower()
    if suffix not in suffixes:
        raise ValueError(f"{path.name}: a {what} must be one of {', '.join(suffixes)}, not {suffix or 'no suffix'!r}")
    target = folder / f"{what}{suffix}"
    shutil.copyfile(path, target)
    return target


def describe(result: RunResult, options: RunOptions) -> str:
    """The page's summary of a finished run (markdown)."""
    lines = []
    if result.untrained:
        lines.append("**UNTRAINED networks** (`make demo`): the result shows the pipeline running; it is not a face.")
    what = f"{result.frames} frames at {result.fps:g} fps" if result.is_video else "one image"
    lines.append(f"Reenacted {what}; **{result.missing} driving frames without a face** (they reuse the last "
                 "good landmarks).")  # fmt: skip
    source = "from the cache" if result.cached else f"inverted in {options.steps} steps"
    lines.append(f"Source latent {source}.")
    if result.tuned != "none":
        how = "from the cache" if result.tuned == "cached" else "tuned on the source (PTI)"
        lines.append(f"Generator {how}: every frame is rendered with it.")
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items())
    lines.append(f"Timings: {stages}.")
    return "\n\n".join(lines)


def enlarged(image: np.ndarray, least: int = 256) -> np.ndarray:
    """[S, S, 3] uint8 repeated by a whole factor up to at least ``least`` pixels (a 64 px demo face is seen)."""
    factor = max(1, -(-least // image.shape[0]))
    return image.repeat(factor, axis=0).repeat(factor, axis=1)


def example_files(folders: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    """Example source photos, driving clips/images and credit lines found in ``folders`` (recursively), plus
    scikit-image's astronaut photo (public domain) as the first source example."""
    sources: list[str] = []
    driving: list[str] = []
    credits: list[str] = []
    try:
        import skimage.data

        astronaut = Path(skimage.data.__file__).parent / "astronaut.png"
        if astronaut.is_file():
            sources.append(str(astronaut))
            credits.append("astronaut.png: Eileen Collins, NASA, public domain (scikit-image)")
    except ImportError:
        pass
    for folder in map(Path, folders):
        if not folder.is_dir():
            log.info("examples folder %s not found: skipped", folder)
            continue
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        sources += [str(p) for p in files if p.suffix.lower() in IMAGE_SUFFIXES and "neutral" in p.name][:6]
        driving += [str(p) for p in files if p.suffix.lower() in VIDEO_SUFFIXES][:6]
        driving += [str(p) for p in files if p.suffix.lower() in IMAGE_SUFFIXES and p.name.startswith("grid_")][:2]
        attribution = folder / "ATTRIBUTION.md"
        if attribution.is_file():
            credits += [line[3:].strip() for line in attribution.read_text().splitlines() if line.startswith("## ")]
    return sources, driving, credits


ERRORS = (ValueError, OSError, NoFaceError, VideoReadError)

HEADER = """# Face reenactment
The person in the **source photo** makes the expressions of the **driving clip** (landmarks -> mapping network ->
StyleGAN latent). The source is inverted once (cached), then every driving frame is reenacted, with its sound."""


def build_app(cfg: AppConfig, work_dir: Path):
    """The Gradio Blocks of the page, serving requests with per-request folders under ``work_dir``."""
    import gradio as gr
    from gradio.utils import get_upload_folder

    app = Reenactment(cfg, work_dir)
    uploads = Path(get_upload_folder())
    sources, driving_examples, credits = example_files(cfg.examples)
    defaults = RunOptions()
    untrained = [n for n in cfg.networks + cfg.mappers if is_untrained(n)]

    with gr.Blocks(title="Face reenactment", analytics_enabled=False, delete_cache=(600, 3600)) as blocks:
        gr.Markdown(HEADER)
        if untrained:
            gr.Markdown(f"**UNTRAINED networks** ({', '.join(short_names(untrained))}; `make demo` makes such ones): "
                        "the page works end to end, but the results are not faces. Start it with real ones: "
                        "`python scripts/app.py --network ... --mapper ...`.", elem_id="untrained")  # fmt: skip
        with gr.Row():
            with gr.Column():
                # filepath + no image_mode: the handler gets the uploaded bytes as they are (no re-encoding).
                source = gr.Image(type="filepath", image_mode=None, sources=["upload"], label="Source photo",
                                  elem_id="source")  # fmt: skip
                if sources:
                    gr.Examples([[p] for p in sources], inputs=[source], label="Example photos")
                driving = gr.File(
                    label="Driving clip or image",
                    file_types=list(VIDEO_SUFFIXES + IMAGE_SUFFIXES),
                    type="filepath",
                    elem_id="driving",
                )
                if driving_examples:
                    gr.Examples([[p] for p in driving_examples], inputs=[driving], label="Example driving clips")
                with gr.Accordion("Options", open=True):
                    widgets = [o.widget(gr, get_value(defaults, o.key), cfg) for o in OPTIONS]
                    for option, widget in zip(OPTIONS, widgets):
                        widget.elem_id = widget.elem_id or f"option-{option.field}"
                button = gr.Button("Reenact", variant="primary", elem_id="run")
                if credits:
                    gr.Markdown("Example media: " + "; ".join(credits) + ".", elem_id="credits")
            with gr.Column():
                status = gr.Markdown("Upload a photo and a driving clip, then press Reenact.", elem_id="status")
                video = gr.Video(label="Result", elem_id="result-video", interactive=False)
                image = gr.Image(label="Result (driving image)", elem_id="result-image", interactive=False,
                                 visible=False)  # fmt: skip
                download = gr.File(label="Download", elem_id="download", interactive=False)
                with gr.Row():
                    aligned = gr.Image(label="Aligned source", elem_id="aligned", interactive=False, height=220)
                    inverted = gr.Image(
                        label="Its inversion G(w_s)", elem_id="inversion", interactive=False, height=220
                    )

        def handle(source_file, driving_file, *values, progress=gr.Progress()) -> Iterator[tuple]:  # noqa: B008
            folder = Path(tempfile.mkdtemp(prefix="request-", dir=work_dir))
            names = {}
            try:
                options = run_options(values)
                src = take_upload(source_file, "source", IMAGE_SUFFIXES, uploads, folder)
                drv = take_upload(driving_file, "driving", VIDEO_SUFFIXES + IMAGE_SUFFIXES, uploads, folder)
                names = {str(src): Path(source_file).name, str(drv): Path(driving_file).name}

                def report(stage: str, done: int, total: int | None) -> None:
                    progress((done, total) if total else None, desc=stage)

                result = app.run(folder, src, drv, options, report)
                yield (
                    f"Done. {describe(result, options)}",
                    gr.update(value=str(result.output) if result.is_video else None, visible=result.is_video),
                    gr.update(value=None if result.is_video else str(result.output), visible=not result.is_video),
                    str(result.output),
                    enlarged(result.aligned),
                    enlarged(result.inversion),
                )
            except ERRORS as err:
                message = str(err)
                for path, name in names.items():  # the user's file names, not the request folder's
                    message = message.replace(path, name)
                message = message.replace(str(folder) + os.sep, "")
                log.info("request refused: %s", message)
                yield f"**Error:** {message}", None, gr.update(value=None, visible=False), None, None, None
            except Exception as err:  # the server keeps serving; the details go to its log
                log.exception("request failed")
                yield (f"**Error:** unexpected {type(err).__name__}: {err} (details in the server log)", None,
                       gr.update(value=None, visible=False), None, None, None)  # fmt: skip
            finally:
                # Gradio has copied the yielded files into its cache by the time the generator is resumed.
                shutil.rmtree(folder, ignore_errors=True)

        button.click(lambda: "Working...", outputs=[status], queue=False).then(
            handle,
            inputs=[source, driving, *widgets],
            outputs=[status, video, image, download, aligned, inverted],
            concurrency_limit=1,
        )
    return blocks


def serve(cfg: AppConfig, block: bool = True):
    """Check the config, then serve the page on ``cfg.host:cfg.port`` (no share link, no analytics). With
    ``block=False`` returns ``(blocks, url)`` at once; ``blocks.close()`` stops it."""
    check_config(cfg)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    work_dir = Path(cfg.work_dir) if cfg.work_dir else Path(tempfile.mkdtemp(prefix="reenact-app-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    blocks = build_app(cfg, work_dir)
    blocks.queue(default_concurrency_limit=1)
    _, url, _ = blocks.launch(
        server_name=cfg.host,
        server_port=cfg.port or _free_port(cfg.host),
        share=False,
        prevent_thread_lock=not block,
        max_file_size=cfg.max_file_size,
        allowed_paths=[str(work_dir)],
        show_error=False,
        quiet=not block,
    )
    return blocks, url


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
