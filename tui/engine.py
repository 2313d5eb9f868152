"""The engine facade: everything the TUI may ask of a BitTorrent engine.

The app talks to an :class:`Engine`, never to :mod:`core` objects directly.
Two implementations keep the same promises:

* :class:`RealEngine` wraps :class:`core.Client` (same asyncio loop as
  Textual) and remembers the session under the user data dir;
* :class:`tui.fake_engine.FakeEngine` serves scripted, deterministic data
  for tests, screenshots and the benchmark.

Getters (``torrents``, ``status``, ``details``, ``preview_priorities``) are
synchronous and cheap: the bridge calls them a few times a second on the
event loop.  Anything that may wait (disk, network, hashing) is ``async``
and is awaited from Textual workers, never from a handler.

What only reads engine objects (rows, piece map, info view, source kinds,
priority previews) lives in :mod:`tui.engine_views`; ``classify_source``,
``files_of`` and ``priority_change`` are re-exported here.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from core.bus import Subscription
from core.config import ClientConfig
from core.engine.client import Client
from core.engine.torrent import Torrent
from core.errors import MagnetError, MetainfoError, TorrentError
from core.events import TorrentRow
from core.formats.magnet import parse_magnet
from core.formats.metainfo import Metainfo
from core.stats import TorrentState
from core.types import InfoHash, PiecePriority

from .engine_views import classify_source as classify_source
from .engine_views import (
    file_rows,
    info_view,
    is_magnet,
    peer_rows,
    piece_map,
    wanted_bytes,
    with_wanted,
)
from .engine_views import files_of as files_of
from .engine_views import priority_change as priority_change
from .model import FileRow, GlobalStatus, TorrentDetails
from .session import Session, SessionEntry

log = logging.getLogger(__name__)

#: Largest .torrent file accepted from a URL (a sane metainfo is far smaller).
MAX_TORRENT_DOWNLOAD = 16 << 20
#: Free disk space is a syscall on a possibly slow mount: refresh it this rarely.
DISK_REFRESH_SECONDS = 5.0


class Engine(Protocol):
    """What the TUI needs from an engine (see the module docstring for the rules)."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def torrents(self) -> tuple[TorrentRow, ...]: ...

    def status(self) -> GlobalStatus: ...

    def details(self, ih: InfoHash) -> TorrentDetails | None: ...

    async def add(
        self,
        source: str,
        *,
        download_dir: str | None = None,
        file_priorities: dict[int, PiecePriority] | None = None,
        peers: Sequence[tuple[str, int]] = (),
    ) -> InfoHash: ...

    async def fetch_metadata(self, magnet: str) -> tuple[FileRow, ...]: ...

    async def discard_metadata(self, source: str) -> None: ...

    async def pause(self, ih: InfoHash) -> None: ...

    async def resume(self, ih: InfoHash) -> None: ...

    async def recheck(self, ih: InfoHash) -> None: ...

    async def remove(self, ih: InfoHash, delete_data: bool) -> None: ...

    async def set_file_priorities(
        self, ih: InfoHash, indices: Sequence[int], prio: PiecePriority
    ) -> None: ...

    def preview_priorities(
        self, ih: InfoHash, indices: Sequence[int], prio: PiecePriority
    ) -> tuple[int, int]: ...

    async def set_sequential(self, ih: InfoHash, on: bool) -> None: ...

    async def set_first_last(self, ih: InfoHash, on: bool) -> None: ...

    async def stream_file(self, ih: InfoHash, index: int) -> None: ...

    async def set_limits(self, download: int | None, upload: int | None) -> None: ...

    async def set_connection_policy(self, *, encryption: str, utp: bool, tcp: bool) -> None:
        """Encryption and transports for new connections (open ones keep theirs)."""
        ...

    async def set_torrent_limits(
        self, ih: InfoHash, download: int | None, upload: int | None
    ) -> None: ...

    def subscribe(self) -> Subscription: ...


# --- the real engine -------------------------------------------------------------


