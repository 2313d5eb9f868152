"""``torrent-tui --demo``: a whole swarm on 127.0.0.1, so a newcomer sees every view alive.

A first look at a torrent client is usually a blank table: there is nothing
to download without a torrent and a swarm, and borrowing a real one needs
the internet.  The demo brings its own, in the app's process and asyncio
loop, under a temporary directory:

* generated content (deterministic pseudo-random bytes): a nested "Open Movie
  Project" with seasons, subtitles and extras, a single-file Linux-ISO-like
  image, a photo album of many small files, and a soundtrack offered as a
  magnet link when the engine can add magnets;
* four seeding :class:`~core.engine.client.Client` instances: two honest fast
  seeders, a slow one (a low upload limit: the ISO trickles in), and a bad
  one whose storage flips bytes in most pieces it uploads, so the user's
  client sees hash failures: the first puts the bad peer on parole (the
  Peers tab's Fail column shows ``1 P``; from then on it only gets whole
  pieces of its own), and its next failed piece, its alone, bans it, a
  few seconds into the demo (see :mod:`core.engine.blame`);
* a tiny HTTP tracker (:mod:`tui.demo_tracker`) in the torrents, so peers
  are found through the Trackers tab too;
* a small DHT of its own: the honest seeders and the user's client run the
  real DHT on 127.0.0.1, introduced to each other (never to the public routers),
  so the status pane counts real nodes, each torrent's Trackers tab has a
  working ``** [DHT] **`` row, and the soundtrack's magnet link carries
  nothing but its info-hash and name: its peers and its metadata come
  through the DHT alone, as with most magnets pasted from the web;
* once the user's client runs, a leecher that knows only the user and
  slowly downloads the movie from it, so the Up column, the upload sparkline
  and the ratio move too;
* a configuration for the user's own client under the same directory, never
  the user's real config or data dir, rate-limited so the views stay busy for
  a minute or two: the album completes first, the movie downloads with its
  "Making Of" skipped, the ISO crawls from the slow seeder.

Everything listens on 127.0.0.1 only, with PEX off and a DHT that knows
only the demo's own nodes: the demo never talks to anything outside the
machine.  The swarm part imports only ``core``
(tests use it without Textual); :func:`run_demo_app` imports the app lazily.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config import ClientConfig
from core.engine.client import Client
from core.formats.create import create_torrent
from core.formats.magnet import Magnet
from core.formats.metainfo import Metainfo
from core.storage import FileStorage, Layout
from core.types import InfoHash, PiecePriority

from .demo_tracker import DemoTracker
from .engine import RealEngine

__all__ = [
    "DEMO_DOWNLOAD_LIMIT",
    "DHT_WAIT",
    "Demo",
    "DemoEngine",
    "DemoTorrent",
    "demo_session",
    "demo_user_config",
    "join_dht",
    "run_demo_app",
    "start_demo",
]

KIB = 1 << 10
MIB = 1 << 20
LOOPBACK = "127.0.0.1"

#: The user's download limit in the demo: slow enough that the views stay
#: alive for a minute or two, fast enough that something completes early.
DEMO_DOWNLOAD_LIMIT = 1 * MIB
#: The slow seeder's upload limit: the ISO only it (and the bad peer) has
#: trickles in over a minute or so.
SLOW_UPLOAD_LIMIT = 192 * KIB
#: The leecher's download limit: it takes from the user's client at this
#: pace, so the user's upload stays visible for the whole demo.
LEECHER_DOWNLOAD_LIMIT = 160 * KIB
#: A fixed creation date, so the demo's torrents (and their info pages) are
#: the same on every run.
CREATION_DATE = 1_700_000_000
#: Seconds start_demo waits for every seeder to reach the tracker.
TRACKER_WAIT = 5.0
#: Seconds a demo client waits for its DHT to find the others, and
#: start_demo for the seeders' first DHT announces.
DHT_WAIT = 5.0


# --------------------------------------------------------------------------- content


@dataclass(frozen=True, slots=True)
class _PeerSpec:
    """One seeding client of the swarm."""

    name: str
    client_name: str  # ``v`` in its extension handshake: the Peers tab shows it
    upload_limit: int | None = None
    bad: bool = False
    #: Runs a DHT node.  The bad peer does not: a DHT seeder hears the user
    #: announce and dials back, and a liar with two connections to the user
    #: mixes its own data with itself (``failed pieces 21 (with 1 other)``)
    #: and is banned later, on another endpoint.  Found by the tracker alone,
    #: it keeps the one connection its story needs.
    dht: bool = True


_PEERS = (
    _PeerSpec("alice", "demo seed alice"),
    _PeerSpec("bob", "demo seed bob"),
    _PeerSpec("slow", "demo slow seed", upload_limit=SLOW_UPLOAD_LIMIT),
    _PeerSpec("mallory", "demo bad peer", bad=True, dht=False),
)


@dataclass(frozen=True, slots=True)
class _TorrentSpec:
    files: dict[str, int]  # path (starting with the torrent name) -> size
    piece_length: int
    seeders: tuple[str, ...]
    comment: str
    #: Offer it as a magnet link with only its info-hash and name (when the
    #: engine can add magnets): peers and metadata come from the DHT.
    magnet: bool = False
    skip: tuple[str, ...] = ()  # paths the demo user sets to "skip"

    @property
    def name(self) -> str:
        return next(iter(self.files)).split("/")[0]


def _movie() -> _TorrentSpec:
    root = "Open Movie Project"
    return _TorrentSpec(
        files={
            f"{root}/README.txt": 3_187,
            f"{root}/Season 1/01 - Big Buck Bunny.mkv": 7 * MIB + 123_457,
            f"{root}/Season 1/02 - Elephants Dream.mkv": 6 * MIB + 54_321,
            f"{root}/Season 1/Subtitles/01 - Big Buck Bunny.en.srt": 41_022,
            f"{root}/Season 1/Subtitles/02 - Elephants Dream.en.srt": 38_514,
            f"{root}/Season 2/01 - Sintel.mkv": 8 * MIB + 777,
            f"{root}/Season 2/Subtitles/01 - Sintel.en.srt": 35_090,
            f"{root}/Extras/Making Of.mp4": 5 * MIB + 4_242,
            f"{root}/Extras/Poster.png": 421_337,
        },
        piece_length=256 * KIB,
        seeders=("alice", "bob", "mallory"),
        comment="Demo content: pseudo-random bytes with film-like names",
        skip=(f"{root}/Extras/Making Of.mp4",),
    )


def _iso() -> _TorrentSpec:
    return _TorrentSpec(
        files={"demo-linux-24.04-desktop-amd64.iso": 14 * MIB},
        piece_length=256 * KIB,
        seeders=("slow", "mallory"),
        comment="Demo content: a disk-image-like single file, seeded slowly",
    )


def _album() -> _TorrentSpec:
    rng = random.Random("album")
    months = ("01 January", "02 February", "03 March", "04 April", "05 May", "06 June")
    files: dict[str, int] = {"Photo Album 2023/index.html": 6_411}
    number = 1
    for month in months:
        for _ in range(8):
            files[f"Photo Album 2023/{month}/IMG_{number:04d}.jpg"] = rng.randrange(20_000, 90_000)
            number += 1
    return _TorrentSpec(
        files=files,
        piece_length=64 * KIB,
        seeders=("alice", "bob", "slow"),
        comment="Demo content: many small files",
    )


def _soundtrack() -> _TorrentSpec:
    root = "Demo Soundtrack"
    tracks = ("Opening", "Chase", "Quiet Night", "Finale")
    files = {f"{root}/cover.jpg": 187_654}
    for disc in (1, 2):
        for n, title in enumerate(tracks, 1):
            files[f"{root}/Disc {disc}/{n:02d} - {title}.flac"] = MIB + 97_531 * (n + disc)
    return _TorrentSpec(
        files=files,
        piece_length=128 * KIB,
        seeders=("alice", "bob"),
        comment="Demo content: offered as a magnet link found through the DHT",
        magnet=True,
    )


def _specs() -> tuple[_TorrentSpec, ...]:
    return (_album(), _movie(), _soundtrack(), _iso())


def _write_content(root: Path, spec: _TorrentSpec) -> None:
    """Deterministic pseudo-random bytes: same names, same data, every run."""
    for rel, size in spec.files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        rng = random.Random(f"demo:{rel}")
        with path.open("wb") as fh:
            left = size
            while left:
                n = min(left, 4 * MIB)
                fh.write(rng.randbytes(n))
                left -= n


def _build(content: Path, torrents: Path, spec: _TorrentSpec, tracker: str) -> Metainfo:
    """Worker thread: write one torrent's content and hash it into a .torrent file."""
    _write_content(content, spec)
    mi = create_torrent(
        content / spec.name,
        piece_length=spec.piece_length,
        trackers=[tracker],
        comment=spec.comment,
        creation_date=CREATION_DATE,
    )
    torrents.mkdir(parents=True, exist_ok=True)
    (torrents / f"{spec.name}.torrent").write_bytes(mi.to_bytes())
    return mi


