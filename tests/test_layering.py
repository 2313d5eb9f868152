"""House rules on imports: the engine never imports the UI toolkit; layers import downwards."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

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


# The formats layer (core/formats) is pure: bytes in, values out.  It may use
# the standard library (no asyncio, no sockets), its third-party codecs, and
# the shared leaves core.errors and core.types; nothing of the engine above.
FORMATS_MAY_IMPORT = {"core.formats", "core.errors", "core.types", "bencodepy", "bitarray"}
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
            if node.module is None or base in ("core.formats",):
                out += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
            else:
                out.append((node.lineno, base))
    return out


def test_formats_import_nothing_above_them() -> None:
    bad = []
    for path in sorted((ROOT / "core" / "formats").glob("*.py")):
        for line, name in _imports(path):
            top = name.split(".")[0]
            if top in FORMATS_MUST_NOT or (
                top == "core"
                and not any(
                    name == allowed or name.startswith(allowed + ".")
                    for allowed in FORMATS_MAY_IMPORT
                )
            ):
                bad.append(f"{path.name}:{line} imports {name}")
    assert not bad, "core/formats reaches above its layer:\n" + "\n".join(bad)
