"""The web page (reenactment/app.py) driven in a real headless Chromium (Debian's, through Playwright): uploads,
options, progress, the played result with its sound, the download, errors in the page, no request off the machine.

The server runs in this process on tiny networks: the sg2_64 fixture generator, untrained mappers, and random-weight
ArcFace and AlexNet files, so the source inversion runs the full loss (MSE + LPIPS + ID + delta-reg).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from conftest import FIXTURES, SAMPLES, SHARED, run_script
from PIL import Image

from inversion.losses import LossOptions
from reenactment.app import (
    OPTIONS,
    AppConfig,
    Reenactment,
    RunOptions,
    check_config,
    mark_untrained,
    run_options,
    serve,
    take_upload,
)
from reenactment.media.video import probe_video
from reenactment.model.mapper import MappingNetwork, save_mapper
from stylegan3.config import get_value

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
SOURCE = SAMPLES / "images" / "london_003_neutral.jpg"
DRIVING = SAMPLES / "videos" / "grid_lbax4n.mp4"
SCREENSHOT = os.environ.get("APP_SCREENSHOT")  # e.g. docs/app.png: where to keep the page's screenshot
RUN_TIMEOUT_MS = 150_000  # one reenactment on the loaded 2-core machine takes ~30 s


class OutboundGuard:
    """Refuses and records every connection from this process to an address outside the loopback range."""

    def __init__(self) -> None:
        self.attempts: list[str] = []
        self._connect, self._getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def __enter__(self) -> OutboundGuard:
        guard = self

        def connect(sock, address):
            if sock.family in (socket.AF_INET, socket.AF_INET6) and not ipaddress.ip_address(address[0]).is_loopback:
                guard.attempts.append(str(address))
                raise ConnectionRefusedError(f"test: no connection off this machine ({address})")
            return guard._connect(sock, address)

        def getaddrinfo(host, *args, **kwargs):
            if host not in (None, "localhost") and not _is_loopback(host):
                guard.attempts.append(str(host))
                raise socket.gaierror(f"test: no name lookups off this machine ({host})")
            return guard._getaddrinfo(host, *args, **kwargs)

        socket.socket.connect, socket.getaddrinfo = connect, getaddrinfo
        return self

    def __exit__(self, *exc) -> None:
        socket.socket.connect, socket.getaddrinfo = self._connect, self._getaddrinfo


def _is_loopback(host) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tiny_mapper(directory: Path, num_ws: int = 10, w_dim: int = 64) -> str:
    torch.manual_seed(0)
    model = MappingNetwork(image_size=128, num_ws=num_ws, w_dim=w_dim, channels=(8, 8, 16, 16, 32, 32, 32, 32))
    save_mapper(model, directory)
    mark_untrained(directory, "a random mapper made by tests/test_app.py")
    return str(directory)


def loss_networks(folder: Path) -> tuple[str, str]:
    """Random-weight ArcFace IR-SE50 and AlexNet files in the published layouts."""
    from test_arcface import fake_state

    from inversion.arcface import ARCFACE_FILE
    from inversion.perceptual import ALEXNET_FILE

    folder.mkdir(parents=True, exist_ok=True)
    torch.save(fake_state(), folder / ARCFACE_FILE)
    torch.manual_seed(0)
    state = torchvision.models.alexnet(weights=None).state_dict()
    state = {k: v if k.startswith("features.") else torch.zeros(()).expand(v.shape) for k, v in state.items()}
    torch.save(state, folder / ALEXNET_FILE)
    return str(folder / ARCFACE_FILE), str(folder / ALEXNET_FILE)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("app")
    arcface, alexnet = loss_networks(root / "weights")
    mapper = tiny_mapper(root / "mapper")
    other = tiny_mapper(root / "mapper_w32", num_ws=8, w_dim=32)  # trained for another generator
    cfg = AppConfig(
        network=[str(FIXTURES / "sg2_64.pkl")],
        mapper=[mapper, other],
        port=0,
        device="cpu",
        steps=3,
        max_steps=10,
        losses=LossOptions(arcface=arcface, alexnet=alexnet),  # the full loss: random-weight ArcFace and AlexNet
        examples=[str(SHARED / "samples")],
        work_dir=str(root / "work"),
    )
    with pytest.MonkeyPatch.context() as mp, OutboundGuard() as guard:
        mp.setenv("REENACT_CACHE", str(root / "cache"))
        mp.setenv("REENACT_OFFLINE", "1")
        mp.setenv("GRADIO_TEMP_DIR", str(root / "uploads"))
        mp.setenv("OMP_NUM_THREADS", "1")
        blocks, url = serve(cfg, block=False)
        try:
            yield {"url": url, "root": root, "work": root / "work", "guard": guard, "cfg": cfg}
        finally:
            blocks.close()


@pytest.fixture(scope="module")
def browser(server):
    if not CHROMIUM.is_file():
        pytest.fail(f"no Chromium at {CHROMIUM}: `make browser` installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=str(CHROMIUM), args=["--autoplay-policy=no-user-gesture-required"]
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture()
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    off_machine: list[str] = []

    def route(r):
        host = r.request.url.split("/")[2].split(":")[0] if "://" in r.request.url else ""
        if r.request.url.startswith(("data:", "blob:")) or host in ("127.0.0.1", "localhost"):
            r.continue_()
        else:
            off_machine.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.goto(server["url"])
    page.wait_for_selector("#run", timeout=60_000)
    yield page
    context.close()
    assert off_machine == [], f"the page asked for files off the machine: {off_machine}"
    assert server["guard"].attempts == [], f"the server tried to reach: {server['guard'].attempts}"


def upload(page, elem_id: str, path: Path) -> None:
    clear = page.locator(f"#{elem_id} button[aria-label='Clear']")
    if clear.count():  # a file is there already: the upload input comes back once it is cleared
        clear.first.click()
    page.locator(f"#{elem_id} input[type=file]").set_input_files(str(path))
    # Gradio shows the file's name (driving) or the image (source) once the upload has finished.
    if elem_id == "source":
        page.locator("#source img").first.wait_for(timeout=30_000)
    else:
        page.locator(f"#{elem_id}").get_by_text(path.name).first.wait_for(timeout=30_000)


def choose(page, elem_id: str, value: str) -> None:
    page.locator(f"#{elem_id} input").first.click()
    page.locator(f'#{elem_id} [role=option][aria-label="{value}"]').click()


def run_and_wait(page) -> str:
    # The status says "Working..." first, then the outcome: an observer sees every change, however brief.
    page.evaluate(
        """() => { window.working = false; window.outcome = null;
        const status = document.querySelector('#status');
        new MutationObserver((_, observer) => {
            const text = status.innerText;
            if (text.includes('Working...')) window.working = true;
            else if (window.working && /Done\\.|Error:/.test(text)) { window.outcome = text; observer.disconnect(); }
        }).observe(status, {subtree: true, childList: true, characterData: true}); }"""
    )
    page.locator("#run").click()
    page.wait_for_function("() => window.outcome !== null", timeout=RUN_TIMEOUT_MS)
    return page.evaluate("() => window.outcome")


def download(page, server, target: Path) -> Path:
    """Fetch the file behind the page's download link."""
    link = page.locator("#download a").first
    link.wait_for(timeout=30_000)
    href = link.get_attribute("href")
    url = href if href.startswith("http") else server["url"].rstrip("/") + "/" + href.lstrip("/")
    with urllib.request.urlopen(url, timeout=30) as response:
        target.write_bytes(response.read())
    return target