# --------------------------------------------------------------------------- the bad peer


class CorruptingStorage(FileStorage):
    """File storage that hands out damaged copies of chosen pieces.

    Uploads are served from :meth:`read_piece` (through ``read_block``),
    while the seeder's own start-up check streams the file through
    ``hash_piece``, which does not go through ``read_block``: so the bad
    peer believes it has every piece, announces them all, and sends bytes
    that fail the downloader's hash check.  One byte of every 16 KiB block
    is flipped, so whichever block a downloader takes from it is wrong and
    the blame lands on this peer even when others sent the rest of a piece.
    """

    def __init__(self, layout: Layout, corrupt: Callable[[int], bool]) -> None:
        super().__init__(layout)
        self.corrupt = corrupt
        self.pieces_corrupted = 0

    def read_block(self, piece: int, begin: int, length: int) -> bytes:
        data = super().read_block(piece, begin, length)
        if not self.corrupt(piece) or not data:
            return data
        damaged = bytearray(data)
        for at in range(0, len(damaged), 16 * KIB):
            damaged[at] ^= 0xFF
        self.pieces_corrupted += 1
        return bytes(damaged)


def _mostly_bad(piece: int) -> bool:
    """Three pieces in four are damaged: its first two pieces of its own almost surely fail.

    One piece in four is good, so the bad peer also earns a little trust:
    the demo shows a liar that is not wrong every time.
    """
    return piece % 4 != 3


