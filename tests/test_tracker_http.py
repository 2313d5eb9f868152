"""HTTP(S) tracker client: URL building, response parsing, and a hostile live server."""

from __future__ import annotations

import os
import re
import time
import tracemalloc
from collections.abc import AsyncIterator

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import TrackerError
from core.formats.bencoding import encode
from core.tracker.http import (
    DEFAULT_INTERVAL,
    MAX_INTERVAL,
    MAX_MESSAGE_CHARS,
    MAX_RESPONSE_SIZE,
    MIN_INTERVAL,
    announce_query,
    announce_url,
    http_announce,
    http_scrape,
    parse_announce,
    parse_scrape,
    scrape_request_url,
    scrape_url,
)
from core.tracker.types import AnnounceEvent, AnnounceRequest, ScrapeResult
from tests.support import hostile_http_tracker as hostile
from tests.support.hostile_http_tracker import HostileHttpTracker

# The worked example of the info_hash encoding on the wiki.theory.org tracker
# protocol page: these 20 bytes escape to the string below.
INFO_HASH = bytes.fromhex("123456789abcdef123456789abcdef123456789a")
INFO_HASH_Q = "%124Vx%9A%BC%DE%F1%23Eg%89%AB%CD%EF%124Vx%9A"
# 20 bytes mixing unreserved characters (kept) with ones that must be escaped.
PEER_ID = b"-PY0001-a b~c.d_/+=%"
PEER_ID_Q = "-PY0001-a%20b~c.d_%2F%2B%3D%25"

REQ = AnnounceRequest(
    info_hash=INFO_HASH,
    peer_id=PEER_ID,
    port=6881,
    uploaded=0,
    downloaded=1024,
    left=4096,
    key=0xBEEF,
)


# ------------------------------------------------------------------ query strings


def test_announce_query_byte_exact_regular() -> None:
    assert announce_query(REQ) == (
        f"info_hash={INFO_HASH_Q}&peer_id={PEER_ID_Q}&port=6881&uploaded=0"
        "&downloaded=1024&left=4096&compact=1&numwant=50&key=0000BEEF"
    )


def test_announce_query_byte_exact_with_event_and_trackerid() -> None:
    req = AnnounceRequest(
        info_hash=bytes(20),
        peer_id=b"\xff" * 20,
        port=65535,
        uploaded=1 << 40,
        downloaded=7,
        left=0,
        event=AnnounceEvent.STARTED,
        numwant=200,
        key=0xDEADBEEF,
        tracker_id=b"id 1/\x00",
    )
    assert announce_query(req) == (
        "info_hash=" + "%00" * 20 + "&peer_id=" + "%FF" * 20 + "&port=65535"
        "&uploaded=1099511627776&downloaded=7&left=0&compact=1&event=started"
        "&numwant=200&key=DEADBEEF&trackerid=id%201%2F%00"
    )


@pytest.mark.parametrize(
    ("event", "fragment"),
    [
        (AnnounceEvent.COMPLETED, "&event=completed&"),
        (AnnounceEvent.STOPPED, "&event=stopped&"),
        (AnnounceEvent.NONE, None),
    ],
)
def test_announce_query_events(event: AnnounceEvent, fragment: str | None) -> None:
    query = announce_query(AnnounceRequest(INFO_HASH, PEER_ID, 1, event=event))
    if fragment is None:
        assert "event=" not in query
    else:
        assert fragment in query
    assert "trackerid" not in query


def test_announce_query_compact_off() -> None:
    assert "&compact=0&" in announce_query(AnnounceRequest(INFO_HASH, PEER_ID, 1, compact=False))


@pytest.mark.parametrize(
    "bad",
    [
        AnnounceRequest(b"short", PEER_ID, 1),
        AnnounceRequest(INFO_HASH, b"x" * 21, 1),
        AnnounceRequest(INFO_HASH, PEER_ID, 70000),
        AnnounceRequest(INFO_HASH, PEER_ID, 1, left=-1),
        AnnounceRequest(INFO_HASH, PEER_ID, 1, key=1 << 32),
        AnnounceRequest(INFO_HASH, PEER_ID, 1, numwant=-5),
        AnnounceRequest("a" * 20, PEER_ID, 1),  # type: ignore[arg-type]
    ],
)
def test_announce_query_rejects_bad_requests(bad: AnnounceRequest) -> None:
    with pytest.raises(TrackerError):
        announce_query(bad)


