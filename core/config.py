"""Client configuration: defaults, validation, and a TOML file for the UI.

:class:`ClientConfig` is modelled on anacrolix/torrent's ``ClientConfig`` and
is frozen: a running client reads it without copying, and a settings screen
builds a new one with :func:`dataclasses.replace` (which re-validates).

Validation lives in ``__post_init__`` so every way of making a config (code,
TOML, ``replace``) is checked the same way, with messages that name the
setting. It also normalises the forms TOML produces: strings become
:class:`~pathlib.Path`, lists become tuples, integers given for float
settings become floats.
"""

from __future__ import annotations

import ipaddress
import math
import secrets
import string
import tomllib
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import platformdirs

from .errors import ConfigError

APP_NAME = "pytorrent"

#: Where a DHT with no saved nodes starts: the public routers most clients use
#: (BitTorrent's, uTorrent's, Transmission's and libtorrent's).  Resolved off
#: the event loop when the DHT starts; a name that does not resolve is logged
#: and skipped, so a machine without DNS or internet still starts at once.
DEFAULT_BOOTSTRAP: tuple[str, ...] = (
    "router.bittorrent.com:6881",
    "router.utorrent.com:6881",
    "dht.transmissionbt.com:6881",
    "dht.libtorrent.org:25401",
)

#: ``ClientConfig.encryption`` values (qBittorrent's three choices).
ENCRYPTION_POLICIES = ("prefer", "require", "disable")
#: ``ClientConfig.allowed_crypto`` values: what an MSE handshake may select.
ALLOWED_CRYPTO = ("both", "rc4", "plaintext")

#: The characters filling the random part of a generated peer id: printable,
#: unambiguous in logs and URLs (trackers receive it percent-encoded).
_PEER_ID_ALPHABET = string.ascii_letters + string.digits


def parse_endpoint(text: str) -> tuple[str, int]:
    """``"host:port"`` or ``"[v6]:port"`` as ``(host, port)``; :class:`ConfigError` says why not.

    The host may be a name (resolved later, by whoever dials it) or an IP
    literal; IPv6 literals need brackets, since their colons would be
    ambiguous with the port's.  Used for ``dht_bootstrap_nodes`` and the
    command line's ``HOST:PORT`` arguments, so both refuse the same things.
    """
    if not isinstance(text, str):
        raise ConfigError(f"expected 'host:port', got {type(text).__name__} {text!r}")
    raw = text.strip()
    if raw.startswith("["):
        host, sep, rest = raw[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ConfigError(f"{text!r}: expected '[ipv6]:port'")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise ConfigError(f"{text!r}: {host!r} is not an IPv6 address") from None
    else:
        host, sep, port_text = raw.rpartition(":")
        if not sep or not host:
            raise ConfigError(f"{text!r}: expected 'host:port'")
        if ":" in host:
            raise ConfigError(f"{text!r}: put an IPv6 address in brackets, '[addr]:port'")
    if not host or any(c.isspace() for c in host) or not host.isprintable():
        raise ConfigError(f"{text!r}: no usable host name")
    if not port_text.isascii() or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"{text!r}: the port must be 1-65535")
    return host, int(port_text)


def default_config_path() -> Path:
    """Where the UI keeps its settings file."""
    return platformdirs.user_config_path(APP_NAME) / "config.toml"


def default_data_dir() -> Path:
    """Where the engine keeps its own state (piece-completion database, resume data)."""
    return platformdirs.user_data_path(APP_NAME)


def default_download_dir() -> Path:
    """Where downloaded torrent content goes unless a torrent says otherwise."""
    return platformdirs.user_downloads_path()


