"""Widgets of the TUI.

The detail-tab widgets take only :mod:`tui.model` values (``update_data``)
and talk back only through Textual messages; none of them calls the engine.
"""

from .file_tree import FileTree
from .info_pane import InfoPane
from .peer_table import PeerTable
from .piece_map import PieceMapWidget
from .tracker_table import TrackerTable

__all__ = ["FileTree", "InfoPane", "PeerTable", "PieceMapWidget", "TrackerTable"]
