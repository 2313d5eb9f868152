"""A libtorrent peer whose transports and encryption are chosen, and that says what each link used.

uTP and MSE/PE interop can only be proven against a peer that is *unable*
to fall back: a libtorrent that also speaks TCP would quietly use it when
our uTP fails, and one that accepts plaintext would hide a broken RC4
stream. So this peer is told exactly which transports it may use and which
encryption it accepts, and it reports, for every connection it has had, the
transport and encryption libtorrent itself says it used (``peer_info``
flags), so a test asserts what happened on the wire rather than assuming it.

Both halves live here, like tests/support/lt_dht.py:

- the **child** (``python -m tests.support.lt_transport``, started by the
  controller): lt_peer's sealed loopback peer (same JSON-lines protocol and
  commands) with the settings of :func:`transport_settings`, a thread that
  samples every torrent's ``get_peer_info()`` so connections that have
  already closed (two seeds hang up on each other) are still reported, and
  the commands ``connections``, ``settings`` and ``apply`` (change transport,
  encryption or buffers of a running session: the benchmark reconfigures one
  seeder between rows so every row downloads from the same process);
- the **controller** (:class:`LibtorrentTransportPeer`, the
  ``lt_transport_factory`` fixture).

Profiles (see :func:`transport_settings`):

- transport ``"utp"``: uTP in and out, TCP off both ways (libtorrent still
  binds its TCP listen socket but neither dials nor accepts on it);
  ``"tcp"``: the reverse; ``"both"``: libtorrent's default (it dials uTP
  first and falls back to TCP);
- crypto ``"rc4"``: MSE required both ways with RC4 the only accepted level
  (``pe_forced``/``pe_rc4``); ``"plaintext"``: no MSE at all, encrypted
  handshakes refused (``pe_disabled``); ``"prefer"``: MSE offered and
  accepted, plaintext too (``pe_enabled``/``pe_both``, RC4 preferred);
- ``socket_buffer``: ``send_socket_buffer_size`` and
  ``recv_socket_buffer_size`` in bytes (0: the OS default). libtorrent's
  uTP over loopback runs at ~11 MB/s with default buffers and ~155 MB/s with
  4 MiB ones (measured on the 2-core VM of issue 14): its UDP socket drops
  bursts a small buffer cannot hold, so buffers decide uTP benchmarks.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import libtorrent as lt
import pytest

from tests.support.ltharness import (
    DEFAULT_TIMEOUT,
    Encryption,
    LibtorrentPeer,
    LibtorrentPeerError,
    LibtorrentPeerTimeout,
)

Transport = Literal["utp", "tcp", "both"]
Crypto = Literal["rc4", "plaintext", "prefer"]
#: What libtorrent says a connection used: MSE with RC4, MSE with the
#: plaintext crypto method, or the plain BitTorrent handshake.
LinkEncryption = Literal["rc4", "mse-plaintext", "none"]

REPO = Path(__file__).resolve().parents[2]
CHILD_MODULE = "tests.support.lt_transport"
TRANSPORTS: tuple[Transport, ...] = ("utp", "tcp", "both")
CRYPTOS: tuple[Crypto, ...] = ("rc4", "plaintext", "prefer")
#: How often the child samples peer_info by default (seconds).
DEFAULT_SAMPLE_INTERVAL = 0.05

# peer_info flag bits (libtorrent's peer_info.hpp); the bindings lack utp_socket.
_UTP_SOCKET = 1 << 17
_RC4_ENCRYPTED = 1 << 19
_PLAINTEXT_ENCRYPTED = 1 << 20
_CONNECTION_TYPES = {1: "bittorrent", 2: "web_seed", 4: "http_seed"}


def transport_settings(
    transport: Transport | None = None,
    crypto: Crypto | None = None,
    socket_buffer: int | None = None,
) -> dict[str, int | bool]:
    """The settings_pack keys for a profile; None leaves that part alone.

    Integers, not libtorrent enums, so the dict crosses the JSON pipe as is.
    """
    out: dict[str, int | bool] = {}
    if transport is not None:
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}, not {transport!r}")
        tcp, utp = transport in ("tcp", "both"), transport in ("utp", "both")
        out |= {
            "enable_outgoing_tcp": tcp,
            "enable_incoming_tcp": tcp,
            "enable_outgoing_utp": utp,
            "enable_incoming_utp": utp,
        }
    if crypto is not None:
        if crypto not in CRYPTOS:
            raise ValueError(f"crypto must be one of {CRYPTOS}, not {crypto!r}")
        policy, level = {
            "rc4": (lt.enc_policy.pe_forced, lt.enc_level.pe_rc4),
            "plaintext": (lt.enc_policy.pe_disabled, lt.enc_level.pe_both),
            "prefer": (lt.enc_policy.pe_enabled, lt.enc_level.pe_both),
        }[crypto]
        out |= {
            "out_enc_policy": int(policy),
            "in_enc_policy": int(policy),
            "allowed_enc_level": int(level),
            "prefer_rc4": crypto != "plaintext",
        }
    if socket_buffer is not None:
        if socket_buffer < 0:
            raise ValueError(f"socket_buffer must be >= 0, not {socket_buffer}")
        out |= {"send_socket_buffer_size": socket_buffer, "recv_socket_buffer_size": socket_buffer}
    return out


def link_encryption(flags: int) -> LinkEncryption:
    """The encryption a peer_info ``flags`` value says the link uses."""
    if flags & _RC4_ENCRYPTED:
        return "rc4"
    if flags & _PLAINTEXT_ENCRYPTED:
        return "mse-plaintext"
    return "none"


def _encryption_of_names(flags: list[str]) -> LinkEncryption:
    """:func:`link_encryption` of lt_peer's flag names."""
    if "rc4_encrypted" in flags:
        return "rc4"
    if "plaintext_encrypted" in flags:
        return "mse-plaintext"
    return "none"