# --------------------------------------------------------------------------- the swarm


@dataclass(frozen=True, slots=True)
class DemoTorrent:
    """One torrent of the demo, and how the user's client should add it."""

    name: str
    info_hash: InfoHash
    torrent_file: Path
    metainfo: Metainfo
    #: A magnet link (info-hash and name only: the DHT finds the rest) when
    #: the demo offers this torrent by magnet; ``None`` means add the file.
    magnet: str | None
    #: File indices (into the info dict's file list) the demo sets to skip.
    skip: tuple[int, ...]
    seeders: tuple[str, ...]

    @property
    def source(self) -> str:
        """What to hand the app's add action: the magnet link or the .torrent path."""
        return self.magnet if self.magnet is not None else str(self.torrent_file)

    @property
    def file_priorities(self) -> dict[int, PiecePriority]:
        return dict.fromkeys(self.skip, PiecePriority.NONE)


class Demo:
    """A running demo swarm; :meth:`close` stops every client and the tracker."""

    def __init__(self, root: Path, tracker: DemoTracker) -> None:
        self.root = root
        self.content_dir = root / "swarm" / "content"
        self.torrent_dir = root / "torrents"
        self.tracker = tracker
        self.seeders: dict[str, Client] = {}
        self.leechers: dict[str, Client] = {}
        self.storages: dict[tuple[str, InfoHash], CorruptingStorage] = {}
        self.torrents: tuple[DemoTorrent, ...] = ()
        self._closed = False

    # -- what the user's client needs ------------------------------------------

    @property
    def sources(self) -> tuple[str, ...]:
        """Everything to add, in order: .torrent paths and magnet links."""
        return tuple(t.source for t in self.torrents)

    @property
    def peers(self) -> dict[str, tuple[str, int]]:
        """Seeder name -> its listening address."""
        return {name: (LOOPBACK, c.listen_port) for name, c in self.seeders.items()}

    @property
    def dht_nodes(self) -> tuple[str, ...]:
        """The seeders' DHT nodes as ``host:port`` (the bad peer has none): where a DHT starts."""
        return tuple(f"{LOOPBACK}:{c.dht.port}" for c in self.seeders.values() if c.dht is not None)

    @property
    def bad_peer(self) -> tuple[str, int]:
        """The address of the peer that sends corrupt data."""
        return self.peers["mallory"]

    def torrent(self, name: str) -> DemoTorrent:
        for t in self.torrents:
            if t.name == name:
                return t
        raise KeyError(name)

    def user_config(self, **overrides: Any) -> ClientConfig:
        """The user's client in this demo; see :func:`demo_user_config` (and :func:`join_dht`)."""
        return demo_user_config(self.root, **overrides)

    async def start_leecher(
        self, user: tuple[str, int], name: str = "Open Movie Project"
    ) -> Client:
        """A peer that downloads ``name`` from the user's client only, slowly.

        Without it the user would never upload (every other peer is a seed),
        and the Up column, upload sparkline and ratio would stay empty.  It
        knows no tracker and no DHT, only ``user``, so everything it gets is
        the user's upload; its download limit keeps that going for the whole
        demo.
        """
        if self._closed:
            raise RuntimeError("the demo is closed")
        spec = _PeerSpec("carol", "demo leecher carol")
        client = Client(
            dataclasses.replace(
                _seeder_config(self.root, spec),
                download_dir=self.root / "swarm" / spec.name / "downloads",
                download_rate_limit=LEECHER_DOWNLOAD_LIMIT,
                dht=False,
            )
        )
        self.leechers[spec.name] = client
        await client.start()
        mi = dataclasses.replace(self.torrent(name).metainfo, announce_list=())
        await client.add_metainfo(mi, peers=[user])
        return client

    # -- lifecycle ---------------------------------------------------------------

    async def close(self) -> None:
        """Stop the seeders (they tell the tracker), then the tracker."""
        if self._closed:
            return
        self._closed = True
        clients = [*self.leechers.values(), *self.seeders.values()]
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        await self.tracker.close()

    async def __aenter__(self) -> Demo:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def demo_user_config(root: Path, **overrides: Any) -> ClientConfig:
    """The user's client in a demo under ``root``: state and downloads there too.

    Never the user's real config or data dir; loopback only, no PEX, a DHT
    with no bootstrap node (the demo's nodes are known once its swarm runs;
    :func:`join_dht` adds them to the running client); downloads limited to
    :data:`DEMO_DOWNLOAD_LIMIT` unless overridden (tests pass
    ``download_rate_limit=None``).
    """
    values: dict[str, Any] = {
        "listen_addresses": (LOOPBACK,),
        "listen_port": 0,
        "data_dir": Path(root) / "you" / "state",
        "download_dir": Path(root) / "downloads",
        "dht": True,
        "dht_bootstrap_nodes": (),
        "pex": False,
        "utp": False,
        "download_rate_limit": DEMO_DOWNLOAD_LIMIT,
        "client_name": "pytorrent demo",
    }
    values.update(overrides)
    return ClientConfig(**values)


