"""Magnet URIs: BEP 9 / BEP 53 examples, hash forms, malformed input, round-trips."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.errors import MagnetError, TorrentError
from core.formats.magnet import MAX_FILE_INDEX, Magnet, parse_magnet
from core.types import InfoHash

EXAMPLES = int(os.environ.get("HYPOTHESIS_EXAMPLES", "5000"))
PROPERTY = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

V1 = hashlib.sha1(b"magnet test").digest()
V2 = hashlib.sha256(b"magnet test").digest()
V1_HEX = V1.hex()
V2_MULTIHASH = "1220" + V2.hex()
GOOD = f"magnet:?xt=urn:btih:{V1_HEX}"


# --- golden examples -----------------------------------------------------------


def test_bep9_v1_format() -> None:
    # BEP 9: magnet:?xt=urn:btih:<info-hash>&dn=<name>&tr=<tracker-url>&x.pe=<peer-address>
    uri = (
        f"magnet:?xt=urn:btih:{V1_HEX}&dn=Some%20Name&tr=http%3A%2F%2Ftracker.example%2Fannounce"
        "&x.pe=192.0.2.7:6881"
    )
    m = parse_magnet(uri)
    assert m.info_hash == InfoHash(v1=V1)
    assert m.display_name == "Some Name"
    assert m.trackers == ("http://tracker.example/announce",)
    assert m.peers == ("192.0.2.7:6881",)
    assert m.peer_addresses == (("192.0.2.7", 6881),)
    assert m.select_only == ()
    assert m.selected_files(10) is None


def test_bep9_v2_format() -> None:
    # BEP 9: magnet:?xt=urn:btmh:<tagged-info-hash>&dn=<name>&tr=<tracker-url>&x.pe=<peer-address>
    m = parse_magnet(
        f"magnet:?xt=urn:btmh:{V2_MULTIHASH}&dn=v2&tr=udp://t.example:80&x.pe=h.example:1"
    )
    assert m.info_hash == InfoHash(v2=V2)
    assert m.info_hash.v1 is None
    assert m.info_hash.wire == V2[:20]
    assert m.trackers == ("udp://t.example:80",)
    assert m.peer_addresses == (("h.example", 1),)


def test_hybrid_empty_input_hashes() -> None:
    # The widely quoted hybrid example: SHA-1 and SHA-256 of the empty string.
    uri = (
        "magnet:?xt=urn:btih:da39a3ee5e6b4b0d3255bfef95601890afd80709"
        "&xt=urn:btmh:1220e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    m = parse_magnet(uri)
    assert m.info_hash == InfoHash(v1=hashlib.sha1(b"").digest(), v2=hashlib.sha256(b"").digest())
    # Order of the two xt does not matter.
    reordered = "magnet:?" + "&".join(reversed(uri[len("magnet:?") :].split("&")))
    assert parse_magnet(reordered) == m


def test_bep53_example() -> None:
    # BEP 53: magnet:?xt=urn:btih:HASH&dn=NAME&tr=TRACKER&so=0,2,4,6-8
    m = parse_magnet(f"magnet:?xt=urn:btih:{V1_HEX}&dn=NAME&tr=TRACKER&so=0,2,4,6-8")
    assert m.display_name == "NAME"
    assert m.trackers == ("TRACKER",)
    assert m.select_only == ((0, 0), (2, 2), (4, 4), (6, 8))
    assert m.selected_files(100) == frozenset({0, 2, 4, 6, 7, 8})
    assert m.selected_files(7) == frozenset({0, 2, 4, 6})
    assert m.selected_files(0) == frozenset()
    assert m.uri().endswith("&so=0,2,4,6-8")


def test_brief_so_example_and_merging() -> None:
    m = parse_magnet(f"magnet:?xt=urn:btih:{V1_HEX}&so=0,2,4-6")
    assert m.select_only == ((0, 0), (2, 2), (4, 6))
    # Unsorted, overlapping and adjacent entries collapse to one canonical form.
    m2 = parse_magnet(f"magnet:?xt=urn:btih:{V1_HEX}&so=5,4-6,2&so=0,3")
    assert m2.select_only == ((0, 0), (2, 6))
    assert m2.selected_files(10) == frozenset({0, 2, 3, 4, 5, 6})


def test_huge_so_range_is_not_expanded() -> None:
    m = parse_magnet(f"magnet:?xt=urn:btih:{V1_HEX}&so=0-{MAX_FILE_INDEX}")
    assert m.select_only == ((0, MAX_FILE_INDEX),)
    assert m.selected_files(3) == frozenset({0, 1, 2})
    with pytest.raises(ValueError):
        m.selected_files(-1)


def test_leading_zeros_in_so() -> None:
    m = parse_magnet(f"magnet:?xt=urn:btih:{V1_HEX}&so=" + "0" * 5000 + "7")
    assert m.select_only == ((7, 7),)


def test_large_hostile_inputs_stay_cheap() -> None:
    # Linear work only: a long so= list, many parameters, a huge peer host.
    so = ",".join(f"{i}-{i + 1}" for i in range(0, 200_000, 3))
    m = parse_magnet(f"{GOOD}&so={so}&" + "&".join(["tr=http://t"] * 50_000))
    assert len(m.select_only) == len(range(0, 200_000, 3))
    assert m.trackers == ("http://t",)
    with pytest.raises(MagnetError, match="invalid host name"):
        parse_magnet(f"{GOOD}&x.pe={'a' * 1_000_000}:80")
    with pytest.raises(MagnetError, match="exceeds the limit"):
        parse_magnet(f"{GOOD}&so=1-{'9' * 100_000}")


# --- info-hash forms -------------------------------------------------------------


@pytest.mark.parametrize("seed", [b"", b"a", b"debian", b"\xff" * 7])
def test_hex_and_base32_are_the_same_hash(seed: bytes) -> None:
    digest = hashlib.sha1(seed).digest()
    b32 = base64.b32encode(digest).decode()
    forms = [digest.hex(), digest.hex().upper(), b32, b32.lower()]
    parsed = {parse_magnet(f"magnet:?xt=urn:btih:{f}").info_hash for f in forms}
    assert parsed == {InfoHash(v1=digest)}
    # The same hash in two spellings is not a conflict.
    both = parse_magnet(f"magnet:?xt=urn:btih:{forms[0]}&xt=urn:btih:{forms[2]}")
    assert both.info_hash == InfoHash(v1=digest)


def test_anacrolix_readme_base32_magnet() -> None:
    m = parse_magnet("magnet:?xt=urn:btih:KRWPCX3SJUM4IMM4YF5RPHL6ANPYTQPU")
    assert m.info_hash.base32() == "KRWPCX3SJUM4IMM4YF5RPHL6ANPYTQPU"
    assert m.uri() == f"magnet:?xt=urn:btih:{m.info_hash.hex()}"


def test_case_insensitive_scheme_names_and_urn() -> None:
    m = parse_magnet(f"MAGNET:?XT=URN:BTIH:{V1_HEX.upper()}&DN=x&Tr=http://a")
    assert m.info_hash.v1 == V1
    assert m.display_name == "x"
    assert m.trackers == ("http://a",)
    m2 = parse_magnet(f"magnet:?xt=URN:BTMH:{V2_MULTIHASH.upper()}")
    assert m2.info_hash.v2 == V2


def test_indexed_parameters() -> None:
    uri = f"magnet:?xt.1=urn:btih:{V1_HEX}&xt.2=urn:btmh:{V2_MULTIHASH}&tr.1=http://a&tr.2=http://b"
    m = parse_magnet(uri)
    assert m.info_hash == InfoHash(v1=V1, v2=V2)
    assert m.trackers == ("http://a", "http://b")


def test_non_bittorrent_topics_are_ignored() -> None:
    uri = (
        "magnet:?xt=urn:ed2k:354B15E68FB8F36D7CD88FF94116CDC1"
        "&xt=urn:tree:tiger:7N5OAMRNGMSSEUE3ORHOKWN4WWIQ5X4EBOOTLJY"
        f"&xt=urn:btih:{V1_HEX}&xl=10826029&dn=mediawiki-1.15.1.tar.gz"
    )
    m = parse_magnet(uri)
    assert m.info_hash == InfoHash(v1=V1)
    assert m.extra_params == (("xl", "10826029"),)


# --- decoding ------------------------------------------------------------------------


def test_plus_is_space_and_percent_2b_is_plus() -> None:
    m = parse_magnet(f"magnet:?xt=urn:btih:{V1_HEX}&dn=a+b%20c%2Bd")
    assert m.display_name == "a b c+d"
    assert "dn=a%20b%20c%2Bd" in m.uri()


def test_tracker_with_query_string_round_trips() -> None:
    tracker = "http://t.example/announce.php?passkey=a+b&x=1%2F2#frag"
    m = Magnet(InfoHash(v1=V1), trackers=(tracker,))
    uri = m.uri()
    assert "passkey" in uri
    assert uri.count("&") == 1  # the tracker's own '&' is escaped
    assert parse_magnet(uri).trackers == (tracker,)


def test_raw_query_characters_in_values_are_tolerated() -> None:
    m = parse_magnet(f"magnet:?xt=urn:btih:{V1_HEX}&tr=http://t/a?b=c&ws=http://w/x=1")
    assert m.trackers == ("http://t/a?b=c",)
    assert m.web_seeds == ("http://w/x=1",)


def test_unicode_display_name_and_bad_utf8_in_dn() -> None:
    m = parse_magnet(f"magnet:?xt=urn:btih:{V1_HEX}&dn=%C3%A9t%C3%A9")
    assert m.display_name == "\u00e9t\u00e9"
    # dn is only displayed: undecodable bytes are replaced, not fatal.
    m2 = parse_magnet(f"magnet:?xt=urn:btih:{V1_HEX}&dn=caf%E9")
    assert m2.display_name == "caf\ufffd"
    assert parse_magnet(m2.uri()) == m2
    # Raw non-ASCII characters are taken as themselves.
    assert parse_magnet(f"magnet:?xt=urn:btih:{V1_HEX}&dn=\u00e9").display_name == "\u00e9"


def test_first_dn_wins_and_empty_values_are_absent() -> None:
    uri = f"magnet:?xt=urn:btih:{V1_HEX}&dn=&dn=first&dn=second&tr=&ws=&so=&x.pe=&kt=&&"
    m = parse_magnet(uri)
    assert m.display_name == "first"
    assert m.trackers == m.web_seeds == m.peers == m.keywords == ()
    assert m.select_only == ()


def test_lists_deduplicated_in_order() -> None:
    uri = (
        f"magnet:?xt=urn:btih:{V1_HEX}&tr=http://b&tr=http://a&tr=http://b"
        "&ws=http://w&ws=http://w&xs=http://x&as=http://y&as=http://z"
        "&x.pe=1.2.3.4:1&x.pe=1.2.3.4:1"
    )
    m = parse_magnet(uri)
    assert m.trackers == ("http://b", "http://a")
    assert m.web_seeds == ("http://w",)
    assert m.exact_sources == ("http://x",)
    assert m.acceptable_sources == ("http://y", "http://z")
    assert m.peers == ("1.2.3.4:1",)


def test_keywords() -> None:
    m = parse_magnet(f"magnet:?xt=urn:btih:{V1_HEX}&kt=linux+iso%20amd64++x%2By")
    # '+' and '%2B' both separate keywords: kt is a '+'-joined list.
    assert m.keywords == ("linux", "iso", "amd64", "x", "y")
    assert "kt=linux+iso+amd64+x+y" in m.uri()


def test_peers_of_every_kind() -> None:
    uri = (
        f"magnet:?xt=urn:btih:{V1_HEX}&x.pe=10.0.0.1:6881&x.pe=[2001:db8::1]:51413"
        "&x.pe=%5B::1%5D:1&x.pe=peer.example.org.:65535&x.pe=my_host:2"
    )
    m = parse_magnet(uri)
    assert m.peer_addresses == (
        ("10.0.0.1", 6881),
        ("2001:db8::1", 51413),
        ("::1", 1),
        ("peer.example.org.", 65535),
        ("my_host", 2),
    )
    assert "x.pe=[2001:db8::1]:51413" in m.uri()  # brackets stay: libtorrent does not unescape


def test_unknown_parameters_kept_and_rewritten() -> None:
    uri = f"magnet:?xt=urn:btih:{V1_HEX}&x.foo=bar%26baz&novalue&Weird%20Key=1"
    m = parse_magnet(uri)
    assert m.extra_params == (("x.foo", "bar&baz"), ("novalue", ""), ("Weird Key", "1"))
    assert parse_magnet(m.uri()) == m


def test_surrounding_whitespace_and_hash_sign() -> None:
    m = parse_magnet(f"  magnet:?xt=urn:btih:{V1_HEX}&dn=a#b\n")
    assert m.display_name == "a#b"
    assert "dn=a%23b" in m.uri()


def test_uri_is_canonical() -> None:
    m = Magnet(
        InfoHash(v1=V1, v2=V2),
        display_name="n",
        trackers=("udp://t:1/announce",),
        web_seeds=("http://w/",),
        exact_sources=("http://x/",),
        acceptable_sources=("http://a/",),
        peers=("1.2.3.4:5",),
        select_only=((1, 1), (3, 5)),
        keywords=("k1", "k2"),
        extra_params=(("xl", "9"),),
    )
    assert m.uri() == (
        f"magnet:?xt=urn:btih:{V1_HEX}&xt=urn:btmh:{V2_MULTIHASH}&dn=n"
        "&tr=udp://t:1/announce&ws=http://w/&xs=http://x/&as=http://a/"
        "&x.pe=1.2.3.4:5&kt=k1+k2&so=1,3-5&xl=9"
    )
    assert str(m) == m.uri()
    assert parse_magnet(m.uri()) == m


def test_constructor_normalises() -> None:
    m = Magnet(
        InfoHash(v1=V1),
        display_name="",
        trackers=("a", "b", "a"),
        select_only=((4, 6), (0, 2), (3, 3), (9, 9)),
    )
    assert m.display_name is None
    assert m.trackers == ("a", "b")
    assert m.select_only == ((0, 6), (9, 9))


# --- malformed input ---------------------------------------------------------------

MALFORMED = [
    ("", "must start with 'magnet:'"),
    ("http://example.com/?xt=urn:btih:" + V1_HEX, "must start with 'magnet:'"),
    ("magnet", "must start with 'magnet:'"),
    ("magnet:", "no query"),
    ("magnet:xt=urn:btih:" + V1_HEX, "no query"),
    ("magnet:?", "no BitTorrent info-hash"),
    ("magnet:?dn=x&tr=http://t", "no BitTorrent info-hash"),
    ("magnet:?xt=urn:ed2k:354B15E68FB8F36D7CD88FF94116CDC1", "no BitTorrent info-hash"),
    ("magnet:?xt=", "xt is empty"),
    ("magnet:?xt", "xt is empty"),
    ("magnet:?xt=urn:btih:", "40 hex or 32 base32"),
    ("magnet:?xt=urn:btih:" + V1_HEX[:-1], "40 hex or 32 base32"),
    ("magnet:?xt=urn:btih:" + V1_HEX + "0", "40 hex or 32 base32"),
    ("magnet:?xt=urn:btih:" + "g" * 40, "40 hex or 32 base32"),
    ("magnet:?xt=urn:btih:" + "A" * 31 + "1", "40 hex or 32 base32"),
    ("magnet:?xt=urn:btih:" + " " * 40, "40 hex or 32 base32"),
    ("magnet:?xt=urn:btmh:1114" + V1_HEX, "0x11 (sha1)"),
    ("magnet:?xt=urn:btmh:1340" + "ab" * 64, "0x13 (sha2-512)"),
    ("magnet:?xt=urn:btmh:b0e402" + "ab" * 32, "0xb230 (unknown)"),
    ("magnet:?xt=urn:btmh:1210" + "ab" * 16, "declare 32 bytes, not 16"),
    ("magnet:?xt=urn:btmh:1220" + "ab" * 31, "31 digest bytes"),
    ("magnet:?xt=urn:btmh:1220" + "ab" * 33, "33 digest bytes"),
    ("magnet:?xt=urn:btmh:" + V2_MULTIHASH + "a", "even number of hex digits"),
    ("magnet:?xt=urn:btmh:", "even number of hex digits"),
    ("magnet:?xt=urn:btmh:12zz", "even number of hex digits"),
    ("magnet:?xt=urn:btmh:80", "truncated"),
    ("magnet:?xt=urn:btmh:9200" + "20" + "ab" * 32, "not minimally encoded"),
    ("magnet:?xt=urn:btmh:12a000" + "ab" * 32, "not minimally encoded"),
    ("magnet:?xt=urn:btmh:" + "ff" * 12, "varint is too long"),
    (GOOD + "&xt=urn:btih:" + "00" * 20, "conflicting v1"),
    (
        f"magnet:?xt=urn:btmh:{V2_MULTIHASH}&xt=urn:btmh:1220" + "00" * 32,
        "conflicting v2",
    ),
    (GOOD + "&dn=%zz", "two hex digits"),
    (GOOD + "&tr=http://a/%", "two hex digits"),
    (GOOD + "&tr=http://a/%4", "two hex digits"),
    (GOOD + "&%zz=1", "two hex digits"),
    (GOOD + "&tr=http://a/%FF", "not UTF-8"),
    (GOOD + "&ws=%C3", "not UTF-8"),
    (GOOD + "&so=-1", "negative"),
    (GOOD + "&so=0,-3", "negative"),
    (GOOD + "&so=6-4", "reversed range 6-4"),
    (GOOD + f"&so={MAX_FILE_INDEX + 1}", "exceeds the limit"),
    (GOOD + "&so=0-999999999999", "exceeds the limit"),
    (GOOD + "&so=" + "9" * 5000, "exceeds the limit"),
    (GOOD + "&so=a", "not an index or a range"),
    (GOOD + "&so=1-", "not an index or a range"),
    (GOOD + "&so=1-2-3", "not an index or a range"),
    (GOOD + "&so=1+", "not an index or a range"),
    (GOOD + "&so=\u0661", "not an index or a range"),  # ARABIC-INDIC DIGIT ONE
    (GOOD + "&so=1,,2", "empty entry"),
    (GOOD + "&so=1,", "empty entry"),
    (GOOD + "&x.pe=1.2.3.4", "is not host:port"),
    (GOOD + "&x.pe=:80", "is not host:port"),
    (GOOD + "&x.pe=1.2.3.4:0", "outside 1..65535"),
    (GOOD + "&x.pe=1.2.3.4:65536", "outside 1..65535"),
    (GOOD + "&x.pe=1.2.3.4:123456", "invalid port"),
    (GOOD + "&x.pe=1.2.3.4:http", "invalid port"),
    (GOOD + "&x.pe=1.2.3.4:", "invalid port"),
    (GOOD + "&x.pe=256.1.1.1:80", "invalid IPv4"),
    (GOOD + "&x.pe=1.2.3:80", "invalid IPv4"),
    (GOOD + "&x.pe=::1:80", "must be in brackets"),
    (GOOD + "&x.pe=[::1:80", "unterminated IPv6"),
    (GOOD + "&x.pe=[zz::1]:80", "invalid IPv6"),
    (GOOD + "&x.pe=[1.2.3.4]:80", "invalid IPv6"),
    (GOOD + "&x.pe=[fe80::1%25eth0]:80", "zone ids"),
    (GOOD + "&x.pe=bad%20host:80", "invalid host name"),
    (GOOD + "&x.pe=-lead.example:80", "invalid host name"),
    (GOOD + "&x.pe=a..b:80", "invalid host name"),
    (GOOD + "&x.pe=" + "a" * 64 + ".example:80", "invalid host name"),
    (GOOD + "&dn=\ud800", "not valid Unicode"),
]


@pytest.mark.parametrize(("uri", "reason"), MALFORMED)
def test_malformed_gives_magnet_error_with_reason(uri: str, reason: str) -> None:
    with pytest.raises(MagnetError, match=re.escape(reason)):
        parse_magnet(uri)


def test_magnet_error_is_a_torrent_error_and_value_error() -> None:
    with pytest.raises(TorrentError):
        parse_magnet("nope")
    with pytest.raises(ValueError):
        parse_magnet("nope")


@pytest.mark.parametrize("value", [b"magnet:?xt=urn:btih:" + V1_HEX.encode(), None, 42])
def test_non_str_input(value: object) -> None:
    with pytest.raises(MagnetError, match="must be a str"):
        parse_magnet(value)  # type: ignore[arg-type]


INVALID_FIELDS: list[tuple[dict[str, object], str]] = [
    ({"trackers": ("",)}, "tracker is empty"),
    ({"trackers": "http://single-string"}, "not a single str"),
    ({"web_seeds": (b"http://w",)}, "must be a str"),
    ({"peers": ("nope",)}, "not host:port"),
    ({"peers": ("1.2.3.4:0",)}, "outside 1..65535"),
    ({"keywords": ("two words",)}, "contains '+' or whitespace"),
    ({"keywords": ("a+b",)}, "contains '+' or whitespace"),
    ({"select_only": ((3, 1),)}, "reversed"),
    ({"select_only": ((-1, 0),)}, "outside 0.."),
    ({"select_only": ((0, MAX_FILE_INDEX + 1),)}, "outside 0.."),
    ({"select_only": ((True, 2),)}, "not an int"),
    ({"select_only": ((1, 2, 3),)}, "not a (first, last) pair"),
    ({"extra_params": (("TR.3", "x"),)}, "shadows a magnet field"),
    ({"extra_params": (("xt", "urn:ed2k:00"),)}, "shadows a magnet field"),
    ({"extra_params": (("", "x"),)}, "name is empty"),
    ({"extra_params": (("a", "b", "c"),)}, "not a (name, value) pair"),
    ({"display_name": "\udc80"}, "lone surrogate"),
    ({"info_hash": V1}, "must be an InfoHash"),
]


@pytest.mark.parametrize(("fields", "reason"), INVALID_FIELDS)
def test_constructor_rejects_what_uri_cannot_write(fields: dict[str, object], reason: str) -> None:
    kwargs: dict[str, object] = {"info_hash": InfoHash(v1=V1), **fields}
    with pytest.raises(MagnetError, match=re.escape(reason)):
        Magnet(**kwargs)  # type: ignore[arg-type]


# --- interop with libtorrent ----------------------------------------------------------


def test_libtorrent_reads_our_uri() -> None:
    lt = pytest.importorskip("libtorrent")
    m = Magnet(
        InfoHash(v1=V1, v2=V2),
        display_name="caf\u00e9 + friends & co",
        trackers=("http://t.example/ann?passkey=a+b&x=1", "udp://u.example:6969/announce"),
        web_seeds=("http://w.example/files/",),
        peers=("10.1.2.3:6881", "[2001:db8::5]:51413"),
        select_only=((1, 2), (4, 4)),
    )
    params = lt.parse_magnet_uri(m.uri())
    assert params.name == m.display_name
    assert list(params.trackers) == list(m.trackers)
    assert list(params.url_seeds) == list(m.web_seeds)
    assert sorted(params.peers) == sorted(m.peer_addresses)
    assert bytes.fromhex(str(params.info_hashes.v1)) == V1
    assert bytes.fromhex(str(params.info_hashes.v2)) == V2
    wanted = frozenset(i for i, prio in enumerate(params.file_priorities) if prio > 0)
    assert wanted == m.selected_files(len(params.file_priorities))


def test_we_read_libtorrents_uri() -> None:
    lt = pytest.importorskip("libtorrent")
    params = lt.add_torrent_params()
    params.info_hashes = lt.info_hash_t(lt.sha1_hash(V1))
    params.name = "a b+c/\u00e9"
    params.trackers = ["http://t.example/a?x=1&y=2", "udp://u.example:1/"]
    params.url_seeds = ["http://w.example/"]
    params.file_priorities = [0, 4, 4, 0, 4]
    m = parse_magnet(lt.make_magnet_uri(params))
    assert m.info_hash == InfoHash(v1=V1)
    assert m.display_name == params.name
    assert m.trackers == tuple(params.trackers)
    assert m.web_seeds == tuple(params.url_seeds)
    assert m.selected_files(5) == frozenset({1, 2, 4})


# --- properties ------------------------------------------------------------------------

_FRAGMENTS = st.sampled_from(
    [
        "xt=urn:btih:",
        "xt=urn:btmh:1220",
        f"xt=urn:btih:{V1_HEX}",
        f"xt=urn:btmh:{V2_MULTIHASH}",
        "dn=",
        "tr=",
        "x.pe=",
        "so=",
        "kt=",
        "ws=",
        "xt.1=",
        "&",
        "=",
        "%",
        "%2",
        "%C3",
        "%FF",
        "+",
        ",",
        "-",
        ":",
        "[",
        "]",
        "::1",
        "1.2.3.4",
        "65535",
        "999999999",
    ]
)
_HOSTILE = st.one_of(
    st.text(),
    st.text(alphabet=st.characters(codec=None, exclude_categories=())),  # includes surrogates
    st.lists(st.one_of(_FRAGMENTS, st.text(max_size=4)), max_size=8).map(
        lambda parts: "magnet:?" + "".join(parts)
    ),
)


@PROPERTY
@given(_HOSTILE)
def test_random_text_raises_only_magnet_error(text: str) -> None:
    try:
        m = parse_magnet(text)
    except MagnetError as exc:
        assert str(exc)
    else:
        # Whatever we accept, we can write back and read again unchanged.
        assert parse_magnet(m.uri()) == m


_KNOWN = {"xt", "dn", "tr", "ws", "xs", "as", "x.pe", "kt", "so"}


def _base_name(key: str) -> str:
    lowered = "".join(c.lower() if "A" <= c <= "Z" else c for c in key)
    match = re.fullmatch(r"(.+)\.[0-9]+", lowered)
    return match.group(1) if match else lowered


_port = st.integers(1, 65535)
_label = st.sampled_from(["a", "b-c", "x_1", "0a", "example", "Z9", "a" * 63])
_hostname = st.lists(_label, min_size=1, max_size=3).map(".".join)
_peer = st.one_of(
    st.builds(lambda n, p: f"{ipaddress.IPv4Address(n)}:{p}", st.integers(0, 2**32 - 1), _port),
    st.builds(lambda n, p: f"[{ipaddress.IPv6Address(n)}]:{p}", st.integers(0, 2**128 - 1), _port),
    st.builds(lambda h, p: f"{h}:{p}", _hostname, _port),
)
# One integer per range (drawing is the slow part of these tests): mostly small
# indices so that ranges overlap and touch and get merged, sometimes huge ones.
_range = st.one_of(
    st.integers(0, 40 * 31 - 1).map(lambda k: (k // 31, k // 31 + k % 31)),
    st.integers(0, MAX_FILE_INDEX).map(lambda lo: (lo, min(lo + 3, MAX_FILE_INDEX))),
)
_nonempty = st.text(min_size=1, max_size=12)
_keyword = _nonempty.filter(lambda k: re.search(r"[\s+]", k) is None)
_extra_key = _nonempty.filter(lambda k: _base_name(k) not in _KNOWN)
_info_hash = st.tuples(st.binary(min_size=52, max_size=52), st.sampled_from(["1", "2", "h"])).map(
    lambda t: InfoHash(v1=None if t[1] == "2" else t[0][:20], v2=None if t[1] == "1" else t[0][20:])
)
_LIST_FIELDS = ("trackers", "web_seeds", "exact_sources", "acceptable_sources")
# One list of (field, value) draws feeds every repeated field: drawing is what
# makes these tests slow, and one list costs far fewer draws than six.
_item = st.one_of(
    st.tuples(st.sampled_from(_LIST_FIELDS), _nonempty),
    st.tuples(st.just("peers"), _peer),
    st.tuples(st.just("keywords"), _keyword),
    st.tuples(st.just("extra_params"), st.tuples(_extra_key, st.text(max_size=6))),
    st.tuples(st.just("select_only"), _range),
)


@st.composite
def _magnets(draw: st.DrawFn) -> tuple[Magnet, list[tuple[int, int]]]:
    """A valid Magnet, plus the ``so`` ranges as drawn (before normalisation)."""
    fields: dict[str, list[Any]] = {
        f: [] for f in (*_LIST_FIELDS, "peers", "keywords", "extra_params", "select_only")
    }
    for field, value in draw(st.lists(_item, max_size=6)):
        fields[field].append(value)
    magnet = Magnet(
        info_hash=draw(_info_hash),
        display_name=draw(st.none() | st.text(max_size=16)),
        **{field: tuple(values) for field, values in fields.items()},
    )
    return magnet, fields["select_only"]


@PROPERTY
@given(_magnets(), st.integers(0, 200))
def test_valid_magnets_round_trip(drawn: tuple[Magnet, list[tuple[int, int]]], n: int) -> None:
    m, spans = drawn
    uri = m.uri()
    assert uri.isascii()
    assert parse_magnet(uri) == m
    # so= ranges: canonical (sorted, disjoint, not adjacent) and selecting
    # exactly what expanding the drawn ranges by hand selects.
    for (_, hi), (lo, _) in zip(m.select_only, m.select_only[1:], strict=False):
        assert lo > hi + 1
    expected = {i for lo, hi in spans for i in range(lo, hi + 1) if i < n}
    assert m.selected_files(n) == (frozenset(expected) if spans else None)
