"""scripts/evaluate.py and reenactment.evaluation.evaluate on a small aligned example made from the sample photos."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SAMPLES, SHARED, detector

from reenactment.evaluation import evaluate as E
from reenactment.evaluation import metrics as M
from reenactment.faces.align import align_face
from scripts.evaluate import main
from stylegan3.images import read_image, write_image

PEOPLE = ("003", "021", "061")
SIDE = 192


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> Path:
    """real/ = aligned smiling faces, fake/ = the same with noise (as PNG and JPEG: pairing ignores the extension),
    source/ = the same people's neutral faces."""
    root = tmp_path_factory.mktemp("eval_example")
    rng = np.random.default_rng(0)
    for sub in ("real", "fake", "source"):
        (root / sub).mkdir()
    for i, person in enumerate(PEOPLE):
        for expression, folder in (("smiling", "real"), ("neutral", "source")):
            image = read_image(SAMPLES / "images" / f"london_{person}_{expression}.jpg")
            aligned, _ = align_face(image, detector("dlib")(image), size=SIDE)
            write_image(root / folder / f"{person}.png", aligned)
        real = read_image(root / "real" / f"{person}.png")
        noisy = np.clip(real.astype(int) + rng.integers(-12, 13, real.shape), 0, 255).astype(np.uint8)
        write_image(root / "fake" / f"{person}.{'jpg' if i == 0 else 'png'}", noisy, quality=98)
    return root