def request_folders(work: Path) -> list[Path]:
    return sorted(work.glob("request-*"))


def wait_until_cleaned(work: Path, seconds: float = 20.0) -> list[Path]:
    end = time.monotonic() + seconds
    while request_folders(work) and time.monotonic() < end:
        time.sleep(0.2)
    return request_folders(work)


def test_bad_input_shows_a_message_and_the_server_keeps_serving(page, server, tmp_path):
    assert "UNTRAINED" in page.locator("#untrained").inner_text()
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((120, 120, 3), 90, np.uint8)).save(blank)
    upload(page, "source", blank)
    upload(page, "driving", DRIVING)
    text = run_and_wait(page)
    assert "Error:" in text and "no face found in blank.png" in text, text
    assert str(server["work"]) not in text and "Traceback" not in text
    # The mapper of another generator: refused with the reason.
    upload(page, "source", SOURCE)
    choose(page, "option-mapper", "mapper_w32")  # the page shows folder names
    text = run_and_wait(page)
    assert "not trained together" in text, text
    choose(page, "option-mapper", "mapper")
    # A driving "clip" that is not a video: its own name in the message.
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"this is not a video" * 100)
    upload(page, "driving", broken)
    text = run_and_wait(page)
    assert "Error:" in text and "broken.mp4" in text and "cannot read video" in text, text
    assert wait_until_cleaned(server["work"]) == []


