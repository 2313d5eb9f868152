"""The BEP 12 announce scheduler, driven by a scripted clock (no sockets, no sleeps)."""

from __future__ import annotations

import math
import random

import pytest

from core.tracker.announcer import BACKOFF_BASE, BACKOFF_MAX, Announcer, backoff_delay
from core.tracker.types import AnnounceEvent, AnnounceResponse, ScrapeResult

pytestmark = pytest.mark.timeout(10)

STARTED = AnnounceEvent.STARTED
NONE = AnnounceEvent.NONE
COMPLETED = AnnounceEvent.COMPLETED
STOPPED = AnnounceEvent.STOPPED


def ok(
    interval: float = 1800, min_interval: float | None = None, peers: int = 0
) -> AnnounceResponse:
    return AnnounceResponse(
        interval=interval,
        min_interval=min_interval,
        peers=tuple(("127.0.0.1", 1000 + i) for i in range(peers)),
        seeders=3,
        leechers=4,
    )


class NoShuffle(random.Random):
    """Keeps tiers in file order so tests can name the first tracker."""

    def shuffle(self, x: list[object]) -> None:  # type: ignore[override]
        pass


def started(tiers: list[list[str]], *, now: float = 0.0, complete: bool = False) -> Announcer:
    a = Announcer(tiers, NoShuffle(), now=now)
    a.start(now, complete=complete)
    return a


# --------------------------------------------------------------------- tiers and order


def test_inactive_until_started() -> None:
    a = Announcer([["http://a/announce"]], NoShuffle(), now=0)
    assert a.next_deadline() is None
    assert a.due(100) == []
    a.start(100, complete=False)
    assert a.next_deadline() == 100
    assert a.due(100) == [("http://a/announce", STARTED)]


def test_each_tier_is_shuffled_once_at_load() -> None:
    urls = [f"http://t{i}/announce" for i in range(8)]
    orders = {tuple(Announcer([urls], random.Random(seed), now=0).urls()) for seed in range(20)}
    assert len(orders) > 1  # shuffled ...
    assert all(sorted(o) == sorted(urls) for o in orders)  # ... never losing or adding one
    a = Announcer([urls], random.Random(5), now=0)
    order = a.urls()
    a.start(0, complete=False)
    a.due(0)
    a.on_success(order[0], ok(), 0)
    assert a.urls() == order  # and never reshuffled afterwards


def test_same_seed_same_order_and_duplicates_dropped() -> None:
    tiers = [["http://a", "http://b", "http://a"], ["http://b", "http://c"]]
    assert (
        Announcer(tiers, random.Random(1), now=0).urls()
        == Announcer(tiers, random.Random(1), now=0).urls()
    )
    assert sorted(Announcer(tiers, random.Random(1), now=0).urls()) == [
        "http://a",
        "http://b",
        "http://c",
    ]


def test_one_announce_per_tier_to_its_first_tracker() -> None:
    a = started([["http://a1", "http://a2"], ["http://b1"], []])
    assert a.due(0) == [("http://a1", STARTED), ("http://b1", STARTED)]
    # In flight: nothing more until answered.
    assert a.due(1) == []
    assert a.next_deadline() is None


def test_failure_tries_next_tracker_of_tier_at_once() -> None:
    a = started([["http://a1", "http://a2", "http://a3"]])
    assert a.due(0) == [("http://a1", STARTED)]
    a.on_failure("http://a1", "connection refused", 1)
    assert a.next_deadline() is not None and a.next_deadline() <= 1  # type: ignore[operator]
    assert a.due(1) == [("http://a2", STARTED)]
    a.on_failure("http://a2", "timed out", 2)
    assert a.due(2) == [("http://a3", STARTED)]


def test_working_tracker_moves_to_front_of_its_tier() -> None:
    a = started([["http://a1", "http://a2", "http://a3"], ["http://b"]])
    a.due(0)
    a.on_failure("http://a1", "down", 0)
    a.on_success("http://b", ok(), 0)
    assert a.due(0) == [("http://a2", STARTED)]
    a.on_success("http://a2", ok(interval=600), 1)
    assert a.tiers() == [["http://a2", "http://a1", "http://a3"], ["http://b"]]
    # The next regular announce goes straight to it, even once a1 could be retried.
    assert a.due(601) == [("http://a2", NONE)]


