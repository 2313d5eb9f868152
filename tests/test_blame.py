"""Trust, parole and smart ban without sockets (core.engine.blame), and the parole picks."""

from __future__ import annotations

from bitarray import bitarray

from core.engine.blame import BlameLedger
from core.engine.picker import CHUNK_SIZE, Picker

GOOD, BAD = b"good", b"bad!"


def blocks(*senders: str) -> dict[int, str]:
    return {i * CHUNK_SIZE: who for i, who in enumerate(senders)}


def test_a_shared_failure_paroles_everyone_and_the_liars_next_solo_failure_bans_it() -> None:
    ledger: BlameLedger[str] = BlameLedger()
    v = ledger.piece_failed(7, blocks("liar", "honest", "liar"), {})
    assert not v.bans and set(v.paroled) == {"liar", "honest"}
    assert ledger.record("honest").on_parole and ledger.record("honest").failed == 1
    # On parole each gets whole pieces: the honest one's pass, the liar's fail alone.
    v = ledger.piece_passed(3, blocks("honest", "honest"), {})
    assert ledger.record("honest").on_parole  # trust -2 + 1: still negative
    v = ledger.piece_passed(4, blocks("honest"), {})
    assert v.released == ("honest",) and not ledger.record("honest").on_parole
    v = ledger.piece_failed(9, blocks("liar", "liar"), {})
    assert [b.who for b in v.bans] == ["liar"]
    assert v.bans[0].reason == (
        "failed pieces 7 (with 1 other), 9 (alone): the last one sent alone while on parole"
    )
    assert ledger.record("liar").banned == v.bans[0].reason
    # Banned once: more evidence does not ban it again.
    assert not ledger.piece_failed(10, blocks("liar"), {}).bans


def test_a_first_solo_failure_is_parole_not_a_ban() -> None:
    ledger: BlameLedger[str] = BlameLedger()
    v = ledger.piece_failed(1, blocks("p", "p"), {})
    assert not v.bans and v.paroled == ("p",)
    assert ledger.record("p").failed_alone == 1


def test_shared_failures_on_parole_never_ban_the_honest_co_senders() -> None:
    """Pieces in flight when the liar was found keep failing as shared pieces: no new evidence.

    Issue 23 asks that no honest peer is ever banned, even one that shared
    pieces with the liar; with a fast download several such pieces fail
    after parole began (the demo's e2e test once banned both honest seeders).
    """
    ledger: BlameLedger[str] = BlameLedger()
    for piece in range(8):
        v = ledger.piece_failed(piece, blocks("liar", "honest1", "honest2"), {})
        assert not v.bans
    for who in ("liar", "honest1", "honest2"):
        rec = ledger.record(who)
        assert rec.on_parole and rec.trust == -2 and rec.failed == 8
    # On parole each gets whole pieces of its own: the liar's next one bans it.
    v = ledger.piece_failed(9, blocks("liar", "liar"), {})
    assert [b.who for b in v.bans] == ["liar"]
    assert "the last one sent alone while on parole" in v.bans[0].reason
    # The honest ones earn their trust back and leave parole.
    for piece in (10, 11):
        ledger.piece_passed(piece, blocks("honest1"), {})
    assert not ledger.record("honest1").on_parole
    assert ledger.record("honest2").banned is None


def test_smart_ban_names_the_blocks_that_differed() -> None:
    ledger: BlameLedger[str] = BlameLedger()
    ledger.piece_failed(5, blocks("a", "b", "a"), {0: GOOD, CHUNK_SIZE: BAD, 2 * CHUNK_SIZE: GOOD})
    assert ledger.has_evidence(5)
    good = {0: GOOD, CHUNK_SIZE: GOOD, 2 * CHUNK_SIZE: GOOD}
    v = ledger.piece_passed(5, blocks("c", "c", "c"), good)
    assert [(b.who, b.reason) for b in v.bans] == [
        ("b", f"sent corrupt data for piece 5: block at {CHUNK_SIZE} differed from the good data")
    ]
    assert not ledger.has_evidence(5)
    assert ledger.record("a").banned is None


