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
# formats and wire layers are also sans-IO: no asyncio, no sockets.
LEAVES = {"core.errors", "core.types"}
MAY_IMPORT = {
    "core.formats": set(),
    "core.wire": {"core.formats"},
    "core.storage": {"core.formats"},
    "core.dht": {"core.formats"},
    "core.net": {"core.wire", "core.formats", "core.ratelimit", "core.utp", "core.mse"},
    # the transport protocols under the stream seam: sans-IO, standalone
    "core.utp": set(),
    "core.mse": set(),
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
#: Packages that never touch the event loop or a socket (sans-IO).
SANS_IO = {"core.formats", "core.wire", "core.dht", "core.utp", "core.mse"}
SANS_IO_MUST_NOT = {"asyncio", "socket", "selectors", "ssl", "textual", "rich", "aiohttp"}


def _imports(path: Path, *, with_names: bool = False) -> list[tuple[int, str]]:
    """Every module ``path`` imports (relative imports resolved), with its line.

    ``with_names`` also lists ``pkg.name`` for each ``from pkg import name``,
    since the name may be a submodule (``from . import checking``).
    """
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
            if with_names:
                out += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
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
            if (package in SANS_IO and top in SANS_IO_MUST_NOT) or (
                top in ("core", "tui") and not _within(name, allowed)
            ):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not bad, f"{package} reaches above its layer:\n" + "\n".join(bad)


# -- import cycles ---------------------------------------------------------------------


def _module_graph() -> dict[str, set[str]]:
    """``module -> modules it imports`` over core/ and tui/ (TYPE_CHECKING imports included)."""
    mods: dict[str, Path] = {}
    for pkg in ("core", "tui"):
        for path in (ROOT / pkg).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join(parts)] = path

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        for _line, name in _imports(path, with_names=True):
            target = resolve(name)
            # a package's own __init__ is not an edge (importing "from . import x")
            if target and target != mod and not mod.startswith(target + "."):
                graph[mod].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        comp.append(member)
                        if member == node:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def test_no_import_cycles_anywhere() -> None:
    """Not in core/, not in tui/, TYPE_CHECKING imports included: every arrow points one way.

    Collaborators see what they need through Protocols (e.g. ``TorrentClient``,
    ``PipelineHost``), so none of them imports the object that owns it.
    """
    cycles = _cycles(_module_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]


# -- the README's package graph ---------------------------------------------------------

#: The packages the README's table names, in its order.
GRAPH_PACKAGES = (
    "tui",
    "core.cli",
    "core.engine",
    "core.tracker",
    "core.dht",
    "core.storage",
    "core.net",
    "core.wire",
    "core.formats",
)


def _package_graph() -> dict[str, set[str]]:
    def package(mod: str) -> str | None:
        return next((p for p in GRAPH_PACKAGES if mod == p or mod.startswith(p + ".")), None)

    edges: dict[str, set[str]] = {p: set() for p in GRAPH_PACKAGES}
    for mod, deps in _module_graph().items():
        src = package(mod)
        for dep in deps:
            dst = package(dep)
            if src and dst and dst != src:
                edges[src].add(dst)
    return edges


def test_readme_package_graph_is_the_import_graph() -> None:
    text = (ROOT / "README.md").read_text()
    marker = "<!-- package-graph:"
    assert marker in text, "README.md lost its package graph"
    block = text.split(marker, 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    documented = {}
    for line in block.strip().splitlines():
        src, _, dsts = line.partition("->")
        documented[src.strip()] = set(dsts.split())
    actual = _package_graph()
    width = max(map(len, GRAPH_PACKAGES))
    table = "\n".join(f"{p:<{width}} -> {' '.join(sorted(actual[p]))}".rstrip() for p in actual)
    assert documented == actual, f"README.md's package graph is out of date; it is now:\n{table}"
    # And it points one way: no package reaches one listed above it.
    order = {p: i for i, p in enumerate(GRAPH_PACKAGES)}
    assert all(order[d] > order[s] for s, ds in actual.items() for d in ds)