def test_tier_with_every_tracker_backing_off_waits_for_the_first() -> None:
    a = started([["http://a1", "http://a2"]])
    a.due(0)
    a.on_failure("http://a1", "down", 0)  # retry a1 at 15
    a.due(5)
    a.on_failure("http://a2", "down", 5)  # retry a2 at 20
    assert a.due(10) == []
    assert a.next_deadline() == BACKOFF_BASE
    assert a.due(BACKOFF_BASE) == [("http://a1", STARTED)]


# --------------------------------------------------------------------- events


def test_started_then_regular_announces() -> None:
    a = started([["http://a"]])
    assert a.due(0) == [("http://a", STARTED)]
    a.on_success("http://a", ok(interval=900), 2)
    assert a.next_deadline() == 902
    assert a.due(901) == []
    assert a.due(902) == [("http://a", NONE)]


def test_failed_started_is_retried_as_started() -> None:
    a = started([["http://a"]])
    a.due(0)
    a.on_failure("http://a", "down", 0)
    assert a.due(BACKOFF_BASE) == [("http://a", STARTED)]


def test_completed_is_sent_at_once_to_trackers_told_started() -> None:
    a = started([["http://a"], ["http://b"]])
    a.due(0)
    a.on_success("http://a", ok(interval=1800), 1)
    a.on_success("http://b", ok(interval=1800), 1)
    a.completed(100)
    assert a.next_deadline() == 100
    assert sorted(a.due(100)) == [("http://a", COMPLETED), ("http://b", COMPLETED)]
    a.on_success("http://a", ok(interval=1800), 101)
    a.on_success("http://b", ok(interval=1800), 101)
    assert a.due(1901) == [("http://a", NONE), ("http://b", NONE)]  # once only


def test_no_completed_when_complete_at_start() -> None:
    a = started([["http://a"]], complete=True)
    assert a.due(0) == [("http://a", STARTED)]
    a.completed(0)  # the torrent reports completion while checking: no event
    a.on_success("http://a", ok(interval=600), 1)
    assert a.due(601) == [("http://a", NONE)]


def test_completion_while_started_in_flight_sends_completed_after_it() -> None:
    a = started([["http://a"]])
    assert a.due(0) == [("http://a", STARTED)]
    a.completed(1)
    assert a.due(1) == []  # started still in flight
    a.on_success("http://a", ok(), 2)
    assert a.due(2) == [("http://a", COMPLETED)]


def test_failed_completed_is_retried() -> None:
    a = started([["http://a"]])
    a.due(0)
    a.on_success("http://a", ok(), 0)
    a.completed(10)
    assert a.due(10) == [("http://a", COMPLETED)]
    a.on_failure("http://a", "down", 10)
    assert a.due(10 + BACKOFF_BASE) == [("http://a", COMPLETED)]


def test_fallback_tracker_after_completion_gets_started_not_completed() -> None:
    a = started([["http://a1", "http://a2"]])
    a.due(0)
    a.on_success("http://a1", ok(interval=600), 0)
    a.completed(10)
    assert a.due(10) == [("http://a1", COMPLETED)]
    a.on_failure("http://a1", "down", 11)
    assert a.due(11) == [("http://a2", STARTED)]
    a.on_success("http://a2", ok(interval=600), 12)
    assert a.due(612) == [("http://a2", NONE)]


def test_stop_sends_stopped_to_trackers_told_started_only() -> None:
    a = started([["http://a"], ["http://b"], ["http://c"]])
    a.due(0)
    a.on_success("http://a", ok(), 1)
    a.on_failure("http://b", "down", 1)  # never heard of us
    # c: started still in flight, never answered before: probably unreachable
    assert a.stop(2) == [("http://a", STOPPED)]
    assert not a.active
    assert a.next_deadline() is None
    assert a.due(10_000) == []
    # A late answer to the in-flight "started" changes nothing.
    a.on_success("http://c", ok(), 3)
    assert a.stop(4) == []