def test_upload_run_play_and_download(page, server, tmp_path):
    upload(page, "source", SOURCE)
    upload(page, "driving", DRIVING)
    # Record the progress texts Gradio shows while the request runs.
    page.evaluate(
        """() => { window.seen = new Set();
        new MutationObserver(() => {
            const text = document.body.innerText;
            for (const s of ['inverting the source', 'finding driving landmarks', 'reenacting frames'])
                if (text.includes(s)) window.seen.add(s);
        }).observe(document.body, {subtree: true, childList: true, characterData: true}); }"""
    )
    text = run_and_wait(page)
    assert "Done." in text, text
    assert "0 driving frames without a face" in text and "75 frames at 25 fps" in text and "Timings" in text
    assert "inverted in 3 steps" in text and "UNTRAINED" in text
    seen = set(page.evaluate("() => [...window.seen]"))
    assert seen == {"inverting the source", "finding driving landmarks", "reenacting frames"}, seen
    # The video plays in the page, with frames and sound decoded by the browser.
    video = page.locator("#result-video video")
    video.wait_for(timeout=30_000)
    page.evaluate("() => { const v = document.querySelector('#result-video video'); v.muted = true; v.play(); }")
    page.wait_for_function(
        """() => { const v = document.querySelector('#result-video video');
                   return v.getVideoPlaybackQuality().totalVideoFrames > 10 && v.webkitAudioDecodedByteCount > 0; }""",
        timeout=30_000,
    )
    assert page.evaluate("() => document.querySelector('#result-video video').videoWidth") == 64
    # The aligned source and its inversion are shown.
    for elem_id in ("aligned", "inversion"):
        assert page.locator(f"#{elem_id} img").first.get_attribute("src")
    # The download link serves the mp4: 75 frames, the driving clip's fps and an audio track.
    info = probe_video(download(page, server, tmp_path / "downloaded.mp4"))
    assert info.frame_count == 75 and info.fps == 25.0 and info.has_audio and (info.width, info.height) == (64, 64)
    assert wait_until_cleaned(server["work"]) == []  # the request's folder is gone; Gradio serves its own copy
    if SCREENSHOT:
        page.screenshot(path=SCREENSHOT, full_page=True)
        Image.open(SCREENSHOT).convert("RGB").quantize(256).save(SCREENSHOT, optimize=True)  # small for the README
    # A driving image, side by side: one PNG of three panels; the source latent now comes from the cache.
    upload(page, "driving", SAMPLES / "images" / "grid_lrwp9a_frame010_openmouth.png")
    page.locator("#option-concat input[type=checkbox]").check()
    text = run_and_wait(page)
    assert "Done." in text and "Reenacted one image" in text and "from the cache" in text, text
    page.locator("#result-image img").first.wait_for(timeout=30_000)
    assert Image.open(download(page, server, tmp_path / "downloaded.png")).size == (3 * 64, 64)


def panel(given: dict) -> list:
    """The options panel's values in page order: ``given`` by field name, the rest at their defaults."""
    defaults = RunOptions()
    return [given.get(o.field, get_value(defaults, o.key)) for o in OPTIONS]


def test_requests_read_only_uploads_and_known_options(tmp_path):
    uploads, folder = tmp_path / "uploads", tmp_path / "request"
    uploads.mkdir()
    folder.mkdir()
    outside = tmp_path / "secret.png"
    shutil.copyfile(SOURCE, outside)
    with pytest.raises(ValueError, match="secret.png: not an uploaded file"):
        take_upload(str(outside), "source", (".png",), uploads, folder)
    link = uploads / "link.png"
    link.symlink_to(outside)  # a link out of the upload folder is outside too
    with pytest.raises(ValueError, match="not an uploaded file"):
        take_upload(str(link), "source", (".png",), uploads, folder)
    inside = uploads / "abc" / "photo.JPG"
    inside.parent.mkdir()
    shutil.copyfile(SOURCE, inside)
    copy = take_upload(str(inside), "source", (".jpg",), uploads, folder)
    assert copy == folder / "source.jpg" and copy.read_bytes() == SOURCE.read_bytes()
    with pytest.raises(ValueError, match="must be one of"):
        take_upload(str(inside), "driving", (".mp4",), uploads, folder)
    # Panel values are typed: a wrong type is refused, sliders' floats become ints; every option reaches its field.
    given = {
        "network": "g", "mapper": "m", "steps": 7.0, "smooth": False, "paste_back": True, "motion": "absolute",
        "pose": "source", "reference": "12", "motion_scale": 0.5, "regions": "lips,eyes", "show_landmarks": True,
    }  # fmt: skip
    assert {o.field for o in OPTIONS} >= set(given)
    options = run_options(panel(given))
    assert options.steps == 7 and options.paste_back and not options.driving.tracking.smooth and options.show_landmarks
    d = options.driving
    assert (d.motion, d.pose, d.reference, d.motion_scale, d.regions) == ("absolute", "source", "12", 0.5, "lips,eyes")
    with pytest.raises(ValueError, match="steps"):
        run_options(panel({**given, "steps": "many"}))
    # A bad motion option is refused by the request check (before any network is loaded or the source inverted).
    server = Reenactment(AppConfig(network=["g"], mapper=["m"], max_steps=10), tmp_path)
    server.check_request(run_options(panel(given)))
    for key, bad in (("regions", "nose"), ("reference", "middle"), ("motion", "sideways")):
        with pytest.raises(ValueError, match=key):
            server.check_request(run_options(panel({**given, key: bad})))
    with pytest.raises(ValueError, match="mapper not found"):
        check_config(AppConfig(network=[str(FIXTURES / "sg2_64.pkl")], mapper=[str(tmp_path)]))


def test_script_refuses_a_config_it_cannot_serve(tmp_path):
    run = run_script("app", "--network", FIXTURES / "sg2_64.pkl", "--mapper", tmp_path / "no")
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert (
        run.stderr.strip().splitlines()[-1] == f"error: mapper not found: {tmp_path / 'no'} has no mapper.json "
        "(a folder written by train_mapper.py)"
    )