# ======================================================================================
# The child: lt_peer's sealed peer with a transport profile. Runs in its own process.
# ======================================================================================

#: The settings the ``settings`` command reports (what the session really runs with).
_REPORTED_SETTINGS = (
    "enable_outgoing_tcp",
    "enable_incoming_tcp",
    "enable_outgoing_utp",
    "enable_incoming_utp",
    "out_enc_policy",
    "in_enc_policy",
    "allowed_enc_level",
    "prefer_rc4",
    "send_socket_buffer_size",
    "recv_socket_buffer_size",
)


def _child_main(argv: list[str]) -> int:
    """Entry point of the child process (``python -m tests.support.lt_transport``)."""
    from tests.support import lt_peer

    ap = argparse.ArgumentParser(description="a libtorrent peer with a transport profile")
    ap.add_argument("--transport", choices=TRANSPORTS, default="both")
    ap.add_argument("--crypto", choices=CRYPTOS, default="plaintext")
    ap.add_argument("--socket-buffer", type=int, default=None, help="bytes; 0 = OS default")
    ap.add_argument("--sample-interval", type=float, default=DEFAULT_SAMPLE_INTERVAL)
    ap.add_argument("--settings", default="{}", help="JSON object of extra settings_pack keys")
    own, rest = ap.parse_known_args(argv)
    settings: dict[str, Any] = dict(
        transport_settings(own.transport, own.crypto, own.socket_buffer)
    )
    settings.update(json.loads(own.settings))
    args = lt_peer.parse_args([*rest, "--settings", json.dumps(settings)])

    class TransportPeer(lt_peer.Peer):
        """lt_peer's peer plus a record of every connection's transport and encryption."""

        def __init__(self, args: argparse.Namespace) -> None:
            super().__init__(args)
            self._seen_lock = threading.Lock()
            # (info-hash, ip, port, utp) -> the connection as last sampled
            self._seen: dict[tuple[str, str, int, bool], dict[str, Any]] = {}
            self._sampler = threading.Thread(target=self._sample_loop, daemon=True)

        def wait_listening(self) -> None:
            super().wait_listening()
            self._sampler.start()

        def close(self) -> None:
            self._stop.set()  # the sampler must be gone before the session is
            if self._sampler.is_alive():
                self._sampler.join(timeout=2.0)
            super().close()

        # -- sampling peer_info ----------------------------------------------------

        def _sample_loop(self) -> None:
            while not self._stop.wait(own.sample_interval):
                try:
                    self._sample()
                except Exception as exc:  # a torrent removed mid-sample, say
                    print(f"lt_transport: sample: {exc!r}", file=sys.stderr)

        def _sample(self) -> list[dict[str, Any]]:
            """Every live connection of every torrent, also merged into the record."""
            with self._lock:
                handles = {self.primary[k]: h for k, h in self.handles.items()}
            now = time.monotonic()
            live: list[dict[str, Any]] = []
            for ih, handle in handles.items():
                if not handle.is_valid():
                    continue
                for p in handle.get_peer_info():
                    live.append(self._describe(ih, p, now))
            with self._seen_lock:
                for conn in live:
                    key = (conn["info_hash"], conn["ip"], conn["port"], conn["transport"] == "utp")
                    old = self._seen.get(key)
                    if old is not None:
                        conn = {**conn, "first_seen": old["first_seen"]}
                        # A flag once seen stays reported: RC4 is only flagged once
                        # the MSE handshake is done, and a sample may predate it.
                        conn["flags"] = sorted(set(old["flags"]) | set(conn["flags"]))
                        conn["encryption"] = _encryption_of_names(conn["flags"])
                    self._seen[key] = conn
            return live

        @staticmethod
        def _describe(ih: str, p: Any, now: float) -> dict[str, Any]:
            base = lt_peer.peer_dict(p)
            flags = int(p.flags)
            local = p.local_endpoint
            local = local() if callable(local) else local  # a method in some bindings
            return {
                **base,
                "info_hash": ih,
                "transport": "utp" if flags & _UTP_SOCKET else "tcp",
                "encryption": link_encryption(flags),
                "outgoing": bool(flags & lt.peer_info.outgoing_connection),
                "connection_type": _CONNECTION_TYPES.get(int(p.connection_type), "other"),
                "local_port": int(local[1]),
                "first_seen": now,
                "last_seen": now,
            }

        def _on_alert(self, a: Any) -> None:
            if isinstance(a, lt.peer_disconnected_alert):
                handle = a.handle
                ih = lt_peer.primary_hex(handle.info_hashes()) if handle.is_valid() else None
                self.emit(
                    {
                        "event": "peer_disconnected",
                        "info_hash": ih,
                        "peer": [str(a.endpoint[0]), int(a.endpoint[1])],
                        "socket_type": _socket_type(a.socket_type),
                        "error": a.error.message(),
                        "message": a.message(),
                    }
                )
            elif isinstance(a, lt.incoming_connection_alert):
                self.emit(
                    {
                        "event": "incoming_connection",
                        "peer": [str(a.endpoint[0]), int(a.endpoint[1])],
                        "socket_type": _socket_type(a.socket_type),
                        "message": a.message(),
                    }
                )
            else:
                super()._on_alert(a)

        # -- commands ------------------------------------------------------------------

        def cmd_connections(self, msg: dict[str, Any]) -> dict[str, Any]:
            """``current``: live now; ``seen``: every connection since the start."""
            want = self.primary.get(str(msg["info_hash"]).lower()) if msg.get("info_hash") else None
            if msg.get("info_hash") and want is None:
                raise lt_peer.CommandError(f"no torrent {msg['info_hash']}")
            live = self._sample()
            with self._seen_lock:
                seen = list(self._seen.values())
            return {
                "current": [c for c in live if want is None or c["info_hash"] == want],
                "seen": [c for c in seen if want is None or c["info_hash"] == want],
            }

        def cmd_settings(self, msg: dict[str, Any]) -> dict[str, Any]:
            current: Mapping[str, Any] = self.session.get_settings()
            return {k: _plain(current[k]) for k in _REPORTED_SETTINGS}

        def cmd_apply(self, msg: dict[str, Any]) -> dict[str, Any]:
            """Change the profile of the running session (new connections use it)."""
            # Any: the stubs type settings_pack as a TypedDict of literal keys.
            pack: Any = dict(
                transport_settings(
                    msg.get("transport"), msg.get("crypto"), msg.get("socket_buffer")
                )
            )
            pack.update(msg.get("settings") or {})
            self.session.apply_settings(pack)
            return self.cmd_settings(msg)

        def cmd_forget(self, msg: dict[str, Any]) -> None:
            """Drop the record of past connections (between benchmark rows)."""
            with self._seen_lock:
                self._seen.clear()

    return lt_peer.serve(TransportPeer(args), "lt_transport")


