"""Storage backends and the piece-completion store.

All disk work here is blocking and thread-safe; the engine runs it in worker
threads.  :class:`Layout` maps the torrent's piece space onto files,
:class:`FileStorage` and :class:`MemoryStorage` implement :class:`Storage`,
and :class:`CompletionStore` remembers verified pieces across restarts.

May import ``core.formats``, ``core.errors`` and ``core.types``; never the
engine (``tests/test_layering.py``).
"""

from .base import BlockData, DataMissingError, Storage, UnsafePathError
from .completion import CompletionStore
from .file import DEFAULT_MAX_OPEN, FileStorage
from .layout import GAP, Layout, LayoutFile, Segment
from .memory import MemoryStorage

__all__ = [
    "DEFAULT_MAX_OPEN",
    "GAP",
    "BlockData",
    "CompletionStore",
    "DataMissingError",
    "FileStorage",
    "Layout",
    "LayoutFile",
    "MemoryStorage",
    "Segment",
    "Storage",
    "UnsafePathError",
]
