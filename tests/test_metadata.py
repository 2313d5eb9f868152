"""BEP 9 metadata exchange: MetadataFetcher and MetadataServer on a scripted clock."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.engine.metadata import (
    MAX_MISSES,
    METADATA_PIECE_SIZE,
    METADATA_SIZE_LIMIT,
    BlockResult,
    MetadataFetcher,
    MetadataServer,
)
from core.errors import RemoteProtocolError
from core.formats.bencoding import encode
from core.formats.info import parse_info
from core.types import InfoHash
from core.wire.extensions import (
    MetadataData,
    MetadataReject,
    MetadataRequest,
    decode_metadata_message,
    encode_metadata_message,
)

EXAMPLES = int(os.environ.get("HYPOTHESIS_EXAMPLES", "5000"))
B = METADATA_PIECE_SIZE


def make_info(num_pieces: int = 2600, name: bytes = b"payload") -> bytes:
    """A valid v1 info dict; 2600 piece hashes make it 4 metadata pieces (~51 KB)."""
    pieces = b"".join(hashlib.sha1(i.to_bytes(4, "big")).digest() for i in range(num_pieces))
    return encode(
        {b"name": name, b"piece length": 16384, b"length": num_pieces * 16384, b"pieces": pieces}
    )


RAW = make_info()
SIZE = len(RAW)
NPIECES = -(-SIZE // B)
IH = InfoHash(v1=hashlib.sha1(RAW).digest())


def block(raw: bytes, piece: int) -> bytes:
    return raw[piece * B : (piece + 1) * B]


# An answer: ("data", bytes), ("reject",), or None (never answers).
Behaviour = Callable[[int], tuple[str, bytes] | tuple[str] | None]


def honest(raw: bytes = RAW) -> Behaviour:
    return lambda piece: ("data", block(raw, piece))


def corrupt(raw: bytes = RAW) -> Behaviour:
    return lambda piece: ("data", bytes(len(block(raw, piece))))


def rejecter() -> Behaviour:
    return lambda piece: ("reject",)


def mute() -> Behaviour:
    return lambda piece: None


def run(
    fetcher: MetadataFetcher[str],
    peers: dict[str, Behaviour],
    *,
    now: float = 0.0,
    until: float = 300.0,
    size: int = SIZE,
) -> tuple[float, dict[str, list[int]], list[BlockResult]]:
    """Drive ``fetcher`` the way the engine will: pump requests, answer, jump to deadlines.

    Returns the final clock, which pieces each peer was asked for, and every
    on_data result.
    """
    asked: dict[str, list[int]] = {key: [] for key in peers}
    results: list[BlockResult] = []
    while not fetcher.done and now <= until:
        progressed = False
        fetcher.timeouts(now)
        for key, behaviour in peers.items():
            for piece in fetcher.requests_for(key, now):
                progressed = True
                asked[key].append(piece)
                answer = behaviour(piece)
                if answer is None:
                    continue
                if len(answer) == 1:
                    fetcher.on_reject(key, piece, now)
                else:
                    results.append(fetcher.on_data(key, piece, size, answer[1], now))
        if not progressed:
            deadline = fetcher.next_deadline()
            if deadline is None:
                break
            now = max(now, deadline)
    return now, asked, results


# --- fetching --------------------------------------------------------------------


def test_parallel_fetch_from_three_peers() -> None:
    assert NPIECES == 4 and SIZE % B  # the last piece is short
    fetcher: MetadataFetcher[str] = MetadataFetcher(IH, now=0.0)
    for key in "abc":
        assert fetcher.add_peer(key, SIZE)
    assert fetcher.size == SIZE and fetcher.num_pieces == NPIECES
    # One request per peer at first, all different: the fetch is parallel.
    first = {key: fetcher.requests_for(key, 0.0) for key in "abc"}
    assert sorted(p for ps in first.values() for p in ps) == [0, 1, 2]
    assert all(len(ps) == 1 for ps in first.values())
    assert fetcher.requests_for("a", 0.0) == []  # window of one until it delivers
    results = [fetcher.on_data(k, ps[0], SIZE, block(RAW, ps[0]), 0.1) for k, ps in first.items()]
    assert results == [BlockResult.ACCEPTED] * 3
    # A peer that delivered may have two in flight now; only piece 3 is left.
    assert fetcher.requests_for("a", 0.2) == [3]
    assert fetcher.requests_for("b", 0.2) == []
    assert fetcher.on_data("a", 3, SIZE, block(RAW, 3), 0.3) is BlockResult.COMPLETE
    assert fetcher.done and fetcher.result() == RAW
    info, info_hash = parse_info(fetcher.result() or b"")
    assert info_hash == IH and info.name == "payload"
    assert fetcher.requests_for("c", 1.0) == [] and fetcher.next_deadline() is None
    assert fetcher.distrusted == frozenset()


def test_fast_peer_window_grows_to_the_cap() -> None:
    raw = make_info(20000)  # 25 metadata pieces
    ih = InfoHash(v1=hashlib.sha1(raw).digest())
    fetcher: MetadataFetcher[str] = MetadataFetcher(ih, now=0.0, max_window=4)
    fetcher.add_peer("a", len(raw))
    windows = []
    for step in range(8):
        reqs = fetcher.requests_for("a", float(step))
        windows.append(len(reqs))
        for piece in reqs:
            fetcher.on_data("a", piece, len(raw), block(raw, piece), float(step))
    # One more per piece delivered (so it doubles per round trip), capped at 4.
    assert windows[:5] == [1, 2, 4, 4, 4]
    run(fetcher, {"a": honest(raw)}, now=10.0, size=len(raw))
    assert fetcher.result() == raw


def test_reject_moves_the_piece_to_another_peer_and_backs_off() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(IH, now=0.0, backoff=5.0)
    fetcher.add_peer("a", SIZE)
    fetcher.add_peer("b", SIZE)
    assert fetcher.requests_for("a", 0.0) == [0]
    assert fetcher.requests_for("b", 0.0) == [1]
    fetcher.on_reject("a", 0, 0.5)
    assert fetcher.on_data("b", 1, SIZE, block(RAW, 1), 0.6) is BlockResult.ACCEPTED
    assert fetcher.requests_for("b", 0.6) == [0, 2]  # the rejected piece first
    assert fetcher.requests_for("a", 1.0) == []  # backing off
    assert fetcher.next_deadline() == pytest.approx(5.5)
    assert fetcher.requests_for("a", 5.5) == [3]
    fetcher.on_reject("a", 0, 6.0)  # a reject for something it was not asked: ignored
    assert fetcher.requests_for("b", 6.0) == []


def test_timeout_moves_the_piece_and_a_late_answer_still_counts() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(IH, now=0.0, request_timeout=10.0)
    fetcher.add_peer("slow", SIZE)
    fetcher.add_peer("b", SIZE)
    assert fetcher.requests_for("slow", 0.0) == [0]
    assert fetcher.requests_for("b", 0.0) == [1]
    assert fetcher.on_data("b", 1, SIZE, block(RAW, 1), 1.0) is BlockResult.ACCEPTED
    assert fetcher.requests_for("b", 1.0) == [2, 3]
    assert fetcher.next_deadline() == 10.0
    assert fetcher.timeouts(9.9) == []
    assert fetcher.timeouts(10.0) == [("slow", 0)]
    assert fetcher.timeouts(10.0) == []
    fetcher.on_data("b", 2, SIZE, block(RAW, 2), 10.0)
    assert fetcher.requests_for("b", 10.0) == [0]  # re-requested elsewhere
    assert fetcher.requests_for("slow", 10.0) == []  # and the slow one backs off
    # The slow peer's answer arrives first after all: taken; b's copy is then moot.
    assert fetcher.on_data("slow", 0, SIZE, block(RAW, 0), 11.0) is BlockResult.ACCEPTED
    assert fetcher.on_data("b", 0, SIZE, block(RAW, 0), 11.5) is BlockResult.IGNORED
    assert fetcher.on_data("b", 3, SIZE, block(RAW, 3), 12.0) is BlockResult.COMPLETE
    assert fetcher.result() == RAW


def test_mute_peer_does_not_stall_the_fetch() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(IH, now=0.0)
    for key in ("mute", "a"):
        fetcher.add_peer(key, SIZE)
    now, asked, _ = run(fetcher, {"mute": mute(), "a": honest()})
    assert fetcher.result() == RAW
    assert now <= 10.0  # one request timeout at most
    assert len(asked["mute"]) == 1


def test_wrong_hash_distrusts_every_contributor_then_honest_peers_finish() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(IH, now=0.0)
    fetcher.add_peer("liar", SIZE)
    fetcher.add_peer("h1", SIZE)
    _, asked, results = run(fetcher, {"liar": corrupt(), "h1": honest()})
    assert asked["liar"] and asked["h1"]  # both contributed to the bad whole
    assert results[-1] is BlockResult.HASH_FAILED and not fetcher.done
    assert fetcher.failures == 1
    assert fetcher.distrusted == {"liar", "h1"}
    assert fetcher.pieces_have == 0  # the fetch starts over
    assert fetcher.requests_for("liar", 100.0) == [] and fetcher.requests_for("h1", 100.0) == []
    assert fetcher.add_peer("liar", SIZE) is False  # a new handshake does not help
    # A peer that took no part in the failed whole finishes it.
    assert fetcher.add_peer("h2", SIZE)
    _, asked, _ = run(fetcher, {"liar": corrupt(), "h1": honest(), "h2": honest()}, now=100.0)
    assert fetcher.result() == RAW
    assert not asked["liar"] and not asked["h1"]
    assert sorted(asked["h2"]) == list(range(NPIECES))
    # Data from a distrusted peer is never stored.
    assert fetcher.on_data("liar", 0, SIZE, bytes(B), 200.0) is BlockResult.IGNORED


def test_untouched_peers_are_not_distrusted() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(IH, now=0.0)
    for key in ("liar", "idle"):
        fetcher.add_peer(key, SIZE)
    # Only the liar is pumped: "idle" never contributes.
    run(fetcher, {"liar": corrupt()})
    assert fetcher.distrusted == {"liar"}
    run(fetcher, {"idle": honest()}, now=50.0)
    assert fetcher.result() == RAW


def test_v2_only_and_hybrid_verification() -> None:
    v2 = InfoHash(v2=hashlib.sha256(RAW).digest())
    fetcher: MetadataFetcher[str] = MetadataFetcher(v2, now=0.0)
    fetcher.add_peer("a", SIZE)
    run(fetcher, {"a": honest()})
    assert fetcher.result() == RAW
    # Hybrid: the SHA-1 matches but the SHA-256 does not -> failure.
    hybrid = InfoHash(v1=IH.v1, v2=hashlib.sha256(b"something else").digest())
    fetcher = MetadataFetcher(hybrid, now=0.0)
    fetcher.add_peer("a", SIZE)
    _, _, results = run(fetcher, {"a": honest()})
    assert results[-1] is BlockResult.HASH_FAILED and fetcher.distrusted == {"a"}
    both = InfoHash(v1=IH.v1, v2=hashlib.sha256(RAW).digest())
    fetcher = MetadataFetcher(both, now=0.0)
    fetcher.add_peer("a", SIZE)
    run(fetcher, {"a": honest()})
    assert fetcher.result() == RAW


@pytest.mark.parametrize("size", [METADATA_SIZE_LIMIT + 1, 1 << 40, 0, -5, True])
def test_unusable_metadata_size_is_ignored_and_allocates_nothing(size: int) -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(IH, now=0.0)
    assert fetcher.add_peer("huge", size) is False
    assert fetcher.size is None and fetcher.requests_for("huge", 0.0) == []
    assert fetcher.on_data("huge", 0, size, b"x", 0.0) is BlockResult.IGNORED
    assert fetcher.allocated == 0 and fetcher.next_deadline() is None
    # It does not disturb a fetch with an honest peer either.
    fetcher.add_peer("a", SIZE)
    assert fetcher.add_peer("huge", size) is False
    run(fetcher, {"a": honest(), "huge": honest()})
    assert fetcher.result() == RAW


def test_buffer_is_allocated_only_when_data_arrives() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(IH, now=0.0)
    fetcher.add_peer("a", METADATA_SIZE_LIMIT)  # an honest-looking maximum
    assert fetcher.allocated == 0  # announcing costs us nothing
    assert fetcher.num_pieces == METADATA_SIZE_LIMIT // B
    fetcher.add_peer("b", SIZE)
    fetcher.add_peer("c", SIZE)  # outvoted: the assembly restarts at SIZE
    assert fetcher.size == SIZE
    (piece,) = fetcher.requests_for("b", 0.0)
    fetcher.on_data("b", piece, SIZE, block(RAW, piece), 0.0)
    assert fetcher.allocated == SIZE
    run(fetcher, {"b": honest(), "c": honest()})
    assert fetcher.result() == RAW and fetcher.allocated == 0


def test_size_majority_wins_over_a_liar_heard_first() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(IH, now=0.0)
    fetcher.add_peer("liar", SIZE + 123)
    assert fetcher.size == SIZE + 123
    fetcher.add_peer("h1", SIZE)
    assert fetcher.size == SIZE + 123  # a tie keeps the first
    fetcher.add_peer("h2", SIZE)
    assert fetcher.size == SIZE
    _, asked, _ = run(fetcher, {"liar": corrupt(), "h1": honest(), "h2": honest()})
    assert fetcher.result() == RAW and not asked["liar"]


def test_liar_size_that_never_answers_loses_its_vote() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(IH, now=0.0, backoff=1.0)
    fetcher.add_peer("liar", SIZE * 2)
    fetcher.add_peer("h1", SIZE)
    assert fetcher.size == SIZE * 2
    now, asked, _ = run(fetcher, {"liar": mute(), "h1": honest()})
    assert fetcher.result() == RAW
    assert len(asked["liar"]) == MAX_MISSES
    assert now < 40.0  # three timeouts and two short back-offs


def test_liar_size_that_answers_gets_distrusted() -> None:
    big = SIZE + 3 * B
    fetcher: MetadataFetcher[str] = MetadataFetcher(IH, now=0.0)
    fetcher.add_peer("liar", big)
    fetcher.add_peer("h1", SIZE)
    # The liar is asked alone for its size; its garbage fails the hash.
    _, _, results = run(fetcher, {"liar": corrupt(bytes(big))}, size=big)
    assert BlockResult.HASH_FAILED in results and fetcher.distrusted == {"liar"}
    assert fetcher.size == SIZE
    run(fetcher, {"liar": corrupt(bytes(big)), "h1": honest()}, now=100.0)
    assert fetcher.result() == RAW


def test_out_of_range_and_inconsistent_data_are_invalid() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(IH, now=0.0)
    for key in ("a", "b", "c", "d"):
        fetcher.add_peer(key, SIZE)
    assert fetcher.on_data("a", NPIECES, SIZE, b"x", 0.0) is BlockResult.INVALID
    assert fetcher.on_data("b", 10**6, SIZE, b"x", 0.0) is BlockResult.INVALID
    (piece,) = fetcher.requests_for("c", 0.0)
    assert fetcher.on_data("c", piece, SIZE + 1, block(RAW, piece), 0.0) is BlockResult.INVALID
    # Such peers are not asked again; their announcement no longer counts.
    assert fetcher.requests_for("a", 100.0) == [] and fetcher.requests_for("c", 100.0) == []
    (piece,) = fetcher.requests_for("d", 0.0)
    assert fetcher.on_data("d", piece, SIZE, block(RAW, piece)[:-1], 0.0) is BlockResult.INVALID
    assert fetcher.pieces_have == 0
    assert fetcher.requests_for("d", 0.0) == []  # backs off after a short block
    assert fetcher.size == SIZE


def test_unrequested_and_duplicate_data_are_ignored() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(IH, now=0.0)
    fetcher.add_peer("a", SIZE)
    assert fetcher.on_data("a", 2, SIZE, block(RAW, 2), 0.0) is BlockResult.IGNORED
    assert fetcher.on_data("stranger", 0, SIZE, block(RAW, 0), 0.0) is BlockResult.IGNORED
    assert fetcher.pieces_have == 0 and fetcher.allocated == 0
    (piece,) = fetcher.requests_for("a", 0.0)
    assert fetcher.on_data("a", piece, SIZE, block(RAW, piece), 0.0) is BlockResult.ACCEPTED
    assert fetcher.on_data("a", piece, SIZE, block(RAW, piece), 0.0) is BlockResult.IGNORED
    assert fetcher.pieces_have == 1


def test_peer_that_only_rejects() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(IH, now=0.0, backoff=5.0)
    fetcher.add_peer("no", SIZE)
    now, asked, _ = run(fetcher, {"no": rejecter()}, until=60.0)
    assert not fetcher.done
    # Asked at most once per back-off period, never in a tight loop.
    assert 10 <= len(asked["no"]) <= 60.0 / 5.0 + 1
    fetcher.add_peer("yes", SIZE)
    run(fetcher, {"no": rejecter(), "yes": honest()}, now=now)
    assert fetcher.result() == RAW


def test_peer_gone_frees_its_requests() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(IH, now=0.0)
    fetcher.add_peer("a", SIZE)
    fetcher.add_peer("b", SIZE)
    assert fetcher.requests_for("a", 0.0) == [0]
    fetcher.on_peer_gone("a")
    assert fetcher.requests_for("b", 0.0) == [0]
    assert fetcher.on_data("a", 0, SIZE, block(RAW, 0), 0.0) is BlockResult.IGNORED
    fetcher.on_peer_gone("nobody")  # harmless


def test_changed_size_on_a_second_handshake() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(IH, now=0.0)
    fetcher.add_peer("a", SIZE)
    assert fetcher.requests_for("a", 0.0) == [0]
    assert fetcher.add_peer("a", SIZE + 1)
    assert fetcher.size == SIZE + 1 and fetcher.num_pieces == NPIECES
    # An answer carrying the size it no longer announces contradicts it.
    assert fetcher.on_data("a", 0, SIZE, block(RAW, 0), 0.0) is BlockResult.INVALID
    assert fetcher.add_peer("a", 1 << 40) is False  # an unusable size drops the peer
    assert fetcher.requests_for("a", 0.0) == []


# --- the codec feeding the state machines: fuzz -----------------------------------


_piece = st.integers(-1, NPIECES + 1)
_structured = st.one_of(
    st.builds(MetadataRequest, _piece),
    st.builds(MetadataReject, _piece),
    st.builds(
        MetadataData,
        _piece,
        st.sampled_from([SIZE, SIZE + 1, 1, B]),
        st.sampled_from([b"", b"x", bytes(B), bytes(SIZE - (NPIECES - 1) * B)]),
    ),
).map(encode_metadata_message)
# Raw bytes, valid messages with hostile values, and valid messages with a byte flipped.
_payload = st.one_of(
    st.binary(max_size=40),
    _structured,
    st.tuples(_structured, st.integers(0, 60), st.integers(0, 255)).map(
        lambda t: t[0][: t[1]] + bytes([t[2]]) + t[0][t[1] + 1 :]
    ),
)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), _payload), min_size=1, max_size=4))
def test_fuzz_metadata_messages_through_fetcher_and_server(
    messages: list[tuple[str, bytes]],
) -> None:
    """Random ut_metadata payloads: only RemoteProtocolError, never a crash or a bad result."""
    fetcher: MetadataFetcher[str] = MetadataFetcher(IH, now=0.0)
    server: MetadataServer[str] = MetadataServer(RAW)
    for key in "abc":
        fetcher.add_peer(key, SIZE)
        fetcher.requests_for(key, 0.0)
    for t, (key, payload) in enumerate(messages):
        try:
            msg = decode_metadata_message(payload)
        except RemoteProtocolError:
            continue
        if isinstance(msg, MetadataRequest):
            answer = server.handle(key, msg, float(t))
            assert isinstance(answer, MetadataData | MetadataReject)
            assert decode_metadata_message(encode_metadata_message(answer)) == answer
        elif isinstance(msg, MetadataReject):
            fetcher.on_reject(key, msg.piece, float(t))
        else:
            fetcher.on_data(key, msg.piece, msg.total_size, msg.data, float(t))
        fetcher.timeouts(float(t))
    assert fetcher.result() is None  # random bytes never pass for the info dict
    assert fetcher.allocated in (0, SIZE)


@settings(max_examples=max(100, EXAMPLES // 10), deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["add", "gone", "pump", "reject", "tick"]),
            st.sampled_from("abcd"),
            st.integers(0, NPIECES),
        ),
        max_size=40,
    ),
)
def test_fuzz_operation_sequences(ops: list[tuple[str, str, int]]) -> None:
    """Any order of engine calls keeps the fetcher consistent, and honest peers then finish."""
    fetcher: MetadataFetcher[str] = MetadataFetcher(IH, now=0.0, backoff=1.0)
    now = 0.0
    sizes = {"a": SIZE, "b": SIZE, "c": SIZE + 1, "d": 1 << 30}
    for op, key, piece in ops:
        now += 0.5
        if op == "add":
            fetcher.add_peer(key, sizes[key])
        elif op == "gone":
            fetcher.on_peer_gone(key)
        elif op == "pump":
            for p in fetcher.requests_for(key, now):
                assert 0 <= p < (fetcher.num_pieces or 1)
                if key in "ab":
                    fetcher.on_data(key, p, SIZE, block(RAW, p), now)
        elif op == "reject":
            fetcher.on_reject(key, piece, now)
        else:
            fetcher.timeouts(now)
        deadline = fetcher.next_deadline()
        assert deadline is None or deadline >= 0
    assert fetcher.distrusted == frozenset()  # only honest data was ever delivered
    fetcher.add_peer("a", SIZE)
    fetcher.add_peer("b", SIZE)
    fetcher.on_peer_gone("c")
    run(fetcher, {"a": honest(), "b": honest()}, now=now, until=now + 300)
    assert fetcher.result() == RAW


# --- serving ------------------------------------------------------------------------


def test_server_serves_every_piece_and_rejects_missing_ones() -> None:
    server: MetadataServer[str] = MetadataServer(RAW, burst=100)
    assert server.metadata_size == SIZE and server.num_pieces == NPIECES
    out = b""
    for piece in range(NPIECES):
        answer = server.handle("p", MetadataRequest(piece), 0.0)
        assert isinstance(answer, MetadataData) and answer.total_size == SIZE
        assert len(answer.data) == (B if piece < NPIECES - 1 else SIZE - (NPIECES - 1) * B)
        out += answer.data
    assert out == RAW
    assert server.handle("p", MetadataRequest(NPIECES), 0.0) == MetadataReject(NPIECES)
    assert server.stats.served == NPIECES and server.stats.rejected_invalid == 1


def test_server_and_fetcher_together() -> None:
    server: MetadataServer[str] = MetadataServer(RAW)
    fetcher: MetadataFetcher[str] = MetadataFetcher(IH, now=0.0)
    fetcher.add_peer("seed", server.metadata_size)

    def ask(piece: int) -> tuple[str, bytes] | tuple[str]:
        wire = encode_metadata_message(server.handle("leech", MetadataRequest(piece), 0.0))
        msg = decode_metadata_message(wire)
        return ("data", msg.data) if isinstance(msg, MetadataData) else ("reject",)

    run(fetcher, {"seed": ask})
    assert fetcher.result() == RAW


def test_server_rate_limit_on_a_scripted_clock() -> None:
    server: MetadataServer[str] = MetadataServer(RAW, max_requests_per_second=2.0, burst=4)

    def served(key: str, now: float, n: int = 1) -> int:
        answers = [server.handle(key, MetadataRequest(i % NPIECES), now) for i in range(n)]
        return sum(isinstance(a, MetadataData) for a in answers)

    assert served("a", 0.0, 10) == 4  # the burst
    assert served("b", 0.0, 3) == 3  # other peers have their own budget
    assert served("a", 0.4) == 0  # 0.8 of a token
    assert served("a", 0.5) == 1  # one token after 0.5 s at 2/s
    assert served("a", 0.5) == 0
    assert served("a", 2.5, 10) == 4  # refilled, but never above the burst
    assert served("a", 1000.0, 10) == 4
    assert server.stats.rejected_rate == 6 + 1 + 1 + 6 + 6
    assert server.stats.rejected_invalid == 0


def test_server_remembers_a_bounded_number_of_peers() -> None:
    server: MetadataServer[int] = MetadataServer(RAW, burst=1, max_peers=10)
    for key in range(1000):
        server.handle(key, MetadataRequest(0), 0.0)
    assert server.tracked_peers == 10
    # An evicted peer starts over with a full burst; a remembered one does not.
    assert isinstance(server.handle(0, MetadataRequest(0), 0.0), MetadataData)
    assert isinstance(server.handle(999, MetadataRequest(0), 0.0), MetadataReject)
    server.forget(999)
    assert isinstance(server.handle(999, MetadataRequest(0), 0.0), MetadataData)


def test_server_refuses_empty_metadata() -> None:
    with pytest.raises(ValueError):
        MetadataServer(b"")
