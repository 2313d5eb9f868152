"""The Files tab: a collapsible tree of the torrent's files with size, progress and priority.

Input is only :class:`tui.model.FileRow` values (``update_data``); output is
only Textual messages.  The widget never calls the engine.

Priority contract with the app (a two-step "preview, then apply"):

1. A key (``space`` cycles skip -> normal -> high, ``s`` skip, ``n`` normal,
   ``h`` high, ``+``/``-`` raise/lower) or a click on the priority column of
   a file or folder posts :class:`FileTree.PriorityPreviewRequested` with the
   file indices (every file under a folder) and the new priority.  The tree
   shows a preview bar at once ("computing...").
2. The app answers by calling :meth:`FileTree.apply_preview` with what
   ``Engine.preview_priorities`` returned (pieces and bytes that change);
   ``shared_pieces`` may be passed too, otherwise the tree counts the
   boundary pieces the selection shares with other files from the
   ``first_piece``/``last_piece`` of its rows.
3. ``enter`` (or clicking "apply") posts :class:`FileTree.PriorityRequested`,
   which the app applies with ``Engine.set_file_priorities``; ``escape`` (or
   "cancel") drops the preview and posts :class:`FileTree.PreviewCancelled`.
   A new priority key while a preview is shown replaces it.  The tree does not
   change its displayed priority itself: the next ``update_data`` shows what
   the engine applied, so the view never lies.

``t`` on a file posts :class:`FileTree.StreamRequested` (sequential plus
first/last piece first for that file).  ``left``/``right`` collapse/expand a
folder, ``enter`` toggles it when no preview is pending.

Why a ``Tree`` subclass with fixed-width columns rather than a DataTable: the
tree gives folding, keyboard navigation and mouse handling for free; the
label of every line is padded so the size/progress/priority columns line up
whatever the depth.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual import events
from textual.actions import SkipAction
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Static, Tree
from textual.widgets._tree import TreeNode

from core.types import PiecePriority
from tui.format import percent
from tui.format import size as fmt_size
from tui.model import FileRow

__all__ = [
    "PRIORITY_CYCLE",
    "FileTree",
    "FileTreeView",
    "priority_label",
    "shared_boundary_pieces",
    "ui_priority",
]

#: The three priorities the Files tab offers, lowest first.
PRIORITY_CYCLE = (PiecePriority.NONE, PiecePriority.NORMAL, PiecePriority.HIGH)

_SIZE_W = 10
_BAR_W = 10
_PCT_W = 7
_PRIO_W = 8
_RIGHT_W = _SIZE_W + 1 + _BAR_W + _PCT_W + 1 + _PRIO_W
_MIN_NAME_W = 8
_PRIORITY_META = Style.from_meta({"priority": True})


def ui_priority(priority: PiecePriority) -> PiecePriority:
    """The Files-tab level of an engine priority: anything above HIGH (streaming) shows as HIGH."""
    if priority <= PiecePriority.NONE:
        return PiecePriority.NONE
    return PiecePriority.HIGH if priority >= PiecePriority.HIGH else PiecePriority.NORMAL


def priority_label(priority: PiecePriority | None) -> str:
    """``skip`` / ``normal`` / ``high``, or ``mixed`` for a folder whose files differ."""
    if priority is None:
        return "mixed"
    return {PiecePriority.NONE: "skip", PiecePriority.HIGH: "high"}.get(
        ui_priority(priority), "normal"
    )


def shared_boundary_pieces(files: Sequence[FileRow], indices: Iterable[int]) -> int:
    """How many pieces of the selected files also hold data of files outside the selection.

    Files are contiguous in the torrent's byte stream, so a piece strictly
    inside one file belongs to it alone: only each file's first and last
    piece can be shared.  Empty files hold no piece and are ignored.
    """
    selected = set(indices)
    owners: dict[int, set[int]] = {}
    for f in files:
        if f.size <= 0:
            continue
        for piece in (f.first_piece, f.last_piece):
            owners.setdefault(piece, set()).add(f.index)
    return sum(1 for who in owners.values() if who & selected and not who <= selected)


@dataclass(slots=True)
class _Entry:
    """What one tree line shows: a file, or a folder's totals over its files."""

    name: str
    path: str
    file_index: int | None
    indices: tuple[int, ...] = ()
    size: int = 0
    done: int = 0
    priority: PiecePriority | None = PiecePriority.NORMAL  # None: mixed (folders)
    children: list[_Entry] = field(default_factory=list)

    @property
    def is_file(self) -> bool:
        return self.file_index is not None

    @property
    def progress(self) -> float:
        return 1.0 if self.size <= 0 else min(1.0, self.done / self.size)

    def shown(self) -> tuple[int, int, PiecePriority | None]:
        return (self.size, self.done, self.priority)