@pytest.mark.parametrize(
    ("url", "prefix"),
    [
        ("http://t.example/announce", "http://t.example/announce?"),
        ("https://t.example:8443/a/announce.php", "https://t.example:8443/a/announce.php?"),
        # An existing query (private tracker passkey) is kept, escapes untouched.
        ("http://t.example/announce?passkey=ab%2Fc", "http://t.example/announce?passkey=ab%2Fc&"),
        ("http://t.example/announce?", "http://t.example/announce?"),
        ("http://t.example/announce?a=1&", "http://t.example/announce?a=1&"),
        # The fragment is never sent; stray spaces and non-ASCII get escaped.
        ("http://t.example/announce#frag", "http://t.example/announce?"),
        (
            "  http://t.example/my tracker/é/announce ",
            "http://t.example/my%20tracker/%C3%A9/announce?",
        ),
    ],
)
def test_announce_url_keeps_existing_query(url: str, prefix: str) -> None:
    assert announce_url(url, REQ) == prefix + announce_query(REQ)


@pytest.mark.parametrize(
    "url",
    [
        "udp://t.example:6969/announce",
        "wss://t.example/announce",
        "http:///announce",
        "not a url",
        "http://t.example:99999/announce",
        "http://[::1/announce",
        "",
    ],
)
def test_announce_url_rejects_non_http(url: str) -> None:
    with pytest.raises(TrackerError):
        announce_url(url, REQ)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://t.example/announce", "http://t.example/scrape"),
        ("http://t.example/x/announce", "http://t.example/x/scrape"),
        ("http://t.example/announce.php", "http://t.example/scrape.php"),
        ("http://t.example/announce?x%064", "http://t.example/scrape?x%064"),
        ("http://t.example/a/announce?passkey=k", "http://t.example/a/scrape?passkey=k"),
        ("http://t.example:81/announce/", None),
        ("http://t.example/a", None),
        ("http://t.example/announce/x", None),
        ("http://t.example/x%064announce", None),
        ("http://t.example/", None),
        ("http://t.example", None),
    ],
)
def test_scrape_url_convention(url: str, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(TrackerError, match="does not support scrape"):
            scrape_url(url)
    else:
        assert scrape_url(url) == expected


def test_scrape_request_url_byte_exact() -> None:
    url = scrape_request_url("http://t.example/announce?passkey=k", [INFO_HASH, b"\xff" * 20])
    assert url == (
        f"http://t.example/scrape?passkey=k&info_hash={INFO_HASH_Q}&info_hash=" + "%FF" * 20
    )
    with pytest.raises(TrackerError):
        scrape_request_url("http://t.example/announce", [])
    with pytest.raises(TrackerError):
        scrape_request_url("http://t.example/announce", [b"short"])


# ------------------------------------------------------------- response parsing


def test_parse_good_compact_response() -> None:
    resp = parse_announce(hostile.good_body())
    assert resp.interval == hostile.GOOD_INTERVAL
    assert resp.min_interval == hostile.GOOD_MIN_INTERVAL
    assert resp.seeders == hostile.GOOD_SEEDERS
    assert resp.leechers == hostile.GOOD_LEECHERS
    assert resp.warning == hostile.GOOD_WARNING
    assert resp.tracker_id == hostile.GOOD_TRACKER_ID
    assert resp.peers == hostile.GOOD_PEERS4 + hostile.GOOD_PEERS6


def test_parse_dict_peers() -> None:
    resp = parse_announce(hostile.dict_body())
    assert resp.peers == (("10.1.2.3", 6881), ("::1", 6882))
    assert resp.seeders is None and resp.leechers is None and resp.warning is None


def test_parse_failure_reason() -> None:
    body = encode({b"failure reason": b"unregistered torrent\x1b[2J\r\nEvil: 1", b"interval": 5})
    with pytest.raises(TrackerError, match="unregistered torrent") as info:
        parse_announce(body)
    assert "\x1b" not in str(info.value) and "\n" not in str(info.value)


def test_parse_long_failure_reason_is_shortened() -> None:
    with pytest.raises(TrackerError) as info:
        parse_announce(encode({b"failure reason": b"x" * 100_000}))
    assert len(str(info.value)) < MAX_MESSAGE_CHARS + 50


@pytest.mark.parametrize(
    ("fields", "interval", "min_interval"),
    [
        ({}, DEFAULT_INTERVAL, None),
        ({b"interval": b"1800"}, DEFAULT_INTERVAL, None),
        ({b"interval": 0, b"min interval": -3}, MIN_INTERVAL, MIN_INTERVAL),
        ({b"interval": 10**12, b"min interval": 10**12}, MAX_INTERVAL, MAX_INTERVAL),
        ({b"interval": 2, b"min interval": 1}, 2, 1),
    ],
)
def test_parse_interval_sanity(
    fields: dict[bytes, object], interval: float, min_interval: float | None
) -> None:
    resp = parse_announce(encode(fields))
    assert resp.interval == interval
    assert resp.min_interval == min_interval


def test_parse_odd_fields_are_dropped() -> None:
    resp = parse_announce(
        encode(
            {
                b"interval": 60,
                b"complete": -1,
                b"incomplete": b"3",
                b"tracker id": b"t" * 1000,
                b"warning message": b"\xff\xfeok\x07",
                b"peers": b"\x0a\x00\x00\x01\x1a\xe1\x0a",
                b"peers6": [{b"ip": b"::2", b"port": 9}],
            }
        )
    )
    assert resp.seeders is None and resp.leechers is None and resp.tracker_id is None
    assert resp.warning is not None and "ok" in resp.warning and "\x07" not in resp.warning
    assert resp.peers == (("10.0.0.1", 6881), ("::2", 9))


@pytest.mark.parametrize(
    "body", [b"", b"garbage", b"le", b"i5e", b"d8:intervali5e", b"d8:intervali5ee trailing"]
)
def test_parse_malformed_announce(body: bytes) -> None:
    with pytest.raises(TrackerError, match="malformed announce response"):
        parse_announce(body)


def test_parse_scrape() -> None:
    a, b, unknown = b"\x01" * 20, b"\x02" * 20, b"\x03" * 20
    body = encode(
        {
            b"files": {
                a: {b"complete": 5, b"downloaded": 50, b"incomplete": 2},
                b: {b"complete": -1, b"downloaded": b"x"},
                unknown: {b"complete": 9},
                b"short": {b"complete": 1},
                b"\x04" * 20: b"not a dict",
            }
        }
    )
    assert parse_scrape(body, [a, b]) == {
        a: ScrapeResult(seeders=5, completed=50, leechers=2),
        b: ScrapeResult(seeders=0, completed=0, leechers=0),
    }
    assert set(parse_scrape(body)) == {a, b, unknown}


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (encode({b"failure reason": b"scrape disabled"}), "scrape disabled"),
        (encode({b"files": [1]}), "no 'files'"),
        (encode([1, 2]), "malformed scrape"),
        (b"<html>", "malformed scrape"),
    ],
)
def test_parse_scrape_errors(body: bytes, match: str) -> None:
    with pytest.raises(TrackerError, match=match):
        parse_scrape(body)