class RealEngine:
    """:class:`Engine` over a :class:`core.Client` in the app's own event loop.

    Every change the user makes is mirrored into a :class:`Session` (written
    in a worker thread, coalesced) so the next start restores it.
    """

    def __init__(self, config: ClientConfig, *, session: Session | None = None) -> None:
        self.config = config
        self.client = Client(config)
        self.session = session
        self._entries: dict[InfoHash, SessionEntry] = {}
        self._limits: dict[InfoHash, tuple[int | None, int | None]] = {}
        self._pending_magnets: dict[str, InfoHash] = {}
        self._save_task: asyncio.Task[None] | None = None
        self._save_lock = asyncio.Lock()
        self._disk_free: int | None = None
        self._disk_checked = -1e9
        self._errors = 0
        #: Problems met while restoring the session, for the app to show once.
        self.problems: list[str] = []

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self.client.start()
        if self.session is not None:
            entries = await asyncio.to_thread(self.session.load)
            self.problems.extend(self.session.problems)
            for entry in entries:
                try:
                    await self._restore(entry)
                except (TorrentError, OSError) as exc:
                    self.problems.append(f"could not restore {entry.key}: {exc}")

    async def _restore(self, entry: SessionEntry) -> None:
        assert self.session is not None
        prios = {i: PiecePriority(p) for i, p in entry.priorities.items()}
        if entry.torrent_file is not None:
            data = await asyncio.to_thread(self.session.read_torrent, entry.torrent_file)
            mi = Metainfo.from_bytes(data)
            t = await self.client.add_metainfo(mi, download_dir=entry.download_dir)
        else:
            assert entry.magnet is not None
            t = await self._add_magnet(entry.magnet, entry.download_dir)
        self._entries[t.info_hash] = entry
        self._apply_priorities(t, prios)
        if entry.sequential:
            t.set_sequential(True)
        if entry.first_last:
            t.set_first_last_pieces_first(True)
        if entry.download_limit is not None or entry.upload_limit is not None:
            self._limits[t.info_hash] = (entry.download_limit, entry.upload_limit)
            t.set_rate_limits(download=entry.download_limit, upload=entry.upload_limit)
        if entry.paused:
            t.pause()

    async def close(self) -> None:
        if self._save_task is not None:
            try:
                await self._save_task
            except Exception:  # pragma: no cover - logged by _save
                pass
        await self._save_now()
        await self.client.close()

    def subscribe(self) -> Subscription:
        return self.client.bus.subscribe()

    # ------------------------------------------------------------------ getters

    def torrents(self) -> tuple[TorrentRow, ...]:
        """The engine's rows, with progress and size over the wanted files (see ``with_wanted``)."""
        rows = []
        for row in self.client.snapshot().torrents:
            t = self.client.torrent(row.info_hash)
            wanted = wanted_bytes(t) if t is not None else None
            rows.append(row if wanted is None else with_wanted(row, *wanted))
        return tuple(rows)

    def status(self) -> GlobalStatus:
        snap = self.client.snapshot()
        now = time.monotonic()
        if now - self._disk_checked > DISK_REFRESH_SECONDS:
            self._disk_checked = now
            self._disk_free = _free_space(Path(self.config.download_dir))
        errors = sum(1 for t in self.client.torrents.values() if t.state is TorrentState.ERROR)
        return GlobalStatus(
            down_rate=snap.down_rate,
            up_rate=snap.up_rate,
            download_limit=_as_limit(self.client.download_bucket.rate),
            upload_limit=_as_limit(self.client.upload_bucket.rate),
            peers=snap.peers,
            listen_port=self.client.listen_port,
            free_disk=self._disk_free,
            session_downloaded=snap.bytes_downloaded,
            session_uploaded=snap.bytes_uploaded,
            errors=errors + self._errors,
            dht_nodes=snap.dht_nodes,
            dht_good_nodes=snap.dht_good_nodes,
            dht_state=snap.dht_state,
        )

    def details(self, ih: InfoHash) -> TorrentDetails | None:
        t = self.client.torrent(ih)
        if t is None:
            return None
        if getattr(t, "info", None) is None:  # a magnet still fetching its metadata
            return TorrentDetails(ih, (), peer_rows(t), tuple(t.trackers()), None, None)
        down, up = self._limits.get(ih, (None, None))
        return TorrentDetails(
            info_hash=ih,
            files=file_rows(t),
            peers=peer_rows(t),
            trackers=tuple(t.trackers()),
            pieces=piece_map(t),
            info=info_view(t, self.config.download_dir),
            sequential=t.sequential,
            first_last=any(f.first_last_pieces_first for f in t.files),
            download_limit=down,
            upload_limit=up,
        )

    def preview_priorities(
        self, ih: InfoHash, indices: Sequence[int], prio: PiecePriority
    ) -> tuple[int, int]:
        t = self.client.torrent(ih)
        if t is None or getattr(t, "info", None) is None:
            return 0, 0
        info = t.info
        return priority_change(
            file_rows(t),
            info.piece_length,
            t.length,
            indices,
            PiecePriority(prio),
            piece_size=info.piece_size,
        )

    # ------------------------------------------------------------------ adding

    async def add(
        self,
        source: str,
        *,
        download_dir: str | None = None,
        file_priorities: dict[int, PiecePriority] | None = None,
        peers: Sequence[tuple[str, int]] = (),
    ) -> InfoHash:
        kind = classify_source(source)
        entry: SessionEntry
        if kind == "magnet":
            t = await self._add_magnet(source.strip(), download_dir)
            self._pending_magnets.pop(source.strip(), None)
            entry = SessionEntry(key=t.info_hash.hex(), magnet=source.strip())
        else:
            data = await self._read_source(source, kind)
            try:
                mi = Metainfo.from_bytes(data)
            except MetainfoError as exc:
                raise TorrentError(f"{source}: not a valid torrent: {exc}") from exc
            t = await self.client.add_metainfo(mi, download_dir=download_dir)
            entry = SessionEntry(key=t.info_hash.hex())
            if self.session is not None:
                entry.torrent_file = await asyncio.to_thread(
                    self.session.store_torrent, entry.key, data
                )
        # Priorities go in before the first await after adding: no peer can
        # have been asked for data yet, so skipped files are never fetched.
        if file_priorities:
            self._apply_priorities(t, file_priorities)
        entry.download_dir = download_dir
        old = self._entries.get(t.info_hash)
        if old is None or kind != "magnet" or old.torrent_file is None:
            self._entries[t.info_hash] = entry
        self._remember_priorities(t)
        if peers:
            t.add_peers(peers)
        self._schedule_save()
        return t.info_hash

    async def _add_magnet(self, uri: str, download_dir: str | None) -> Torrent:
        try:
            magnet = parse_magnet(uri)
        except MagnetError as exc:
            raise TorrentError(f"not a valid magnet link: {exc}") from exc
        existing = self.client.torrent(magnet.info_hash)
        if existing is not None:
            return existing
        add_magnet: Any = getattr(self.client, "add_magnet", None)
        if add_magnet is None:
            raise TorrentError(
                "magnet links need metadata exchange, which this engine does not offer yet"
            )
        kwargs: dict[str, Any] = {}
        if download_dir is not None:
            kwargs["download_dir"] = download_dir
        torrent: Torrent = await add_magnet(uri, **kwargs)
        return torrent

    async def fetch_metadata(self, magnet: str) -> tuple[FileRow, ...]:
        """The files of a source before adding it, for the add dialog's file picker.

        A ``.torrent`` file or URL is only parsed.  A magnet must be added to
        fetch its metadata from the swarm: it joins with nothing wanted, and
        :meth:`add` (the user's pick) or :meth:`discard_metadata` (cancel)
        settles it.
        """
        kind = classify_source(magnet)
        if kind != "magnet":
            data = await self._read_source(magnet, kind)
            try:
                mi = Metainfo.from_bytes(data)
            except MetainfoError as exc:
                raise TorrentError(f"{magnet}: not a valid torrent: {exc}") from exc
            return files_of(mi)
        uri = magnet.strip()
        known = self.client.torrent(parse_magnet(uri).info_hash) if is_magnet(uri) else None
        t = await self._add_magnet(uri, None)
        if known is None:
            self._pending_magnets[uri] = t.info_hash
        wait_info: Any = getattr(t, "wait_info", None)
        if wait_info is not None:
            await wait_info()
        if known is None:
            # Nothing is wanted until the user picks (add() then sets priorities).
            for f in t.files:
                f.set_priority(PiecePriority.NONE)
        return file_rows(t)

    async def discard_metadata(self, source: str) -> None:
        """The user cancelled after :meth:`fetch_metadata`: drop a magnet it added."""
        ih = self._pending_magnets.pop(source.strip(), None)
        if ih is not None and ih not in self._entries and self.client.torrent(ih) is not None:
            await self.client.remove_torrent(ih)

    async def _read_source(self, source: str, kind: str) -> bytes:
        if kind == "url":
            return await self._download(source.strip())
        try:
            return await asyncio.to_thread(Path(source.strip()).expanduser().read_bytes)
        except OSError as exc:
            raise TorrentError(f"cannot read {source}: {exc.strerror or exc}") from exc

    async def _download(self, url: str) -> bytes:
        import aiohttp

        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
                http.get(url) as resp,
            ):
                if resp.status != 200:
                    raise TorrentError(f"{url}: HTTP {resp.status}")
                data = await resp.content.read(MAX_TORRENT_DOWNLOAD + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TorrentError(f"{url}: {exc or type(exc).__name__}") from exc
        if len(data) > MAX_TORRENT_DOWNLOAD:
            raise TorrentError(f"{url}: larger than {MAX_TORRENT_DOWNLOAD} bytes")
        return data

    # ------------------------------------------------------------------ actions

    def _torrent(self, ih: InfoHash) -> Torrent:
        t = self.client.torrent(ih)
        if t is None:
            raise TorrentError(f"no torrent {ih.hex()}")
        return t

    async def pause(self, ih: InfoHash) -> None:
        self._torrent(ih).pause()
        self._update_entry(ih, paused=True)

    async def resume(self, ih: InfoHash) -> None:
        self._torrent(ih).resume()
        self._update_entry(ih, paused=False)

    async def recheck(self, ih: InfoHash) -> None:
        await self._torrent(ih).verify_data()

    async def remove(self, ih: InfoHash, delete_data: bool) -> None:
        t = self._torrent(ih)
        root = Path(t.layout.root) if t.layout.root is not None else None
        paths = [root / f.path for f in t.files] if delete_data and root is not None else []
        await self.client.remove_torrent(ih)
        entry = self._entries.pop(ih, None)
        self._limits.pop(ih, None)
        if entry is not None and entry.torrent_file and self.session is not None:
            await asyncio.to_thread(self.session.forget_torrent, entry.torrent_file)
        if paths:
            assert root is not None
            await asyncio.to_thread(_delete_files, paths, root / t.name)
        self._schedule_save()

    async def set_file_priorities(
        self, ih: InfoHash, indices: Sequence[int], prio: PiecePriority
    ) -> None:
        t = self._torrent(ih)
        self._apply_priorities(t, dict.fromkeys(indices, PiecePriority(prio)))
        self._remember_priorities(t)
        self._schedule_save()

    async def set_sequential(self, ih: InfoHash, on: bool) -> None:
        self._torrent(ih).set_sequential(on)
        self._update_entry(ih, sequential=on)

    async def set_first_last(self, ih: InfoHash, on: bool) -> None:
        self._torrent(ih).set_first_last_pieces_first(on)
        self._update_entry(ih, first_last=on)

    async def stream_file(self, ih: InfoHash, index: int) -> None:
        """Sequential order plus first/last pieces first, for one file played while fetched."""
        t = self._torrent(ih)
        target = next((f for f in t.files if f.index == index), None)
        if target is None:
            raise TorrentError(f"no file {index} in {t.name}")
        if target.priority == PiecePriority.NONE:
            target.set_priority(PiecePriority.NORMAL)
        target.set_first_last_pieces_first(True)
        t.set_sequential(True)
        self._remember_priorities(t)
        self._update_entry(ih, sequential=True)

    async def set_limits(self, download: int | None, upload: int | None) -> None:
        self.client.set_rate_limits(download=download, upload=upload)

    async def set_connection_policy(self, *, encryption: str, utp: bool, tcp: bool) -> None:
        self.client.set_connection_policy(encryption=encryption, utp=utp, tcp=tcp)

    async def set_torrent_limits(
        self, ih: InfoHash, download: int | None, upload: int | None
    ) -> None:
        """Set a torrent's own limits (enforced by the engine on top of the global ones)."""
        self._torrent(ih).set_rate_limits(download=download, upload=upload)
        self._limits[ih] = (download, upload)
        self._update_entry(ih, download_limit=download, upload_limit=upload)

    # ------------------------------------------------------------------ session

    @staticmethod
    def _apply_priorities(t: Torrent, prios: dict[int, PiecePriority]) -> None:
        by_index = {f.index: f for f in t.files}
        for index, prio in prios.items():
            f = by_index.get(index)
            if f is not None:
                f.set_priority(PiecePriority(prio))

    def _remember_priorities(self, t: Torrent) -> None:
        entry = self._entries.get(t.info_hash)
        if entry is not None:
            entry.priorities = {
                f.index: int(f.priority) for f in t.files if f.priority != PiecePriority.NORMAL
            }

    def _update_entry(self, ih: InfoHash, **changes: Any) -> None:
        entry = self._entries.get(ih)
        if entry is not None:
            for name, value in changes.items():
                setattr(entry, name, value)
            self._schedule_save()

    def _schedule_save(self) -> None:
        if self.session is None:
            return
        if self._save_task is None or self._save_task.done():
            self._save_task = asyncio.get_running_loop().create_task(self._save_soon())

    async def _save_soon(self) -> None:
        await asyncio.sleep(0.2)  # coalesce bursts (a folder of priority changes)
        await self._save_now()

    async def _save_now(self) -> None:
        if self.session is None:
            return
        entries = [SessionEntry(**_fields(e)) for e in self._entries.values()]
        async with self._save_lock:
            try:
                await asyncio.to_thread(self.session.save, entries)
            except OSError as exc:
                self._errors += 1
                log.warning("cannot save the session: %s", exc)


def _fields(entry: SessionEntry) -> dict[str, Any]:
    """A copy of an entry's fields, so the worker thread never sees a later change."""
    return {
        "key": entry.key,
        "torrent_file": entry.torrent_file,
        "magnet": entry.magnet,
        "download_dir": entry.download_dir,
        "priorities": dict(entry.priorities),
        "paused": entry.paused,
        "sequential": entry.sequential,
        "first_last": entry.first_last,
        "download_limit": entry.download_limit,
        "upload_limit": entry.upload_limit,
    }


def _free_space(path: Path) -> int | None:
    """Free bytes where ``path`` is, or would be (its nearest existing parent)."""
    for candidate in (path, *path.parents):
        try:
            return shutil.disk_usage(candidate).free
        except FileNotFoundError:
            continue
        except OSError:
            return None
    return None


def _as_limit(value: float | None) -> int | None:
    return None if value is None else int(value)


def _delete_files(paths: list[Path], top: Path) -> None:
    """Delete a removed torrent's files, then the directories they leave empty."""
    for path in paths:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot delete %s: %s", path, exc)
    dirs = sorted({p.parent for p in paths}, key=lambda d: len(d.parts), reverse=True)
    for d in dirs:
        while d != top.parent and d.is_relative_to(top):
            try:
                d.rmdir()
            except OSError:
                break
            d = d.parent
