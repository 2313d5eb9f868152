"""The storage layer's errors, in a leaf of their own.

Both the storage backends (:mod:`.base`) and the path layout (:mod:`.layout`)
raise them; keeping them here lets the two import each other's names in one
direction only (``base`` -> ``layout`` for types), with no import cycle.
"""

from __future__ import annotations

from ..errors import StorageError

__all__ = ["DataMissingError", "UnsafePathError", "os_error"]


class DataMissingError(StorageError):
    """The requested bytes were never written: the file or region is not there."""


class UnsafePathError(StorageError):
    """A file path would leave the download directory (``..``, symlinks...)."""


def os_error(e: OSError, what: str, path: str) -> StorageError:
    """Wrap an ``OSError`` as a ``StorageError`` keeping errno, message and path.

    A missing file becomes :class:`DataMissingError` so readers can tell
    "never downloaded" from "the disk is broken".
    """
    cls = DataMissingError if isinstance(e, FileNotFoundError) else StorageError
    message = f"{what}: {e.strerror or e}"
    return cls(e.errno, message, path) if e.errno is not None else cls(message)
