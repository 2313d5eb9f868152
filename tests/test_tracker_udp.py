"""UdpTrackerClient against a scripted UDP tracker on loopback.

Every hostile mode must end in a TrackerError within a small time bound
(base timeouts of a few hundredths of a second), never another exception and
never a hang.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import pytest

from core.errors import TrackerError
from core.tracker.types import AnnounceEvent, AnnounceRequest, ScrapeResult
from core.tracker.udp import UdpTrackerClient, parse_udp_url
from tests.support.hostile_udp_tracker import HostileUdpTracker

pytestmark = pytest.mark.timeout(20)

BASE = 0.02
REQ = AnnounceRequest(
    info_hash=b"\x11" * 20,
    peer_id=b"-PY0001-" + b"x" * 12,
    port=6881,
    left=1000,
    event=AnnounceEvent.STARTED,
    key=0x1234,
)


def _ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.fixture
async def client() -> AsyncIterator[UdpTrackerClient]:
    c = UdpTrackerClient(base_timeout=BASE, max_attempts=3, bind_v4="127.0.0.1", bind_v6="::1")
    try:
        yield c
    finally:
        await c.close()


async def test_announce_returns_peers_and_sends_bep41_url_data(client: UdpTrackerClient) -> None:
    peers = [("10.1.2.3", 6881), ("192.168.0.9", 51413)]
    async with HostileUdpTracker(peers=peers, interval=900, seeders=4, leechers=2) as tracker:
        url = tracker.url + "?passkey=s3cr3t"
        response = await client.announce(url, REQ)
    assert response.peers == tuple(peers)
    assert (response.interval, response.seeders, response.leechers) == (900.0, 4, 2)
    assert [r.action for r in tracker.received] == [0, 1]
    announce = tracker.received[1]
    assert announce.fields["info_hash"] == REQ.info_hash
    assert announce.fields["event"] == 2 and announce.fields["left"] == 1000
    assert announce.fields["key"] == 0x1234 and announce.fields["port"] == 6881
    assert announce.options == [(2, b"/announce?passkey=s3cr3t")]


async def test_connection_id_is_reused_across_announces_and_scrapes(
    client: UdpTrackerClient,
) -> None:
    async with HostileUdpTracker() as tracker:
        await client.announce(tracker.url, REQ)
        await client.announce(tracker.url, REQ)
        await client.scrape(tracker.url, [REQ.info_hash])
        await asyncio.gather(*(client.announce(tracker.url, REQ) for _ in range(5)))
    assert tracker.count(0) == 1
    assert tracker.count(1) == 7 and tracker.count(2) == 1
    assert tracker.rejected == 0


async def test_connection_id_renewed_after_expiry() -> None:
    async with (
        UdpTrackerClient(base_timeout=BASE, connection_ttl=0.2, bind_v4="127.0.0.1") as client,
        HostileUdpTracker() as tracker,
    ):
        await client.announce(tracker.url, REQ)
        first = client.connection_id("127.0.0.1", tracker.port)
        await asyncio.sleep(0.25)
        await client.announce(tracker.url, REQ)
        second = client.connection_id("127.0.0.1", tracker.port)
    assert tracker.count(0) == 2
    assert first is not None and second is not None and first != second


async def test_scrape_many_hashes_in_74_hash_packets(client: UdpTrackerClient) -> None:
    hashes = [i.to_bytes(20, "big") for i in range(100)]
    stats = {h: (i, i * 10, i + 1) for i, h in enumerate(hashes)}
    async with HostileUdpTracker(scrape_stats=stats) as tracker:
        results = await client.scrape(tracker.url, hashes)
        assert await client.scrape(tracker.url, []) == {}
    assert results == {
        h: ScrapeResult(seeders=s, completed=c, leechers=le) for h, (s, c, le) in stats.items()
    }
    assert sorted(len(r.info_hashes) for r in tracker.received if r.action == 2) == [26, 74]


async def test_answers_after_the_second_retransmission(client: UdpTrackerClient) -> None:
    async with HostileUdpTracker(drop_first=2, peers=[("1.1.1.1", 1)]) as tracker:
        start = time.monotonic()
        response = await client.announce(tracker.url, REQ)
        elapsed = time.monotonic() - start
    assert response.peers == (("1.1.1.1", 1),)
    assert tracker.dropped == 2 and tracker.count(0) == 1  # the third connect was answered
    assert elapsed >= BASE * (1 + 2) * 0.9  # waited 0.02 then 0.04 before the third try


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("silent", r"^no answer to connect after 3 attempts$"),
        ("wrong_tid", r"after 3 attempts \(ignored 3 datagrams, last: unknown transaction id\)"),
        ("tiny", r"ignored 3 datagrams, last: too short \(5 bytes\)"),
        ("truncated", r"^truncated connect response: 12 bytes, need at least 16$"),
        ("truncated_announce", r"^truncated announce response: 14 bytes, need at least 20$"),
        ("error", r"^tracker error: torrent not registered$"),
        ("error_connect", r"^tracker error: torrent not registered$"),
    ],
)  # fmt: skip
async def test_hostile_modes_give_a_tracker_error_quickly(
    client: UdpTrackerClient, mode: str, message: str
) -> None:
    async with HostileUdpTracker(mode) as tracker:
        start = time.monotonic()
        with pytest.raises(TrackerError, match=message):
            await client.announce(tracker.url, REQ)
        if mode != "truncated_announce":  # that mode answers scrapes properly
            with pytest.raises(TrackerError):
                await client.scrape(tracker.url, [REQ.info_hash])
        elapsed = time.monotonic() - start
    # two requests, each at most 0.02 + 0.04 + 0.08 s of waiting, plus slack for the loop
    assert elapsed < 2.0
    # the client is still usable afterwards: a good tracker answers
    async with HostileUdpTracker() as good:
        assert (await client.announce(good.url, REQ)).interval == 1800.0


async def test_cancelled_announce_leaves_nothing_behind(client: UdpTrackerClient) -> None:
    async with HostileUdpTracker("silent") as tracker:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.announce(tracker.url, REQ), 0.01)
        await asyncio.sleep(0.2)
    (state,) = client._trackers.values()
    assert not state.session.busy and not state.waiters
    assert state.task is None


async def test_close_fails_requests_in_flight() -> None:
    client = UdpTrackerClient(base_timeout=10.0, bind_v4="127.0.0.1")
    async with HostileUdpTracker("silent") as tracker:
        pending = asyncio.create_task(client.announce(tracker.url, REQ))
        await asyncio.sleep(0.05)
        await client.close()
        with pytest.raises(TrackerError, match="closed"):
            await pending
        with pytest.raises(TrackerError, match="closed"):
            await client.announce(tracker.url, REQ)


async def test_stray_datagrams_from_elsewhere_are_ignored(client: UdpTrackerClient) -> None:
    async with HostileUdpTracker(peers=[("2.2.2.2", 2)]) as tracker:
        await client.announce(tracker.url, REQ)
        sock_port = client._sockets[socket.AF_INET].sockname[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as spoofer:
            spoofer.bind(("127.0.0.1", 0))
            for _ in range(200):
                spoofer.sendto(b"\x00\x00\x00\x01" + b"\x00" * 16, ("127.0.0.1", sock_port))
        response = await client.announce(tracker.url, REQ)
    assert response.peers == (("2.2.2.2", 2),)


@pytest.mark.skipif(not _ipv6_available(), reason="no IPv6 loopback on this machine")
async def test_ipv6_tracker_answers_18_byte_peers(client: UdpTrackerClient) -> None:
    peers = [("2001:db8::7", 6881), ("10.0.0.1", 1)]  # only the IPv6 one fits the v6 format
    async with HostileUdpTracker(host="::1", peers=peers) as tracker:
        assert tracker.url.startswith("udp://[::1]:")
        response = await client.announce(tracker.url, REQ)
        scraped = await client.scrape(tracker.url, [REQ.info_hash])
    assert response.peers == (("2001:db8::7", 6881),)
    assert scraped == {REQ.info_hash: ScrapeResult(0, 0, 0)}
    assert tracker.received[1].options == [(2, b"/announce")]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("udp://tracker.example:1337", ("tracker.example", 1337, b"")),
        ("udp://tracker.example:1337/announce", ("tracker.example", 1337, b"/announce")),
        ("UDP://10.0.0.1:80/a/b?x=1&y=%20", ("10.0.0.1", 80, b"/a/b?x=1&y=%20")),
        ("udp://[2001:db8::1]:6969/announce", ("2001:db8::1", 6969, b"/announce")),
    ],
)
def test_parse_udp_url(url: str, expected: tuple[str, int, bytes]) -> None:
    assert parse_udp_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "http://tracker.example:80/announce",
        "udp://tracker.example/announce",
        "udp://tracker.example:0",
        "udp://tracker.example:99999",
        "udp://:6969",
        "udp://[::1:6969",
    ],
)
async def test_bad_urls_are_tracker_errors(client: UdpTrackerClient, url: str) -> None:
    with pytest.raises(TrackerError):
        await client.announce(url, REQ)


@pytest.mark.interop
async def test_against_real_opentracker(client: UdpTrackerClient) -> None:
    support = pytest.importorskip("tests.support.opentracker")
    listed, unlisted = b"\x42" * 20, b"\x43" * 20
    with support.OpenTracker() as ot:
        await asyncio.to_thread(ot.start)
        # the whitelist is read in the background: allow() waits until it took effect
        await asyncio.to_thread(ot.allow, listed)
        url = ot.udp_url + "/announce?passkey=1"  # opentracker skips the BEP 41 option
        first = AnnounceRequest(listed, b"A" * 20, 1111, left=5, event=AnnounceEvent.STARTED)
        second = AnnounceRequest(listed, b"B" * 20, 2222, left=0, event=AnnounceEvent.STARTED)
        await client.announce(url, first)
        response = await client.announce(url, second)
        scraped = await client.scrape(url, [listed, unlisted])
        with pytest.raises(TrackerError, match="refused"):
            await client.announce(url, AnnounceRequest(unlisted, b"C" * 20, 3333))
    assert ("127.0.0.1", 1111) in response.peers
    assert (response.seeders, response.leechers) == (1, 1)
    assert response.interval > 0
    assert scraped[listed] == ScrapeResult(seeders=1, completed=0, leechers=1)
    assert scraped.get(unlisted, ScrapeResult(0, 0, 0)) == ScrapeResult(0, 0, 0)
