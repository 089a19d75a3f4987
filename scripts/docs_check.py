"""``make docs-check``: fail when the documentation has drifted from the code.

Three checks, each failure one line naming what is wrong and where:

1. Every script of ``scripts/`` (``*.py`` and ``*.sh``) is claimed by exactly one page of ``docs/``, in that page's
   ``Scripts on this page:`` line (links to ``../scripts/NAME``).
2. Every config key of a script's config dataclass (the class it passes to ``stylegan3.config.parse_cli``) is on
   the page that claims the script, written as `` `key` `` in a table row. Keys of inline groups read as the
   script's own (``steps``); keys of nested (non-inline) groups are written in full, dotted (``loss.lpips``).
   A field whose comment in the code starts with ``internal`` (``child: bool = False  # internal: ...``) is not
   a user's key and is not looked for.
3. Every relative link or image in ``README.md`` and ``docs/*.md`` points at a file or folder that exists
   (``http(s)://`` and ``mailto:`` links and pure ``#anchors`` are skipped; ``#fragments`` are stripped).

Run from the repository root: ``python -m scripts.docs_check`` (exit status 1 and the list on failure).
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
import inspect
import re
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path

from stylegan3.config import parse_cli, visible_fields

CLAIM = "Scripts on this page:"
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"`([^`]+)`")


@dataclass
class DocsCheckConfig:
    root: str = "."  # the repository to check (README.md, docs/, scripts/)


def config_class(script: Path) -> type | None:
    """The dataclass ``script`` passes to ``parse_cli`` (imported as ``scripts.<stem>``), or None."""
    tree = ast.parse(script.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "parse_cli" and node.args:
            if isinstance(node.args[0], ast.Name):
                return getattr(_import(script), node.args[0].id)
    return None


def _import(script: Path) -> types.ModuleType:
    """``scripts.<stem>`` for this repository's scripts; a script elsewhere (a test's) by its path."""
    if script.parent.resolve() == Path(__file__).resolve().parent:
        return importlib.import_module(f"scripts.{script.stem}")
    name = f"_docs_check_{abs(hash(str(script.resolve())))}_{script.stem}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, script)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses and get_type_hints look the module up by name
        spec.loader.exec_module(module)
    return sys.modules[name]


def _internal_fields(cls: type) -> set[str]:
    """Fields of ``cls`` whose line in the source carries a comment starting with ``internal``."""
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return set()
    names = {f.name for f in dataclasses.fields(cls)}
    out = set()
    for line in lines:
        match = re.match(r"\s*(\w+)\s*:", line)
        if match and match.group(1) in names and line.partition("#")[2].strip().startswith("internal"):
            out.add(match.group(1))
    return out


def config_keys(cls: type, prefix: str = "") -> list[str]:
    """The user-facing keys of a config dataclass: inline groups' keys as the holder's own, nested groups' keys
    dotted (``loss.lpips``), fields marked ``# internal`` in the code left out."""
    keys = []
    for key, (path, f) in visible_fields(cls).items():
        owner = cls
        for name in path:
            owner = typing.get_type_hints(owner)[name]
        if f.name in _internal_fields(owner):
            continue
        hint = typing.get_type_hints(owner)[f.name]
        if dataclasses.is_dataclass(hint):
            keys += config_keys(hint, f"{prefix}{key}.")
        else:
            keys.append(prefix + key)
    return keys


def scripts_of(root: Path) -> list[Path]:
    return sorted(p for p in (root / "scripts").iterdir() if p.suffix in (".py", ".sh") and p.name != "__init__.py")


def pages_of(root: Path) -> list[Path]:
    return sorted((root / "docs").glob("*.md"))


def claims(page: Path) -> list[str]:
    """Script names (``invert.py``) a page claims in its ``Scripts on this page:`` line."""
    out = []
    for line in page.read_text().splitlines():
        if line.startswith(CLAIM):
            out += [Path(target).name for target in LINK.findall(line) if "scripts/" in target]
    return out


def table_keys(page: Path) -> set[str]:
    """Every `` `code` `` span in the page's table rows."""
    rows = [line for line in page.read_text().splitlines() if line.lstrip().startswith("|")]
    return {span for row in rows for span in CODE_SPAN.findall(row)}


def check_scripts(root: Path) -> tuple[list[str], dict[str, Path]]:
    """Check 1: ``(errors, {script name: its page})``."""
    owner: dict[str, Path] = {}
    errors = []
    for page in pages_of(root):
        for name in claims(page):
            if name in owner and owner[name] != page:
                errors.append(f"scripts/{name} is claimed by two pages: {owner[name].name} and {page.name}")
            owner.setdefault(name, page)
    for script in scripts_of(root):
        if script.name not in owner:
            errors.append(f"scripts/{script.name} is documented on no page (add it to a '{CLAIM}' line in docs/)")
    return errors, owner


def check_keys(root: Path, owner: dict[str, Path]) -> list[str]:
    """Check 2: every user-facing config key on its script's page."""
    errors = []
    for script in scripts_of(root):
        if script.suffix != ".py" or script.name not in owner:
            continue
        cls = config_class(script)
        if cls is None:
            continue
        page = owner[script.name]
        documented = table_keys(page)
        for key in config_keys(cls):
            if key not in documented:
                rel = page.relative_to(root)
                errors.append(f"scripts/{script.name}: config key `{key}` ({cls.__name__}) is not in a table of {rel}")
    return errors


def check_links(root: Path) -> list[str]:
    """Check 3: relative links and images in README.md and docs/*.md point at files that exist."""
    errors = []
    for doc in [root / "README.md", *pages_of(root)]:
        if not doc.exists():
            continue
        fence = False
        for number, line in enumerate(doc.read_text().splitlines(), 1):
            if line.lstrip().startswith("```"):
                fence = not fence
            if fence:
                continue
            for target in LINK.findall(line):
                if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
                    continue  # http(s), mailto, ...; a pure anchor
                path = target.split("#", 1)[0]
                if not (doc.parent / path).exists():
                    errors.append(f"{doc.relative_to(root)}:{number}: link to {target} points at no file")
    return errors


def check(root: str | Path = ".") -> list[str]:
    """Every failure of the three checks, one line each (empty: the docs agree with the code)."""
    root = Path(root).resolve()
    errors, owner = check_scripts(root)
    return errors + check_keys(root, owner) + check_links(root)


def main(argv: list[str] | None = None) -> list[str]:
    cfg = parse_cli(DocsCheckConfig, argv, __doc__)
    errors = check(cfg.root)
    for line in errors:
        print(f"docs-check: {line}", file=sys.stderr)
    if errors:
        raise SystemExit(f"error: docs-check found {len(errors)} problem(s) (see above)")
    print("docs-check: every script documented, every config key on its page, every link resolves")
    return errors


if __name__ == "__main__":
    main()
