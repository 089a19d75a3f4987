"""``make docs-check``: fail when the documentation has drifted from the code.

Three checks, each failure one line naming what is wrong and where:

1. Every script of ``scripts/`` (``*.py`` and ``*.sh``) is claimed by exactly one page of ``docs/``, in that page's
   ``Scripts on this page:`` line (links to ``../scripts/NAME``).
2. Every config key of a script's config dataclass (the class it passes to ``stylegan3.config.parse_cli``, read
   from the source: nothing is imported) is on the page that claims the script, written as `` `key` `` in the
   first cell of a table row. Keys of inline groups read as the script's own (``steps``); keys of nested
   (non-inline) groups are written in full, dotted (``loss.lpips``). A field whose comment in the code starts with
   ``internal`` (``child: bool = False  # internal: ...``) is not a user's key and is not looked for.
3. Every relative link or image in ``README.md`` and ``docs/*.md`` points at a file or folder that exists
   (``http(s)://`` and ``mailto:`` links and pure ``#anchors`` are skipped; ``#fragments`` are stripped).

Run from the repository root: ``python -m scripts.docs_check`` (exit status 1 and the list on failure).
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

CLAIM = "Scripts on this page:"
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"`([^`]+)`")


@dataclass
class DocsCheckConfig:
    root: str = "."  # the repository to check (README.md, docs/, scripts/)


class ConfigSource:
    """A config dataclass as the code declares it, read from the source (nothing is imported: no torch)."""

    def __init__(self, root: Path, path: Path, node: ast.ClassDef):
        self.root, self.path, self.node = root, path, node
        self.name = node.name


def _module_file(root: Path, module: str) -> Path | None:
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _resolve(root: Path, path: Path, name: str, depth: int = 0) -> ConfigSource | None:
    """The class ``name`` as seen from the module at ``path``: defined there, or imported (followed)."""
    if depth > 8:
        return None
    tree = _tree(path)
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return ConfigSource(root, path, node)
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) != name:
                    continue
                if node.level:  # relative: from the module's own package
                    package = path.parent.relative_to(root).parts
                    package = package[: len(package) - node.level + 1]
                    module = ".".join([*package, *([node.module] if node.module else [])])
                else:
                    module = node.module or ""
                target = _module_file(root, module)
                if target is not None:
                    return _resolve(root, target, alias.name, depth + 1)
    return None


def _is_dataclass(cls: ConfigSource) -> bool:
    def name(d: ast.expr) -> str:
        d = d.func if isinstance(d, ast.Call) else d
        return d.attr if isinstance(d, ast.Attribute) else getattr(d, "id", "")

    return any(name(d) == "dataclass" for d in cls.node.decorator_list)


def _called(value: ast.expr | None, function: str) -> ast.Call | None:
    if isinstance(value, ast.Call):
        func = value.func
        if (func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)) == function:
            return value
    return None


def config_class(script: Path, root: Path | None = None) -> ConfigSource | None:
    """The dataclass ``script`` passes to ``parse_cli``, read from the source, or None."""
    root = (root or script.parent.parent).resolve()
    for node in ast.walk(_tree(script)):
        call = _called(node, "parse_cli")
        if call is not None and call.args and isinstance(call.args[0], ast.Name):
            return _resolve(root, script.resolve(), call.args[0].id)
    return None


def config_keys(cls: ConfigSource, prefix: str = "") -> list[str]:
    """The user-facing keys of a config dataclass, as the command line names them (``stylegan3.config``): an
    ``inline(...)`` group's keys as the holder's own, a nested dataclass field's keys dotted (``loss.lpips``);
    ``ClassVar`` attributes and fields whose comment starts with ``internal`` are left out."""
    lines = cls.path.read_text().splitlines()
    keys: list[str] = []
    for node in cls.node.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        annotation = node.annotation
        if isinstance(annotation, ast.Subscript) and getattr(annotation.value, "id", None) == "ClassVar":
            continue
        comments = [lines[n - 1].partition("#")[2].strip() for n in (node.lineno, node.end_lineno)]
        if any(comment.startswith("internal") for comment in comments):
            continue
        inline_call = _called(node.value, "inline")
        if inline_call is not None and inline_call.args and isinstance(inline_call.args[0], ast.Name):
            group = _resolve(cls.root, cls.path, inline_call.args[0].id)
            if group is None:
                raise ValueError(f"{cls.path}: {cls.name}.{node.target.id}: cannot find {inline_call.args[0].id}")
            keys += config_keys(group, prefix)
            continue
        hint = annotation.value if isinstance(annotation, ast.Constant) else None  # a quoted annotation
        hint_name = hint if isinstance(hint, str) else getattr(annotation, "id", None)
        nested = _resolve(cls.root, cls.path, hint_name) if hint_name and hint_name[:1].isupper() else None
        if nested is not None and _is_dataclass(nested):
            keys += config_keys(nested, f"{prefix}{node.target.id}.")
        else:
            keys.append(prefix + node.target.id)
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
    """Every `` `code` `` span in the first cell of the page's table rows (where a config table names its keys)."""
    rows = [line.strip() for line in page.read_text().splitlines() if line.lstrip().startswith("|")]
    return {span for row in rows for span in CODE_SPAN.findall(row[1:].split(" | ")[0])}


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
        cls = config_class(script, root)
        if cls is None:
            if "parse_cli(" in script.read_text():
                errors.append(f"scripts/{script.name}: cannot find the config class it passes to parse_cli")
            continue
        page = owner[script.name]
        documented = table_keys(page)
        for key in config_keys(cls):
            if key not in documented:
                rel = page.relative_to(root)
                errors.append(f"scripts/{script.name}: config key `{key}` ({cls.name}) is not in a table of {rel}")
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
    from stylegan3.config import parse_cli  # imports torch: only for the command line

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