def test_stop_includes_in_flight_announce_to_a_tracker_that_answered_before() -> None:
    a = started([["http://a"]])
    a.due(0)
    a.on_success("http://a", ok(interval=600), 0)
    a.stop(1)
    a.start(2, complete=False)
    assert a.due(2) == [("http://a", STARTED)]
    assert a.was_started("http://a")
    assert a.stop(3) == [("http://a", STOPPED)]


def test_resume_sends_started_again() -> None:
    a = started([["http://a"]])
    a.due(0)
    a.on_success("http://a", ok(), 0)
    assert a.stop(10) == [("http://a", STOPPED)]
    a.start(20, complete=True)
    assert a.due(20) == [("http://a", STARTED)]
    a.on_success("http://a", ok(interval=600), 20)
    a.completed(30)  # already complete at restart: nothing to send
    assert a.due(30) == []
    assert a.due(620) == [("http://a", NONE)]


# --------------------------------------------------------------------- intervals and back-off


def test_min_interval_limits_forced_reannounce() -> None:
    a = started([["http://a"]])
    a.due(0)
    a.on_success("http://a", ok(interval=1800, min_interval=300), 100)
    a.reannounce(150)
    assert a.next_deadline() == 400
    assert a.due(399) == []
    assert a.due(400) == [("http://a", NONE)]
    a.on_success("http://a", ok(interval=1800, min_interval=300), 400)
    a.reannounce(1000)  # past min interval: at once
    assert a.due(1000) == [("http://a", NONE)]


def test_min_interval_above_interval_wins() -> None:
    a = started([["http://a"]])
    a.due(0)
    a.on_success("http://a", ok(interval=120, min_interval=600), 0)
    # min interval is capped to the interval, which is then the wait
    assert a.next_deadline() == 120


def test_hostile_intervals_are_clamped() -> None:
    a = started([["http://a"], ["http://b"], ["http://c"]])
    a.due(0)
    a.on_success("http://a", ok(interval=0), 0)
    a.on_success("http://b", ok(interval=math.inf), 0)
    a.on_success("http://c", ok(interval=-5, min_interval=math.nan), 0)
    statuses = {s.url: s for s in a.statuses(0, wall=1000.0)}
    assert statuses["http://a"].next_announce == 1000 + 60
    assert statuses["http://b"].next_announce == 1000 + 24 * 3600
    assert statuses["http://c"].next_announce == 1000 + 60


def test_backoff_doubles_and_is_capped() -> None:
    assert backoff_delay(0) == 0
    assert [backoff_delay(n) for n in range(1, 6)] == [15, 30, 60, 120, 240]
    assert backoff_delay(8) == BACKOFF_MAX == 1800
    assert backoff_delay(1000) == BACKOFF_MAX
    a = started([["http://a"]])
    t = 0.0
    delays = []
    for _ in range(10):
        deadline = a.next_deadline()
        assert deadline is not None
        delays.append(deadline - t)
        t = deadline
        assert a.due(t) == [("http://a", STARTED)]
        a.on_failure("http://a", "down", t)
    assert delays == [0, 15, 30, 60, 120, 240, 480, 960, 1800, 1800]


def test_backoff_never_below_min_interval_and_success_resets_it() -> None:
    a = started([["http://a"]])
    a.due(0)
    a.on_success("http://a", ok(interval=1800, min_interval=900), 0)
    a.due(1800)
    a.on_failure("http://a", "down", 1800)
    assert a.next_deadline() == 1800 + 900
    a.due(2700)
    a.on_success("http://a", ok(interval=1800), 2700)
    assert a.statuses(2700, 0)[0].failures == 0
    a.due(4500)
    a.on_failure("http://a", "down", 4500)
    assert a.next_deadline() == 4500 + BACKOFF_BASE  # new tracker min interval: none


# --------------------------------------------------------------------- statuses


