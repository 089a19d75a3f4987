"""``make docs-check`` (scripts/docs_check.py): the real repository passes, and each of its checks can fail."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts import docs_check

REPO = Path(__file__).resolve().parents[1]

SCRIPT = '''"""A fake script with a config."""

from __future__ import annotations

from dataclasses import dataclass, field

from stylegan3.config import inline, parse_cli


@dataclass
class Weights:
    mse: float = 1.0
    lpips: float = 0.5


@dataclass
class Group:
    steps: int = 10  # an inline group's key reads as the script's own


@dataclass
class FakeConfig:
    group: Group = inline(Group)
    out: str = "out/fake"
    loss: Weights = field(default_factory=Weights)  # nested: loss.mse, loss.lpips
    child: bool = False  # internal: what a parent process tells its child


def main(argv=None):
    return parse_cli(FakeConfig, argv)
'''

PAGE = """# Fake

Scripts on this page: [`fake.py`](../scripts/fake.py), [`run.sh`](../scripts/run.sh).

| key | default | meaning |
| --- | --- | --- |
| `steps`, `out` | 10, `out/fake` | steps; the output folder |
| `loss.mse`, `loss.lpips` | 1, 0.5 | the loss weights |

See [the README](../README.md#install), [a site](https://example.org/x.md) and [a section](#fake).
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "scripts").mkdir()
    (tmp_path / "docs").mkdir()
    (tmp_path / "scripts" / "__init__.py").write_text("")
    (tmp_path / "scripts" / "fake.py").write_text(SCRIPT)
    (tmp_path / "scripts" / "run.sh").write_text("echo hi\n")
    (tmp_path / "docs" / "fake.md").write_text(PAGE)
    (tmp_path / "README.md").write_text("# Fake\n\n![a picture](docs/fake.md) and [docs](docs/fake.md#fake).\n")
    return tmp_path


def test_the_repository_passes():
    assert docs_check.check(REPO) == []


def test_a_consistent_fake_repository_passes(repo):
    assert docs_check.check(repo) == []


def test_keys_are_named_as_on_the_command_line_and_internal_ones_are_left_out(repo):
    cls = docs_check.config_class(repo / "scripts" / "fake.py")
    assert docs_check.config_keys(cls) == ["steps", "out", "loss.mse", "loss.lpips"]


def test_the_source_reading_agrees_with_the_config_loader(repo):
    """The keys read from the source are the keys ``stylegan3.config`` accepts (less the internal one)."""
    import importlib.util
    import sys

    from stylegan3.config import load_config

    spec = importlib.util.spec_from_file_location("docs_check_fake_script", repo / "scripts" / "fake.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        keys = docs_check.config_keys(docs_check.config_class(repo / "scripts" / "fake.py"))
        load_config(module.FakeConfig, overrides=[f"{key}=1" for key in keys if key != "out"] + ["child=true"])
        with pytest.raises(ValueError, match="unknown config key 'loss.nope'"):
            load_config(module.FakeConfig, overrides=["loss.nope=1"])
    finally:
        del sys.modules[spec.name]


def test_a_missing_config_key_fails_naming_script_key_and_page(repo):
    page = repo / "docs" / "fake.md"
    page.write_text(page.read_text().replace("| `steps`, `out` |", "| `steps` |"))
    assert docs_check.check(repo) == [
        "scripts/fake.py: config key `out` (FakeConfig) is not in a table of docs/fake.md"
    ]


def test_a_nested_key_must_be_written_in_full(repo):
    page = repo / "docs" / "fake.md"
    page.write_text(page.read_text().replace("`loss.mse`, `loss.lpips`", "`loss.*`"))
    errors = docs_check.check(repo)
    assert [e.split(" (")[0] for e in errors] == [
        "scripts/fake.py: config key `loss.mse`",
        "scripts/fake.py: config key `loss.lpips`",
    ]


def test_a_key_mentioned_outside_a_tables_first_cell_does_not_count(repo):
    page = repo / "docs" / "fake.md"
    text = page.read_text().replace("| `steps`, `out` | 10, `out/fake` |", "| `steps` | 10, `out` |")
    page.write_text(text + "\nThe `out` key is the output folder.\n")
    assert any("config key `out`" in e for e in docs_check.check(repo))


def test_a_script_on_no_page_fails(repo):
    (repo / "scripts" / "new_tool.py").write_text("print('no config')\n")
    (repo / "scripts" / "new_run.sh").write_text("echo\n")
    errors = docs_check.check(repo)
    assert "scripts/new_run.sh is documented on no page (add it to a 'Scripts on this page:' line in docs/)" in errors
    assert "scripts/new_tool.py is documented on no page (add it to a 'Scripts on this page:' line in docs/)" in errors
    assert len(errors) == 2


def test_a_script_claimed_by_two_pages_fails(repo):
    (repo / "docs" / "other.md").write_text("# Other\n\nScripts on this page: [`run.sh`](../scripts/run.sh).\n")
    assert docs_check.check(repo) == ["scripts/run.sh is claimed by two pages: fake.md and other.md"]


def test_a_link_to_a_missing_file_fails(repo):
    readme = repo / "README.md"
    readme.write_text(readme.read_text() + "![gone](docs/gone.png) [page](docs/nothing.md#part)\n")
    page = repo / "docs" / "fake.md"
    page.write_text(page.read_text() + "\n[code](../scripts/missing.py)\n\n```\n[in a code block](nowhere.md)\n```\n")
    assert docs_check.check(repo) == [
        "README.md:4: link to docs/gone.png points at no file",
        "README.md:4: link to docs/nothing.md#part points at no file",
        "docs/fake.md:12: link to ../scripts/missing.py points at no file",
    ]


def test_main_exits_with_an_error_and_lists_the_problems(repo, capsys):
    (repo / "docs" / "fake.md").write_text(PAGE.replace("../README.md", "../MISSING.md"))
    with pytest.raises(SystemExit, match="docs-check found 1 problem"):
        docs_check.main([f"root={repo}"])
    assert "docs/fake.md:10: link to ../MISSING.md#install points at no file" in capsys.readouterr().err


def test_a_config_class_that_cannot_be_found_fails(repo):
    (repo / "scripts" / "fake.py").write_text("from elsewhere import Hidden\n\nparse_cli(Hidden, None)\n")
    assert docs_check.check(repo) == ["scripts/fake.py: cannot find the config class it passes to parse_cli"]