def _build_entries(files: Sequence[FileRow]) -> tuple[_Entry, dict[int, _Entry]]:
    """The folder hierarchy of ``files``, folders first then files, each by name."""
    root = _Entry(name="", path="", file_index=None)
    folders: dict[str, _Entry] = {"": root}
    by_index: dict[int, _Entry] = {}
    for f in files:
        parts = [p for p in f.path.split("/") if p] or [f"file {f.index}"]
        parent = root
        for depth in range(len(parts) - 1):
            key = "/".join(parts[: depth + 1])
            folder = folders.get(key)
            if folder is None:
                folder = _Entry(name=parts[depth], path=key, file_index=None)
                folders[key] = folder
                parent.children.append(folder)
            parent = folder
        entry = _Entry(
            name=parts[-1],
            path=f.path,
            file_index=f.index,
            indices=(f.index,),
            size=f.size,
            done=f.bytes_done,
            priority=ui_priority(f.priority),
        )
        parent.children.append(entry)
        by_index[f.index] = entry
    _sort(root)
    _aggregate(root)
    return root, by_index


def _sort(entry: _Entry) -> None:
    entry.children.sort(key=lambda e: (e.is_file, e.name.casefold(), e.name))
    for child in entry.children:
        if not child.is_file:
            _sort(child)


def _aggregate(entry: _Entry) -> None:
    """Recompute folder totals bottom-up: sizes and bytes add, priority is uniform or mixed."""
    if entry.is_file:
        return
    indices: list[int] = []
    size = done = 0
    prios: set[PiecePriority | None] = set()
    for child in entry.children:
        _aggregate(child)
        indices.extend(child.indices)
        size += child.size
        done += child.done
        prios.add(child.priority)
    entry.indices = tuple(indices)
    entry.size, entry.done = size, done
    entry.priority = prios.pop() if len(prios) == 1 else None


def _next_priority(entry: _Entry, how: str) -> PiecePriority:
    """The priority a key asks for.

    ``cycle``: skip -> normal -> high -> skip (a mixed folder goes to normal);
    ``raise``/``lower``: one step from the folder's lowest/highest file.
    """
    levels = PRIORITY_CYCLE
    if how == "cycle":
        if entry.priority is None:
            return PiecePriority.NORMAL
        return levels[(levels.index(entry.priority) + 1) % len(levels)]
    own = [e.priority for e in _files_under(entry) if e.priority is not None]
    if how == "raise":
        low = min(own, default=PiecePriority.NORMAL)
        return levels[min(len(levels) - 1, levels.index(low) + 1)]
    high = max(own, default=PiecePriority.NORMAL)
    return levels[max(0, levels.index(high) - 1)]


def _files_under(entry: _Entry) -> Iterable[_Entry]:
    if entry.is_file:
        yield entry
        return
    for child in entry.children:
        yield from _files_under(child)