EXAMPLES = int(os.environ.get("HYPOTHESIS_EXAMPLES", "5000"))

values = st.recursive(
    st.one_of(st.integers(-(2**70), 2**70), st.binary(max_size=40)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.binary(max_size=20), inner, max_size=4),
    ),
    max_leaves=16,
)
keys = st.sampled_from(
    [
        b"interval",
        b"min interval",
        b"peers",
        b"peers6",
        b"complete",
        b"incomplete",
        b"warning message",
        b"tracker id",
        b"failure reason",
        b"files",
    ]
)


@settings(max_examples=max(100, EXAMPLES // 10))
@given(st.dictionaries(keys, values, max_size=6))
def test_parse_structured_fuzz_only_tracker_errors(response: dict[bytes, object]) -> None:
    body = encode(response)
    for parse in (parse_announce, parse_scrape):
        try:
            parse(body)
        except TrackerError:
            pass


@settings(max_examples=EXAMPLES)
@given(st.binary(max_size=300))
def test_parse_bytes_fuzz_only_tracker_errors(body: bytes) -> None:
    for parse in (parse_announce, parse_scrape):
        try:
            parse(body)
        except TrackerError:
            pass


# ------------------------------------------------------------ against a server


@pytest.fixture
async def tracker() -> AsyncIterator[HostileHttpTracker]:
    async with HostileHttpTracker() as server:
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def _announce(
    session: aiohttp.ClientSession, url: str, **kwargs: float
) -> tuple[float, object]:
    """Announce and return (elapsed seconds, response or TrackerError)."""
    start = time.monotonic()
    try:
        result: object = await http_announce(session, url, REQ, **kwargs)  # type: ignore[arg-type]
    except TrackerError as exc:
        result = exc
    return time.monotonic() - start, result


@pytest.mark.timeout(10)
async def test_good_announce_sends_exact_bytes(
    tracker: HostileHttpTracker, session: aiohttp.ClientSession
) -> None:
    resp = await http_announce(session, tracker.url("/good/announce"), REQ, timeout=2)
    assert resp.peers == hostile.GOOD_PEERS4 + hostile.GOOD_PEERS6
    assert resp.interval == hostile.GOOD_INTERVAL
    assert resp.tracker_id == hostile.GOOD_TRACKER_ID
    [seen] = tracker.requests
    assert seen.path == "/good/announce"
    assert seen.query == announce_query(REQ)
    params = dict(hostile.raw_params(seen.query))
    assert params["info_hash"] == INFO_HASH_Q
    assert params["peer_id"] == PEER_ID_Q


@pytest.mark.timeout(10)
async def test_tracker_id_echoed_on_next_announce(
    tracker: HostileHttpTracker, session: aiohttp.ClientSession
) -> None:
    first = await http_announce(session, tracker.url("/good/announce"), REQ, timeout=2)
    req = AnnounceRequest(INFO_HASH, PEER_ID, 6881, tracker_id=first.tracker_id)
    await http_announce(session, tracker.url("/good/announce"), req, timeout=2)
    params = dict(hostile.raw_params(tracker.requests[-1].query))
    assert params["trackerid"] == "tid-%00%FF"


@pytest.mark.timeout(10)
async def test_dict_peers_announce(
    tracker: HostileHttpTracker, session: aiohttp.ClientSession
) -> None:
    resp = await http_announce(session, tracker.url("/dict/announce"), REQ, timeout=2)
    assert resp.peers == (("10.1.2.3", 6881), ("::1", 6882))


@pytest.mark.timeout(10)
async def test_passkey_query_kept_for_announce_and_scrape(
    tracker: HostileHttpTracker, session: aiohttp.ClientSession
) -> None:
    url = tracker.url(f"/passkey/announce?passkey={hostile.PASSKEY}")
    resp = await http_announce(session, url, REQ, timeout=2)
    assert resp.peers == hostile.GOOD_PEERS4 + hostile.GOOD_PEERS6
    result = await http_scrape(session, url, [INFO_HASH], timeout=2)
    assert result == {INFO_HASH: ScrapeResult(0x12, 0x34 * 10, 0x56)}
    assert [r.path for r in tracker.requests] == ["/passkey/announce", "/passkey/scrape"]
    with pytest.raises(TrackerError, match="bad passkey"):
        await http_announce(session, tracker.url("/passkey/announce"), REQ, timeout=2)


@pytest.mark.timeout(10)
async def test_scrape(tracker: HostileHttpTracker, session: aiohttp.ClientSession) -> None:
    hashes = [INFO_HASH, bytes(range(1, 21)), b"\xff" * 20]
    result = await http_scrape(session, tracker.url("/good/announce"), hashes, timeout=2)
    # The server also lists a hash we did not ask for and a malformed key: both dropped.
    assert result == {
        h: ScrapeResult(
            seeders=hostile.scrape_counts(h)[b"complete"],
            completed=hostile.scrape_counts(h)[b"downloaded"],
            leechers=hostile.scrape_counts(h)[b"incomplete"],
        )
        for h in hashes
    }
    [seen] = tracker.requests
    assert seen.path == "/good/scrape"
    second = "".join(f"%{i:02X}" for i in range(1, 21))
    assert seen.query == f"info_hash={INFO_HASH_Q}&info_hash={second}&info_hash=" + "%FF" * 20


@pytest.mark.timeout(10)
async def test_scrape_unsupported_url_needs_no_network(session: aiohttp.ClientSession) -> None:
    with pytest.raises(TrackerError, match="does not support scrape"):
        await http_scrape(session, "http://127.0.0.1:1/tracker", [INFO_HASH], timeout=1)


@pytest.mark.timeout(10)
async def test_redirect_to_good_path(
    tracker: HostileHttpTracker, session: aiohttp.ClientSession
) -> None:
    resp = await http_announce(session, tracker.url("/redirect/announce"), REQ, timeout=2)
    assert resp.peers == hostile.GOOD_PEERS4 + hostile.GOOD_PEERS6
    assert [r.path for r in tracker.requests] == ["/redirect/announce", "/good/announce"]
    assert tracker.requests[1].query == announce_query(REQ)


@pytest.mark.timeout(10)
async def test_redirect_chain_within_limit(
    tracker: HostileHttpTracker, session: aiohttp.ClientSession
) -> None:
    resp = await http_announce(session, tracker.url("/chain/3/announce"), REQ, max_redirects=3)
    assert resp.interval == hostile.GOOD_INTERVAL
    assert len(tracker.requests) == 4


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("path", "kwargs", "match"),
    [
        ("/garbage/announce", {}, "malformed announce response"),
        ("/error/announce", {}, "HTTP 500"),
        ("/nothing/announce", {}, "HTTP 404"),
        ("/refused/announce", {}, f"{hostile.FAILURE_TEXT}.*HTTP 403"),
        ("/failure/announce", {}, f"tracker failure: {hostile.FAILURE_TEXT}"),
        ("/loop/announce", {}, "redirect loop"),
        ("/pingpong/announce", {}, "redirect loop"),
        ("/chain/8/announce", {"max_redirects": 3}, "more than 3"),
        ("/redirect/announce", {"max_redirects": 0}, "HTTP 302"),
        ("/ftp/announce", {}, "non-HTTP URL: file:///etc/passwd"),
        ("/nolocation/announce", {}, "without a Location"),
        ("/huge/announce", {}, f"larger than {MAX_RESPONSE_SIZE}"),
        ("/hang/announce", {"timeout": 1.0}, "timed out after 1 s"),
        ("/silent/announce", {"timeout": 1.0}, "timed out after 1 s"),
    ],
)
async def test_hostile_tracker_gives_clear_error_quickly(
    tracker: HostileHttpTracker,
    session: aiohttp.ClientSession,
    path: str,
    kwargs: dict[str, float],
    match: str,
) -> None:
    elapsed, result = await _announce(session, tracker.url(path), **{"timeout": 5.0, **kwargs})
    assert isinstance(result, TrackerError), result
    assert re.search(match, str(result)), str(result)
    assert "\x1b" not in str(result)
    assert elapsed < 4.0


@pytest.mark.timeout(10)
async def test_gzip_response(tracker: HostileHttpTracker, session: aiohttp.ClientSession) -> None:
    resp = await http_announce(session, tracker.url("/gzip/announce"), REQ, timeout=2)
    assert resp.peers == hostile.GOOD_PEERS4 + hostile.GOOD_PEERS6
    assert resp.warning == hostile.GOOD_WARNING


@pytest.mark.timeout(20)
async def test_gzip_bomb_is_capped_without_blowing_memory(
    tracker: HostileHttpTracker, session: aiohttp.ClientSession
) -> None:
    await http_announce(session, tracker.url("/good/announce"), REQ)  # warm up imports
    await tracker.prepare_bomb()
    tracemalloc.start()
    try:
        elapsed, result = await _announce(session, tracker.url("/bomb/announce"), timeout=10)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(result, TrackerError), result
    assert f"larger than {MAX_RESPONSE_SIZE}" in str(result)
    # The bomb inflates to 100 MiB; we must stop near the 2 MiB cap.
    assert peak < 16 << 20, peak
    assert elapsed < 8.0


@pytest.mark.timeout(10)
async def test_connection_refused(session: aiohttp.ClientSession) -> None:
    async with HostileHttpTracker() as server:
        url = server.url("/good/announce")
    with pytest.raises(TrackerError, match="announce failed"):
        await http_announce(session, url, REQ, timeout=2)


@pytest.mark.timeout(10)
async def test_without_shared_session(tracker: HostileHttpTracker) -> None:
    resp = await http_announce(None, tracker.url("/good/announce"), REQ, timeout=2)
    assert resp.seeders == hostile.GOOD_SEEDERS
    result = await http_scrape(None, tracker.url("/good/announce"), [INFO_HASH], timeout=2)
    assert set(result) == {INFO_HASH}