def generate_peer_id(prefix: str | bytes = "-PY0100-") -> bytes:
    """A fresh 20-byte peer id: ``prefix`` then random letters and digits.

    The prefix identifies the client (BEP 20, Azureus style ``-XXvvvv-``);
    the random tail makes each session distinct.
    """
    raw = prefix.encode("ascii") if isinstance(prefix, str) else bytes(prefix)
    if len(raw) > 20:
        raise ConfigError(f"peer id prefix is {len(raw)} bytes; a peer id is only 20")
    tail = "".join(secrets.choice(_PEER_ID_ALPHABET) for _ in range(20 - len(raw)))
    return raw + tail.encode("ascii")


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Everything a :class:`Client` needs to know before it starts.

    Sizes are bytes, rates bytes per second, times seconds. ``None`` for a
    rate limit means unlimited.
    """

    # --- network ---
    #: Addresses to listen on for TCP and uTP; both families by default.
    listen_addresses: tuple[str, ...] = ("0.0.0.0", "::")
    #: 0 lets the OS pick a free port (shared by TCP, uTP and the DHT).
    listen_port: int = 0
    accept_incoming: bool = True
    #: Transports for peer connections (both on: uTP is tried first when
    #: dialling, as libtorrent does, and TCP after ``utp_connect_timeout``).
    tcp: bool = True
    utp: bool = True
    #: How long an outgoing uTP connection may take before TCP is tried instead.
    utp_connect_timeout: float = 3.0
    #: Protocol encryption (MSE/PE), qBittorrent's choice: "prefer" (try MSE
    #: first, fall back to plain; accept both), "require" (MSE only, both
    #: ways) or "disable" (plain only; incoming MSE is refused).
    encryption: str = "prefer"
    #: What an MSE handshake may select: "rc4" (encrypted), "plaintext"
    #: (only the handshake is obfuscated) or "both" (the responder picks).
    allowed_crypto: str = "both"
    dht: bool = True
    pex: bool = True
    pex_interval: float = 60.0
    #: Where the DHT starts when it has no saved nodes (``host:port`` each;
    #: names are resolved off the event loop).  Its node table is saved in
    #: ``data_dir / "dht.dat"`` and tried first on the next start.
    dht_bootstrap_nodes: tuple[str, ...] = DEFAULT_BOOTSTRAP
    #: BEP 43: take part in lookups but answer no queries (behind a NAT or
    #: on a metered link); other nodes then keep us out of their tables.
    dht_read_only: bool = False
    #: BEP 42: keep nodes whose id does not match their IP address out of
    #: the routing table (a defence against nodes choosing where they sit).
    dht_enforce_node_id: bool = False

    # --- disk ---
    data_dir: Path = field(default_factory=default_data_dir)
    download_dir: Path = field(default_factory=default_download_dir)
    #: "file" (real files under download_dir) or "memory" (tests, streaming).
    default_storage: str = "file"
    #: Data received but not yet hash-checked, across all torrents; bounds
    #: memory and the work lost to a bad peer.
    max_unverified_bytes: int = 64 << 20
    piece_hashers_per_torrent: int = 2

    # --- piece order ---
    #: New torrents fetch pieces of equal priority in index order (streaming
    #: a whole torrent front to back) instead of rarest first.
    sequential_download: bool = False
    #: New torrents fetch each wanted file's first and last pieces before
    #: the rest (media players read an index at the end before playing).
    first_last_pieces_first: bool = False

    # --- connections ---
    max_connections_per_torrent: int = 50
    max_connections: int = 200
    #: Dials in progress (TCP connect + handshake) per torrent and overall.
    max_half_open_per_torrent: int = 25
    max_half_open: int = 100
    #: Keep dialling while a torrent knows fewer peers than this ...
    torrent_peers_low_water: int = 50
    #: ... and forget addresses beyond this many.
    torrent_peers_high_water: int = 500
    dial_timeout: float = 20.0
    handshake_timeout: float = 10.0
    #: Send a keep-alive after this long without sending anything.
    keepalive_interval: float = 60.0
    #: Drop a peer that sent nothing for this long (BEP 3 peers keep alive
    #: every two minutes, so this must comfortably exceed that).
    idle_timeout: float = 180.0
    #: ``reqq`` we advertise: how many requests a peer may queue with us.
    request_queue_len: int = 250

    # --- rates and choking ---
    download_rate_limit: int | None = None
    upload_rate_limit: int | None = None
    #: Keep uploading after a torrent completes.
    seed: bool = True
    #: Never send piece data to anyone.
    no_upload: bool = False
    unchoke_slots: int = 4
    optimistic_unchoke_slots: int = 1
    choke_interval: float = 10.0
    optimistic_unchoke_interval: float = 30.0

    # --- identity ---
    #: BEP 20 Azureus-style prefix of our peer id.
    peer_id_prefix: str = "-PY0100-"
    #: ``v`` in the BEP 10 extension handshake.
    client_name: str = "pytorrent 0.1"

    def __post_init__(self) -> None:
        for f in fields(self):
            value = _check_type(f.name, getattr(self, f.name), f.type)
            object.__setattr__(self, f.name, value)
        self._validate()

    def _validate(self) -> None:
        if not self.listen_addresses:
            raise ConfigError("listen_addresses: at least one address is needed")
        if not 0 <= self.listen_port <= 65535:
            raise ConfigError(f"listen_port: must be 0-65535, got {self.listen_port}")
        if not (self.tcp or self.utp):
            raise ConfigError("tcp and utp are both off: peers could not connect at all")
        if self.encryption not in ENCRYPTION_POLICIES:
            raise ConfigError(
                f"encryption: must be one of {', '.join(ENCRYPTION_POLICIES)}, "
                f"got {self.encryption!r}"
            )
        if self.allowed_crypto not in ALLOWED_CRYPTO:
            raise ConfigError(
                f"allowed_crypto: must be one of {', '.join(ALLOWED_CRYPTO)}, "
                f"got {self.allowed_crypto!r}"
            )
        if self.default_storage not in ("file", "memory"):
            raise ConfigError(
                f"default_storage: must be 'file' or 'memory', got {self.default_storage!r}"
            )
        for name in (
            "max_connections_per_torrent",
            "max_connections",
            "max_half_open_per_torrent",
            "max_half_open",
            "request_queue_len",
            "piece_hashers_per_torrent",
            "max_unverified_bytes",
            "torrent_peers_low_water",
            "torrent_peers_high_water",
        ):
            _positive(name, getattr(self, name))
        for name in ("unchoke_slots", "optimistic_unchoke_slots"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: must not be negative, got {getattr(self, name)}")
        for name in ("download_rate_limit", "upload_rate_limit"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(
                    f"{name}: must be a positive number of bytes/s (leave it unset for unlimited), "
                    f"got {value}"
                )
        for name in (
            "pex_interval",
            "dial_timeout",
            "utp_connect_timeout",
            "handshake_timeout",
            "keepalive_interval",
            "idle_timeout",
            "choke_interval",
            "optimistic_unchoke_interval",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name}: must be a positive number of seconds, got {value}")
        if self.max_connections_per_torrent > self.max_connections:
            raise ConfigError(
                f"max_connections_per_torrent ({self.max_connections_per_torrent}) exceeds "
                f"max_connections ({self.max_connections})"
            )
        if self.max_half_open_per_torrent > self.max_half_open:
            raise ConfigError(
                f"max_half_open_per_torrent ({self.max_half_open_per_torrent}) exceeds "
                f"max_half_open ({self.max_half_open})"
            )
        if self.torrent_peers_low_water > self.torrent_peers_high_water:
            raise ConfigError(
                f"torrent_peers_low_water ({self.torrent_peers_low_water}) exceeds "
                f"torrent_peers_high_water ({self.torrent_peers_high_water})"
            )
        if self.idle_timeout <= self.keepalive_interval:
            raise ConfigError(
                f"idle_timeout ({self.idle_timeout}) must exceed keepalive_interval "
                f"({self.keepalive_interval}), or idle peers would be dropped between keep-alives"
            )
        prefix = self.peer_id_prefix
        if len(prefix) > 20 or not all(" " < c <= "~" for c in prefix):
            raise ConfigError(
                f"peer_id_prefix: must be at most 20 printable ASCII characters, got {prefix!r}"
            )
        for node in self.dht_bootstrap_nodes:
            try:
                parse_endpoint(node)
            except ConfigError as exc:
                raise ConfigError(f"dht_bootstrap_nodes: {exc}") from None
        if not self.client_name or not self.client_name.isprintable():
            raise ConfigError(
                f"client_name: must be non-empty printable text, got {self.client_name!r}"
            )


def _positive(name: str, value: int) -> None:
    if value < 1:
        raise ConfigError(f"{name}: must be at least 1, got {value}")


#: Human names of the setting types, for error messages.
_TYPE_NAMES = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "str": "a string",
    "Path": "a path string",
    "tuple[str, ...]": "a list of strings",
    "int | None": "an integer (or unset)",
}


def _check_type(name: str, value: Any, annotation: Any) -> Any:
    """Check ``value`` against a field annotation (a string here), normalising TOML forms."""
    kind = str(annotation)
    ok = False
    if kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "int | None":
        ok = value is None or (isinstance(value, int) and not isinstance(value, bool))
    elif kind == "float":
        if isinstance(value, int | float) and not isinstance(value, bool):
            value, ok = float(value), True
    elif kind == "str":
        ok = isinstance(value, str)
    elif kind == "Path":
        if isinstance(value, str | Path) and str(value):
            try:
                value, ok = Path(value).expanduser(), True
            except RuntimeError:  # "~someone" with no such user
                raise ConfigError(
                    f"{name}: cannot expand the home directory in {value!r}"
                ) from None
    elif kind == "tuple[str, ...]":
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            value, ok = tuple(value), True
    else:  # pragma: no cover - a new field type without a rule is our bug
        raise AssertionError(f"no type rule for {name}: {kind}")
    if not ok:
        raise ConfigError(
            f"{name}: expected {_TYPE_NAMES[kind]}, got {type(value).__name__} {value!r}"
        )
    return value


# --- TOML -----------------------------------------------------------------------


def config_from_dict(data: dict[str, Any]) -> ClientConfig:
    """A config from a flat mapping of setting names (as read from TOML)."""
    known = {f.name for f in fields(ClientConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
    return ClientConfig(**data)


def load_config(path: str | Path, *, missing_ok: bool = False) -> ClientConfig:
    """Read a TOML settings file; with ``missing_ok`` a missing file means defaults."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        if missing_ok:
            return ClientConfig()
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def dump_config(cfg: ClientConfig, *, only_changed: bool = False) -> str:
    """The config as TOML text that :func:`load_config` reads back to an equal config.

    Unset rate limits are written as comments (TOML has no null). With
    ``only_changed`` settings equal to their defaults are left out, so a
    file written by the UI keeps following future default changes.
    """
    lines = ["# pytorrent client settings"]
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if only_changed and value == _default_of(f.name):
            continue
        if value is None:
            lines.append(f"# {f.name} =  (unset: unlimited)")
        else:
            lines.append(f"{f.name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def save_config(cfg: ClientConfig, path: str | Path, *, only_changed: bool = False) -> None:
    """Write ``cfg`` to ``path`` atomically (write a sibling file, then rename)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(dump_config(cfg, only_changed=only_changed), encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write: {exc}") from exc


def _default_of(name: str) -> Any:
    for f in fields(ClientConfig):
        if f.name == name:
            if f.default is not MISSING:
                return f.default
            if f.default_factory is not MISSING:
                return f.default_factory()
    raise KeyError(name)  # pragma: no cover


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # finite (validated); repr round-trips exactly
    if isinstance(value, str | Path):
        return _toml_string(str(value))
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")  # pragma: no cover


_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def _toml_string(text: str) -> str:
    """A TOML basic string: escape quotes, backslashes and every control character."""
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        elif 0xD800 <= ord(ch) <= 0xDFFF:
            # A lone surrogate (an undecodable file name byte): TOML is UTF-8.
            raise ConfigError(f"cannot write {text!r} to TOML: it is not valid Unicode")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'
