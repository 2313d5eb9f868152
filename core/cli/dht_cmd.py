"""``torrent dht ping|get-peers|announce|sample|put|get``: talk to the DHT by hand.

Thin shells over :class:`~core.engine.dht_service.DhtService`, the same code
``torrent download`` finds peers with, in the style of anacrolix/dht's
command tools: results on stdout, one per line, so they pipe into other
tools; facts about them (rounds, timings, BEP 51 intervals, a mutable item's
``seq`` and key) on stderr::

    $ torrent dht ping 192.0.2.7:6881
    192.0.2.7:6881 id=5fbfbff10c5d6a4ec8a88e4c6ab4c28b95eee401 rtt=41.2ms
    $ torrent dht get-peers 0123456789abcdef0123456789abcdef01234567
    198.51.100.4:51413
    [2001:db8::5]:6881
    2 peers; 57 nodes queried, 5 rounds, 3.1s

``ping`` and ``sample`` ask one node directly and need no routing table;
the others bootstrap first, from the nodes saved in ``dht.dat`` under the
state directory (as ``download`` does) and from ``--dht-bootstrap`` (else
the configured public routers), and save the table again when they end.

Exit status 1 when the DHT did not deliver: a node that does not answer,
no bootstrap node answering, ``get-peers`` finding no peer, ``announce`` or
``put`` that no node accepted, ``get`` finding nothing.  A lookup that runs
out of ``--timeout`` after finding peers still succeeds (what it found is
printed).  Bad arguments are usage errors (status 2), a bad seed file is a
bad input (status 1); every message names the argument or file it is about.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import ipaddress
import json
import os
import secrets
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ..config import DEFAULT_BOOTSTRAP, default_data_dir
from ..dht.items import MAX_SALT, MAX_SEQ, MAX_VALUE, Item, public_key
from ..dht.types import DhtSettings
from ..engine.dht_service import DhtService
from ..errors import BencodeError, DhtError, TorrentError
from ..formats import bencoding
from ..formats.compact import normalise_peer
from .bencode_cmd import to_jsonable
from .download_cmd import STATE_DIR_ENV, parse_peer
from .inputs import input_name
from .tracker_cmd import parse_info_hash
from .usage import UsageError

Address = tuple[str, int]

#: Default ``--timeout`` of a question to one node (``ping``, ``sample``) ...
QUERY_TIMEOUT = 5.0
#: ... and of the commands that bootstrap and run a lookup.
LOOKUP_TIMEOUT = 60.0
#: The routing table saved between runs, in the state directory (the engine's name for it).
STATE_FILE = "dht.dat"
#: An ed25519 private seed is this long; seed files hold it raw (or as hex digits).
SEED_BYTES = 32


@dataclass(frozen=True, slots=True)
class ServiceOptions:
    """How a command opens its DHT node: where it listens, whom it bootstraps from."""

    addresses: tuple[str, ...]
    port: int
    #: Lookups need a routing table: join the DHT (saved nodes, then ``bootstrap``) first.
    lookup: bool = False
    bootstrap: tuple[str, ...] = ()
    state_path: Path | None = None


async def open_service(options: ServiceOptions) -> DhtService:
    """Start a DHT node for one command (the seam the tests replace)."""
    return await DhtService.open(
        DhtSettings(),
        addresses=options.addresses,
        port=options.port,
        bootstrap=options.bootstrap,
        state_path=options.state_path,
    )


# ------------------------------------------------------------------------ arguments


def show(addr: Address) -> str:
    """``ip:port``, IPv6 as ``[ip]:port``."""
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_hex(text: str, size: int, what: str) -> bytes:
    """``size`` bytes written as ``2 * size`` hex digits; :class:`UsageError` naming ``what``."""
    t = text.strip()
    try:
        raw = bytes.fromhex(t)
    except ValueError:
        raw = b""
    if len(raw) != size or len(t) != 2 * size:
        raise UsageError(f"{what} {text!r}: expected {2 * size} hex digits")
    return raw


def _check_port(port: int, flag: str, *, allow_zero: bool) -> None:
    low = 0 if allow_zero else 1
    if not low <= port <= 65535:
        raise UsageError(f"{flag} must be {low}-65535, got {port}")


def _timeout(args: argparse.Namespace, default: float) -> float:
    timeout: float = default if args.timeout is None else args.timeout
    if not timeout > 0:
        raise UsageError(f"--timeout must be positive, got {timeout:g}")
    return timeout


def _is_v6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0]).version == 6
    except ValueError:
        return False


def service_options(
    args: argparse.Namespace, *, named: tuple[Address, ...] = (), lookup: bool
) -> ServiceOptions:
    """The node a command runs: where it listens; for lookups, its bootstrap nodes and state file.

    Without ``--listen`` the node listens on all IPv4 addresses, and on IPv6
    too when an address on the command line (``named``, ``--dht-bootstrap``) is
    an IPv6 one, so it can reach it.
    """
    _check_port(args.dht_port, "--dht-port", allow_zero=True)
    bootstrap: tuple[str, ...] = ()
    state_path = None
    if lookup:
        given = [(text, parse_peer(text, what="--dht-bootstrap")) for text in args.dht_bootstrap]
        named = named + tuple(addr for _text, addr in given)
        bootstrap = tuple(text.strip() for text, _addr in given) or DEFAULT_BOOTSTRAP
        state = args.state_dir or os.environ.get(STATE_DIR_ENV) or default_data_dir()
        state_path = Path(state) / STATE_FILE
    if args.listen:
        addresses = tuple(args.listen)
    else:
        v6 = any(_is_v6(host) for host, _port in named)
        addresses = ("0.0.0.0", "::") if v6 else ("0.0.0.0",)
    return ServiceOptions(addresses, args.dht_port, lookup, bootstrap, state_path)


def read_seed(name: str) -> bytes:
    """An ed25519 private seed from a file: 32 raw bytes, or 64 hex digits."""
    with Path(name).open("rb") as f:
        data = f.read(4 * SEED_BYTES + 1)
    if len(data) == SEED_BYTES:
        return data
    try:
        text = data.decode("ascii").strip()
        if len(text) == 2 * SEED_BYTES:
            return bytes.fromhex(text)
    except (UnicodeDecodeError, ValueError):
        pass
    size = f"{len(data)} bytes" if len(data) <= 4 * SEED_BYTES else "more"
    raise TorrentError(
        f"{input_name(name)}: not an ed25519 seed: expected {SEED_BYTES} bytes "
        f"or {2 * SEED_BYTES} hex digits, got {size}"
    )


def write_seed(name: str) -> bytes:
    """Create a seed file (mode 0600, never over an existing file); return the seed."""
    seed = secrets.token_bytes(SEED_BYTES)
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise TorrentError(f"{name}: already exists; not overwriting a key") from None
    with os.fdopen(fd, "wb") as f:
        f.write(seed)
    return seed


def show_value(raw: bytes) -> str:
    """A BEP 44 value for people: a UTF-8 string as its text, anything else as JSON."""
    try:
        value = bencoding.decode(raw)
    except BencodeError:
        return raw.hex()
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return json.dumps(to_jsonable(value), ensure_ascii=False)


# ------------------------------------------------------------------------ running


Work = Callable[[DhtService, float], Awaitable[int]]


def _run(options: ServiceOptions, timeout: float, what: str, work: Work) -> int:
    """Open the node, bootstrap it when the command needs a table, run ``work``, close it.

    ``work`` gets the node and the loop time it must be done by; running
    past ``timeout`` is a :class:`DhtError` naming ``what``.  Closing saves
    the table (``dht.dat``) even after a failure or Ctrl-C.
    """

    async def go() -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            async with asyncio.timeout_at(deadline):
                service = await open_service(options)
        except TimeoutError:
            raise DhtError(f"{what}: could not start the DHT node in {timeout:g}s") from None
        try:
            async with asyncio.timeout_at(deadline):
                if options.lookup:
                    await _bootstrap(service, options, deadline - loop.time())
                return await work(service, deadline)
        except TimeoutError:
            raise DhtError(f"{what}: no answer within {timeout:g}s") from None
        finally:
            await service.aclose()

    return asyncio.run(go())


async def _bootstrap(service: DhtService, options: ServiceOptions, timeout: float) -> None:
    if not await service.wait_bootstrapped(max(0.0, timeout)):
        tried = ", ".join(options.bootstrap) or "no bootstrap nodes"
        raise DhtError(f"bootstrap failed: no DHT node answered ({tried})")


async def _resolve(text: str, addr: Address, addresses: tuple[str, ...]) -> Address:
    """``HOST:PORT`` -> an IP of a family the node listens on (names are resolved off the loop)."""
    host, port = addr
    families = {socket.AF_INET6 if _is_v6(a) else socket.AF_INET for a in addresses}
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except OSError as exc:
        raise DhtError(f"{text}: cannot resolve {host!r}: {exc.strerror or exc}") from None
    for family, _type, _proto, _name, sockaddr in infos:
        if family in families:
            peer = normalise_peer(str(sockaddr[0]), port)
            if peer is not None:
                return peer
    raise DhtError(f"{text}: no address of {host!r} we can send to from {', '.join(addresses)}")


def _naming(text: str, addr: Address, exc: DhtError) -> DhtError:
    """``exc`` about ``addr``, named as the user wrote it (once, whether the service named it)."""
    reason = str(exc).removeprefix(f"{addr[0]}:{addr[1]}: ").removeprefix(f"{show(addr)}: ")
    return DhtError(f"{text}: {reason}")


def _remaining(deadline: float) -> float:
    return max(0.001, deadline - asyncio.get_running_loop().time())


# ------------------------------------------------------------------------ commands


def run_ping(args: argparse.Namespace, out: TextIO | None = None) -> int:
    addr = parse_peer(args.address, what="address")
    timeout = _timeout(args, QUERY_TIMEOUT)
    options = service_options(args, named=(addr,), lookup=False)

    async def work(service: DhtService, deadline: float) -> int:
        target = await _resolve(args.address, addr, options.addresses)
        started = time.monotonic()
        try:
            node_id = await service.ping(target, timeout=_remaining(deadline))
        except DhtError as exc:
            raise _naming(args.address, target, exc) from None
        rtt = (time.monotonic() - started) * 1000
        print(f"{show(target)} id={node_id.hex()} rtt={rtt:.1f}ms", file=out or sys.stdout)
        return 0

    return _run(options, timeout, args.address, work)


def run_sample(args: argparse.Namespace, out: TextIO | None = None) -> int:
    addr = parse_peer(args.address, what="address")
    target = None if args.target is None else parse_hex(args.target, 20, "--target")
    timeout = _timeout(args, QUERY_TIMEOUT)
    options = service_options(args, named=(addr,), lookup=False)

    async def work(service: DhtService, _deadline: float) -> int:
        node = await _resolve(args.address, addr, options.addresses)
        try:
            reply = await service.sample(node, target)
        except DhtError as exc:
            raise _naming(args.address, node, exc) from None
        stream = out or sys.stdout
        for info_hash in reply.samples:
            print(info_hash.hex(), file=stream, flush=True)
        interval = "?" if reply.interval is None else f"{reply.interval}s"
        num = "?" if reply.num is None else str(reply.num)
        print(
            f"{len(reply.samples)} samples from {show(node)}; interval {interval}, num {num}",
            file=sys.stderr,
        )
        return 0

    return _run(options, timeout, args.address, work)


def _lookup_summary(found: str, queries: int, rounds: int, elapsed: float) -> str:
    return f"{found}; {queries} nodes queried, {rounds} rounds, {elapsed:.1f}s"


def run_get_peers(args: argparse.Namespace, out: TextIO | None = None) -> int:
    info_hash = parse_info_hash(args.info_hash)
    timeout = _timeout(args, LOOKUP_TIMEOUT)
    options = service_options(args, lookup=True)
    what = info_hash.hex()

    async def work(service: DhtService, deadline: float) -> int:
        stream = out or sys.stdout
        seen: set[Address] = set()
        reader_gone = False

        def on_peers(peers: tuple[Address, ...]) -> None:
            nonlocal reader_gone
            try:
                for peer in peers:
                    if peer not in seen and not reader_gone:
                        seen.add(peer)
                        print(show(peer), file=stream, flush=True)
            except BrokenPipeError:  # `| head` has what it wanted: stop asking
                reader_gone = True
                _silence(stream)
                lookup.cancel()

        started = time.monotonic()
        queries = rounds = 0
        lookup = asyncio.ensure_future(service.get_peers(info_hash, on_peers=on_peers))
        try:
            async with asyncio.timeout_at(deadline - 0.05):
                result = await lookup
            queries, rounds = result.queries, result.rounds
            if result.error and not seen:
                raise DhtError(f"{what}: {result.error}")
            tail = ""
        except TimeoutError:
            tail = f" (stopped after --timeout {timeout:g}s)"
        except asyncio.CancelledError:
            if not reader_gone:
                raise
            return 0
        finally:
            lookup.cancel()
        elapsed = time.monotonic() - started
        found = f"{len(seen)} peers" + tail
        if not seen:
            raise DhtError(
                f"{what}: no peers found: " + _lookup_summary(found, queries, rounds, elapsed)
            )
        print(_lookup_summary(found, queries, rounds, elapsed), file=sys.stderr)
        return 0

    return _run(options, timeout, what, work)


def _silence(stream: TextIO) -> None:
    """The reader of ``stream`` went away: make later writes and the final flush quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def run_announce(args: argparse.Namespace, out: TextIO | None = None) -> int:
    info_hash = parse_info_hash(args.info_hash)
    if args.port is None and not args.implied_port:
        raise UsageError("give --port N (the port peers connect to) or --implied-port")
    if args.port is not None:
        _check_port(args.port, "--port", allow_zero=False)
    timeout = _timeout(args, LOOKUP_TIMEOUT)
    options = service_options(args, lookup=True)
    what = info_hash.hex()

    async def work(service: DhtService, _deadline: float) -> int:
        # With implied_port the nodes take our UDP source port; the field must still be set.
        port = service.port if args.port is None else args.port
        started = time.monotonic()
        result = await service.get_peers(
            info_hash, announce_port=port, implied_port=args.implied_port
        )
        elapsed = time.monotonic() - started
        summary = _lookup_summary(f"{result.peers} peers", result.queries, result.rounds, elapsed)
        if result.announced == 0:
            why = result.error or "no node accepted the announce"
            raise DhtError(f"{what}: {why}; {summary}")
        print(f"announced to {result.announced} nodes", file=out or sys.stdout)
        print(summary, file=sys.stderr)
        return 0

    return _run(options, timeout, what, work)