def _offline(monkeypatch, tmp_path: Path) -> None:
    """No pretrained file can be found or fetched: an empty cache, downloads off."""
    monkeypatch.setenv("REENACT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("REENACT_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


def _parse_markdown(text: str) -> tuple[dict[str, float | None], dict[str, float | None], list[str]]:
    """This run's row of the main table, the extra-metric table and the main table's row labels."""
    tables, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            current.append([c.strip() for c in line.strip("|").split("|")])
        elif current:
            tables.append(current)
            current = []

    def name(header: str) -> str:
        return re.sub(r"\s*(\(landmark approximation\))?\s*[↑↓]$", "", header)

    def number(cell: str) -> float | None:
        return None if cell == "missing" else float(cell)

    main_table, extra = tables[0], tables[1] if len(tables) > 1 else [["", ""], ["", ""]]
    ours = next(row for row in main_table if row[0] == "this run")
    row = {name(h): number(c) for h, c in zip(main_table[0][1:], ours[1:])}
    extras = {name(r[0]): number(r[1]) for r in extra[2:]}
    return row, extras, [r[0] for r in main_table[2:]]


@pytest.mark.parametrize("mode", E.MODES)
def test_evaluate_script_runs_and_its_markdown_matches_its_json(mode, example, tmp_path, monkeypatch):
    _offline(monkeypatch, tmp_path)
    out = tmp_path / "out"
    args = [mode, "--real", str(example / "real"), "--fake", str(example / "fake"), "--out", str(out)]
    data = main([*args, "--source", str(example / "source"), "--compare-thesis"])
    assert json.loads((out / "metrics.json").read_text()) == data
    missing = data.pop("missing")
    # Every metric of the thesis's table is either a number or missing with the file named in the reason.
    assert set(E.MODES[mode].table) <= set(data) | set(missing)
    assert all(isinstance(v, float) for v in data.values())
    expect_missing = {"inversion": {"LPIPS", "ID", "FID"}, "self": {"FID"}, "cross": {"ID"}}[mode]
    assert set(missing) == expect_missing
    files = {"LPIPS": "alexnet-owt-7be5be79.pth", "ID": "model_ir_se50.pth", "FID": M.FID_INCEPTION_FILE}
    for name in expect_missing:
        assert files[name] in missing[name]
    # What does not need a missing file was computed.
    computed = {"inversion": {"MSE", "SSIM", "PSNR", "ID_dlib"}, "self": {"L1", "SSIM", "PSNR", "LMD"}}
    computed["cross"] = {"ARD", "AUH", "ID_dlib", "ARD_yaw", "ARD_pitch", "ARD_roll"}
    assert set(data) == computed[mode]

    row, extras, labels = _parse_markdown((out / "metrics.md").read_text())
    assert set(row) == set(E.MODES[mode].table)
    for name, value in {**row, **extras}.items():
        if value is None:
            assert name in missing
        else:
            assert value == pytest.approx(data[name], abs=5e-5), name
    assert set(extras) == set(data) - set(row)
    assert [f"{m} (published)" for m in E.THESIS_TABLES[mode]["rows"]] == labels[:-1]
    if mode == "cross":
        assert "AUH (landmark approximation)" in (out / "metrics.md").read_text()

    # Plausible values for faces that differ only by noise of +-12 grey levels.
    if "PSNR" in data:
        assert 28 < data["PSNR"] < 36 and data["SSIM"] > 0.5
    if "LMD" in data:
        assert data["LMD"] < 2.0
    if "ARD" in data:
        assert data["ARD"] < 2.0 and data["AUH"] <= 0.25
    if mode == "cross":  # ID_dlib compares the output with the source: the same person, another expression
        assert data["ID_dlib"] < 0.6
    info = json.loads((out / "info.json").read_text())
    assert info["pairs"] == len(PEOPLE) and info["mode"] == mode
    assert (out / "per_pair.csv").read_text().count("\n") == len(PEOPLE) + 1
    assert (out / "config.yaml").is_file()


class _Encoder(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1) + 1.0


def _features(x: torch.Tensor) -> list[torch.Tensor]:
    """A stand-in feature network: 8x8 average-pooled colours as [N, 192, 1, 1]."""
    return [torch.nn.functional.adaptive_avg_pool2d(x, 8).flatten(1)[..., None, None]]


def test_evaluate_with_stand_in_networks(example):
    """LPIPS, ID and FID go through the injected networks; identical images give FID 0 and an infinite PSNR,
    which is reported missing rather than written as a non-number."""
    pairs = E.pair_files(example / "real", example / "real")
    nets = E.Networks(
        lpips=lambda a, b: (a - b).abs().mean((1, 2, 3)),
        arcface=_Encoder(),
        inception=_features,
        landmarks=detector("dlib"),
        dlib_embedder=M.DlibFaceEmbedder(),
    )
    result = E.evaluate("inversion", pairs, E.EvaluationOptions(batch_size=2), nets)
    assert result.metrics["MSE"] == 0 and result.metrics["SSIM"] == pytest.approx(1.0)
    assert result.metrics["LPIPS"] == 0 and result.metrics["ID"] == pytest.approx(0.0, abs=1e-6)
    assert result.metrics["FID"] == pytest.approx(0.0, abs=1e-5)  # sqrtm of a rank-2 192x192 product: ~1e-6
    assert result.metrics["ID_dlib"] == 0.0
    assert "not finite" in result.missing["PSNR"]

    noisy = E.pair_files(example / "real", example / "fake", example / "source")
    result = E.evaluate("cross", noisy, E.EvaluationOptions(), nets)
    assert 0 < result.metrics["ID"] < 0.05 and not result.missing
    self_run = E.evaluate("self", noisy, E.EvaluationOptions(), nets)
    assert self_run.metrics["FID"] > 0 and self_run.metrics["LMD"] > 0
    ids = [r["ID"] for r in result.per_pair]
    src = torch.cat([E._resize(E._tensor(read_image(p.source), "cpu"), 256) for p in noisy])
    out = torch.cat([E._resize(E._tensor(read_image(p.fake), "cpu"), 256) for p in noisy])
    assert ids == pytest.approx(M.identity_distance(out, src, _Encoder()).tolist())


def test_pairing_lists_what_is_unpaired(example, tmp_path):
    fake = tmp_path / "fake"
    fake.mkdir()
    for p in (example / "fake").iterdir():
        if p.stem != "021":
            (fake / p.name).write_bytes(p.read_bytes())
    (fake / "extra.png").write_bytes((example / "real" / "003.png").read_bytes())
    with pytest.raises(E.PairingError, match=r"only in .*real: 021; only in .*fake: extra"):
        E.pair_files(example / "real", fake)
    (fake / "003.png").write_bytes(b"")
    with pytest.raises(E.PairingError, match="two images named '003'"):
        E.pair_files(fake, fake)
    (fake / "003.png").unlink()
    with pytest.raises(E.PairingError, match="no source image"):
        E.pair_files(example / "real", example / "fake", tmp_path / "fake")
    one_source = E.pair_files(example / "real", example / "fake", example / "source" / "003.png")
    assert {p.source.name for p in one_source} == {"003.png"}
    manifest = tmp_path / "pairs.csv"
    manifest.write_text("real,fake,source\n" + f"{example}/real/003.png,{example}/fake/003.jpg,\n")
    (pair,) = E.read_manifest(manifest)
    assert pair.name.endswith("fake/003") and pair.source is None and pair.fake.is_file()


def test_script_errors_are_plain(example, tmp_path, monkeypatch):
    _offline(monkeypatch, tmp_path)
    with pytest.raises(SystemExit, match="give a mode"):
        main(["--real", str(example / "real"), "--fake", str(example / "fake"), "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="unpaired files"):
        main(["self", "--real", str(example / "real"), "--fake", str(tmp_path), "--out", str(tmp_path / "out")])


def _method_tables() -> list[tuple[list[str], dict[str, list[str]]]]:
    """The result tables of the design card's evaluation section: (columns, {method: cells as printed})."""
    text = (SHARED / "design" / "METHOD.md").read_text()
    section = text.split("## Evaluation protocol", 1)[1].split("\n## ", 1)[0]
    tables, current = [], []
    for line in section.splitlines() + [""]:
        if line.startswith("|"):
            current.append([c.strip() for c in line.strip("|").split("|")])
        elif current:
            tables.append((current[0][1:], {row[0]: row[1:] for row in current[2:]}))
            current = []
    return tables


def test_published_numbers_match_the_design_card():
    """thesis_tables.yaml holds the thesis's numbers at full precision; the design card prints them rounded (and
    not every row): each printed cell is the file's value rounded to the cell's decimals."""
    tables = _method_tables()
    assert len(tables) == len(E.MODES)
    for mode, spec in E.MODES.items():
        published = E.THESIS_TABLES[mode]
        assert tuple(published["columns"]) == spec.table
        (printed,) = [rows for cols, rows in tables if tuple(cols) == spec.table]
        assert printed and set(printed) <= set(published["rows"]), mode
        for method, cells in printed.items():
            values = published["rows"][method]
            assert len(values) == len(cells), (mode, method)
            for cell, value in zip(cells, values):
                decimals = len(cell.partition(".")[2])
                assert abs(value - float(cell)) <= 0.5 * 10**-decimals + 1e-12, (mode, method, cell, value)