def _seeder_config(root: Path, peer: _PeerSpec) -> ClientConfig:
    return ClientConfig(
        listen_addresses=(LOOPBACK,),
        listen_port=0,
        data_dir=root / "swarm" / peer.name,
        download_dir=root / "swarm" / "content",
        dht=peer.dht,
        dht_bootstrap_nodes=(),  # start_demo introduces the seeders to each other
        pex=False,
        utp=False,
        upload_rate_limit=peer.upload_limit,
        client_name=peer.client_name,
    )


async def start_demo(root: Path, *, offer_magnets: bool | None = None) -> Demo:
    """Generate the content, start the tracker and the seeders under ``root``.

    ``offer_magnets=None`` offers the soundtrack as a magnet link when the
    engine can add magnets (``Client.add_magnet``), else as a .torrent.
    Returns once every seeder has checked its data and reached the tracker.
    """
    if offer_magnets is None:
        offer_magnets = hasattr(Client, "add_magnet")
    root = Path(root)
    tracker = DemoTracker(LOOPBACK)
    await tracker.start()
    demo = Demo(root, tracker)
    try:
        specs = _specs()
        metas = await asyncio.gather(
            *(
                asyncio.to_thread(_build, demo.content_dir, demo.torrent_dir, s, tracker.url)
                for s in specs
            )
        )
        for peer in _PEERS:
            client = Client(_seeder_config(root, peer))
            demo.seeders[peer.name] = client
            await client.start()
        # Before the torrents: their first DHT announce needs a working DHT.
        nodes = demo.dht_nodes
        await asyncio.gather(*(join_dht(c, nodes) for c in demo.seeders.values()))
        adds = []
        for spec, mi in zip(specs, metas, strict=True):
            for name in spec.seeders:
                storage = None
                if name == "mallory":
                    layout = Layout.from_info(mi.info, demo.content_dir)
                    storage = CorruptingStorage(layout, _mostly_bad)
                    demo.storages[(name, mi.info_hash)] = storage
                adds.append(demo.seeders[name].add_metainfo(mi, storage=storage))
        await asyncio.gather(*adds)
        demo.torrents = tuple(
            _demo_torrent(demo, spec, mi, magnet=offer_magnets and spec.magnet)
            for spec, mi in zip(specs, metas, strict=True)
        )
        await _wait_for_tracker(demo)
        await _wait_for_dht_announces(demo)
    except BaseException:
        await demo.close()
        raise
    return demo