def _item_to_put(args: argparse.Namespace) -> Item:
    raw = bencoding.encode(args.value.encode("utf-8"))
    if len(raw) > MAX_VALUE:
        raise UsageError(f"VALUE is {len(raw)} bytes bencoded; BEP 44 allows {MAX_VALUE}")
    if args.key is None:
        if args.seq is not None or args.salt is not None:
            raise UsageError("--seq and --salt need --key SEEDFILE (a mutable item)")
        return Item.immutable(raw)
    if args.seq is None:
        raise UsageError("a mutable item needs --seq N")
    if not 0 <= args.seq <= MAX_SEQ:
        raise UsageError(f"--seq must be 0-{MAX_SEQ}, got {args.seq}")
    salt = _salt(args)
    return Item.signed(read_seed(args.key), raw, args.seq, salt)


def _salt(args: argparse.Namespace) -> bytes:
    salt = (args.salt or "").encode("utf-8")
    if len(salt) > MAX_SALT:
        raise UsageError(f"--salt is {len(salt)} bytes; BEP 44 allows {MAX_SALT}")
    return salt


def run_put(args: argparse.Namespace, out: TextIO | None = None) -> int:
    if args.key_gen is not None:
        if args.value is not None or args.key is not None:
            raise UsageError("--key-gen SEEDFILE only creates a key: give no VALUE or --key")
        seed = write_seed(args.key_gen)
        print(public_key(seed).hex(), file=out or sys.stdout)
        print(
            f"{args.key_gen}: new ed25519 seed; the line above is its public key", file=sys.stderr
        )
        return 0
    if args.value is None:
        raise UsageError("give VALUE to store (or --key-gen SEEDFILE to create a key)")
    item = _item_to_put(args)
    timeout = _timeout(args, LOOKUP_TIMEOUT)
    options = service_options(args, lookup=True)
    what = item.target.hex()

    async def work(service: DhtService, _deadline: float) -> int:
        stored = await service.put_item(item)
        if stored == 0:
            raise DhtError(f"{what}: no node stored the item")
        print(what, file=out or sys.stdout)
        detail = ""
        if item.mutable and item.key is not None:
            detail = f" (mutable: key {item.key.hex()}, seq {item.seq}"
            detail += f", salt {args.salt!r})" if item.salt else ")"
        print(f"stored on {stored} nodes{detail}", file=sys.stderr)
        return 0

    return _run(options, timeout, what, work)


