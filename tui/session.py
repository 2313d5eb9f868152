"""What ``torrent-tui`` remembers between runs: which torrents, and how the user set them.

The engine already remembers which pieces are verified (its completion
store under ``data_dir``); this file remembers the rest: where each torrent
came from (a private copy of its ``.torrent`` file, or its magnet link), its
download directory, file priorities, paused state and piece-order toggles.

It is one small JSON file rewritten atomically after each change, so a
crash loses at most the last change and never leaves a half-written file.
A damaged file is set aside (renamed ``.bad``) and reported, never fatal:
the app starts empty rather than not at all.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from core.config import APP_NAME

log = logging.getLogger(__name__)

SESSION_VERSION = 1


def default_session_dir() -> Path:
    """``<user data dir>/tui``: next to, not inside, the engine's own state."""
    return platformdirs.user_data_path(APP_NAME) / "tui"


@dataclass(slots=True)
class SessionEntry:
    """One remembered torrent.

    ``key`` is the hex of the wire info-hash (the torrent's usual name);
    ``torrent_file`` a file name inside the session's ``torrents/`` directory,
    or ``magnet`` the link when only that is known.  ``priorities`` holds
    only files whose priority differs from normal, keyed by file index.
    """

    key: str
    torrent_file: str | None = None
    magnet: str | None = None
    download_dir: str | None = None
    priorities: dict[int, int] = field(default_factory=dict)
    paused: bool = False
    sequential: bool = False
    first_last: bool = False
    download_limit: int | None = None
    upload_limit: int | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["priorities"] = {str(k): v for k, v in self.priorities.items()}
        return data

    @classmethod
    def from_json(cls, data: object) -> SessionEntry:
        """Parse one entry; raises ``ValueError`` naming what is wrong."""
        if not isinstance(data, dict):
            raise ValueError("an entry is not an object")
        key = data.get("key")
        if not isinstance(key, str) or len(key) not in (40, 64):
            raise ValueError(f"bad info-hash key {key!r}")
        prios_raw = data.get("priorities", {})
        if not isinstance(prios_raw, dict):
            raise ValueError(f"{key}: priorities is not an object")
        try:
            prios = {int(k): int(v) for k, v in prios_raw.items()}
        except (TypeError, ValueError):
            raise ValueError(f"{key}: priorities must map file indices to numbers") from None

        def opt(name: str, kind: type) -> Any:
            value = data.get(name)
            if value is not None and not isinstance(value, kind):
                raise ValueError(f"{key}: {name} has the wrong type")
            return value

        entry = cls(
            key=key,
            torrent_file=opt("torrent_file", str),
            magnet=opt("magnet", str),
            download_dir=opt("download_dir", str),
            priorities=prios,
            paused=bool(data.get("paused", False)),
            sequential=bool(data.get("sequential", False)),
            first_last=bool(data.get("first_last", False)),
            download_limit=opt("download_limit", int),
            upload_limit=opt("upload_limit", int),
        )
        if entry.torrent_file is None and entry.magnet is None:
            raise ValueError(f"{key}: neither a torrent file nor a magnet link")
        if entry.torrent_file is not None and (
            "/" in entry.torrent_file or "\\" in entry.torrent_file or ".." in entry.torrent_file
        ):
            raise ValueError(f"{key}: torrent file name {entry.torrent_file!r} is not plain")
        return entry


class Session:
    """The session directory: ``session.json`` plus copies of added ``.torrent`` files."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory if directory is not None else default_session_dir()
        self.path = self.directory / "session.json"
        self.torrents_dir = self.directory / "torrents"
        #: What went wrong while loading, for the UI to show once.
        self.problems: list[str] = []

    def load(self) -> list[SessionEntry]:
        """Every readable entry; problems are recorded in :attr:`problems`, never raised."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as exc:
            self.problems.append(f"cannot read {self.path}: {exc}")
            return []
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or not isinstance(data.get("torrents"), list):
                raise ValueError("expected an object with a 'torrents' list")
        except ValueError as exc:
            self.problems.append(f"{self.path} is damaged ({exc}); starting with no torrents")
            self._set_aside()
            return []
        entries = []
        for item in data["torrents"]:
            try:
                entries.append(SessionEntry.from_json(item))
            except ValueError as exc:
                self.problems.append(f"{self.path}: skipped an entry: {exc}")
        return entries

    def _set_aside(self) -> None:
        try:
            self.path.replace(self.path.with_suffix(".json.bad"))
        except OSError:  # pragma: no cover - best effort
            pass

    def save(self, entries: list[SessionEntry]) -> None:
        """Write all entries atomically (blocking: call it from a worker thread)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        payload = {"version": SESSION_VERSION, "torrents": [e.to_json() for e in entries]}
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(payload, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.path)

    def store_torrent(self, key: str, data: bytes) -> str:
        """Keep a private copy of a ``.torrent`` file (the user may delete theirs)."""
        self.torrents_dir.mkdir(parents=True, exist_ok=True)
        name = f"{key}.torrent"
        tmp = self.torrents_dir / (name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, self.torrents_dir / name)
        return name

    def read_torrent(self, name: str) -> bytes:
        return (self.torrents_dir / name).read_bytes()

    def forget_torrent(self, name: str) -> None:
        try:
            (self.torrents_dir / name).unlink()
        except FileNotFoundError:
            pass
