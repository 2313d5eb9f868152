"""A libtorrent DHT node in its own process, and the test-side controller that drives it.

Our DHT can only be trusted once it talks to another implementation, and
libtorrent's is the one most of the real DHT runs. This module is both halves
of that harness:

- the **child** (``python -m tests.support.lt_dht``, started by the
  controller): the sealed libtorrent peer of ``tests/support/lt_peer.py``
  (loopback only, IP filter, no LSD/UPnP/NAT-PMP, the same JSON-lines
  protocol and commands) with its DHT switched on and made usable on
  127.0.0.1, plus DHT commands;
- the **controller** (:class:`LibtorrentDhtNode`, :func:`mesh`, the
  ``lt_dht_factory`` fixture): starts a node, sends commands, polls.

Why the settings (see :data:`DHT_SETTINGS`): libtorrent keeps one node per IP
in its routing table and in search results unless ``dht_restrict_routing_ips``
and ``dht_restrict_search_ips`` are off, and it blocks any IP sending more than
``dht_block_ratelimit`` (5) queries a second, and every node of a loopback DHT
shares one IP. ``dht_bootstrap_nodes`` is empty so it never looks up a public
router; nodes given there would be routers that never enter the routing table
anyway, so nodes are introduced with ``session.add_dht_node()``
(:meth:`LibtorrentDhtNode.add_dht_node`). Torrents keep the DHT on (the plain
peer turns it off per torrent): a seeded torrent is announced, a magnet looks
its peers up.

Child commands, beyond lt_peer's ``add``/``add_magnet``/``status``/...:
``dht_info`` (node id, UDP port), ``add_dht_node``, ``dht_stats``
(``status().dht_nodes``, live nodes, buckets), ``dht_get_peers`` (starts a
lookup), ``dht_peers`` (what lookups found so far), ``dht_announce``,
``force_dht_announce`` (a torrent's own announce, now), ``dht_announces``
(``announce_peer`` queries this node received). Every event carries ``t``,
the child's ``time.monotonic()``: on Linux that clock is system-wide, so the
controller can compare it with its own (the benchmark does).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.ltharness import (
    DEFAULT_TIMEOUT,
    Encryption,
    LibtorrentPeer,
    LibtorrentPeerError,
    LibtorrentPeerTimeout,
)

Addr = tuple[str, int]
REPO = Path(__file__).resolve().parents[2]
CHILD_MODULE = "tests.support.lt_dht"

#: Settings that make libtorrent's DHT work between several nodes on 127.0.0.1
#: and never leave it. Applied on top of lt_peer's sealed settings; a test's
#: own ``settings`` go last.
DHT_SETTINGS: dict[str, Any] = {
    "enable_dht": True,
    "dht_bootstrap_nodes": "",
    "dht_restrict_routing_ips": False,
    "dht_restrict_search_ips": False,
    # 127.0.0.1 is "dark internet" to a public node; here it is the whole net.
    "dht_ignore_dark_internet": False,
    # BEP 42 exempts loopback, but do not let the preference reorder results.
    "dht_prefer_verified_node_ids": False,
    "dht_enforce_node_id": False,
    # Every node shares one IP: libtorrent's per-IP query limit (5/s, then a
    # five-minute block) would cut the whole test DHT off.
    "dht_block_ratelimit": 1_000_000,
    "dht_upload_rate_limit": 1 << 20,
    # A torrent's DHT announce (a get_peers lookup plus announce_peer) repeats
    # this often; the default 15 minutes would leave a magnet that started too
    # early waiting. Tests also force announces (force_dht_announce).
    "dht_announce_interval": 60,
    "apply_filter_to_dht": True,
}

#: announce_peer flags of ``session.dht_announce`` (libtorrent's dht::announce).
ANNOUNCE_SEED = 1
ANNOUNCE_IMPLIED_PORT = 2


# ======================================================================================
# The child: a libtorrent session with its DHT on. Runs in its own process.
# ======================================================================================


def _child_main(argv: list[str]) -> int:
    """Entry point of the child process (``python -m tests.support.lt_dht``)."""
    import libtorrent as lt

    from tests.support import lt_peer

    ap = argparse.ArgumentParser(description="a libtorrent DHT node on 127.0.0.1")
    ap.add_argument("--name", default="lt-dht")
    ap.add_argument("--pkt-log", default=None, help="append every DHT packet to this file")
    ap.add_argument("--settings", default="{}", help="JSON object of extra settings_pack keys")
    own, rest = ap.parse_known_args(argv)

    cat = lt.alert.category_t
    settings = dict(DHT_SETTINGS)
    settings["alert_mask"] = (
        cat.status_notification
        | cat.error_notification
        | cat.peer_notification
        | cat.storage_notification
        | cat.connect_notification
        | cat.dht_notification
        | cat.dht_operation_notification
        | (cat.dht_log_notification if own.pkt_log else 0)
    )
    settings.update(json.loads(own.settings))
    args = lt_peer.parse_args([*rest, "--settings", json.dumps(settings)])

    class DhtPeer(lt_peer.Peer):
        """lt_peer's sealed peer, DHT on, with the DHT commands of this module."""

        def __init__(self, args: argparse.Namespace) -> None:
            super().__init__(args)
            self._dht_lock = threading.Condition()
            self._peers: dict[str, set[tuple[str, int]]] = {}
            self._replies: dict[str, int] = {}
            self._announces: list[dict[str, Any]] = []
            self._stats_seq = 0
            self._stats: dict[str, Any] = {}
            self._live_seq = 0
            self._live: list[list[Any]] = []
            self._udp_port: int | None = None
            self._pkt_log = open(own.pkt_log, "a", encoding="utf-8") if own.pkt_log else None  # noqa: SIM115

        # -- output: every event carries the child's monotonic time --------------

        def emit(self, obj: dict[str, Any]) -> None:
            if "event" in obj:
                obj = {**obj, "t": time.monotonic()}
            super().emit(obj)

        # -- startup -----------------------------------------------------------------

        def wait_listening(self) -> None:
            """Wait for TCP and UDP on 127.0.0.1 and a running DHT, then say so."""
            tcp: int | None = None
            deadline = time.monotonic() + 10.0
            while tcp is None or self._udp_port is None:
                if time.monotonic() > deadline:
                    raise SystemExit("lt_dht: not listening on 127.0.0.1 (tcp and udp)")
                self.session.wait_for_alert(200)
                for a in self.session.pop_alerts():
                    if isinstance(a, lt.listen_succeeded_alert) and a.address == "127.0.0.1":
                        if a.sock_type == lt.listen_succeeded_alert_socket_type_t.tcp:
                            tcp = a.port
                        elif a.sock_type == lt.listen_succeeded_alert_socket_type_t.udp:
                            self._udp_port = a.port
                    elif isinstance(a, lt.listen_failed_alert):
                        raise SystemExit(f"lt_dht: {a.message()}")
            while not (self.session.is_dht_running() and self._node_id()):
                if time.monotonic() > deadline:
                    raise SystemExit("lt_dht: the DHT did not start")
                time.sleep(0.05)
            self.emit(
                {
                    "event": "listening",
                    "port": tcp,
                    "port6": None,
                    "dht_port": self._udp_port,
                    "node_id": self._node_id(),
                    "pid": os.getpid(),
                    "version": lt.__version__,
                    "name": own.name,
                }
            )
            self._alert_thread.start()

        def _node_id(self) -> str:
            """Our DHT node id (hex) from the session state, "" before the DHT runs."""
            buf = lt.write_session_params_buf(
                self.session.session_state(), lt.save_state_flags_t.save_dht_state
            )
            state: Any = lt.bdecode(buf) or {}
            ids: Any = state.get(b"dht state", {}).get(b"node-id", [])
            # Each entry is the 20-byte id followed by the address it was made for.
            return bytes(ids[0][:20]).hex() if ids else ""

        # -- alerts --------------------------------------------------------------------

        def _on_alert(self, a: Any) -> None:
            if isinstance(a, lt.dht_get_peers_reply_alert):
                ih = str(a.info_hash)
                got = {(str(ip), int(port)) for ip, port in a.peers()}
                with self._dht_lock:
                    self._peers.setdefault(ih, set()).update(got)
                    self._replies[ih] = self._replies.get(ih, 0) + 1
                    self._dht_lock.notify_all()
            elif isinstance(a, lt.dht_announce_alert):
                entry = {"info_hash": str(a.info_hash), "ip": str(a.ip), "port": int(a.port)}
                with self._dht_lock:
                    if len(self._announces) < 10_000:
                        self._announces.append(entry)
                self.emit({"event": "dht_announce", **entry})
            elif isinstance(a, lt.dht_reply_alert):
                # A torrent's own lookup got peers (the benchmark's "first DHT peer").
                handle = a.handle
                ih = lt_peer.primary_hex(handle.info_hashes()) if handle.is_valid() else ""
                self.emit({"event": "dht_reply", "info_hash": ih, "num_peers": a.num_peers})
            elif isinstance(a, lt.dht_stats_alert):
                with self._dht_lock:
                    self._stats = {
                        "active_requests": len(a.active_requests),
                        "routing_table": [
                            [int(b["num_nodes"]), int(b["num_replacements"])]
                            for b in a.routing_table
                        ],
                    }
                    self._stats_seq += 1
                    self._dht_lock.notify_all()
            elif isinstance(a, lt.dht_live_nodes_alert):
                with self._dht_lock:
                    self._live = [
                        [str(n["nid"]), str(n["endpoint"][0]), int(n["endpoint"][1])]
                        for n in a.nodes
                    ]
                    self._live_seq += 1
                    self._dht_lock.notify_all()
            elif isinstance(a, lt.dht_bootstrap_alert):
                self.emit({"event": "dht_bootstrap"})
            elif isinstance(a, (lt.dht_pkt_alert, lt.dht_log_alert)):
                if self._pkt_log is not None:
                    self._pkt_log.write(f"{time.monotonic():.3f} {a.message()}\n")
                    self._pkt_log.flush()
            else:
                super()._on_alert(a)

        # -- torrents: keep the DHT on -------------------------------------------------

        def _add(self, atp: Any, save_path: str, seed: bool) -> dict[str, Any]:
            atp.save_path = save_path
            atp.trackers = [t for t in atp.trackers if lt_peer.is_loopback_url(t)]
            atp.url_seeds = [u for u in atp.url_seeds if lt_peer.is_loopback_url(u)]
            flags = atp.flags | lt.torrent_flags.override_trackers
            flags |= lt.torrent_flags.override_web_seeds | lt.torrent_flags.disable_lsd
            flags |= lt.torrent_flags.apply_ip_filter
            flags &= ~lt.torrent_flags.auto_managed & ~lt.torrent_flags.paused
            flags &= ~lt.torrent_flags.disable_dht
            if seed:
                flags |= lt.torrent_flags.seed_mode
            atp.flags = flags
            return dict(self._register(self.session.add_torrent(atp)))

        # -- DHT commands ----------------------------------------------------------------

        def cmd_dht_info(self, msg: dict[str, Any]) -> dict[str, Any]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                nodes = int(self.session.status().dht_nodes)
            return {
                "node_id": self._node_id(),
                "dht_port": self._udp_port,
                "port": self.session.listen_port(),
                "running": bool(self.session.is_dht_running()),
                "dht_nodes": nodes,
            }

        def cmd_add_dht_node(self, msg: dict[str, Any]) -> None:
            host, port = str(msg["host"]), int(msg["port"])
            if not lt_peer.is_loopback_host(host):
                raise lt_peer.CommandError(f"refusing non-loopback DHT node {host}")
            if not 0 < port < 65536:
                raise lt_peer.CommandError(f"bad port {port}")
            self.session.add_dht_node((host.strip("[]"), port))

        def cmd_dht_stats(self, msg: dict[str, Any]) -> dict[str, Any]:
            """status().dht_nodes, plus the live nodes and buckets (two alerts, awaited)."""
            wait = float(msg.get("wait", 3.0))
            with self._dht_lock:
                stats_seq, live_seq = self._stats_seq, self._live_seq
            node_id = self._node_id()
            self.session.post_dht_stats()
            if node_id:
                self.session.dht_live_nodes(lt.sha1_hash(bytes.fromhex(node_id)))
            with self._dht_lock:
                self._dht_lock.wait_for(
                    lambda: (
                        self._stats_seq > stats_seq and (not node_id or self._live_seq > live_seq)
                    ),
                    timeout=wait,
                )
                stats, live = dict(self._stats), list(self._live)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                nodes = int(self.session.status().dht_nodes)
            return {"dht_nodes": nodes, "node_id": node_id, "live_nodes": live, **stats}

        def cmd_dht_get_peers(self, msg: dict[str, Any]) -> None:
            ih = _hex20(msg["info_hash"])
            if msg.get("clear"):
                with self._dht_lock:
                    self._peers.pop(ih, None)
                    self._replies.pop(ih, None)
            self.session.dht_get_peers(lt.sha1_hash(bytes.fromhex(ih)))

        def cmd_dht_peers(self, msg: dict[str, Any]) -> dict[str, Any]:
            ih = _hex20(msg["info_hash"])
            with self._dht_lock:
                peers = sorted(self._peers.get(ih, set()))
                replies = self._replies.get(ih, 0)
            return {"peers": [list(p) for p in peers], "replies": replies}

        def cmd_dht_announce(self, msg: dict[str, Any]) -> None:
            ih = _hex20(msg["info_hash"])
            flags = (ANNOUNCE_SEED if msg.get("seed") else 0) | (
                ANNOUNCE_IMPLIED_PORT if msg.get("implied_port") else 0
            )
            self.session.dht_announce(lt.sha1_hash(bytes.fromhex(ih)), int(msg["port"]), flags)

        def cmd_force_dht_announce(self, msg: dict[str, Any]) -> None:
            self._handle(msg).force_dht_announce()

        def cmd_dht_announces(self, msg: dict[str, Any]) -> list[dict[str, Any]]:
            want = msg.get("info_hash")
            with self._dht_lock:
                got = list(self._announces)
            return [e for e in got if want is None or e["info_hash"] == _hex20(want)]

        def close(self) -> None:
            super().close()
            if self._pkt_log is not None:
                self._pkt_log.close()

    return lt_peer.serve(DhtPeer(args), "lt_dht")