def get_target(args: argparse.Namespace) -> tuple[bytes, bytes | None, bytes]:
    """``(target, public key or None, salt)`` from ``TARGET``, ``--key`` and ``--salt``."""
    salt = _salt(args)
    key = None if args.key is None else parse_hex(args.key, 32, "--key")
    target = None if args.target is None else parse_hex(args.target, 20, "TARGET")
    if key is not None:
        derived = hashlib.sha1(key + salt).digest()
        if target is not None and target != derived:
            raise UsageError(
                f"TARGET {args.target!r} is not the target of --key with this --salt "
                f"({derived.hex()})"
            )
        target = derived
    if target is None:
        raise UsageError("give TARGET (40 hex digits) or --key PUBHEX")
    return target, key, salt


def run_get(args: argparse.Namespace, out: TextIO | None = None) -> int:
    target, key, salt = get_target(args)
    timeout = _timeout(args, LOOKUP_TIMEOUT)
    options = service_options(args, lookup=True)
    what = target.hex()

    async def work(service: DhtService, _deadline: float) -> int:
        item = await service.get_item(target, salt=salt)
        if item is None:
            raise DhtError(f"{what}: not found")
        if key is not None and item.key != key:
            raise DhtError(f"{what}: the item found is not signed by --key {key.hex()}")
        print(show_value(item.value), file=out or sys.stdout)
        if item.mutable and item.key is not None:
            extra = f"  salt {args.salt!r}" if salt else ""
            print(f"seq {item.seq}  key {item.key.hex()}{extra}", file=sys.stderr)
        return 0

    return _run(options, timeout, what, work)