def ones(n: int) -> bitarray:
    bits = bitarray(n, endian="big")
    bits.setall(1)
    return bits


def test_a_peer_on_parole_gets_whole_pieces_nobody_else_joins() -> None:
    cpp = 4
    picker = Picker(8, cpp * CHUNK_SIZE, 8 * cpp * CHUNK_SIZE)
    # "honest" starts a piece but asks for only part of it.
    (first,) = {r.piece for r in picker.pick("honest", ones(8), 2)}
    got = picker.pick("suspect", ones(8), 6, exclusive=True)
    assert first not in {r.piece for r in got}  # not a piece someone else touched
    kept = {r.piece for r in got}
    assert all(picker.on_parole(p) == "suspect" for p in kept)
    # Everyone else skips the suspect's pieces, even with room for more.
    for r in picker.pick("honest", ones(8), 40):
        assert r.piece not in kept
    # A block from someone else for the suspect's piece is not taken.
    p = next(iter(kept))
    assert not picker.on_block_received("honest", p, 3 * CHUNK_SIZE, CHUNK_SIZE).useful


def test_isolate_starts_shared_pieces_over_and_keeps_own_ones() -> None:
    cpp = 4
    picker = Picker(4, cpp * CHUNK_SIZE, 4 * cpp * CHUNK_SIZE)
    a = picker.pick("liar", ones(4), 2)  # half of one piece
    b = picker.pick("honest", ones(4), 2)  # the other half of the same piece
    assert {r.piece for r in a} == {r.piece for r in b}
    shared = a[0].piece
    for r in a:
        picker.on_block_received("liar", r.piece, r.begin, r.length)
    own = picker.pick("liar", ones(4), 4)
    cancels = picker.isolate("liar")
    assert sorted((who, r.begin) for who, r in cancels) == sorted(("honest", r.begin) for r in b)
    assert picker.received_chunks(shared) == 0 and picker.unverified_bytes == 0
    assert picker.discarded_bytes == sum(r.length for r in a)  # counted, for the stats
    assert {picker.on_parole(r.piece) for r in own} == {"liar"}


def test_peers_on_parole_do_not_starve_when_only_they_are_left() -> None:
    cpp = 2
    picker = Picker(2, cpp * CHUNK_SIZE, 2 * cpp * CHUNK_SIZE)
    # Someone who then left sent half of piece 0 and half of piece 1.
    for r in picker.pick("gone", ones(2), 4)[::2]:
        picker.on_block_received("gone", r.piece, r.begin, r.length)
    picker.on_peer_gone("gone")
    # Two suspects: each gets a whole piece, its partial data dropped.
    x = picker.pick("x", ones(2), 8, exclusive=True)
    y = picker.pick("y", ones(2), 8, exclusive=True)
    assert len({r.piece for r in x}) == 1 and len(x) == cpp
    assert len({r.piece for r in y}) == 1 and len(y) == cpp
    assert {r.piece for r in x} != {r.piece for r in y}


def test_a_suspect_keeps_a_piece_in_flight_when_only_others_partial_pieces_are_left() -> None:
    """Pieces someone (now gone) half-sent are taken over one after another without a gap.

    A suspect may not mix its data with others', so such pieces start over for
    it; but it must not wait for its last block before getting the next piece,
    or its download crawls at one piece per round trip.
    """
    cpp = 4
    picker = Picker(6, cpp * CHUNK_SIZE, 6 * cpp * CHUNK_SIZE)
    for r in picker.pick("gone", ones(6), 6 * cpp):
        if r.begin == 0:
            picker.on_block_received("gone", r.piece, r.begin, r.length)
    picker.on_peer_gone("gone")
    first = picker.pick("suspect", ones(6), 2 * cpp, exclusive=True)
    assert len(first) >= cpp and len({r.piece for r in first}) * cpp == len(first)
    for r in first[:-1]:
        picker.on_block_received("suspect", r.piece, r.begin, r.length)
    more = picker.pick("suspect", ones(6), 2 * cpp, exclusive=True)
    assert more and {r.piece for r in more}.isdisjoint({r.piece for r in first})
    assert all(picker.on_parole(r.piece) == "suspect" for r in first + more)
