"""Who sent the bad data: trust, parole and smart ban, without sockets or clocks.

A piece that fails its hash check says that *someone* among its senders
lied, not who.  Banning only a peer that alone sent failed pieces lets a fast
liar keep poisoning when nearly every piece is shared with an honest (slower)
peer: the honest data is thrown away with the lie, again and again.  So, as
libtorrent does (smart ban, trust points, parole), every failure costs each
of its senders some trust and puts it *on parole*: from then on the engine
gives it only whole pieces on its own (see :mod:`core.engine.picker`), so its next
failure is pinned on it alone, and a failure alone while on parole bans it.
Good pieces earn trust back, and parole ends once the trust is no longer
negative, so an honest peer that merely shared a piece with a liar is back to
normal after a couple of good pieces.

A shared failure costs trust only to senders not yet on parole.  Pieces that
were already in flight, or complete and waiting for their hash, when a peer
went on parole still fail as shared pieces afterwards; counting each of them
again would take an honest co-sender's trust down with the liar's (with a
fast download, half a dozen such pieces banned both honest demo seeders).
On parole, only a failure the peer alone is answerable for counts.

The block-digest evidence is kept as before: for a failed piece with several
senders each 16 KiB block's digest is remembered with its sender; once the
piece passes, exactly the senders whose blocks differ from the good data are
banned, whatever their trust.

The ledger is keyed by whatever the engine uses to recognise a peer across
reconnects (``Client.blame_key``); it takes events in and returns decisions
(:class:`Verdict`), and the engine carries them out.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

#: Trust lost by each sender of a failed piece that others sent parts of too.
SHARED_FAILURE_COST = 2
#: Trust lost by the only sender of a failed piece: the evidence is its alone.
SOLO_FAILURE_COST = 4
#: Trust gained by each sender of a piece that passes.
PASS_GAIN = 1
#: Trust never climbs above this, so a long good record cannot buy many lies.
MAX_TRUST = 8
#: Trust never falls below this (a floor, so a long-banned key cannot go on sinking).
MIN_TRUST = -7
#: Failed pieces named in a ban reason (the most recent ones).
EVIDENCE_SHOWN = 4


@dataclass(slots=True)
class TrustRecord:
    """One peer's standing in one torrent, shared by all its connections.

    ``failed`` counts the failed pieces it sent data for (alone or not);
    ``failed_alone`` those it alone sent; ``evidence`` describes the failures
    (``"12 (alone)"``, ``"7 (with 1 other)"``) for a ban reason.
    """

    trust: int = 0
    failed: int = 0
    failed_alone: int = 0
    passed: int = 0
    on_parole: bool = False
    banned: str | None = None
    evidence: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Ban(Generic[K]):
    """Ban ``who``; ``reason`` names the evidence."""

    who: K
    reason: str


@dataclass(frozen=True, slots=True)
class Verdict(Generic[K]):
    """What the engine must do after a piece was judged.

    ``paroled``: peers that went on parole just now (the engine isolates
    their pieces from everyone else's); ``released``: peers whose parole
    ended; ``bans``: peers to ban, each at most once over the ledger's life.
    """

    bans: tuple[Ban[K], ...] = ()
    paroled: tuple[K, ...] = ()
    released: tuple[K, ...] = ()


def _others(n: int) -> str:
    return f"{n} other" if n == 1 else f"{n} others"


class BlameLedger(Generic[K]):
    """Trust, parole and block evidence of one torrent's peers; see the module docstring."""

    def __init__(self) -> None:
        self._records: dict[K, TrustRecord] = {}
        # piece -> block offset -> [(sender, digest of what it sent)], over failed attempts
        self._failed_blocks: dict[int, dict[int, list[tuple[K, bytes]]]] = {}

    def record(self, who: K) -> TrustRecord:
        """``who``'s record, created (neutral) on first use."""
        rec = self._records.get(who)
        if rec is None:
            rec = self._records[who] = TrustRecord()
        return rec

    def get(self, who: K) -> TrustRecord | None:
        return self._records.get(who)

    def has_evidence(self, piece: int) -> bool:
        """Earlier failed attempts of ``piece`` left block digests to compare against."""
        return piece in self._failed_blocks

    def forget_evidence(self) -> None:
        """Drop the block evidence (a full recheck starts every piece over)."""
        self._failed_blocks.clear()

    def piece_failed(
        self, piece: int, blocks: Mapping[int, K], digests: Mapping[int, bytes]
    ) -> Verdict[K]:
        """``piece`` failed; ``blocks`` maps each block offset to its sender.

        ``digests`` (offset -> digest of the block received) is kept as
        evidence when several peers sent parts, for :meth:`piece_passed`.
        """
        senders = list(dict.fromkeys(blocks.values()))
        solo = len(senders) == 1
        if not solo and digests:
            evidence = self._failed_blocks.setdefault(piece, {})
            for begin, who in blocks.items():
                digest = digests.get(begin)
                if digest is not None:
                    evidence.setdefault(begin, []).append((who, digest))
        bans: list[Ban[K]] = []
        paroled: list[K] = []
        for who in senders:
            rec = self.record(who)
            was_on_parole = rec.on_parole
            rec.failed += 1
            if solo:
                rec.failed_alone += 1
                rec.evidence.append(f"{piece} (alone)")
            else:
                rec.evidence.append(f"{piece} (with {_others(len(senders) - 1)})")
            del rec.evidence[:-EVIDENCE_SHOWN]
            # On parole, a shared failure is no new evidence (see the module docstring).
            cost = SOLO_FAILURE_COST if solo else 0 if was_on_parole else SHARED_FAILURE_COST
            rec.trust = max(MIN_TRUST, rec.trust - cost)
            if not rec.on_parole:
                rec.on_parole = True
                paroled.append(who)
            if rec.banned is not None:
                continue
            failures = f"failed pieces {', '.join(rec.evidence)}"
            if rec.failed > len(rec.evidence):
                failures = f"{rec.failed} failed pieces, last {', '.join(rec.evidence)}"
            if solo and was_on_parole:
                reason = f"{failures}: the last one sent alone while on parole"
            elif solo and rec.failed_alone >= 2:
                reason = f"{failures}: {rec.failed_alone} of them alone"
            else:
                continue
            rec.banned = reason
            bans.append(Ban(who, reason))
        return Verdict(tuple(bans), tuple(paroled))

    def piece_passed(
        self, piece: int, blocks: Mapping[int, K], digests: Mapping[int, bytes]
    ) -> Verdict[K]:
        """``piece`` passed; its senders earn trust, and earlier liars in it are found.

        ``digests`` must hold every block's digest when :meth:`has_evidence`
        said so: the senders of earlier attempts whose blocks differ from
        these are banned.
        """
        released: list[K] = []
        for who in dict.fromkeys(blocks.values()):
            rec = self.record(who)
            rec.passed += 1
            rec.trust = min(MAX_TRUST, rec.trust + PASS_GAIN)
            if rec.on_parole and rec.trust >= 0:
                rec.on_parole = False
                released.append(who)
        bans: list[Ban[K]] = []
        failed = self._failed_blocks.pop(piece, None)
        if failed:
            bad: dict[K, list[int]] = {}
            for begin, senders in sorted(failed.items()):
                good = digests.get(begin)
                for who, digest in senders:
                    if digest != good and begin not in bad.setdefault(who, []):
                        bad[who].append(begin)
            for who, begins in bad.items():
                if not begins:
                    continue
                rec = self.record(who)
                if rec.banned is not None:
                    continue
                offsets = ", ".join(str(b) for b in begins)
                noun = "block" if len(begins) == 1 else "blocks"
                reason = (
                    f"sent corrupt data for piece {piece}: "
                    f"{noun} at {offsets} differed from the good data"
                )
                rec.banned = reason
                bans.append(Ban(who, reason))
        return Verdict(tuple(bans), (), tuple(released))
