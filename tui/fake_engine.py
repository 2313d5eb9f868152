"""A scripted, deterministic :class:`~tui.engine.Engine` for tests, screenshots and benches.

Everything it serves is computed from a :class:`FakeScript` and a tick
counter: no clock, no randomness, no network.  Two fakes built from the same
script and ticked the same number of times return equal values, which is
what makes snapshot tests and the ``screenshots/`` SVGs reproducible.

It also records every action (``calls``), can be told to fail one
(``fail``), can hold ``fetch_metadata`` until a test releases it
(``metadata_gate``), and publishes edge events on a real
:class:`core.bus.EventBus` (``emit``) so the bridge is exercised as it is
with the real engine.

Its DHT is scripted too (:attr:`FakeScript.dht`, :meth:`FakeEngine.set_dht`):
node counts that move a little with each tick, a ``** [DHT] **`` row in the
Trackers tab of every public torrent and ``dht`` peers, and none of that
for private torrents, which never use the DHT (BEP 27).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from core.bus import EventBus, Subscription
from core.errors import TorrentError
from core.events import (
    DhtBootstrapped,
    Event,
    PeerRow,
    PeerSource,
    StorageFailed,
    TorrentAdded,
    TorrentRemoved,
    TorrentRow,
    TorrentStateChanged,
)
from core.stats import TorrentState
from core.tracker.types import TrackerStatus
from core.types import InfoHash, PiecePriority

from .engine import classify_source, priority_change
from .engine_views import with_wanted
from .model import (
    DHT_STATES,
    DHT_URL,
    FileRow,
    GlobalStatus,
    PieceCell,
    PieceMap,
    TorrentDetails,
    TorrentInfoView,
)

#: Wall-clock base of every fake timestamp (2023-11-14 22:13:20 UTC).
BASE_TIME = 1_700_000_000.0
#: The clock the screenshots and snapshot tests show the fake at: announce
#: times are placed around it (past for "last", future for "next").
FAKE_NOW = BASE_TIME + 600

_WORDS = (
    "aurora",
    "basalt",
    "cobalt",
    "delta",
    "ember",
    "fjord",
    "granite",
    "harbor",
    "indigo",
    "juniper",
    "kestrel",
    "lumen",
    "meridian",
    "nebula",
    "obsidian",
    "prairie",
    "quartz",
    "riverbend",
    "sierra",
    "tundra",
)
_KINDS = ("linux-iso", "dataset", "album", "lecture-series", "photo-archive", "source-tarball")
_CLIENTS = (
    "libtorrent 2.0.9",
    "qBittorrent 4.6.2",
    "Transmission 4.0.5",
    "Deluge 2.1.1",
    "pytorrent 0.1",
    "aria2",
    "µTorrent 3.5.5",
    "",
)
_SOURCES = tuple(PeerSource)
_STATES = (
    TorrentState.DOWNLOADING,
    TorrentState.SEEDING,
    TorrentState.DOWNLOADING,
    TorrentState.PAUSED,
    TorrentState.SEEDING,
    TorrentState.CHECKING,
    TorrentState.DOWNLOADING,
    TorrentState.ERROR,
)


@dataclass(frozen=True, slots=True)
class FakeScript:
    """What a :class:`FakeEngine` serves: how many torrents, peers per torrent, trackers."""

    torrents: int = 8
    peers: int = 14
    trackers: int = 3
    #: Files of the nested tree every torrent gets (at least 1).
    files: int = 9
    listen_port: int = 51413
    free_disk: int | None = 412 << 30
    #: The DHT's state as the status pane shows it (one of ``tui.model.DHT_STATES``).
    dht: str = "ok"

    def __post_init__(self) -> None:
        if self.dht not in DHT_STATES:
            raise ValueError(f"dht: {self.dht!r} is not one of {', '.join(DHT_STATES)}")


def _ih(n: int) -> InfoHash:
    """A fixed, distinct info-hash per torrent number."""
    return InfoHash(v1=bytes((n * 37 + i * 11) % 256 for i in range(20)))


def _file_tree(name: str, count: int, piece_length: int) -> tuple[FileRow, ...]:
    """A nested, deterministic file tree (folders two deep) with boundary-sharing sizes."""
    folders = ("", "extras/", "extras/subtitles/", "disc 1/", "disc 2/")
    rows = []
    offset = 0
    for i in range(count):
        folder = folders[i % len(folders)] if count > 1 else ""
        size = (i * 7919 % 13 + 1) * 23 * piece_length + (i * 104729 % piece_length) + 1
        path = f"{folder}{name}-part{i + 1:02d}.bin" if count > 1 else f"{name}.bin"
        first = offset // piece_length
        last = (offset + size - 1) // piece_length
        rows.append(FileRow(i, path, size, 0, PiecePriority.NORMAL, first, last))
        offset += size
    return tuple(rows)


@dataclass(slots=True)
class _FakeTorrent:
    row: TorrentRow
    files: tuple[FileRow, ...]
    piece_length: int
    sequential: bool = False
    first_last: bool = False
    download_limit: int | None = None
    upload_limit: int | None = None
    magnet: bool = False
    checked: float = 0.0
    #: BEP 27: no DHT row, no DHT or PEX peers.
    private: bool = False


@dataclass(slots=True)
class FakeEngine:
    """The scripted engine (see the module docstring)."""

    script: FakeScript = field(default_factory=FakeScript)
    calls: list[tuple[object, ...]] = field(default_factory=list)
    #: Action name -> exception raised (once) the next time that action runs.
    fail: dict[str, Exception] = field(default_factory=dict)
    #: When set, ``fetch_metadata`` waits for it (tests show "fetching metadata").
    metadata_gate: asyncio.Event | None = None
    #: When set, what ``fetch_metadata`` returns (e.g. files renamed to be safe).
    metadata_files: tuple[FileRow, ...] | None = None
    started: bool = False
    closed: bool = False
    ticks: int = 0
    _bus: EventBus = field(default_factory=EventBus)
    _torrents: dict[InfoHash, _FakeTorrent] = field(default_factory=dict)
    _next: int = 0
    _limits: tuple[int | None, int | None] = (None, None)
    #: The DHT's state now (starts as the script's; :meth:`set_dht` moves it).
    dht_state: str = ""
    #: Ticks at the last :meth:`set_dht`: a bootstrap's nodes grow from there.
    _dht_since: int = 0

    def __post_init__(self) -> None:
        self.dht_state = self.dht_state or self.script.dht
        for _ in range(self.script.torrents):
            self._make_torrent()

    # ------------------------------------------------------------------ script

    def _make_torrent(self, *, name: str | None = None, magnet: bool = False) -> _FakeTorrent:
        n = self._next
        self._next += 1
        ih = _ih(n)
        word = _WORDS[n % len(_WORDS)]
        kind = _KINDS[(n // len(_WORDS) + n) % len(_KINDS)]
        name = name or f"{word}-{kind}-{n + 1:04d}"
        piece_length = 1 << (17 + n % 4)
        files = _file_tree(word, max(1, self.script.files - n % 4), piece_length)
        size = sum(f.size for f in files)
        state = _STATES[n % len(_STATES)]
        progress = {TorrentState.SEEDING: 1.0, TorrentState.CHECKING: 0.35}.get(
            state, ((n * 37) % 100) / 100
        )
        done = int(size * progress)
        downloading = state is TorrentState.DOWNLOADING
        down = float((n * 7717) % 4000 + 200) * 1024 if downloading else 0.0
        up = float((n * 3571) % 900 + 10) * 1024 if state is not TorrentState.PAUSED else 0.0
        peers = 0 if state is TorrentState.PAUSED else self.script.peers
        row = TorrentRow(
            info_hash=ih,
            name=name,
            state=state,
            progress=progress,
            size=size,
            bytes_done=done,
            down_rate=down,
            up_rate=up,
            peers=peers,
            seeds=peers // 3,
            eta=(size - done) / down if down else None,
            ratio=((n * 13) % 300) / 100,
            added_time=BASE_TIME + n * 3700,
            error="disk full: No space left on device" if state is TorrentState.ERROR else None,
        )
        ft = _FakeTorrent(
            row, self._done_files(files, done), piece_length, magnet=magnet, private=n % 4 == 1
        )
        self._torrents[ih] = ft
        return ft

    @staticmethod
    def _done_files(files: tuple[FileRow, ...], done: int) -> tuple[FileRow, ...]:
        """Fill files front to back with ``done`` bytes."""
        out = []
        for f in files:
            got = min(f.size, max(0, done))
            done -= f.size
            out.append(replace(f, bytes_done=got))
        return tuple(out)

    def tick(self, steps: int = 1) -> None:
        """Advance the fake swarm: downloading torrents gain bytes, rates wobble."""
        for _ in range(steps):
            self.ticks += 1
            for ft in self._torrents.values():
                r = ft.row
                if r.state is not TorrentState.DOWNLOADING:
                    continue
                wobble = 1.0 + ((self.ticks * 7 + r.size) % 9 - 4) / 20
                down = r.down_rate * wobble
                done = min(r.size, r.bytes_done + int(down / 4))
                state = TorrentState.SEEDING if done >= r.size else r.state
                ft.row = replace(
                    r,
                    bytes_done=done,
                    progress=done / r.size if r.size else 1.0,
                    down_rate=down if state is TorrentState.DOWNLOADING else 0.0,
                    eta=(r.size - done) / down if down and done < r.size else None,
                    state=state,
                )
                ft.files = self._done_files(ft.files, done)

    def emit(self, event: Event) -> None:
        """Publish a scripted engine event to subscribers (the bridge)."""
        self._bus.publish(event)

    def set_state(self, ih: InfoHash, state: TorrentState, error: str | None = None) -> None:
        """Move a torrent to ``state`` and announce it as the engine would."""
        ft = self._get(ih)
        old = ft.row.state
        ft.row = replace(ft.row, state=state, error=error)
        if state in (TorrentState.PAUSED, TorrentState.ERROR):
            ft.row = replace(ft.row, down_rate=0.0, up_rate=0.0, peers=0, seeds=0, eta=None)
        self.emit(TorrentStateChanged(ih, old, state, error))

    def set_dht(self, state: str) -> None:
        """Move the DHT to ``state``; ending a bootstrap says so on the bus, as the engine does."""
        if state not in DHT_STATES:
            raise ValueError(f"{state!r} is not one of {', '.join(DHT_STATES)}")
        old, self.dht_state, self._dht_since = self.dht_state, state, self.ticks
        if old == "bootstrapping" and state in ("ok", "failed"):
            good, _ = self._dht_nodes()
            self.emit(DhtBootstrapped(good, state == "ok"))

    def _dht_nodes(self) -> tuple[int, int]:
        """``(good, total)`` routing-table nodes: deterministic, moving a little per tick."""
        t = self.ticks
        if self.dht_state == "ok":
            return 140 + t % 5, 205 + (t * 3) % 7
        if self.dht_state == "bootstrapping":
            grown = t - self._dht_since
            return min(grown, 8), min(3 * grown, 40)
        if self.dht_state == "failed":
            return 0, 4  # the bootstrap routers, never answering
        return 0, 0

    def info_hashes(self) -> list[InfoHash]:
        return list(self._torrents)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self.calls.append(("start",))
        self._raise("start")
        self.started = True

    async def close(self) -> None:
        self.calls.append(("close",))
        self.closed = True
        self._bus.close()

    def subscribe(self) -> Subscription:
        return self._bus.subscribe()

    # ------------------------------------------------------------------ getters

    def torrents(self) -> tuple[TorrentRow, ...]:
        """Rows with progress over the wanted files, as :class:`~tui.engine.RealEngine` serves."""
        rows = []
        for ft in self._torrents.values():
            wanted = self._wanted(ft)
            rows.append(ft.row if wanted is None else with_wanted(ft.row, *wanted))
        return tuple(rows)

    @staticmethod
    def _wanted(ft: _FakeTorrent) -> tuple[int, int] | None:
        """``(done, size)`` of the files not skipped; None when none is skipped."""
        wanted = [f for f in ft.files if f.priority != PiecePriority.NONE]
        if len(wanted) == len(ft.files):
            return None
        return sum(f.bytes_done for f in wanted), sum(f.size for f in wanted)

    def status(self) -> GlobalStatus:
        rows = [ft.row for ft in self._torrents.values()]
        done = sum(r.bytes_done for r in rows)
        return GlobalStatus(
            down_rate=sum(r.down_rate for r in rows),
            up_rate=sum(r.up_rate for r in rows),
            download_limit=self._limits[0],
            upload_limit=self._limits[1],
            peers=sum(r.peers for r in rows),
            listen_port=self.script.listen_port,
            free_disk=self.script.free_disk,
            session_downloaded=done // 3,
            session_uploaded=done // 5,
            errors=sum(1 for r in rows if r.state is TorrentState.ERROR),
            dht_nodes=self._dht_nodes()[1],
            dht_good_nodes=self._dht_nodes()[0],
            dht_state=self.dht_state,
        )

    def details(self, ih: InfoHash) -> TorrentDetails | None:
        ft = self._torrents.get(ih)
        if ft is None:
            return None
        return TorrentDetails(
            info_hash=ih,
            files=ft.files,
            peers=self._peers(ft),
            trackers=self._trackers(ft),
            pieces=self._pieces(ft),
            info=self._info(ft),
            sequential=ft.sequential,
            first_last=ft.first_last,
            download_limit=ft.download_limit,
            upload_limit=ft.upload_limit,
        )

    def _peers(self, ft: _FakeTorrent) -> tuple[PeerRow, ...]:
        if ft.row.state is TorrentState.PAUSED:
            return ()
        rows = []
        seed = ft.row.size % 251
        for i in range(self.script.peers):
            k = i + seed
            rate_step = (k * 7 + self.ticks) % 11
            source = _SOURCES[k % len(_SOURCES)]
            if ft.private and source in (PeerSource.DHT, PeerSource.PEX):
                source = PeerSource.TRACKER
            rows.append(
                PeerRow(
                    address=(f"10.{k % 7}.{(k * 13) % 256}.{(k * 29) % 254 + 1}", 6881 + k % 50),
                    client=_CLIENTS[k % len(_CLIENTS)],
                    source=source,
                    transport="utp" if k % 3 == 0 else "tcp",
                    encrypted=k % 2 == 0,
                    progress=1.0 if k % 4 == 0 else ((k * 17) % 100) / 100,
                    down_rate=float(rate_step * 12_800 if k % 4 else 0),
                    up_rate=float((k % 5) * 4_096),
                    am_choking=k % 3 != 0,
                    am_interested=k % 2 == 0,
                    peer_choking=k % 5 == 0,
                    peer_interested=k % 3 == 1,
                    requests_outstanding=(k * 3) % 17,
                    hash_failures=(k % 3) if k % 9 == 4 else 0,
                    on_parole=k % 9 == 4,
                    requests_queued=(k * 5) % 23 if k % 4 != 0 and k % 3 == 1 else 0,
                    oldest_request_wait=float((k * 11) % 40) if k % 4 != 0 and k % 3 == 1 else None,
                )
            )
        return tuple(rows)

    def _trackers(self, ft: _FakeTorrent) -> tuple[TrackerStatus, ...]:
        out = []
        for i in range(self.script.trackers):
            failing = i == self.script.trackers - 1 and i > 0
            out.append(
                TrackerStatus(
                    url=f"udp://tracker{i + 1}.example.org:{6969 + i}/announce"
                    if i % 2 == 0
                    else f"https://tracker{i + 1}.example.net/announce",
                    tier=i // 2,
                    last_announce=FAKE_NOW - 60 * (i + 1),
                    last_result="error" if failing else "ok",
                    next_announce=FAKE_NOW + 1500 + 60 * i,
                    peers_received=0 if failing else 50 - 7 * i,
                    seeders=None if failing else 120 + i * 9,
                    leechers=None if failing else 30 + i,
                    completed=None if failing else 4000 + i * 100,
                    last_error="connection refused" if failing else None,
                    failures=2 if failing else 0,
                )
            )
        dht = self._dht_row(ft)
        if dht is not None:
            out.append(dht)  # last, as the engine lists it: the table puts it first
        return tuple(out)

    def _dht_row(self, ft: _FakeTorrent) -> TrackerStatus | None:
        """The ``** [DHT] **`` row of a public torrent while the DHT is on."""
        if ft.private or self.dht_state == "off":
            return None
        if self.dht_state == "bootstrapping":
            return TrackerStatus(url=DHT_URL, tier=-1)
        if self.dht_state == "failed":
            return TrackerStatus(
                url=DHT_URL,
                tier=-1,
                last_announce=FAKE_NOW - 30,
                last_result="error",
                next_announce=FAKE_NOW + 90,
                last_error="no DHT node answered",
                failures=3,
            )
        return TrackerStatus(
            url=DHT_URL,
            tier=-1,
            last_announce=FAKE_NOW - 45,
            last_result="ok",
            next_announce=FAKE_NOW + 855,
            peers_received=17 + ft.row.size % 40,
        )

    def _pieces(self, ft: _FakeTorrent) -> PieceMap:
        pl = ft.piece_length
        size = ft.row.size
        n = max(1, -(-size // pl))
        have = ft.row.bytes_done // pl
        cells = bytearray([PieceCell.MISSING]) * n
        for f in ft.files:
            if f.priority == PiecePriority.NONE:
                for p in range(f.first_piece, f.last_piece + 1):
                    cells[p] = PieceCell.SKIPPED
            elif f.priority >= PiecePriority.HIGH:
                for p in range(f.first_piece, f.last_piece + 1):
                    cells[p] = PieceCell.HIGH
        cells[:have] = bytes([PieceCell.HAVE]) * min(have, n)
        if have < n and ft.row.state is TorrentState.DOWNLOADING:
            cells[have] = PieceCell.PARTIAL
            if have + 1 < n:
                cells[have + 1] = PieceCell.CHECKING
        if ft.row.state is TorrentState.CHECKING:
            for p in range(have, min(n, have + 3)):
                cells[p] = PieceCell.CHECKING
        avail = bytes((p * 7 + size) % 12 for p in range(n))
        return PieceMap(bytes(cells), avail, tuple(f.first_piece for f in ft.files))

    @staticmethod
    def _info(ft: _FakeTorrent) -> TorrentInfoView:
        ih = ft.row.info_hash
        wanted = [f for f in ft.files if f.priority != PiecePriority.NONE]
        return TorrentInfoView(
            name=ft.row.name,
            info_hash_v1=ih.v1.hex() if ih.v1 else None,
            info_hash_v2=None,
            size=ft.row.size,
            piece_length=ft.piece_length,
            num_pieces=max(1, -(-ft.row.size // ft.piece_length)),
            save_path=f"/home/user/Downloads/{ft.row.name}",
            comment="Generated by the fake engine",
            created_by="pytorrent 0.1",
            creation_date=int(ft.row.added_time) - 86400,
            private=ft.private,
            magnet=f"magnet:?xt=urn:btih:{ih.hex()}&dn={ft.row.name}",
            bytes_done=ft.row.bytes_done,
            wanted_size=sum(f.size for f in wanted),
            wanted_done=sum(f.bytes_done for f in wanted),
            files=len(ft.files),
            wanted_files=len(wanted),
        )

    def preview_priorities(
        self, ih: InfoHash, indices: Sequence[int], prio: PiecePriority
    ) -> tuple[int, int]:
        ft = self._torrents.get(ih)
        if ft is None:
            return 0, 0
        return priority_change(ft.files, ft.piece_length, ft.row.size, indices, prio)

    # ------------------------------------------------------------------ actions

    def _raise(self, action: str) -> None:
        exc = self.fail.pop(action, None)
        if exc is not None:
            raise exc

    def _get(self, ih: InfoHash) -> _FakeTorrent:
        ft = self._torrents.get(ih)
        if ft is None:
            raise TorrentError(f"no torrent {ih.hex()}")
        return ft

    async def add(
        self,
        source: str,
        *,
        download_dir: str | None = None,
        file_priorities: dict[int, PiecePriority] | None = None,
        peers: Sequence[tuple[str, int]] = (),
    ) -> InfoHash:
        self.calls.append(("add", source, download_dir, dict(file_priorities or {})))
        self._raise("add")
        kind = classify_source(source)
        if kind == "file" and not source.endswith(".torrent"):
            raise TorrentError(f"cannot read {source}: not a .torrent file")
        pending = [ft for ft in self._torrents.values() if ft.magnet and ft.row.name == source]
        ft = pending[0] if pending else self._make_torrent(magnet=kind == "magnet")
        ft.row = replace(ft.row, state=TorrentState.DOWNLOADING, bytes_done=0, progress=0.0)
        files = ft.files
        if file_priorities:
            files = tuple(
                replace(f, priority=file_priorities.get(f.index, f.priority)) for f in files
            )
        ft.files = self._done_files(files, 0)
        self.emit(TorrentAdded(ft.row.info_hash, ft.row.name))
        return ft.row.info_hash

    async def fetch_metadata(self, magnet: str) -> tuple[FileRow, ...]:
        self.calls.append(("fetch_metadata", magnet))
        if self.metadata_gate is not None:
            await self.metadata_gate.wait()
        self._raise("fetch_metadata")
        if self.metadata_files is not None:
            return self.metadata_files
        n = self._next
        return _file_tree(_WORDS[n % len(_WORDS)], self.script.files, 1 << 16)

    async def discard_metadata(self, source: str) -> None:
        self.calls.append(("discard_metadata", source))

    async def pause(self, ih: InfoHash) -> None:
        self.calls.append(("pause", ih))
        self._raise("pause")
        self.set_state(ih, TorrentState.PAUSED)

    async def resume(self, ih: InfoHash) -> None:
        self.calls.append(("resume", ih))
        self._raise("resume")
        ft = self._get(ih)
        done = ft.row.bytes_done >= ft.row.size
        self.set_state(ih, TorrentState.SEEDING if done else TorrentState.DOWNLOADING)

    async def recheck(self, ih: InfoHash) -> None:
        self.calls.append(("recheck", ih))
        self._raise("recheck")
        self.set_state(ih, TorrentState.CHECKING)

    async def remove(self, ih: InfoHash, delete_data: bool) -> None:
        self.calls.append(("remove", ih, delete_data))
        self._raise("remove")
        self._get(ih)
        del self._torrents[ih]
        self.emit(TorrentRemoved(ih))

    async def set_file_priorities(
        self, ih: InfoHash, indices: Sequence[int], prio: PiecePriority
    ) -> None:
        self.calls.append(("set_file_priorities", ih, tuple(indices), PiecePriority(prio)))
        self._raise("set_file_priorities")
        ft = self._get(ih)
        chosen = set(indices)
        ft.files = tuple(replace(f, priority=prio) if f.index in chosen else f for f in ft.files)
        # As the engine does: done with every wanted file means seeding, and
        # wanting an unfinished file again means downloading.
        wanted = [f for f in ft.files if f.priority != PiecePriority.NONE]
        complete = all(f.bytes_done >= f.size for f in wanted)
        if complete and ft.row.state is TorrentState.DOWNLOADING:
            self.set_state(ih, TorrentState.SEEDING)
            ft.row = replace(ft.row, down_rate=0.0, eta=None)
        elif not complete and ft.row.state is TorrentState.SEEDING:
            self.set_state(ih, TorrentState.DOWNLOADING)

    async def set_sequential(self, ih: InfoHash, on: bool) -> None:
        self.calls.append(("set_sequential", ih, on))
        self._raise("set_sequential")
        self._get(ih).sequential = on

    async def set_first_last(self, ih: InfoHash, on: bool) -> None:
        self.calls.append(("set_first_last", ih, on))
        self._raise("set_first_last")
        self._get(ih).first_last = on

    async def stream_file(self, ih: InfoHash, index: int) -> None:
        self.calls.append(("stream_file", ih, index))
        self._raise("stream_file")
        ft = self._get(ih)
        ft.sequential = True
        ft.first_last = True

    async def set_limits(self, download: int | None, upload: int | None) -> None:
        self.calls.append(("set_limits", download, upload))
        self._raise("set_limits")
        self._limits = (download, upload)

    async def set_connection_policy(self, *, encryption: str, utp: bool, tcp: bool) -> None:
        self.calls.append(("set_connection_policy", encryption, utp, tcp))
        self._raise("set_connection_policy")

    async def set_torrent_limits(
        self, ih: InfoHash, download: int | None, upload: int | None
    ) -> None:
        self.calls.append(("set_torrent_limits", ih, download, upload))
        self._raise("set_torrent_limits")
        ft = self._get(ih)
        ft.download_limit, ft.upload_limit = download, upload

    def fail_storage(self, ih: InfoHash, error: str) -> None:
        """Script a storage failure: the torrent errors and the bus says why."""
        self.set_state(ih, TorrentState.ERROR, error)
        self.emit(StorageFailed(ih, error))