def _hex20(value: object) -> str:
    """An info-hash as 40 lower-case hex digits; ValueError for anything else."""
    text = value.hex() if isinstance(value, bytes) else str(value).lower()
    if len(text) != 40 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError(f"not a 20-byte info-hash: {value!r}")
    return text


# ======================================================================================
# The controller: used by tests and benchmarks.
# ======================================================================================


@dataclass(frozen=True, slots=True)
class LtDhtStats:
    """One libtorrent node's view of its DHT.

    ``nodes`` is ``session.status().dht_nodes``; ``live_nodes`` the routing
    table's nodes as ``(node id, (host, port))``; ``buckets`` (nodes,
    replacements) per bucket; ``active_requests`` its lookups in flight.
    """

    node_id: bytes
    nodes: int
    live_nodes: tuple[tuple[bytes, Addr], ...]
    buckets: tuple[tuple[int, int], ...]
    active_requests: int


@dataclass(frozen=True, slots=True)
class ReceivedAnnounce:
    """An ``announce_peer`` a libtorrent node accepted: who, for what."""

    info_hash: bytes
    peer: Addr


class LibtorrentDhtNode(LibtorrentPeer):
    """A libtorrent session with its DHT on, in a child process on 127.0.0.1.

    Everything :class:`LibtorrentPeer` does (``add_torrent``, ``add_magnet``,
    ``status``, ``wait_seeding``, ``connect``, ``stop``) works here; torrents
    use the DHT. ``port`` is the TCP listen port, :attr:`dht_port` the UDP one
    (the same number in practice; libtorrent binds both).
    """

    def __init__(
        self,
        name: str = "lt-dht",
        *,
        timeout: float = DEFAULT_TIMEOUT,
        pkt_log: Path | None = None,
    ) -> None:
        super().__init__(name, timeout=timeout)
        self.pkt_log = pkt_log
        self._dht_port: int | None = None
        self._node_id = b""
        #: ``time.monotonic()`` when the child said it was listening.
        self.started_at = 0.0

    def start(
        self,
        ipv6: bool = False,
        utp: bool = False,
        encryption: Encryption = "plaintext",
        upload_rate: int | None = None,
        download_rate: int | None = None,
        settings: Mapping[str, Any] | None = None,
        timeout: float = 20.0,
    ) -> int:
        """Start the child; returns the TCP port. ``settings`` go over :data:`DHT_SETTINGS`."""
        if self._proc is not None:
            raise LibtorrentPeerError(f"{self.name}: already started")
        if ipv6:
            raise LibtorrentPeerError(f"{self.name}: the DHT harness is IPv4 only")
        argv = [sys.executable, "-u", "-m", CHILD_MODULE, "--name", self.name]
        argv += ["--encryption", encryption]
        if utp:
            argv.append("--utp")
        if upload_rate:
            argv += ["--upload-rate", str(int(upload_rate))]
        if download_rate:
            argv += ["--download-rate", str(int(download_rate))]
        if settings:
            argv += ["--settings", json.dumps(dict(settings))]
        if self.pkt_log is not None:
            argv += ["--pkt-log", str(self.pkt_log)]
        ev = self._launch(argv, timeout, cwd=REPO)
        self._port = int(ev["port"])
        self._dht_port = int(ev["dht_port"])
        self._node_id = bytes.fromhex(str(ev["node_id"]))
        self.started_at = float(ev["t"])
        return self._port

    # -- identity -----------------------------------------------------------------------

    @property
    def dht_port(self) -> int:
        """The UDP port its DHT listens on (127.0.0.1)."""
        if self._dht_port is None:
            raise LibtorrentPeerError(f"{self.name}: not started")
        return self._dht_port

    @property
    def dht_addr(self) -> Addr:
        return ("127.0.0.1", self.dht_port)

    @property
    def node_id(self) -> bytes:
        """The node id it had at start (see :meth:`current_node_id`)."""
        return self._node_id

    def current_node_id(self) -> bytes:
        """Its node id now (libtorrent may change it when it learns its external IP)."""
        self._node_id = bytes.fromhex(str(self.request("dht_info")["node_id"]))
        return self._node_id

    # -- DHT commands -------------------------------------------------------------------

    def add_dht_node(self, host: str, port: int) -> None:
        """``session.add_dht_node``: ping it; it joins the routing table when it answers."""
        self.request("add_dht_node", host=host, port=port)

    def dht_nodes(self) -> int:
        """``session.status().dht_nodes``: nodes in its routing table."""
        return int(self.request("dht_info")["dht_nodes"])

    def dht_stats(self, wait: float = 3.0) -> LtDhtStats:
        r = self.request("dht_stats", timeout=wait + self.timeout, wait=wait)
        return LtDhtStats(
            node_id=bytes.fromhex(r["node_id"]) if r["node_id"] else b"",
            nodes=int(r["dht_nodes"]),
            live_nodes=tuple((bytes.fromhex(i), (h, int(p))) for i, h, p in r["live_nodes"]),
            buckets=tuple((int(n), int(x)) for n, x in r.get("routing_table", [])),
            active_requests=int(r.get("active_requests", 0)),
        )

    def dht_get_peers(self, info_hash: bytes | str, *, clear: bool = False) -> None:
        """Start ``session.dht_get_peers``; replies accumulate (see :meth:`dht_peers`)."""
        self.request("dht_get_peers", info_hash=_hex20(info_hash), clear=clear)

    def dht_peers(self, info_hash: bytes | str) -> set[Addr]:
        """Every peer its ``dht_get_peers`` lookups for ``info_hash`` have returned so far."""
        r = self.request("dht_peers", info_hash=_hex20(info_hash))
        return {(str(h), int(p)) for h, p in r["peers"]}

    def find_peers(
        self,
        info_hash: bytes | str,
        until: Callable[[set[Addr]], bool],
        timeout: float,
        every: float = 2.0,
        poll: float = 0.1,
    ) -> set[Addr]:
        """Look ``info_hash`` up every ``every`` seconds until ``until(peers)`` holds."""
        deadline = time.monotonic() + timeout
        next_lookup = 0.0
        while True:
            now = time.monotonic()
            if now >= next_lookup:
                self.dht_get_peers(info_hash)
                next_lookup = now + every
            peers = self.dht_peers(info_hash)
            if until(peers):
                return peers
            if now >= deadline:
                raise LibtorrentPeerTimeout(
                    f"{self.name}: dht_get_peers({_hex20(info_hash)}) found only "
                    f"{sorted(peers)} within {timeout:.0f}s; {self.describe()}"
                )
            time.sleep(poll)

    def dht_announce(
        self, info_hash: bytes | str, port: int, *, seed: bool = False, implied_port: bool = False
    ) -> None:
        """``session.dht_announce``: announce ``127.0.0.1:port`` for ``info_hash``."""
        self.request(
            "dht_announce",
            info_hash=_hex20(info_hash),
            port=port,
            seed=seed,
            implied_port=implied_port,
        )

    def force_dht_announce(self, info_hash: str) -> None:
        """Make one of its torrents look up and announce itself on the DHT now."""
        self.request("force_dht_announce", info_hash=info_hash)

    def announces_received(self, info_hash: bytes | str | None = None) -> list[ReceivedAnnounce]:
        """The ``announce_peer`` queries it accepted (optionally for one info-hash)."""
        want = None if info_hash is None else _hex20(info_hash)
        return [
            ReceivedAnnounce(bytes.fromhex(e["info_hash"]), (str(e["ip"]), int(e["port"])))
            for e in self.request("dht_announces", info_hash=want)
        ]

    # -- waiting --------------------------------------------------------------------------

    def wait_dht_nodes(self, count: int, timeout: float = 30.0, poll: float = 0.1) -> int:
        """Wait until its routing table holds at least ``count`` nodes."""
        deadline = time.monotonic() + timeout
        while True:
            n = self.dht_nodes()
            if n >= count:
                return n
            if time.monotonic() >= deadline:
                raise LibtorrentPeerTimeout(
                    f"{self.name}: {n} DHT nodes, wanted {count}, after {timeout:.0f}s; "
                    f"{self.describe()}"
                )
            time.sleep(poll)

    def wait_knows(self, node_ids: Sequence[bytes], timeout: float = 30.0) -> LtDhtStats:
        """Wait until every one of ``node_ids`` is a live node of its routing table."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.dht_stats()
            known = {nid for nid, _ in st.live_nodes}
            if all(n in known for n in node_ids):
                return st
            if time.monotonic() >= deadline:
                missing = [n.hex() for n in node_ids if n not in known]
                raise LibtorrentPeerTimeout(
                    f"{self.name}: nodes {missing} not in its table after {timeout:.0f}s; "
                    f"{_describe_stats(st)}"
                )
            time.sleep(0.2)

    def describe(self) -> str:
        """A one-line account of its DHT, for failure messages."""
        try:
            return _describe_stats(self.dht_stats(wait=1.0))
        except LibtorrentPeerError as exc:
            return f"(no DHT stats: {exc})"


def _describe_stats(st: LtDhtStats) -> str:
    live = ", ".join(f"{nid.hex()[:8]}@{h}:{p}" for nid, (h, p) in st.live_nodes)
    return (
        f"id {st.node_id.hex()[:8]} dht_nodes={st.nodes} buckets={list(st.buckets)} "
        f"active={st.active_requests} live=[{live}]"
    )


def mesh(nodes: Sequence[LibtorrentDhtNode], *, timeout: float = 30.0) -> None:
    """Introduce every node to every other (``add_dht_node``) and wait until each knows all."""
    for node in nodes:
        for other in nodes:
            if other is not node:
                node.add_dht_node("127.0.0.1", other.dht_port)
    for node in nodes:
        node.wait_knows([o.node_id for o in nodes if o is not node], timeout=timeout)


def wait_announced(
    announcer: LibtorrentDhtNode,
    info_hash: str,
    storers: Sequence[LibtorrentDhtNode],
    *,
    timeout: float = 30.0,
    every: float = 3.0,
) -> None:
    """Force ``announcer``'s torrent to announce until every storer has accepted it.

    A torrent announces when it is added, but its lookup may run before the
    routing table is full; repeating is what its 15-minute timer would do.
    """
    deadline = time.monotonic() + timeout
    want = bytes.fromhex(info_hash)
    next_announce = 0.0
    while True:
        now = time.monotonic()
        if now >= next_announce:
            announcer.force_dht_announce(info_hash)
            next_announce = now + every
        waiting = [
            s.name
            for s in storers
            if not any(
                a.info_hash == want and a.peer[1] == announcer.port
                for a in s.announces_received(want)
            )
        ]
        if not waiting:
            return
        if now >= deadline:
            raise LibtorrentPeerTimeout(
                f"{announcer.name}'s announce of {info_hash} did not reach {waiting} "
                f"within {timeout:.0f}s; {announcer.describe()}"
            )
        time.sleep(0.1)


def info_hash_for(label: str) -> bytes:
    """A deterministic 20-byte info-hash for a test that needs no real torrent."""
    return hashlib.sha1(label.encode()).digest()


class LibtorrentDhtFactory:
    """Starts named DHT nodes on demand and stops every one of them at close()."""

    def __init__(self, log_dir: Path | None = None) -> None:
        self.nodes: list[LibtorrentDhtNode] = []
        self.log_dir = log_dir

    def __call__(
        self, name: str = "lt-dht", *, settings: Mapping[str, Any] | None = None
    ) -> LibtorrentDhtNode:
        log = self.log_dir / f"{name}.dht.log" if self.log_dir is not None else None
        node = LibtorrentDhtNode(name, pkt_log=log)
        self.nodes.append(node)
        node.start(settings=settings)
        return node

    def close(self) -> None:
        for node in self.nodes:
            node.stop()


@pytest.fixture
def lt_dht_factory(tmp_path: Path) -> Iterator[LibtorrentDhtFactory]:
    """``node = lt_dht_factory("seeder")``: started, always stopped.

    ``LT_DHT_LOG=1`` writes every node's DHT packets to ``tmp_path/NAME.dht.log``.
    """
    factory = LibtorrentDhtFactory(tmp_path if os.environ.get("LT_DHT_LOG") else None)
    try:
        yield factory
    finally:
        factory.close()


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