def _demo_torrent(demo: Demo, spec: _TorrentSpec, mi: Metainfo, *, magnet: bool) -> DemoTorrent:
    paths = {"/".join((mi.info.name, *f.path)): i for i, f in enumerate(mi.info.files)}
    uri = None
    if magnet:
        uri = Magnet(mi.info_hash, display_name=mi.info.name).uri()
    return DemoTorrent(
        name=spec.name,
        info_hash=mi.info_hash,
        torrent_file=demo.torrent_dir / f"{spec.name}.torrent",
        metainfo=mi,
        magnet=uri,
        skip=tuple(paths[p] for p in spec.skip),
        seeders=spec.seeders,
    )


async def _wait_for_tracker(demo: Demo) -> None:
    """Wait (briefly) until the tracker knows every seeder of every torrent.

    Seeders announce in the background once checked; a user's client that
    announced first would find an empty swarm and wait a whole interval.
    """
    expected = {t.info_hash.wire: len(t.seeders) for t in demo.torrents}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TRACKER_WAIT
    while loop.time() < deadline:
        swarms = demo.tracker.swarms
        if all(len(swarms[h].peers) >= n if h in swarms else False for h, n in expected.items()):
            return
        await asyncio.sleep(0.05)


async def join_dht(client: Client, nodes: Sequence[str], timeout: float = DHT_WAIT) -> bool:
    """Start ``client``'s DHT from ``nodes`` (``host:port``); wait until it works (``timeout``).

    The demo's clients have no bootstrap node in their config: their ports
    are only known once they run, and bootstrap nodes are routers, which
    never enter a routing table (as in libtorrent), so a DHT whose every
    member is a router would keep its tables empty.  Each is introduced to
    the others here instead, as plain nodes (``Client.add_dht_nodes``).
    True once some node answered; False without a DHT or in time.
    """
    dht = client.dht
    if dht is None:
        return False
    own = f"{LOOPBACK}:{dht.port}"
    others = [n for n in nodes if n != own]
    if not others:
        return False
    client.add_dht_nodes(others)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while dht.state != "ok" and loop.time() < deadline:
        await asyncio.sleep(0.02)
    return dht.state == "ok"


