"""FileTree: folder aggregation, priority keys and clicks, the preview contract, diffed repaints."""

from __future__ import annotations

from typing import Any

from textual.app import App, ComposeResult
from textual.message import Message

from core.types import PiecePriority as P
from tui.model import FileRow
from tui.widgets.file_tree import (
    FileTree,
    priority_label,
    shared_boundary_pieces,
    ui_priority,
)

MiB = 1 << 20
PIECE = 4 * MiB


def _row(index: int, path: str, size: int, done: int, prio: P, offset: int) -> FileRow:
    """A FileRow laid out at byte ``offset`` of a torrent with 4 MiB pieces."""
    first = offset // PIECE
    last = max(first, (offset + size - 1) // PIECE)
    return FileRow(index, path, size, done, prio, first, last)


def make_files() -> list[FileRow]:
    sizes = [
        ("video/movie.mkv", 700 * MiB + 1000, 350 * MiB, P.NORMAL),
        ("video/extras/making-of.mkv", 120 * MiB, 0, P.NONE),
        ("video/extras/trailer.mp4", 30 * MiB + 5, 30 * MiB + 5, P.HIGH),
        ("readme.txt", 2000, 2000, P.NORMAL),
        ("subs/en.srt", 50_000, 0, P.NORMAL),
    ]
    rows, offset = [], 0
    for i, (path, size, done, prio) in enumerate(sizes):
        rows.append(_row(i, path, size, done, prio, offset))
        offset += size
    return rows


class FilesApp(App[None]):
    def __init__(self, files: list[FileRow] | None = None) -> None:
        super().__init__()
        self.files = make_files() if files is None else files
        self.messages: list[Message] = []
        self.answer: tuple[int, int] | None = (3, 12 * MiB)

    def compose(self) -> ComposeResult:
        yield FileTree()

    def on_mount(self) -> None:
        tree = self.query_one(FileTree)
        tree.update_data(self.files)
        tree.focus()

    def on_file_tree_priority_preview_requested(self, m: FileTree.PriorityPreviewRequested) -> None:
        self.messages.append(m)
        if self.answer is not None:
            self.query_one(FileTree).apply_preview(*self.answer)

    def on_file_tree_priority_requested(self, m: FileTree.PriorityRequested) -> None:
        self.messages.append(m)

    def on_file_tree_preview_cancelled(self, m: FileTree.PreviewCancelled) -> None:
        self.messages.append(m)

    def on_file_tree_stream_requested(self, m: FileTree.StreamRequested) -> None:
        self.messages.append(m)


def kinds(app: FilesApp) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for m in app.messages:
        if isinstance(m, FileTree.PriorityPreviewRequested):
            out.append(("preview", m.indices, m.priority))
        elif isinstance(m, FileTree.PriorityRequested):
            out.append(("apply", m.indices, m.priority))
        elif isinstance(m, FileTree.PreviewCancelled):
            out.append(("cancel",))
        elif isinstance(m, FileTree.StreamRequested):
            out.append(("stream", m.index))
    return out


def cursor_path(app: FilesApp) -> str:
    node = app.query_one(FileTree).view.cursor_node
    assert node is not None and node.data is not None
    return node.data.path


async def move_to(pilot: Any, app: FilesApp, path: str) -> None:
    await pilot.press("home")
    for _ in range(20):
        if cursor_path(app) == path:
            return
        await pilot.press("down")
    raise AssertionError(f"{path} not reachable; cursor at {cursor_path(app)}")


# --- pure helpers ------------------------------------------------------------------


def test_ui_priority_folds_streaming_levels_into_high() -> None:
    assert ui_priority(P.NONE) is P.NONE
    assert ui_priority(P.NORMAL) is P.NORMAL
    for p in (P.HIGH, P.READAHEAD, P.NEXT, P.NOW):
        assert ui_priority(p) is P.HIGH
    assert [priority_label(p) for p in (P.NONE, P.NORMAL, P.NOW, None)] == [
        "skip",
        "normal",
        "high",
        "mixed",
    ]


def test_shared_boundary_pieces_counts_only_pieces_other_files_touch() -> None:
    files = make_files()
    # trailer.mp4 shares its first piece with making-of and its last with readme/en.srt.
    assert shared_boundary_pieces(files, [2]) == 2
    # readme.txt and en.srt sit in one piece together with the end of trailer.mp4.
    assert shared_boundary_pieces(files, [3]) == 1
    assert shared_boundary_pieces(files, [2, 3, 4]) == 1
    # The whole torrent shares nothing with files outside it.
    assert shared_boundary_pieces(files, range(5)) == 0
    # A file aligned on piece boundaries shares nothing.
    aligned = [_row(0, "a", PIECE * 2, 0, P.NORMAL, 0), _row(1, "b", PIECE, 0, P.NORMAL, 2 * PIECE)]
    assert shared_boundary_pieces(aligned, [0]) == 0


# --- tree content ------------------------------------------------------------------------


async def test_folders_aggregate_size_progress_and_mixed_priority() -> None:
    app = FilesApp()
    async with app.run_test(size=(100, 20)):
        tree = app.query_one(FileTree)
        nodes = tree._node_by_path
        video, extras = nodes["video"].data, nodes["video/extras"].data
        assert video is not None and extras is not None
        files = app.files
        assert video.size == sum(f.size for f in files[:3])
        assert video.done == sum(f.bytes_done for f in files[:3])
        assert video.priority is None  # normal + skip + high
        assert extras.indices == (1, 2)
        subs = nodes["subs"].data
        assert subs is not None and subs.priority is P.NORMAL and subs.indices == (4,)
        # folders come first, then files, each by name
        top = [n.data.name for n in tree.view.root.children if n.data]
        assert top == ["subs", "video", "readme.txt"]


async def test_update_repaints_only_changed_lines_and_their_folders() -> None:
    app = FilesApp()
    async with app.run_test(size=(100, 20)) as pilot:
        tree = app.query_one(FileTree)
        nodes = tree._node_by_path
        before = {p: n._updates for p, n in nodes.items()}
        files = list(app.files)
        files[1] = _row(1, files[1].path, files[1].size, 5 * MiB, P.NONE, 700 * MiB)
        tree.update_data(files)
        await pilot.pause()
        bumped = {p for p, n in nodes.items() if n._updates != before[p]}
        assert bumped == {"video", "video/extras", "video/extras/making-of.mkv"}
        video = nodes["video"].data
        assert video is not None
        assert video.done == sum(f.bytes_done for f in files[:3]) == 385 * MiB + 5
        # Same data again: nothing repaints.
        before = {p: n._updates for p, n in nodes.items()}
        tree.update_data(files)
        assert {p: n._updates for p, n in nodes.items()} == before


async def test_new_file_list_rebuilds_and_drops_pending_preview() -> None:
    app = FilesApp()
    app.answer = None
    async with app.run_test(size=(100, 20)) as pilot:
        await pilot.press("s")
        tree = app.query_one(FileTree)
        assert tree.preview_pending
        tree.update_data([_row(0, "other.bin", MiB, 0, P.NORMAL, 0)])
        await pilot.pause()
        assert not tree.preview_pending
        assert list(tree._node_by_path) == ["other.bin"]
        assert kinds(app)[-1] == ("cancel",)


# --- keys, preview contract ---------------------------------------------------------------


async def test_keys_request_a_preview_and_enter_applies_it() -> None:
    app = FilesApp()
    async with app.run_test(size=(100, 20)) as pilot:
        await move_to(pilot, app, "video/movie.mkv")
        await pilot.press("h")
        await pilot.pause()
        tree = app.query_one(FileTree)
        assert kinds(app) == [("preview", (0,), P.HIGH)]
        assert tree.preview_pending
        assert "3 pieces (12.0 MiB) change" in tree.preview_text
        await pilot.press("enter")
        await pilot.pause()
        assert kinds(app)[-1] == ("apply", (0,), P.HIGH)
        assert not tree.preview_pending
        # The tree shows what the engine applied, not what was asked for.
        assert tree._node_by_path["video/movie.mkv"].data.priority is P.NORMAL  # type: ignore[union-attr]


async def test_escape_cancels_and_nothing_is_applied() -> None:
    app = FilesApp()
    async with app.run_test(size=(100, 20)) as pilot:
        await move_to(pilot, app, "readme.txt")
        await pilot.press("s", "escape")
        await pilot.pause()
        assert kinds(app) == [("preview", (3,), P.NONE), ("cancel",)]
        assert not app.query_one(FileTree).preview_pending


async def test_space_plus_minus_and_folder_selection() -> None:
    app = FilesApp()
    async with app.run_test(size=(100, 20)) as pilot:
        await move_to(pilot, app, "video/extras/making-of.mkv")
        await pilot.press("space")  # skip -> normal
        await pilot.press("escape")
        await pilot.press("plus")  # skip -> normal (one step up)
        await pilot.press("escape")
        await pilot.press("minus")  # already lowest: stays skip
        await pilot.press("escape")
        await move_to(pilot, app, "video")
        await pilot.press("space")  # mixed folder -> normal for all its files
        await pilot.pause()
        await pilot.press("enter")
        await pilot.pause()
        previews = [k for k in kinds(app) if k[0] == "preview"]
        assert previews == [
            ("preview", (1,), P.NORMAL),
            ("preview", (1,), P.NORMAL),
            ("preview", (1,), P.NONE),
            ("preview", (1, 2, 0), P.NORMAL),
        ]
        assert kinds(app)[-1] == ("apply", (1, 2, 0), P.NORMAL)


async def test_shared_pieces_come_from_the_rows_when_the_app_gives_none() -> None:
    app = FilesApp()
    async with app.run_test(size=(100, 20)) as pilot:
        await move_to(pilot, app, "video/extras/trailer.mp4")
        await pilot.press("n")
        await pilot.pause()
        assert "2 shared with other files" in app.query_one(FileTree).preview_text
        app.query_one(FileTree).apply_preview(1, 4 * MiB, shared_pieces=0)
        assert "shared" not in app.query_one(FileTree).preview_text


async def test_stream_key_only_for_files() -> None:
    app = FilesApp()
    async with app.run_test(size=(100, 20)) as pilot:
        await pilot.press("t")  # cursor on the "subs" folder: nothing
        await move_to(pilot, app, "subs/en.srt")
        await pilot.press("t")
        await pilot.pause()
        assert kinds(app) == [("stream", 4)]


async def test_left_collapses_a_folder_and_right_expands_it() -> None:
    app = FilesApp()
    async with app.run_test(size=(100, 20)) as pilot:
        view = app.query_one(FileTree).view
        await move_to(pilot, app, "video")
        lines = view.last_line
        await pilot.press("left")
        await pilot.pause()
        assert not app.query_one(FileTree)._node_by_path["video"].is_expanded
        assert view.last_line == lines - 4
        await pilot.press("right")
        await pilot.pause()
        assert view.last_line == lines
        # left on a file moves to its folder
        await move_to(pilot, app, "video/extras/trailer.mp4")
        await pilot.press("left")
        assert cursor_path(app) == "video/extras"


async def test_mouse_click_on_priority_column_and_on_folder_arrow() -> None:
    app = FilesApp()
    async with app.run_test(size=(100, 20)) as pilot:
        view = app.query_one(FileTree).view
        readme_line = app.query_one(FileTree)._node_by_path["readme.txt"].line
        width = view.scrollable_content_region.width
        # The priority column is the last 8 cells of each line; +1 for the header row.
        await pilot.click(view, offset=(width - 3, readme_line))
        await pilot.pause()
        assert kinds(app) == [("preview", (3,), P.HIGH)]
        assert cursor_path(app) == "readme.txt"
        # Clicking "apply" in the preview bar confirms.
        await pilot.click(
            "#file-tree-preview", offset=(len(app.query_one(FileTree).preview_text) + 5, 0)
        )
        await pilot.pause()
        assert kinds(app)[-1] == ("apply", (3,), P.HIGH)
        # Clicking the arrow of a folder collapses it.
        video_line = app.query_one(FileTree)._node_by_path["video"].line
        await pilot.click(view, offset=(0, video_line))
        await pilot.pause()
        assert not app.query_one(FileTree)._node_by_path["video"].is_expanded


# --- snapshots ----------------------------------------------------------------------------


def test_snapshot_file_tree(snap_compare: Any) -> None:
    assert snap_compare(FilesApp(), terminal_size=(100, 14))


def test_snapshot_file_tree_preview(snap_compare: Any) -> None:
    assert snap_compare(FilesApp(), terminal_size=(100, 14), press=["down", "down", "h"])


def test_snapshot_empty_tree_ignores_keys(snap_compare: Any) -> None:
    assert snap_compare(FilesApp(files=[]), terminal_size=(60, 6), press=["space", "t", "enter"])