class FileTreeView(Tree[_Entry]):
    """The tree proper; :class:`FileTree` wraps it with a header and the preview bar."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "priority('cycle')", "Cycle priority"),
        Binding("s", "priority('skip')", "Skip", show=False),
        Binding("n", "priority('normal')", "Normal", show=False),
        Binding("h", "priority('high')", "High", show=False),
        Binding("plus,equals_sign", "priority('raise')", "Raise", show=False),
        Binding("minus", "priority('lower')", "Lower", show=False),
        Binding("t", "stream", "Stream file"),
        Binding("escape", "cancel_preview", "Cancel", show=False),
        Binding("left", "collapse", "Collapse", show=False),
        Binding("right", "expand", "Expand", show=False),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "file-tree--size",
        "file-tree--bar-done",
        "file-tree--bar-todo",
        "file-tree--percent",
        "file-tree--skip",
        "file-tree--normal",
        "file-tree--high",
        "file-tree--mixed",
    }

    DEFAULT_CSS = """
    FileTreeView {
        scrollbar-gutter: stable;
        & > .file-tree--size { color: $text-muted; }
        & > .file-tree--bar-done { color: $success; }
        & > .file-tree--bar-todo { color: $surface-lighten-2; }
        & > .file-tree--percent { color: $text-muted; }
        & > .file-tree--skip { color: $text-disabled; text-style: italic; }
        & > .file-tree--normal { color: $foreground; }
        & > .file-tree--high { color: $warning; text-style: bold; }
        & > .file-tree--mixed { color: $text-muted; text-style: italic; }
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("files", id=id)
        self.show_root = False
        self.guide_depth = 3

    @property
    def _owner(self) -> FileTree:
        parent = self.parent
        assert isinstance(parent, FileTree)
        return parent

    # --- rendering ------------------------------------------------------------

    def row_width(self) -> int:
        return max(self.scrollable_content_region.width, _RIGHT_W + _MIN_NAME_W + 2)

    def _guide_width(self, node: TreeNode[_Entry]) -> int:
        depth = 0
        parent = node.parent
        while parent is not None and parent is not self.root:
            depth += 1
            parent = parent.parent
        return depth * self.guide_depth

    def get_label_width(self, node: TreeNode[_Entry]) -> int:
        return max(1, self.row_width() - self._guide_width(node))

    def render_label(self, node: TreeNode[_Entry], base_style: Style, style: Style) -> Text:
        entry = node.data
        if entry is None:
            return super().render_label(node, base_style, style)
        width = self.get_label_width(node)
        icon = ""
        if node.allow_expand:
            icon = self.ICON_NODE_EXPANDED if node.is_expanded else self.ICON_NODE
        name_w = max(1, width - len(icon) - _RIGHT_W)
        name = entry.name + ("/" if not entry.is_file else "")
        if len(name) > name_w:
            name = name[: max(0, name_w - 1)] + "…"
        component = self.get_component_rich_style
        done = round(entry.progress * _BAR_W)
        prio_name = priority_label(entry.priority)
        text = Text.assemble(
            (icon, base_style + Style.from_meta({"toggle": True})),
            name.ljust(name_w),
            (fmt_size(entry.size).rjust(_SIZE_W), component("file-tree--size")),
            " ",
            ("━" * done, component("file-tree--bar-done")),
            ("━" * (_BAR_W - done), component("file-tree--bar-todo")),
            (percent(entry.progress).rjust(_PCT_W), component("file-tree--percent")),
            " ",
            (
                prio_name.center(_PRIO_W),
                component(f"file-tree--{prio_name}") + _PRIORITY_META,
            ),
        )
        text.stylize(style)
        return text

    # --- actions ---------------------------------------------------------------

    def _cursor_entry(self) -> _Entry | None:
        node = self.cursor_node
        return None if node is None else node.data

    def action_priority(self, how: str) -> None:
        entry = self._cursor_entry()
        if entry is None:
            return
        self._request(entry, how)

    def _request(self, entry: _Entry, how: str) -> None:
        fixed = {"skip": PiecePriority.NONE, "normal": PiecePriority.NORMAL}
        fixed["high"] = PiecePriority.HIGH
        prio = fixed[how] if how in fixed else _next_priority(entry, how)
        if entry.indices:
            self._owner.request_preview(entry.indices, prio, entry.name)

    def action_stream(self) -> None:
        entry = self._cursor_entry()
        if entry is not None and entry.file_index is not None:
            self._owner.post_message(FileTree.StreamRequested(entry.file_index))

    def action_cancel_preview(self) -> None:
        if not self._owner.preview_pending:
            raise SkipAction()
        self._owner.cancel_preview()

    def action_select_cursor(self) -> None:
        if self._owner.preview_pending:
            self._owner.confirm_preview()
            return
        super().action_select_cursor()

    def action_collapse(self) -> None:
        node = self.cursor_node
        if node is None:
            return
        if node.allow_expand and node.is_expanded:
            node.collapse()
        elif node.parent is not None and node.parent is not self.root:
            self.move_cursor(node.parent)

    def action_expand(self) -> None:
        node = self.cursor_node
        if node is not None and node.allow_expand:
            node.expand()

    async def _on_click(self, event: events.Click) -> None:
        """A click on the priority column cycles that line's priority (through the preview)."""
        meta = event.style.meta
        if not meta.get("priority") or "line" not in meta:
            return  # Tree's own handler selects / toggles
        event.prevent_default()
        node = self.get_node_at_line(meta["line"])
        if node is None or node.data is None:
            return
        self.move_cursor(node)
        self._request(node.data, "cycle")


class _PreviewBar(Static):
    """Under the tree: what a pending priority change would do, with apply/cancel links."""

    DEFAULT_CSS = """
    _PreviewBar {
        height: auto;
        max-height: 3;
        display: none;
        background: $boost;
        padding: 0 1;
    }
    _PreviewBar.-shown { display: block; }
    """

    def action_confirm(self) -> None:
        parent = self.parent
        if isinstance(parent, FileTree):
            parent.confirm_preview()

    def action_cancel(self) -> None:
        parent = self.parent
        if isinstance(parent, FileTree):
            parent.cancel_preview()


class _Header(Widget):
    """Column titles aligned with the tree's right-hand columns."""

    DEFAULT_CSS = """
    _Header { height: 1; color: $text-muted; text-style: bold; }
    """

    def render(self) -> Text:
        parent = self.parent
        width = self.size.width
        if isinstance(parent, FileTree):
            width = parent.view.row_width()
        name_w = max(1, width - _RIGHT_W)
        return Text(
            "Name".ljust(name_w)
            + "Size".rjust(_SIZE_W)
            + " "
            + "Progress".ljust(_BAR_W + _PCT_W)
            + " "
            + "Priority".center(_PRIO_W)
        )


@dataclass(frozen=True, slots=True)
class _Pending:
    indices: tuple[int, ...]
    priority: PiecePriority
    what: str


class FileTree(Widget, can_focus=False):
    """The Files tab.  See the module docstring for the message contract with the app."""

    DEFAULT_CSS = """
    FileTree { height: 1fr; layout: vertical; }
    FileTree > FileTreeView { height: 1fr; }
    """

    class PriorityPreviewRequested(Message):
        """The user asked for ``priority`` on ``indices``; answer with ``apply_preview``."""

        def __init__(self, indices: tuple[int, ...], priority: PiecePriority) -> None:
            super().__init__()
            self.indices = indices
            self.priority = priority

    class PriorityRequested(Message):
        """The user confirmed the preview: apply ``priority`` to the files ``indices``."""

        def __init__(self, indices: tuple[int, ...], priority: PiecePriority) -> None:
            super().__init__()
            self.indices = indices
            self.priority = priority

    class PreviewCancelled(Message):
        """The user dismissed the preview; nothing changes."""

    class StreamRequested(Message):
        """Stream file ``index``: sequential plus first/last piece first for that file."""

        def __init__(self, index: int) -> None:
            super().__init__()
            self.index = index

    def __init__(
        self, *, id: str | None = None, classes: str | None = None, name: str | None = None
    ) -> None:
        super().__init__(id=id, classes=classes, name=name)
        self.view = FileTreeView()
        self._files: tuple[FileRow, ...] = ()
        self._signature: tuple[tuple[int, str, int], ...] | None = None
        self._root_entry: _Entry | None = None
        self._by_index: dict[int, _Entry] = {}
        self._node_by_path: dict[str, TreeNode[_Entry]] = {}
        self._pending: _Pending | None = None
        self._preview_text = ""

    def compose(self) -> ComposeResult:
        yield _Header()
        yield self.view
        yield _PreviewBar(id="file-tree-preview")

    def focus(self, scroll_visible: bool = True) -> FileTree:
        self.view.focus(scroll_visible)
        return self

    def on_resize(self) -> None:
        self.query_one(_Header).refresh()

    # --- data ------------------------------------------------------------------

    @property
    def files(self) -> tuple[FileRow, ...]:
        return self._files

    def update_data(self, files: Sequence[FileRow]) -> None:
        """Show ``files``; repaint only the lines whose size, progress or priority changed.

        A different file list (another torrent, or metadata just arrived)
        rebuilds the tree and drops any pending preview.
        """
        files = tuple(files)
        signature = tuple((f.index, f.path, f.size) for f in files)
        self._files = files
        if signature != self._signature:
            self._signature = signature
            self._rebuild(files)
            return
        nodes = self._node_by_path
        before = {path: node.data.shown() for path, node in nodes.items() if node.data}
        changed = False
        for f in files:
            entry = self._by_index[f.index]
            prio = ui_priority(f.priority)
            if entry.done != f.bytes_done or entry.priority != prio:
                entry.done, entry.priority = f.bytes_done, prio
                changed = True
        if not changed or self._root_entry is None:
            return
        _aggregate(self._root_entry)
        for path, node in nodes.items():
            if node.data is not None and node.data.shown() != before[path]:
                node.refresh()

    def _rebuild(self, files: tuple[FileRow, ...]) -> None:
        if self._pending is not None:
            self.cancel_preview()
        expanded = {p for p, n in self._node_by_path.items() if n.allow_expand and n.is_expanded}
        first_build = not self._node_by_path
        root, by_index = _build_entries(files)
        self._root_entry, self._by_index = root, by_index
        self._node_by_path = {}
        tree = self.view
        tree.clear()
        expand_all = len(files) <= 500

        def add(parent: TreeNode[_Entry], entry: _Entry, depth: int) -> None:
            for child in entry.children:
                if child.is_file:
                    node = parent.add_leaf(child.name, child)
                else:
                    want = (expand_all or depth == 0) if first_build else child.path in expanded
                    node = parent.add(child.name, child, expand=want)
                    add(node, child, depth + 1)
                self._node_by_path[child.path] = node

        add(tree.root, root, 0)
        tree.root.expand()
        if tree.cursor_line < 0 and files:
            tree.cursor_line = 0

    # --- preview ----------------------------------------------------------------

    @property
    def preview_pending(self) -> bool:
        return self._pending is not None

    @property
    def preview_text(self) -> str:
        """The preview bar's text (empty when no preview is pending)."""
        return self._preview_text if self._pending is not None else ""

    def request_preview(self, indices: tuple[int, ...], priority: PiecePriority, what: str) -> None:
        """Start (or replace) a pending change and ask the app for its cost."""
        what = what if len(indices) == 1 else f"{what}/ ({len(indices)} files)"
        self._pending = _Pending(indices, priority, what)
        self._show(f"{what} → {priority_label(priority)}: computing…")
        self.post_message(self.PriorityPreviewRequested(indices, priority))

    def apply_preview(self, pieces: int, nbytes: int, shared_pieces: int | None = None) -> None:
        """The app's answer to :class:`PriorityPreviewRequested`: show what would change."""
        pending = self._pending
        if pending is None:
            return
        if shared_pieces is None:
            shared_pieces = shared_boundary_pieces(self._files, pending.indices)
        shared = f", {shared_pieces} shared with other files" if shared_pieces else ""
        self._show(
            f"{pending.what} → {priority_label(pending.priority)}: "
            f"{pieces} pieces ({fmt_size(nbytes)}) change{shared}"
        )

    def confirm_preview(self) -> None:
        pending = self._pending
        if pending is None:
            return
        self._hide()
        self.post_message(self.PriorityRequested(pending.indices, pending.priority))

    def cancel_preview(self) -> None:
        if self._pending is None:
            return
        self._hide()
        self.post_message(self.PreviewCancelled())

    def _show(self, text: str) -> None:
        self._preview_text = text
        if not self.is_mounted:
            return
        bar = self.query_one(_PreviewBar)
        safe = text.replace("[", r"\[")
        bar.update(f"{safe}   [@click=confirm]enter apply[/] · [@click=cancel]esc cancel[/]")
        bar.add_class("-shown")

    def _hide(self) -> None:
        self._pending = None
        self._preview_text = ""
        if self.is_mounted:
            bar = self.query_one(_PreviewBar)
            bar.remove_class("-shown")
            bar.update("")
