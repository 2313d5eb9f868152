"""A real libtorrent peer in its own process, driven by line-delimited JSON.

Interop tests and benchmarks need a reference implementation that is not our
engine. Running libtorrent in a child process keeps its threads and its GIL
away from the test's event loop, and lets the test kill it outright.

The peer is sealed to loopback: it listens on 127.0.0.1 (and [::1] when
asked), has DHT, local service discovery, UPnP and NAT-PMP off, drops every
tracker and web seed whose host is not a loopback literal, and installs an
IP filter that blocks every non-loopback peer address. It only talks to the
peers the test names.

Protocol (one JSON object per line):

- the peer prints ``{"event": "listening", "port": N, "port6": M|null, ...}``
  once its sockets are open; later events (errors, finished torrents,
  peer connects) are printed as ``{"event": NAME, ...}`` at any time;
- the test writes ``{"id": K, "cmd": NAME, ...}``; the peer answers
  ``{"id": K, "ok": true, "result": ...}`` or
  ``{"id": K, "ok": false, "error": TEXT}``;
- commands: ``add``, ``add_magnet``, ``connect``, ``status``, ``remove``,
  ``events``, ``quit``. End of stdin means quit, so the peer never outlives
  its controller.

This file is a script, not a module of the test suite: it imports nothing
from the repository.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import libtorrent as lt

USER_AGENT = f"pytorrent-interop-harness libtorrent/{lt.__version__}"

# Peer flag bits from libtorrent's peer_info.hpp; the Python bindings do not
# export utp_socket and ssl_socket, so they are spelled out here.
_PEER_FLAG_BITS: dict[str, int] = {
    "interesting": 1 << 0,
    "choked": 1 << 1,
    "remote_interested": 1 << 2,
    "remote_choked": 1 << 3,
    "supports_extensions": 1 << 4,
    "outgoing_connection": 1 << 5,
    "handshake": 1 << 6,
    "connecting": 1 << 7,
    "on_parole": 1 << 9,
    "seed": 1 << 10,
    "optimistic_unchoke": 1 << 11,
    "snubbed": 1 << 12,
    "upload_only": 1 << 13,
    "endgame_mode": 1 << 14,
    "holepunched": 1 << 15,
    "i2p_socket": 1 << 16,
    "utp_socket": 1 << 17,
    "ssl_socket": 1 << 18,
    "rc4_encrypted": 1 << 19,
    "plaintext_encrypted": 1 << 20,
}

# encryption mode -> (out_enc_policy, in_enc_policy, allowed_enc_level, prefer_rc4)
# "plaintext": outgoing handshakes are plain BitTorrent, incoming accepts both.
# "disabled": no MSE at all; encrypted incoming handshakes are refused.
# "enabled": libtorrent's own default; outgoing tries MSE first.
# "forced": MSE required both ways and RC4 is the only accepted level.
ENCRYPTION_MODES: dict[str, tuple[Any, Any, Any, bool]] = {
    "plaintext": (lt.enc_policy.disabled, lt.enc_policy.enabled, lt.enc_level.both, False),
    "disabled": (lt.enc_policy.disabled, lt.enc_policy.disabled, lt.enc_level.both, False),
    "enabled": (lt.enc_policy.enabled, lt.enc_policy.enabled, lt.enc_level.both, False),
    "forced": (lt.enc_policy.forced, lt.enc_policy.forced, lt.enc_level.rc4, True),
}

_EVENT_ALERTS = {
    "torrent_finished_alert",
    "metadata_received_alert",
    "torrent_checked_alert",
    "peer_connect_alert",
    "peer_disconnected_alert",
    "torrent_removed_alert",
    "incoming_connection_alert",
}

_MAX_ERRORS = 100
_LISTEN_TIMEOUT = 10.0


class CommandError(Exception):
    """A command the peer refuses; reported to the test, never fatal."""


def is_loopback_host(host: str) -> bool:
    """True only for literal loopback addresses (names are never resolved)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_loopback_url(url: str) -> bool:
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return False
    return host is not None and is_loopback_host(host)