def _socket_type(value: Any) -> str:
    """An alert's socket type by name; uTP is called ``udp`` in the bindings' enum."""
    name = str(value).rsplit(".", 1)[-1]
    return {"udp": "utp"}.get(name, name)


def _plain(value: Any) -> int | bool | str:
    """A settings value as JSON can carry it (libtorrent enums are ints)."""
    if isinstance(value, bool | str):
        return value
    return int(value)


# ======================================================================================
# The controller: used by tests and benchmarks.
# ======================================================================================


@dataclass(frozen=True, slots=True)
class LtConnection:
    """One peer connection as libtorrent reports it (``peer_info``).

    ``flags`` are lt_peer's flag names, every one seen while the link lived;
    totals are the payload bytes of that connection at its last sample.
    """

    info_hash: str
    ip: str
    port: int
    local_port: int
    transport: Literal["utp", "tcp"]
    encryption: LinkEncryption
    outgoing: bool
    connection_type: str
    client: str
    flags: tuple[str, ...]
    total_download: int
    total_upload: int
    first_seen: float
    last_seen: float

    @property
    def utp(self) -> bool:
        return self.transport == "utp"

    @property
    def rc4(self) -> bool:
        return self.encryption == "rc4"

    def describe(self) -> str:
        way = "out" if self.outgoing else "in"
        return (
            f"{self.ip}:{self.port} {self.transport}/{self.encryption} {way} "
            f"{self.client!r} down={self.total_download} up={self.total_upload}"
        )

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> LtConnection:
        return cls(
            info_hash=str(d["info_hash"]),
            ip=str(d["ip"]),
            port=int(d["port"]),
            local_port=int(d["local_port"]),
            transport="utp" if d["transport"] == "utp" else "tcp",
            encryption=_encryption(d["encryption"]),
            outgoing=bool(d["outgoing"]),
            connection_type=str(d["connection_type"]),
            client=str(d["client"]),
            flags=tuple(d["flags"]),
            total_download=int(d["total_download"]),
            total_upload=int(d["total_upload"]),
            first_seen=float(d["first_seen"]),
            last_seen=float(d["last_seen"]),
        )


