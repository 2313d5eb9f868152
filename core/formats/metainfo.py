"""Torrent metainfo: a .torrent file, i.e. the ``info`` dict and what surrounds it.

The ``info`` dict is parsed strictly by :mod:`core.formats.info`; the optional fields
around it are read leniently (a malformed ``comment`` or tracker list is
dropped, not fatal), since they never decide what we write to disk.

Error policy: malformed bencode raises :class:`~core.errors.BencodeError`
(with the byte offset) and is let through unchanged; everything that is valid
bencode but not a valid torrent raises :class:`~core.errors.MetainfoError`.
Both derive from ``TorrentError`` and ``ValueError``; nothing else escapes.
See :mod:`core.formats.info` for the file-path and offset conventions.

Leniency, following libtorrent so that every torrent it opens opens here:
unsafe names are sanitized (``Metainfo.renamed_paths``), bytes after the
top-level dict are ignored, and v2 ``piece layers`` may be missing for some
or all files (``Metainfo.missing_piece_layers``; a hybrid torrent downloads
with its v1 hashes, a pure v2 one needs BEP 52 hash requests, which the
engine does not send yet).  Each leniency leaves a line in
``Metainfo.warnings``.  Piece layers that are present must be right.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from os import PathLike
from types import MappingProxyType
from typing import Any

from ..errors import BencodeError, MetainfoError
from ..types import InfoHash
from . import merkle
from .bencoding import decode, decode_with_spans, encode
from .info import (
    MAX_PIECE_LENGTH,
    MAX_PIECES,
    MAX_TOTAL_LENGTH,
    MIN_PIECE_LENGTH,
    FileEntry,
    Info,
    RenamedPath,
    check_sorted_info,
    info_hash_of,
    parse_info,
    parse_info_dict,
)

__all__ = [
    "MAX_PIECES",
    "MAX_PIECE_LENGTH",
    "MAX_TOTAL_LENGTH",
    "MIN_PIECE_LENGTH",
    "BencodeError",
    "FileEntry",
    "Info",
    "Metainfo",
    "MetainfoError",
    "RenamedPath",
    "info_hash_of",
    "parse_info",
    "parse_info_dict",
]


_TRAILING = "trailing data after the value"


def _text(raw: bytes, utf8: object = None) -> str:
    """Decode a string, preferring the ``*.utf-8`` variant when it is a byte string."""
    if isinstance(utf8, bytes):
        raw = utf8
    return raw.decode("utf-8", "replace")


def _opt_text(d: Mapping[bytes, Any], key: bytes) -> str | None:
    value = d.get(key)
    if not isinstance(value, bytes):
        return None
    return _text(value, d.get(key + b".utf-8"))


def _announce_list(top: Mapping[bytes, Any]) -> tuple[tuple[str, ...], ...]:
    tiers: list[tuple[str, ...]] = []
    raw = top.get(b"announce-list")
    if isinstance(raw, list):
        for tier in raw:
            if not isinstance(tier, list):
                continue
            urls = tuple(u.decode("utf-8", "replace").strip() for u in tier if isinstance(u, bytes))
            urls = tuple(u for u in urls if u)
            if urls:
                tiers.append(urls)
    if not tiers:
        announce = _opt_text(top, b"announce")
        if announce and announce.strip():
            tiers.append((announce.strip(),))
    return tuple(tiers)


def _url_list(top: Mapping[bytes, Any]) -> tuple[str, ...]:
    raw = top.get(b"url-list")
    items = [raw] if isinstance(raw, bytes) else raw if isinstance(raw, list) else []
    return tuple(u.decode("utf-8", "replace") for u in items if isinstance(u, bytes) and u)


def _nodes(top: Mapping[bytes, Any]) -> tuple[tuple[str, int], ...]:
    raw = top.get(b"nodes")
    out = []
    for item in raw if isinstance(raw, list) else []:
        if (
            isinstance(item, list)
            and len(item) == 2
            and isinstance(item[0], bytes)
            and isinstance(item[1], int)
            and 0 < item[1] < 65536
        ):
            out.append((item[0].decode("utf-8", "replace"), item[1]))
    return tuple(out)


def _piece_layers(top: Mapping[bytes, Any], info: Info) -> tuple[dict[bytes, bytes], list[str]]:
    """BEP 52 piece layers, checked against the pieces roots of a v2 torrent.

    Returns the layers and the display paths of the files that have none.
    As in libtorrent, missing layers are allowed (a magnet link has none
    either) but every layer present must belong to a file of more than one
    piece, have one hash per piece and hash up to the file's pieces root.
    """
    if not info.is_v2:
        return {}, []
    raw = top.get(b"piece layers", {})
    if not isinstance(raw, dict):
        raw = {}  # libtorrent ignores a 'piece layers' that is not a dict
    wanted: dict[bytes, FileEntry] = {}
    for entry in info.files:
        if entry.pieces_root is not None and entry.length > info.piece_length:
            wanted.setdefault(entry.pieces_root, entry)
    layers: dict[bytes, bytes] = {}
    for root, layer in raw.items():
        owner = wanted.get(root)
        if owner is None:
            raise MetainfoError(
                f"piece layer for root {root.hex()[:16]}... is for no file of more than one piece"
            )
        entry = owner
        shown = info.display_path(entry)
        if not isinstance(layer, bytes):
            raise MetainfoError(f"piece layer for {shown!r} is not a string")
        want = -(-entry.length // info.piece_length) * merkle.HASH_SIZE
        if len(layer) != want:
            raise MetainfoError(f"piece layer for {shown!r} is {len(layer)} bytes, expected {want}")
        if merkle.root_from_piece_layer(layer, info.piece_length) != root:
            raise MetainfoError(f"piece layer for {shown!r} does not match its pieces root")
        layers[root] = layer
    missing = [info.display_path(e) for r, e in wanted.items() if r not in layers]
    return layers, missing


@dataclass(frozen=True)
class Metainfo:
    """A parsed .torrent: the validated info dict plus what surrounds it.

    ``raw_info`` holds the ``info`` bytes exactly as received; both hashes are
    computed over them and :meth:`to_bytes` writes them back verbatim, so a
    torrent with unsorted keys keeps its identity.
    """

    info: Info
    info_hash: InfoHash
    raw_info: bytes
    announce_list: tuple[tuple[str, ...], ...] = ()
    url_list: tuple[str, ...] = ()
    nodes: tuple[tuple[str, int], ...] = ()
    comment: str | None = None
    created_by: str | None = None
    creation_date: int | None = None
    piece_layers: Mapping[bytes, bytes] = field(default_factory=lambda: MappingProxyType({}))
    #: Display paths of v2 files (more than one piece) whose piece layer is missing.
    missing_piece_layers: tuple[str, ...] = ()
    #: What was tolerated while loading, one line each (see the module docstring);
    #: ``info.warnings`` included, renamed paths not (see :attr:`renamed_paths`).
    warnings: tuple[str, ...] = ()

    @property
    def renamed_paths(self) -> tuple[RenamedPath, ...]:
        """Every path changed to make it safe (original -> safe), in file order."""
        return self.info.renamed

    @classmethod
    def from_bytes(cls, data: bytes) -> Metainfo:
        """Parse a whole .torrent (raises ``BencodeError`` or ``MetainfoError``)."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise MetainfoError(f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
        if data[:1] != b"d":
            decode(data)  # malformed bencode raises BencodeError with its offset
            raise MetainfoError("a .torrent must be a bencoded dict")
        warnings: list[str] = []
        # Bytes after the top-level dict are ignored, as libtorrent does
        # (some sites append junk); the dict itself must still be valid.
        # One validating scan gives both the values and the raw info span.
        try:
            top, spans = decode_with_spans(data)
        except BencodeError as e:
            if e.reason != _TRAILING:
                raise
            extra = len(data) - e.offset
            plural = "" if extra == 1 else "s"
            warnings.append(f"{extra} byte{plural} after the top-level dictionary ignored")
            data = data[: e.offset]
            top, spans = decode_with_spans(data)
        if b"info" not in top:
            raise MetainfoError("no 'info' dict")
        start, end = spans[b"info"]
        raw_info = data[start:end]
        if isinstance(top[b"info"], dict) and b"meta version" in top[b"info"]:
            check_sorted_info(raw_info, base=start)
        info = parse_info_dict(top[b"info"], raw_info=raw_info)
        warnings.extend(info.warnings)
        layers, missing = _piece_layers(top, info)
        if b"piece layers" in top and not isinstance(top[b"piece layers"], dict):
            warnings.append("'piece layers' is not a dict: ignored")
        if missing:
            how = "its v1 hashes are used" if info.is_v1 else "they must come from peers"
            warnings.append(f"piece layers missing for {len(missing)} file(s): {how}")
        date = top.get(b"creation date")
        return cls(
            info=info,
            info_hash=info_hash_of(raw_info, info),
            raw_info=raw_info,
            announce_list=_announce_list(top),
            url_list=_url_list(top),
            nodes=_nodes(top),
            comment=_opt_text(top, b"comment"),
            created_by=_opt_text(top, b"created by"),
            creation_date=date if isinstance(date, int) and not isinstance(date, bool) else None,
            piece_layers=MappingProxyType(layers),
            missing_piece_layers=tuple(missing),
            warnings=tuple(warnings),
        )

    @classmethod
    def load(cls, path: str | PathLike[str]) -> Metainfo:
        """Read and parse a .torrent file (``OSError`` if it cannot be read)."""
        with open(path, "rb") as fh:
            data = fh.read((64 << 20) + 1)
        return cls.from_bytes(data)

    def to_bytes(self) -> bytes:
        """The whole .torrent, canonical outside ``info`` and ``raw_info`` verbatim inside."""
        top: dict[bytes, Any] = {}
        if self.announce_list:
            top[b"announce"] = self.announce_list[0][0]
            if sum(len(t) for t in self.announce_list) > 1:
                top[b"announce-list"] = [list(t) for t in self.announce_list]
        if self.comment is not None:
            top[b"comment"] = self.comment
        if self.created_by is not None:
            top[b"created by"] = self.created_by
        if self.creation_date is not None:
            top[b"creation date"] = self.creation_date
        if self.nodes:
            top[b"nodes"] = [[h, p] for h, p in self.nodes]
        if self.piece_layers:
            top[b"piece layers"] = dict(self.piece_layers)
        if self.url_list:
            top[b"url-list"] = self.url_list[0] if len(self.url_list) == 1 else list(self.url_list)
        parts = [b"d"]
        for key in sorted([*top, b"info"]):
            parts.append(encode(key))
            parts.append(self.raw_info if key == b"info" else encode(top[key]))
        parts.append(b"e")
        return b"".join(parts)

    @property
    def trackers(self) -> list[str]:
        """Every tracker URL, tiers flattened, duplicates dropped."""
        return list(dict.fromkeys(u for tier in self.announce_list for u in tier))

    def magnet(self) -> str:
        """A magnet URI with the info-hash(es), name, every tracker and web seed."""
        from .magnet import Magnet

        return Magnet(
            self.info_hash,
            display_name=self.info.name,
            trackers=tuple(self.trackers),
            web_seeds=self.url_list,
        ).uri()

    # -- v2 piece hashes --------------------------------------------------

    def piece_hash_v2(self, index: int) -> bytes:
        """The expected v2 hash of piece ``index``: a piece-layer node, or the
        pieces root for a file of at most one piece."""
        info = self.info
        if not info.is_v2:
            raise MetainfoError("a v1 torrent has no v2 piece hashes")
        entry = info.files[info.file_at(info.piece_offset(index))]
        assert entry.pieces_root is not None
        if entry.length <= info.piece_length:
            return entry.pieces_root
        layer = self.piece_layers.get(entry.pieces_root)
        if layer is None:
            raise MetainfoError(f"no piece layer for {info.display_path(entry)!r}")
        k = index - entry.offset // info.piece_length
        return layer[k * merkle.HASH_SIZE : (k + 1) * merkle.HASH_SIZE]

    def verify_piece_v2(self, index: int, data: bytes | bytearray | memoryview) -> bool:
        """True when ``data`` (the piece's file bytes, no padding) matches its v2 hash."""
        info = self.info
        entry = info.files[info.file_at(info.piece_offset(index))]
        return merkle.verify_piece(
            data, self.piece_hash_v2(index), info.piece_length, file_length=entry.length
        )
