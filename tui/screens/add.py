"""The add-torrent dialog: a path (with completion), magnet or URL, then pick files.

"Choose files" asks the engine for the file list (a ``.torrent`` is parsed;
a magnet fetches its metadata from the swarm first, shown as "fetching
metadata…") and lists the files with check boxes, all wanted by default.
"Add" returns an :class:`AddRequest` whose priorities mark unchecked files
``NONE`` so they are never downloaded (boundary pieces shared with a wanted
file excepted).  The dialog never adds anything itself; the app does, in a
worker.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.suggester import Suggester
from textual.widgets import Button, Input, Label, LoadingIndicator, SelectionList
from textual.widgets.selection_list import Selection

from core.errors import TorrentError
from core.types import PiecePriority
from tui import format as fmt
from tui.engine import classify_source
from tui.model import FileRow

if TYPE_CHECKING:
    from tui.engine import Engine


@dataclass(frozen=True, slots=True)
class AddRequest:
    """What the user asked to add, and which files they do not want."""

    source: str
    download_dir: str | None
    priorities: dict[int, PiecePriority] = field(default_factory=dict)


class PathSuggester(Suggester):
    """Completes file system paths, preferring directories and ``.torrent`` files."""

    def __init__(self) -> None:
        super().__init__(use_cache=False, case_sensitive=True)

    async def get_suggestion(self, value: str) -> str | None:
        if not value or classify_source(value) != "file":
            return None
        return await asyncio.to_thread(complete_path, value)


def complete_path(value: str) -> str | None:
    """The first existing entry that extends ``value`` (directories end with ``/``)."""
    expanded = os.path.expanduser(value)
    head, tail = os.path.split(expanded)
    try:
        names = sorted(os.listdir(head or "."))
    except OSError:
        return None
    candidates = [
        n for n in names if n.startswith(tail) and (tail.startswith(".") or not n.startswith("."))
    ]
    candidates.sort(key=lambda n: (not n.endswith(".torrent"), n))
    for name in candidates:
        full = os.path.join(head, name)
        if os.path.isdir(full):
            full += os.sep
        elif not name.endswith(".torrent"):
            continue
        # Keep what the user typed ("~/...") and complete only the last part.
        return value[: len(value) - len(tail)] + full[len(os.path.join(head, tail)) - len(tail) :]
    return None


class AddTorrentScreen(ModalScreen[AddRequest | None]):
    """The dialog (see the module docstring)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+a", "select_all", "All files"),
        Binding("ctrl+n", "select_none", "No files"),
    ]

    def __init__(self, engine: Engine, download_dir: str) -> None:
        super().__init__(id="add-dialog")
        self.engine = engine
        self.download_dir = download_dir
        self.files: tuple[FileRow, ...] = ()
        self.loaded_source: str | None = None
        self.fetching = False

    def compose(self) -> ComposeResult:
        with Vertical(id="add-box", classes="dialog"):
            yield Label("Add a torrent", classes="dialog-title")
            yield Label("Torrent file, magnet link or URL")
            yield Input(
                placeholder="~/Downloads/file.torrent or magnet:?xt=...",
                suggester=PathSuggester(),
                id="add-source",
            )
            yield Label("Save to")
            yield Input(self.download_dir, suggester=PathSuggester(), id="add-dir")
            with Horizontal(id="add-fetching"):
                yield LoadingIndicator()
                yield Label("fetching metadata…", id="add-fetching-label")
            yield Label("", id="add-error", classes="error")
            yield Label("", id="add-renamed", classes="note")
            yield SelectionList[int](id="add-files")
            yield Label("", id="add-summary")
            with Horizontal(classes="buttons"):
                yield Button("Choose files", id="add-load")
                yield Button("Add", variant="primary", id="add-ok")
                yield Button("Cancel", id="add-cancel")

    def on_mount(self) -> None:
        self.query_one("#add-fetching").display = False
        self.query_one("#add-files").display = False
        self.query_one("#add-renamed").display = False
        self.query_one("#add-source", Input).focus()

    # ------------------------------------------------------------------ loading

    @property
    def source(self) -> str:
        return self.query_one("#add-source", Input).value.strip()

    def _error(self, text: str) -> None:
        self.query_one("#add-error", Label).update(text)

    @on(Input.Submitted, "#add-source")
    @on(Button.Pressed, "#add-load")
    def load_files(self) -> None:
        source = self.source
        if not source:
            self._error("Enter a path to a .torrent file, a magnet link or a URL.")
            return
        if self.fetching:
            return
        self._error("")
        self._fetch(source)

    @work(exclusive=True, group="add-metadata", exit_on_error=False)
    async def _fetch(self, source: str) -> None:
        self.fetching = True
        is_magnet = classify_source(source) == "magnet"
        label = "fetching metadata from peers…" if is_magnet else "reading torrent…"
        self.query_one("#add-fetching-label", Label).update(label)
        self.query_one("#add-fetching").display = True
        try:
            files = await self.engine.fetch_metadata(source)
        except (TorrentError, OSError) as exc:
            self._error(str(exc))
            return
        finally:
            self.fetching = False
            self.query_one("#add-fetching").display = False
        self.show_files(source, files)

    def show_files(self, source: str, files: tuple[FileRow, ...]) -> None:
        """List ``files`` for picking (all wanted)."""
        self.files = files
        self.loaded_source = source
        picker = self.query_one("#add-files", SelectionList)
        picker.clear_options()
        picker.add_options(Selection(_file_label(f), f.index, True) for f in files)
        renamed = sum(f.renamed_from is not None for f in files)
        note = self.query_one("#add-renamed", Label)
        note.update(
            f"{renamed} {'name was' if renamed == 1 else 'names were'} made safe to store "
            "(as qBittorrent would): see 'was ...' below"
        )
        note.display = bool(renamed)
        picker.display = True
        if files:
            picker.highlighted = 0
        picker.focus()
        self._summarise()

    @on(SelectionList.SelectedChanged, "#add-files")
    def _summarise(self) -> None:
        picker = self.query_one("#add-files", SelectionList)
        chosen = set(picker.selected)
        total = sum(f.size for f in self.files if f.index in chosen)
        self.query_one("#add-summary", Label).update(
            f"{len(chosen)} of {len(self.files)} files, {fmt.size(total)} to download"
        )

    def action_select_all(self) -> None:
        self.query_one("#add-files", SelectionList).select_all()

    def action_select_none(self) -> None:
        self.query_one("#add-files", SelectionList).deselect_all()

    # ------------------------------------------------------------------ result

    @on(Button.Pressed, "#add-ok")
    def confirm(self) -> None:
        source = self.source
        if not source:
            self._error("Enter a path to a .torrent file, a magnet link or a URL.")
            return
        directory = self.query_one("#add-dir", Input).value.strip() or None
        if directory is not None:
            directory = str(Path(directory).expanduser())
        priorities: dict[int, PiecePriority] = {}
        if self.files and self.loaded_source == source:
            chosen = set(self.query_one("#add-files", SelectionList).selected)
            if not chosen:
                self._error("Choose at least one file (ctrl+a selects all).")
                return
            priorities = {f.index: PiecePriority.NONE for f in self.files if f.index not in chosen}
        self.dismiss(AddRequest(source, directory, priorities))

    @on(Button.Pressed, "#add-cancel")
    def action_cancel(self) -> None:
        if self.loaded_source is not None:
            source = self.loaded_source
            self.app.run_worker(self.engine.discard_metadata(source), exit_on_error=False)
        self.dismiss(None)


def _file_label(f: FileRow) -> Content:
    """A file's line in the picker: path, size, and what the torrent called it if renamed."""
    parts: list[str | tuple[str, str]] = [f.path, "  ", (fmt.size(f.size), "dim")]
    if f.renamed_from is not None:
        parts += ["  ", (f"was '{f.renamed_from}'", "$warning")]
    return Content.assemble(*parts)