async def _wait_for_dht_announces(demo: Demo) -> None:
    """Wait (briefly) until every seeder has announced every torrent it seeds to the DHT.

    A user's client that looked a torrent up first would find nobody and
    look again only a minute later (the magnet would sit there meanwhile).
    """
    torrents = [
        t
        for client in demo.seeders.values()
        if client.dht is not None
        for t in client.torrents.values()
    ]

    def announced() -> bool:
        for t in torrents:
            rows = [r for r in t.trackers() if r.tier < 0]
            if rows and not rows[0].last_result:
                return False
        return True

    loop = asyncio.get_running_loop()
    deadline = loop.time() + DHT_WAIT
    while not announced() and loop.time() < deadline:
        await asyncio.sleep(0.05)


@asynccontextmanager
async def demo_session(*, offer_magnets: bool | None = None) -> AsyncIterator[Demo]:
    """A demo in a fresh temporary directory, stopped and deleted on exit."""
    root = Path(tempfile.mkdtemp(prefix="torrent-tui-demo-"))
    try:
        demo = await start_demo(root, offer_magnets=offer_magnets)
        try:
            yield demo
        finally:
            await demo.close()
    finally:
        await asyncio.to_thread(shutil.rmtree, root, True)


# --------------------------------------------------------------------------- the app


class DemoEngine(RealEngine):
    """The real engine, with the demo swarm started before it and stopped after it.

    The swarm must run in the app's own asyncio loop (Textual owns it), so
    it starts here, in :meth:`start`, rather than before the app.  The user's
    client gets :func:`demo_user_config` and no session file: nothing of the
    user's real settings or state is read or written.  Its DHT joins the
    seeders' (:func:`join_dht`) before any torrent is added.  Each demo torrent is
    added the way a user would: a .torrent path or a magnet link, with the
    movie's "Making Of" set to skip; then the leecher joins, so the user
    uploads as well.  ``add_torrents=False`` leaves the table empty (and
    starts no leecher) for tests that add torrents through the UI.
    """

    def __init__(
        self,
        root: Path,
        *,
        add_torrents: bool = True,
        offer_magnets: bool | None = None,
        **config_overrides: Any,
    ) -> None:
        super().__init__(demo_user_config(root, **config_overrides), session=None)
        self.root = Path(root)
        self.demo: Demo | None = None
        self._add_torrents = add_torrents
        self._offer_magnets = offer_magnets

    async def start(self) -> None:
        self.demo = await start_demo(self.root, offer_magnets=self._offer_magnets)
        try:
            await super().start()
            await join_dht(self.client, self.demo.dht_nodes)
            if self._add_torrents:
                for t in self.demo.torrents:
                    await self.add(t.source, file_priorities=t.file_priorities)
                await self.demo.start_leecher((LOOPBACK, self.client.listen_port))
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            if self.demo is not None:
                await self.demo.close()


def run_demo_app(sources: Sequence[str] = ()) -> int:
    """``torrent-tui --demo [SOURCE ...]``: the app on the real engine, fed by the demo swarm.

    Everything lives in a temporary directory removed on exit, whatever the
    way out.  The settings screen edits a settings object pointing into that
    directory and never saves: the user's real config file is not touched.
    """
    from .app import TorrentApp
    from .settings import Settings, TuiSettings

    with tempfile.TemporaryDirectory(prefix="torrent-tui-demo-", ignore_cleanup_errors=True) as tmp:
        root = Path(tmp)
        engine = DemoEngine(root)
        settings = Settings(engine.config, TuiSettings(), root / "config.toml")
        app = TorrentApp(engine, settings=settings, sources=sources, persist_settings=False)
        app.run()
    return 0
