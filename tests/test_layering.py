"""The package layering: every package imports only those below it, and scripts are commands, not path hacks.

stylegan3 (generator and the project's base: config, files, images, runtime) <- inversion <- reenactment <- scripts.
Inside reenactment: faces, media <- data <- model <- evaluation <- pipeline <- app.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ["stylegan3", "inversion", "reenactment", "scripts"]
SUB_LAYERS = {  # reenactment's sub-packages and modules, by rank: a module may import equal or lower ranks
    "faces": 0,
    "media": 0,
    "data": 1,
    "model": 2,
    "evaluation": 3,
    "pipeline": 4,
    "app": 5,
}


def imported_modules(path: Path, root: Path = REPO) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved), at any depth in the file."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
    return names


def python_files(top: str) -> list[Path]:
    return sorted((REPO / top).rglob("*.py"))


@pytest.mark.parametrize("layer", LAYERS[:-1])
def test_no_package_imports_a_package_above_it(layer):
    above = LAYERS[LAYERS.index(layer) + 1 :]
    offences = [
        f"{path.relative_to(REPO)} imports {name}"
        for path in python_files(layer)
        for name in imported_modules(path)
        if name.split(".")[0] in above
    ]
    assert not offences, offences


def sub_layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "reenactment" and parts[1] in SUB_LAYERS else None


def test_reenactment_sub_packages_only_import_downwards():
    offences = []
    for path in python_files("reenactment"):
        own = sub_layer(".".join(path.relative_to(REPO).with_suffix("").parts))
        if own is None:
            continue
        for name in imported_modules(path):
            other = sub_layer(name)
            if other is not None and SUB_LAYERS[other] > SUB_LAYERS[own]:
                offences.append(f"{path.relative_to(REPO)} ({own}) imports {name} ({other})")
    assert not offences, offences


def test_the_layering_check_sees_an_upward_import(tmp_path):
    """The scan above finds upward imports written in each form (so an empty result means something)."""
    module = tmp_path / "inversion" / "probe.py"
    module.parent.mkdir()
    module.write_text("def f():\n    from reenactment.faces import align\n    from ..reenactment import pipeline\n")
    found = imported_modules(module, tmp_path)
    assert "reenactment.faces" in found and "reenactment.pipeline" in found


def test_scripts_do_not_edit_sys_path_and_each_has_a_command():
    setup_text = (REPO / "setup.py").read_text()
    for path in python_files("scripts"):
        text = path.read_text()
        assert "sys.path" not in text, f"{path.name} edits sys.path: the packages are installed (make setup)"
        assert "noqa: E402" not in text, path.name
    commands = [line for line in setup_text.splitlines() if line.strip().startswith('("')]
    scripts = ("reenact", "invert", "invert_dataset", "prepare_dataset", "train_mapper", "train_encoder", "evaluate")
    for script in (*scripts, "generate"):
        assert any(f'"{script}")' in line for line in commands), f"no console command for scripts/{script}.py"


def test_installed_command_runs(tmp_path):
    """``reenact-generate`` (a console_scripts entry point) is on the venv's PATH after make setup."""
    command = Path(sys.executable).parent / "reenact-generate"
    if not command.exists():
        pytest.skip("the package is not installed in this interpreter's environment (run make setup)")
    proc = subprocess.run([str(command), "--help"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0 and "usage: reenact-generate" in proc.stdout, proc.stderr
