"""Every user action, once: its key, footer label and description.

The app's key bindings, the footer, the ``?`` help screen and the command
palette are all generated from :data:`ACTIONS`, so an action can never be
reachable one way and missing from another.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class UiAction:
    """One action of :class:`tui.app.TorrentApp` (``action_<name>``)."""

    name: str
    keys: str  # Textual binding keys, comma separated
    label: str  # short, for the footer
    description: str  # a sentence, for help and the command palette
    group: str
    footer: bool = True
    #: Needs a selected torrent (disabled otherwise).
    torrent: bool = False


ACTIONS: tuple[UiAction, ...] = (
    UiAction("add", "a", "Add", "Add a torrent file, magnet link or URL", "Torrents"),
    UiAction(
        "pause_resume", "p", "Pause", "Pause or resume the selected torrent", "Torrents", True, True
    ),
    UiAction(
        "recheck",
        "c",
        "Recheck",
        "Force a recheck of the selected torrent's data",
        "Torrents",
        False,
        True,
    ),
    UiAction(
        "remove",
        "x,delete",
        "Remove",
        "Remove the selected torrent (optionally its data)",
        "Torrents",
        True,
        True,
    ),
    UiAction(
        "toggle_sequential",
        "e",
        "Sequential",
        "Toggle sequential download (pieces in order) for the selected torrent",
        "Torrents",
        False,
        True,
    ),
    UiAction(
        "toggle_first_last",
        "E",
        "First/last",
        "Toggle first-and-last-pieces-first for the selected torrent",
        "Torrents",
        False,
        True,
    ),
    UiAction(
        "torrent_limits",
        "L",
        "Torrent limits",
        "Set download/upload limits for the selected torrent",
        "Speed",
        False,
        True,
    ),
    UiAction("limits", "l", "Limits", "Set the global download/upload speed limits", "Speed"),
    UiAction(
        "cycle_filter", "f", "Filter", "Cycle the state filter (all, downloading, ...)", "View"
    ),
    UiAction("search", "slash", "Search", "Search torrents by name as you type", "View"),
    # Off the footer so it fits 80 columns: the sort label above the list
    # shows the order, and a header click sorts too.
    UiAction("sort_next", "o", "Sort", "Sort by the next column", "View", False),
    UiAction("sort_reverse", "O", "Reverse", "Reverse the sort order", "View", False),
    UiAction("settings", "comma,f2", "Settings", "Open the settings", "App"),
    UiAction("help", "question_mark,f1", "Help", "Show keys and mouse help", "App"),
    UiAction("quit", "q", "Quit", "Quit (torrents are remembered)", "App"),
)

ACTION_BY_NAME = {a.name: a for a in ACTIONS}


def key_label(keys: str) -> str:
    """``"question_mark,f1"`` -> ``"? / F1"`` for help text."""
    names = {
        "question_mark": "?",
        "slash": "/",
        "comma": ",",
        "delete": "Del",
        "escape": "Esc",
        "enter": "Enter",
        "space": "Space",
    }
    out = []
    for k in keys.split(","):
        out.append(names.get(k, k.upper() if k.startswith("f") and k[1:].isdigit() else k))
    return " / ".join(out)