def test_statuses_report_results_in_wall_clock() -> None:
    a = started([["http://a1", "http://a2"], ["http://b"]], now=50)
    a.due(50)
    a.on_failure("http://a1", "connection refused", 51)
    a.on_success("http://b", ok(interval=600, peers=7), 52)
    a.due(51)  # a2 now in flight
    wall = 10_000.0  # wall time at now=60
    st = {s.url: s for s in a.statuses(60, wall)}
    assert st["http://a1"].tier == 0 and st["http://b"].tier == 1
    assert st["http://a1"].last_result == "error"
    assert st["http://a1"].last_error == "connection refused"
    assert st["http://a1"].failures == 1
    assert st["http://a1"].last_announce == wall - 9
    assert st["http://a1"].next_announce == wall + (51 + 15 - 60)
    assert st["http://a2"].extra.get("updating") == "1"
    assert st["http://a2"].next_announce is None
    b = st["http://b"]
    assert (b.last_result, b.peers_received, b.seeders, b.leechers) == ("ok", 7, 3, 4)
    assert b.last_announce == wall - 8
    assert b.next_announce == wall + (52 + 600 - 60)
    assert b.last_error is None
    a.on_scrape("http://b", ScrapeResult(seeders=10, completed=20, leechers=30))
    b = {s.url: s for s in a.statuses(60, wall)}["http://b"]
    assert (b.seeders, b.leechers, b.completed) == (10, 30, 20)


def test_statuses_of_a_stopped_announcer_have_no_next_announce() -> None:
    a = started([["http://a"]])
    a.due(0)
    a.on_success("http://a", ok(), 0)
    a.stop(1)
    (s,) = a.statuses(1, 100)
    assert s.next_announce is None and s.last_result == "ok"


# --------------------------------------------------------------------- editing at runtime


def test_add_tracker_to_new_tier_is_announced_at_once() -> None:
    a = started([["http://a"]])
    a.due(0)
    a.on_success("http://a", ok(), 0)
    assert a.add_tracker("http://new", None)
    assert not a.add_tracker("http://new", 0)  # already there
    assert a.tiers() == [["http://a"], ["http://new"]]
    assert a.next_deadline() == 0
    assert a.due(5) == [("http://new", STARTED)]
    assert [s.tier for s in a.statuses(5, 0)] == [0, 1]


def test_add_tracker_to_existing_tier_is_a_fallback() -> None:
    a = started([["http://a"]])
    a.due(0)
    assert a.add_tracker("http://a2", 0)
    assert a.add_tracker("http://z", 7)
    assert a.tiers() == [["http://a", "http://a2"], ["http://z"]]
    assert a.due(0) == [("http://z", STARTED)]  # tier 0 is in flight already
    a.on_failure("http://a", "down", 1)
    assert a.due(1) == [("http://a2", STARTED)]
    with pytest.raises(ValueError):
        a.add_tracker("http://neg", -1)


def test_add_tracker_before_start_and_to_empty_announcer() -> None:
    a = Announcer([], NoShuffle(), now=0)
    assert a.next_deadline() is None
    a.add_tracker("udp://127.0.0.1:1", None)
    a.start(3, complete=False)
    assert a.due(3) == [("udp://127.0.0.1:1", STARTED)]


def test_remove_tracker_ignores_its_late_answer() -> None:
    a = started([["http://a1", "http://a2"], ["http://b"]])
    a.due(0)
    assert not a.was_started("http://b")  # in flight, but never answered
    assert a.remove_tracker("http://a1")
    assert a.remove_tracker("http://b")
    assert not a.remove_tracker("http://b")
    assert a.tiers() == [["http://a2"]]
    a.on_success("http://a1", ok(), 1)  # ignored
    a.on_failure("http://b", "x", 1)  # ignored
    assert not a.was_started("http://a1")
    # Tier 0 lost its in-flight tracker: it is due again with a2.
    assert a.due(1) == [("http://a2", STARTED)]
    assert a.stop(2) == []  # a2 in flight, never answered