def _encryption(value: object) -> LinkEncryption:
    if value == "rc4":
        return "rc4"
    if value == "mse-plaintext":
        return "mse-plaintext"
    return "none"


class LibtorrentTransportPeer(LibtorrentPeer):
    """A libtorrent session with a transport profile, in a child process on 127.0.0.1.

    Everything :class:`LibtorrentPeer` does works here; the profile is fixed
    at construction (``transport``, ``crypto``, ``socket_buffer``), and
    :meth:`apply` changes it while it runs. ``port`` is the TCP listen port;
    libtorrent's uTP socket is the UDP port of the same number.
    """

    def __init__(
        self,
        name: str = "lt-transport",
        *,
        transport: Transport = "both",
        crypto: Crypto = "plaintext",
        socket_buffer: int | None = None,
        sample_interval: float = DEFAULT_SAMPLE_INTERVAL,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__(name, timeout=timeout)
        transport_settings(transport, crypto, socket_buffer)  # validates
        self.transport: Transport = transport
        self.crypto: Crypto = crypto
        self.socket_buffer = socket_buffer
        self.sample_interval = sample_interval

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
        """Start the child; returns the TCP port. ``settings`` go over the profile's.

        ``utp`` and ``encryption`` belong to the plain harness: the profile
        given at construction decides them here, so passing them is an error.
        """
        if self._proc is not None:
            raise LibtorrentPeerError(f"{self.name}: already started")
        if ipv6:
            raise LibtorrentPeerError(f"{self.name}: the transport harness is IPv4 only")
        if utp or encryption != "plaintext":
            raise LibtorrentPeerError(
                f"{self.name}: set transport= and crypto= on LibtorrentTransportPeer instead"
            )
        argv = [sys.executable, "-u", "-m", CHILD_MODULE]
        argv += ["--transport", self.transport, "--crypto", self.crypto]
        argv += ["--sample-interval", str(self.sample_interval)]
        if self.socket_buffer is not None:
            argv += ["--socket-buffer", str(self.socket_buffer)]
        if upload_rate:
            argv += ["--upload-rate", str(int(upload_rate))]
        if download_rate:
            argv += ["--download-rate", str(int(download_rate))]
        if settings:
            argv += ["--settings", json.dumps(dict(settings))]
        ev = self._launch(argv, timeout, cwd=REPO)
        self._port = int(ev["port"])
        return self._port

    # -- the profile ------------------------------------------------------------------

    def settings(self) -> dict[str, int | bool | str]:
        """The transport and encryption settings the session runs with now."""
        result = self.request("settings")
        assert isinstance(result, dict)
        return result

    def apply(
        self,
        *,
        transport: Transport | None = None,
        crypto: Crypto | None = None,
        socket_buffer: int | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> dict[str, int | bool | str]:
        """Change the running profile (new connections only); returns the settings now."""
        transport_settings(transport, crypto, socket_buffer)  # validates before sending
        result = self.request(
            "apply",
            transport=transport,
            crypto=crypto,
            socket_buffer=socket_buffer,
            settings=dict(settings or {}),
        )
        if transport is not None:
            self.transport = transport
        if crypto is not None:
            self.crypto = crypto
        if socket_buffer is not None:
            self.socket_buffer = socket_buffer
        assert isinstance(result, dict)
        return result

    # -- connections ------------------------------------------------------------------

    def connections(self, info_hash: str | None = None) -> list[LtConnection]:
        """Every connection seen since start (or :meth:`forget`), live or closed."""
        result = self.request("connections", info_hash=info_hash)
        return [LtConnection.from_json(c) for c in result["seen"]]

    def live_connections(self, info_hash: str | None = None) -> list[LtConnection]:
        """The connections open right now."""
        result = self.request("connections", info_hash=info_hash)
        return [LtConnection.from_json(c) for c in result["current"]]

    def forget(self) -> None:
        """Clear the record of past connections."""
        self.request("forget")

    def wait_connection(
        self,
        info_hash: str,
        predicate: Callable[[LtConnection], bool] = lambda c: True,
        timeout: float = 20.0,
        what: str = "a connection",
    ) -> LtConnection:
        """Wait until a connection matching ``predicate`` has been seen; return it."""
        deadline = time.monotonic() + timeout
        while True:
            seen = self.connections(info_hash)
            for conn in seen:
                if predicate(conn):
                    return conn
            if time.monotonic() >= deadline:
                raise LibtorrentPeerTimeout(
                    f"{self.name}: no {what} within {timeout:.0f}s; seen: "
                    f"{[c.describe() for c in seen]}; drops: {self.disconnect_reasons()[-5:]}"
                )
            time.sleep(0.1)

    def disconnect_reasons(self) -> list[str]:
        """Why libtorrent closed connections so far (``socket_type: error``), oldest first."""
        return [
            f"{e.get('socket_type')} {tuple(e.get('peer') or ())}: {e.get('error')}"
            for e in self.events("peer_disconnected")
        ]


class LibtorrentTransportFactory:
    """Starts named transport peers on demand and stops every one of them at close()."""

    def __init__(self) -> None:
        self.peers: list[LibtorrentTransportPeer] = []

    def __call__(
        self,
        name: str = "lt",
        *,
        transport: Transport = "both",
        crypto: Crypto = "plaintext",
        socket_buffer: int | None = None,
        upload_rate: int | None = None,
        download_rate: int | None = None,
        settings: Mapping[str, Any] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> LibtorrentTransportPeer:
        peer = LibtorrentTransportPeer(
            name, transport=transport, crypto=crypto, socket_buffer=socket_buffer, timeout=timeout
        )
        self.peers.append(peer)
        peer.start(upload_rate=upload_rate, download_rate=download_rate, settings=settings)
        return peer

    def close(self) -> None:
        for peer in self.peers:
            peer.stop()


@pytest.fixture
def lt_transport_factory() -> Iterator[LibtorrentTransportFactory]:
    """``peer = lt_transport_factory("seeder", transport="utp", crypto="rc4")``: always stopped."""
    factory = LibtorrentTransportFactory()
    try:
        yield factory
    finally:
        factory.close()


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