def loopback_ip_filter() -> Any:
    """Block every peer address except 127.0.0.0/8 and ::1."""
    f = lt.ip_filter()
    f.add_rule("0.0.0.0", "255.255.255.255", 1)
    f.add_rule("127.0.0.0", "127.255.255.255", 0)
    f.add_rule("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 1)
    f.add_rule("::1", "::1", 0)
    return f


def build_settings(args: argparse.Namespace) -> lt.settings_pack:
    out_policy, in_policy, level, prefer_rc4 = ENCRYPTION_MODES[args.encryption]
    interfaces = "127.0.0.1:0" + (",[::1]:0" if args.ipv6 else "")
    cat = lt.alert.category_t
    settings: lt.settings_pack = {
        "listen_interfaces": interfaces,
        "outgoing_interfaces": "",
        "listen_system_port_fallback": False,
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_ip_notifier": False,
        "dht_bootstrap_nodes": "",
        "allow_multiple_connections_per_ip": True,
        "enable_incoming_utp": args.utp,
        "enable_outgoing_utp": args.utp,
        "enable_incoming_tcp": True,
        "enable_outgoing_tcp": True,
        "out_enc_policy": out_policy,
        "in_enc_policy": in_policy,
        "allowed_enc_level": level,
        "prefer_rc4": prefer_rc4,
        "upload_rate_limit": args.upload_rate or 0,
        "download_rate_limit": args.download_rate or 0,
        "user_agent": USER_AGENT,
        "auto_scrape_interval": 3600,
        "stop_tracker_timeout": 1,
        # The default 500 ms tick delays the first connection attempt by up
        # to a tick; 100 ms keeps loopback tests quick.
        "tick_interval": 100,
        "alert_mask": (
            cat.status_notification
            | cat.error_notification
            | cat.peer_notification
            | cat.storage_notification
            | cat.connect_notification
        ),
    }
    settings.update(json.loads(args.settings))
    return settings


class Peer:
    """One libtorrent session plus the bookkeeping the protocol needs."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self._out_lock = threading.Lock()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._parent = os.getppid()
        self.handles: dict[str, Any] = {}  # every hex alias -> torrent_handle
        self.primary: dict[str, str] = {}  # every hex alias -> primary hex
        self.errors: dict[str, list[str]] = {}
        self.session_errors: list[str] = []
        self.session = lt.session(build_settings(args))
        self.session.set_ip_filter(loopback_ip_filter())
        if args.upload_rate or args.download_rate:
            # Loopback peers fall in the "local" peer class, which ignores the
            # global limits; give that class the same limits so they apply.
            local = self.session.local_peer_class_id
            info = self.session.get_peer_class(local)
            info["upload_limit"] = args.upload_rate or 0
            info["download_limit"] = args.download_rate or 0
            self.session.set_peer_class(local, info)
        self._alert_thread = threading.Thread(target=self._pump_alerts, daemon=True)

    # -- output ---------------------------------------------------------------

    def emit(self, obj: dict[str, Any]) -> None:
        line = json.dumps(obj, separators=(",", ":"))
        with self._out_lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    # -- startup and alerts ------------------------------------------------------

    def wait_listening(self) -> None:
        """Block until a TCP socket listens on every requested loopback address."""
        want = {"127.0.0.1"} | ({"::1"} if self.args.ipv6 else set())
        ports: dict[str, int] = {}
        deadline = time.monotonic() + _LISTEN_TIMEOUT
        while want - ports.keys():
            if time.monotonic() > deadline:
                raise SystemExit(f"lt_peer: not listening on {sorted(want - ports.keys())}")
            self.session.wait_for_alert(200)
            for a in self.session.pop_alerts():
                if isinstance(a, lt.listen_succeeded_alert):
                    if a.sock_type == lt.listen_succeeded_alert_socket_type_t.tcp:
                        ports[a.address] = a.port
                elif isinstance(a, lt.listen_failed_alert):
                    raise SystemExit(f"lt_peer: {a.message()}")
        self.emit(
            {
                "event": "listening",
                "port": ports["127.0.0.1"],
                "port6": ports.get("::1"),
                "pid": os.getpid(),
                "version": lt.__version__,
                "user_agent": USER_AGENT,
            }
        )
        self._alert_thread.start()

    def _pump_alerts(self) -> None:
        while not self._stop.is_set():
            if os.getppid() != self._parent:
                # The controller died without closing our stdin: do not linger.
                os._exit(3)
            self.session.wait_for_alert(250)
            for a in self.session.pop_alerts():
                try:
                    self._on_alert(a)
                except Exception as exc:  # an odd alert must not kill the pump
                    print(f"lt_peer: alert {type(a).__name__}: {exc!r}", file=sys.stderr)

    def _on_alert(self, a: Any) -> None:
        name = type(a).__name__
        ih = None
        handle = getattr(a, "handle", None)
        if handle is not None and handle.is_valid():
            ih = primary_hex(handle.info_hashes())
        is_error = bool(a.category() & lt.alert.category_t.error_notification)
        if is_error:
            text = f"{name}: {a.message()}"
            with self._lock:
                target = self.errors.setdefault(ih, []) if ih else self.session_errors
                if len(target) < _MAX_ERRORS:
                    target.append(text)
            self.emit({"event": "error", "alert": name, "info_hash": ih, "message": a.message()})
        elif name in _EVENT_ALERTS:
            event: dict[str, Any] = {
                "event": name.removesuffix("_alert"),
                "info_hash": ih,
                "message": a.message(),
            }
            endpoint = getattr(a, "endpoint", None) or getattr(a, "ip", None)
            if isinstance(endpoint, tuple):
                event["peer"] = [endpoint[0], endpoint[1]]
            self.emit(event)

    # -- commands ------------------------------------------------------------------

    def handle_line(self, line: str) -> bool:
        """Run one command line; False means quit."""
        try:
            msg = json.loads(line)
        except ValueError as exc:
            self.emit({"id": None, "ok": False, "error": f"bad JSON: {exc}"})
            return True
        if not isinstance(msg, dict):
            self.emit({"id": None, "ok": False, "error": "command must be a JSON object"})
            return True
        req_id = msg.get("id")
        cmd = msg.get("cmd")
        if cmd == "quit":
            self.emit({"id": req_id, "ok": True, "result": None})
            return False
        fn = getattr(self, f"cmd_{cmd}", None) if isinstance(cmd, str) else None
        if fn is None:
            self.emit({"id": req_id, "ok": False, "error": f"unknown command {cmd!r}"})
            return True
        try:
            result = fn(msg)
        except (CommandError, KeyError, TypeError, ValueError, RuntimeError) as exc:
            self.emit({"id": req_id, "ok": False, "error": f"{type(exc).__name__}: {exc}"})
        else:
            self.emit({"id": req_id, "ok": True, "result": result})
        return True

    def _register(self, handle: Any) -> dict[str, Any]:
        ihs = handle.info_hashes()
        primary = primary_hex(ihs)
        aliases = {primary}
        v1 = str(ihs.v1) if ihs.has_v1() else None
        v2 = str(ihs.v2) if ihs.has_v2() else None
        if v1:
            aliases.add(v1)
        if v2:
            aliases |= {v2, v2[:40]}
        with self._lock:
            for alias in aliases:
                self.handles[alias] = handle
                self.primary[alias] = primary
        return {"info_hash": primary, "v1": v1, "v2": v2}

    def _handle(self, msg: dict[str, Any]) -> Any:
        key = str(msg["info_hash"]).lower()
        with self._lock:
            handle = self.handles.get(key)
        if handle is None or not handle.is_valid():
            raise CommandError(f"no torrent {key}")
        return handle

    def _add(self, atp: Any, save_path: str, seed: bool) -> dict[str, Any]:
        atp.save_path = save_path
        atp.trackers = [t for t in atp.trackers if is_loopback_url(t)]
        atp.url_seeds = [u for u in atp.url_seeds if is_loopback_url(u)]
        flags = atp.flags | lt.torrent_flags.override_trackers | lt.torrent_flags.override_web_seeds
        flags |= lt.torrent_flags.disable_dht | lt.torrent_flags.disable_lsd
        flags |= lt.torrent_flags.apply_ip_filter
        flags &= ~lt.torrent_flags.auto_managed & ~lt.torrent_flags.paused
        if seed:
            flags |= lt.torrent_flags.seed_mode
        atp.flags = flags
        return self._register(self.session.add_torrent(atp))

    def cmd_add(self, msg: dict[str, Any]) -> dict[str, Any]:
        atp = lt.load_torrent_file(str(msg["torrent"]))
        return self._add(atp, str(msg["save_path"]), bool(msg.get("seed_mode", False)))

    def cmd_add_magnet(self, msg: dict[str, Any]) -> dict[str, Any]:
        atp = lt.parse_magnet_uri(str(msg["uri"]))
        # Peers named in x.pe are kept only when they are loopback.
        atp.peers = [p for p in atp.peers if is_loopback_host(str(p[0]))]
        return self._add(atp, str(msg["save_path"]), False)

    def cmd_connect(self, msg: dict[str, Any]) -> None:
        host = str(msg.get("host", "127.0.0.1"))
        port = int(msg["port"])
        if not is_loopback_host(host):
            raise CommandError(f"refusing non-loopback peer {host}")
        if not 0 < port < 65536:
            raise CommandError(f"bad port {port}")
        self._handle(msg).connect_peer((host.strip("[]"), port))

    def cmd_remove(self, msg: dict[str, Any]) -> None:
        handle = self._handle(msg)
        flags = lt.session.delete_files if msg.get("delete_files") else 0
        with self._lock:
            for alias in [k for k, h in self.handles.items() if h == handle]:
                del self.handles[alias]
                del self.primary[alias]
        self.session.remove_torrent(handle, flags)

    def cmd_status(self, msg: dict[str, Any]) -> dict[str, Any]:
        handle = self._handle(msg)
        primary = primary_hex(handle.info_hashes())
        st = handle.status()
        with self._lock:
            errors = list(self.errors.get(primary, []))
        return {
            "info_hash": primary,
            "name": st.name,
            "state": str(st.state),
            "progress": st.progress,
            "progress_ppm": st.progress_ppm,
            "is_seeding": st.is_seeding,
            "is_finished": st.is_finished,
            "has_metadata": st.has_metadata,
            "paused": bool(st.flags & lt.torrent_flags.paused),
            "num_peers": st.num_peers,
            "num_seeds": st.num_seeds,
            "num_pieces": st.num_pieces,
            "download_rate": st.download_payload_rate,
            "upload_rate": st.upload_payload_rate,
            "total_download": st.total_payload_download,
            "total_upload": st.total_payload_upload,
            "total_done": st.total_done,
            "total_wanted": st.total_wanted,
            "total_failed_bytes": st.total_failed_bytes,
            "total_redundant_bytes": st.total_redundant_bytes,
            "error": st.errc.message() if st.errc.value() else "",
            "errors": errors,
            "trackers": [t["url"] for t in handle.trackers()],
            "peers": [peer_dict(p) for p in handle.get_peer_info()],
        }

    def cmd_events(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Session-level errors (listen failures and the like)."""
        with self._lock:
            return {"session_errors": list(self.session_errors)}

    def close(self) -> None:
        """Stop the alert pump, then tear the session down."""
        self._stop.set()
        self.session.post_session_stats()  # wakes the pump out of wait_for_alert
        if self._alert_thread.is_alive():
            self._alert_thread.join(timeout=1.0)
        t0 = time.monotonic()
        self.session.apply_settings(
            {"utp_fin_resends": 0, "utp_num_resends": 0, "utp_min_timeout": 20}
        )
        del self.session  # the destructor flushes disk jobs and closes sockets
        print(f"lt_peer: session closed in {time.monotonic() - t0:.2f}s", file=sys.stderr)


def primary_hex(ihs: Any) -> str:
    """v1 hex when the torrent has one, else the full v2 hex."""
    return str(ihs.v1) if ihs.has_v1() else str(ihs.v2)


def peer_dict(p: Any) -> dict[str, Any]:
    client = p.client
    if isinstance(client, bytes):
        client = client.decode("utf-8", "replace")
    return {
        "ip": p.ip[0],
        "port": p.ip[1],
        "client": client,
        "peer_id": bytes(p.pid.to_bytes()).hex() if hasattr(p.pid, "to_bytes") else str(p.pid),
        "flags": [name for name, bit in _PEER_FLAG_BITS.items() if p.flags & bit],
        "progress": p.progress,
        "down_speed": p.payload_down_speed,
        "up_speed": p.payload_up_speed,
        "total_download": p.total_download,
        "total_upload": p.total_upload,
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ipv6", action="store_true", help="also listen on [::1]")
    ap.add_argument("--utp", action="store_true", help="enable uTP in and out")
    ap.add_argument("--encryption", choices=sorted(ENCRYPTION_MODES), default="plaintext")
    ap.add_argument("--upload-rate", type=int, default=0, help="bytes/s, 0 = unlimited")
    ap.add_argument("--download-rate", type=int, default=0, help="bytes/s, 0 = unlimited")
    ap.add_argument("--settings", default="{}", help="JSON object of extra settings_pack keys")
    return ap.parse_args(argv)


def serve(peer: Peer, name: str) -> int:
    """The child's life: wait until it listens, obey stdin's commands, close (every variant)."""
    print(f"{name}: libtorrent {lt.__version__} pid {os.getpid()}", file=sys.stderr, flush=True)
    peer.wait_listening()
    try:
        while True:
            line = sys.stdin.readline()
            if not line:  # controller closed stdin or died
                break
            if line.strip() and not peer.handle_line(line):
                break
    finally:
        peer.close()
    print(f"{name}: quitting", file=sys.stderr, flush=True)
    return 0


def main(argv: list[str]) -> int:
    return serve(Peer(parse_args(argv)), "lt_peer")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
