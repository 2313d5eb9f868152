"""DhtService on real UDP sockets, 127.0.0.1 only: a few services talking to each other.

Covers the driver's jobs: datagrams in and out through the mux, one timer,
op ids to futures, bootstrap (saved nodes first, names resolved off the
loop, retries), the state file, and the public operations (ping, lookups,
announce, BEP 44 put/get, BEP 51 sample).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from core.dht.items import Item
from core.dht.krpc import Response
from core.dht.types import Addr, DhtSettings, NodeInfo
from core.engine import dht_service
from core.engine.dht_service import (
    DhtService,
    decode_state,
    encode_state,
    resolve_endpoints,
)
from core.errors import DhtError
from core.formats import bencoding
from core.net.udp_mux import UdpMux

pytestmark = pytest.mark.timeout(60)

LOCAL = ("127.0.0.1",)
SETTINGS = DhtSettings(query_timeout=0.5)


@asynccontextmanager
async def service(**kwargs: object) -> AsyncIterator[DhtService]:
    kwargs.setdefault("addresses", LOCAL)
    svc = await DhtService.open(SETTINGS, **kwargs)  # type: ignore[arg-type]
    try:
        yield svc
    finally:
        await svc.aclose()


def at(svc: DhtService) -> str:
    return f"127.0.0.1:{svc.port}"


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


# --- the state file -----------------------------------------------------------------------


def test_state_round_trip() -> None:
    nodes = [
        NodeInfo(b"a" * 20, ("192.0.2.1", 6881)),
        NodeInfo(b"b" * 20, ("2001:db8::1", 51413)),
    ]
    state = decode_state(encode_state(b"i" * 20, nodes))
    assert state.node_id == b"i" * 20
    assert list(state.nodes) == nodes
    raw = bencoding.decode(encode_state(b"i" * 20, nodes))
    assert set(raw) == {b"id", b"nodes", b"nodes6"}
    assert len(raw[b"nodes"]) == 26 and len(raw[b"nodes6"]) == 38


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"garbage", "not bencoded"),
        (b"li1ee", "not a dictionary"),
        (b"d2:id3:abce", "20-byte"),
        (bencoding.encode({b"id": b"i" * 20, b"nodes": b"x" * 25}), "nodes"),
        (bencoding.encode({b"id": b"i" * 20, b"nodes6": 5}), "nodes6"),
    ],
)
def test_corrupt_state_is_a_dht_error(data: bytes, needle: str) -> None:
    with pytest.raises(DhtError, match=needle):
        decode_state(data)


# --- names ---------------------------------------------------------------------------------


async def test_resolve_endpoints_literals_and_bad_input() -> None:
    got = await resolve_endpoints(["127.0.0.1:6881", "[::1]:7000", "127.0.0.1:6881"])
    assert got == [("127.0.0.1", 6881), ("::1", 7000)]
    with pytest.raises(DhtError, match="bad DHT node address"):
        await resolve_endpoints(["no-port-here"])
    with pytest.raises(DhtError):
        await resolve_endpoints(["::1:6881"])  # IPv6 needs brackets


async def test_a_hung_resolver_delays_neither_open_nor_close(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    release = threading.Event()
    called = threading.Event()

    def hung(host: str, port: int) -> list[Addr]:
        called.set()
        release.wait(30)
        raise OSError("gave up")

    monkeypatch.setattr(dht_service, "_getaddrinfo", hung)
    try:
        t0 = time.monotonic()
        svc = await DhtService.open(SETTINGS, addresses=LOCAL, bootstrap=("router.example:6881",))
        assert svc.state == "bootstrapping"
        await eventually(called.is_set, 5)
        await svc.aclose()
        assert time.monotonic() - t0 < 2.0
    finally:
        release.set()


async def test_unresolvable_names_are_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    def nxdomain(host: str, port: int) -> list[Addr]:
        raise OSError(f"{host}: Name or service not known")

    monkeypatch.setattr(dht_service, "_getaddrinfo", nxdomain)
    async with service() as a, service(bootstrap=("nowhere.invalid:1", at(a))) as b:
        assert await b.wait_bootstrapped(10)
        assert b.stats().state == "ok"


# --- operations between services ---------------------------------------------------------------


async def test_ping_bootstrap_announce_lookup_put_get_sample() -> None:
    """a is the bootstrap node of b and c.

    Bootstrap nodes are routers (they never enter the table, as in
    libtorrent), so a knows b and c (they queried it), c learns b from a,
    and b learns c when c queries it: b and c know each other but not a.
    """
    async with (
        service() as a,
        service(bootstrap=(at(a),)) as b,
    ):
        assert await b.wait_bootstrapped(10)  # a answered (with no nodes: it knew nobody)
        assert b.stats().state == "ok"
        async with service(bootstrap=(at(a),)) as c:
            assert await c.wait_bootstrapped(10)
            assert await a.ping(("127.0.0.1", b.port)) == b.node_id
            found = await c.find_node(b.node_id)
            assert b.node_id in {n.id for n in found.closest}

            ih = bytes(range(20))
            announced = await b.get_peers(ih, announce_port=6881)  # stored at c
            assert announced.kind == "announce" and announced.error is None
            assert announced.announced >= 1
            peers: list[Addr] = []
            result = await a.get_peers(ih, on_peers=peers.extend)  # a asks c
            assert result.kind == "get_peers" and result.peers >= 1
            assert ("127.0.0.1", 6881) in peers

            immutable = Item.immutable(bencoding.encode(b"hello DHT"))
            assert await b.put_item(immutable) >= 1  # stored at c
            got = await a.get_item(immutable.target)
            assert got is not None and got.value == immutable.value

            seed = bytes(range(32))
            mutable = Item.signed(seed, bencoding.encode([1, b"two"]), seq=4, salt=b"salty")
            assert await c.put_item(mutable) >= 1  # stored at b
            got = await a.get_item(mutable.target, salt=b"salty")
            assert got is not None and (got.value, got.seq, got.key) == (
                mutable.value,
                4,
                mutable.key,
            )
            assert await a.get_item(Item.immutable(b"3:nah").target) is None

            response = await a.sample(("127.0.0.1", c.port))
            assert isinstance(response, Response) and response.sender == c.node_id
            assert ih in response.samples


async def test_ping_failures_are_dht_errors() -> None:
    async with service() as a:
        # A UDP port nobody listens on: no answer (or ICMP refused), never a hang.
        with pytest.raises(DhtError):
            await a.ping(("127.0.0.1", 9), timeout=2.0)
        with pytest.raises(DhtError, match="cannot reach"):
            await a.ping(("::1", 6881))  # no IPv6 socket here


async def test_cancelled_lookup_is_cancelled_in_the_node() -> None:
    async with service() as a, service() as b:
        b.add_nodes([at(a)])
        await eventually(lambda: b.stats().dht.nodes_good == 1)
        task = asyncio.create_task(b.get_peers(b"\x11" * 20))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.1)
        assert b.stats().dht.lookups_active == 0


async def test_operations_after_close_raise() -> None:
    svc = await DhtService.open(SETTINGS, addresses=LOCAL)
    await svc.aclose()
    await svc.aclose()  # idempotent
    with pytest.raises(DhtError, match="closed"):
        await svc.find_node(b"\0" * 20)
    with pytest.raises(DhtError, match="closed"):
        svc.add_nodes(["127.0.0.1:1"])


async def test_no_bootstrap_nodes_fails_then_add_nodes_joins() -> None:
    async with service() as a, service() as b:
        assert not await b.wait_bootstrapped(5)
        assert b.stats().state == "failed"
        with pytest.raises(DhtError):
            b.add_nodes(["not an address"])
        b.add_nodes([at(a)])
        await eventually(lambda: b.stats().state == "ok")
        assert b.stats().dht.nodes_total >= 1


async def test_bad_bootstrap_address_is_refused() -> None:
    with pytest.raises(DhtError, match="bad DHT node address"):
        await DhtService.open(SETTINGS, addresses=LOCAL, bootstrap=("localhost",))


async def test_stats_rates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dht_service, "RATE_SAMPLE", 0.0)
    async with service() as a, service() as b:
        a.stats()
        for _ in range(5):
            await a.ping(("127.0.0.1", b.port))
        await asyncio.sleep(0.01)
        sa, sb = a.stats(), b.stats()
        assert sa.queries_out_rate > 0 and sa.dht.queries_out >= 5
        assert sb.dht.queries_in >= 5
        assert sa.port == a.port and sa.bootstrap_nodes == ()


async def test_shared_muxes_are_left_open() -> None:
    mux = await UdpMux.open("127.0.0.1", 0)
    try:
        svc = await DhtService.open(SETTINGS, muxes=[mux])
        assert svc.port == mux.local_address[1]
        await svc.aclose()
        assert not mux.closed
    finally:
        await mux.aclose()


# --- the state file on disk ------------------------------------------------------------------


async def test_state_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "state" / "dht.dat"
    async with service() as a:
        async with service(state_path=path) as b:
            b.add_nodes([at(a)])  # a plain node, not a router: it enters the table
            await eventually(lambda: b.stats().dht.nodes_good == 1)
            first_id = b.node_id
        state = decode_state(path.read_bytes())
        assert state.node_id == first_id
        assert NodeInfo(a.node_id, ("127.0.0.1", a.port)) in state.nodes
        assert not list(path.parent.glob("*.tmp"))
        async with service(state_path=path) as again:
            assert again.node_id == first_id  # the id survives a restart
            # No bootstrap nodes configured: the saved node alone gets it going.
            assert await again.wait_bootstrapped(10)


class RecordingMux(UdpMux):
    """A real mux that remembers where it sent each datagram, in order."""

    sent_to: list[Addr]

    def sendto(self, data: bytes, addr: Addr) -> bool:
        if not hasattr(self, "sent_to"):
            self.sent_to = []
        self.sent_to.append(addr)
        return super().sendto(data, addr)


async def test_saved_nodes_are_queried_before_bootstrap_nodes(tmp_path: Path) -> None:
    path = tmp_path / "dht.dat"
    async with service() as saved, service() as router:
        saved_addr = ("127.0.0.1", saved.port)
        router_addr = ("127.0.0.1", router.port)
        path.write_bytes(encode_state(b"\x42" * 20, [NodeInfo(saved.node_id, saved_addr)]))
        mux = await RecordingMux.open("127.0.0.1", 0)
        assert isinstance(mux, RecordingMux)
        try:
            svc = await DhtService.open(
                SETTINGS, muxes=[mux], bootstrap=(at(router),), state_path=path
            )
            try:
                assert svc.node_id == b"\x42" * 20
                assert await svc.wait_bootstrapped(10)
                await eventually(lambda: bool(mux.sent_to))
                assert mux.sent_to[0] == saved_addr
                if router_addr in mux.sent_to:
                    assert mux.sent_to.index(router_addr) > mux.sent_to.index(saved_addr)
            finally:
                await svc.aclose()
        finally:
            await mux.aclose()


async def test_corrupt_state_file_is_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "dht.dat"
    path.write_bytes(b"d2:id5:shorte")
    with caplog.at_level(logging.WARNING, logger="core.engine.dht_service"):
        async with service() as a, service(state_path=path, bootstrap=(at(a),)) as b:
            assert await b.wait_bootstrapped(10)
    assert any("corrupt" in r.getMessage() for r in caplog.records)
    state = decode_state(path.read_bytes())  # rewritten, valid, on close
    assert state.node_id == b.node_id


async def test_a_run_that_found_nobody_keeps_the_saved_nodes(tmp_path: Path) -> None:
    path = tmp_path / "dht.dat"
    nobody = [NodeInfo(b"\x01" * 20, ("127.0.0.1", 9))]
    path.write_bytes(encode_state(b"\x42" * 20, nobody))
    async with service(state_path=path):
        pass
    assert list(decode_state(path.read_bytes()).nodes) == nobody
