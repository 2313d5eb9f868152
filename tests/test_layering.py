"""House rules on imports: the engine never imports the UI toolkit; layers import downwards."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_core_does_not_import_textual_or_rich() -> None:
    code = (
        "import importlib, pkgutil, sys, core\n"
        "for m in pkgutil.walk_packages(core.__path__, 'core.'):\n"
        "    if not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('textual', 'rich'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == ""


# Layers import downwards only: engine -> (tracker, storage, net) -> wire ->
# formats; nothing but core's face, the CLI and the TUI imports core.engine.
# For each package below the engine (and each shared leaf module), what it
# may import from core besides itself and core.errors / core.types.  The
# formats layer is also pure: no asyncio, no sockets.
LEAVES = {"core.errors", "core.types"}
MAY_IMPORT = {
    "core.formats": set(),
    "core.wire": {"core.formats"},
    "core.storage": {"core.formats"},
    "core.net": {"core.wire", "core.formats", "core.ratelimit"},
    # the per-torrent announcer publishes the bus's tracker events
    "core.tracker": {"core.formats", "core.events"},
    # the shared leaves the engine and the layers below use
    "core.events": {"core.piecestate", "core.stats"},
    "core.bus": {"core.events"},
    "core.stats": set(),
    "core.piecestate": set(),
    "core.config": set(),
    "core.ratelimit": set(),
}
FORMATS_MUST_NOT = {"asyncio", "socket", "selectors", "ssl", "textual", "rich", "aiohttp"}


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports (relative imports resolved), with its line."""
    tree = ast.parse(path.read_text(), str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            out.append((node.lineno, base))
    return out


def _within(name: str, packages: set[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_lower_layers_import_nothing_above_them(package: str) -> None:
    allowed = {package} | LEAVES | MAY_IMPORT[package]
    bad = []
    where = ROOT / Path(*package.split("."))
    paths = [where.with_suffix(".py")] if where.with_suffix(".py").exists() else where.rglob("*.py")
    for path in sorted(paths):
        for line, name in _imports(path):
            top = name.split(".")[0]
            if (package == "core.formats" and top in FORMATS_MUST_NOT) or (
                top in ("core", "tui") and not _within(name, allowed)
            ):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not bad, f"{package} reaches above its layer:\n" + "\n".join(bad)
