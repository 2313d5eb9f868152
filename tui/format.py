"""Human-readable sizes, rates, durations and dates for the TUI (pure functions).

Kept apart from the widgets so every table formats the same way and the
rules can be tested without Textual.  Nothing here reads a clock: times are
passed in, which keeps snapshots and screenshots deterministic.
"""

from __future__ import annotations

import math
import time

from core.stats import TorrentState

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def size(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``; binary units, three significant figures."""
    if n < 0 or not math.isfinite(n):
        return "?"
    if n < 1024:
        return f"{int(n)} B"
    value = float(n)
    for unit in _UNITS[1:]:
        value /= 1024
        if value < 1024 or unit == _UNITS[-1]:
            if value >= 100:
                return f"{value:.0f} {unit}"
            if value >= 10:
                return f"{value:.1f} {unit}"
            return f"{value:.2f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def rate(bps: float) -> str:
    """Bytes per second; a dash for (almost) nothing so idle rows stay quiet."""
    if not math.isfinite(bps) or bps < 1:
        return "-"
    return size(bps) + "/s"


def limit(bps: int | None) -> str:
    """A rate limit: ``None`` is unlimited."""
    return "∞" if bps is None else size(bps) + "/s"


def rate_input(bps: int | None) -> str:
    """A limit as typed into a form, read back exactly by :func:`parse_rate` ("" is unlimited).

    The Settings screen and the limits dialog both use it, so one limit
    reads the same in both.
    """
    if bps is None:
        return ""
    if bps % (1 << 20) == 0:
        return f"{bps >> 20} MiB"
    if bps % 1024 == 0:
        return f"{bps >> 10} KiB"
    return f"{bps} B"


def eta(seconds: float | None) -> str:
    """Seconds left as ``"1h02m"``, ``"3m05s"``, ``"42s"``; a dash when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "-"
    s = int(seconds)
    if s >= 100 * 86400:
        return "∞"
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{s:02d}s"
    return f"{s}s"


def percent(fraction: float) -> str:
    """``0.4567`` -> ``"45.7%"``; never shows 100% for an unfinished fraction."""
    fraction = min(max(fraction, 0.0), 1.0)
    if fraction < 1.0:
        return f"{min(fraction * 100, 99.9):.1f}%"
    return "100%"


_BAR_EIGHTHS = " ▏▎▍▌▋▊▉"


def bar(fraction: float, width: int) -> str:
    """A progress bar of ``width`` cells with eighth-cell resolution."""
    fraction = min(max(fraction, 0.0), 1.0)
    eighths = round(fraction * width * 8)
    full, part = divmod(eighths, 8)
    out = "█" * full
    if full < width:
        out += _BAR_EIGHTHS[part] + " " * (width - full - 1)
    return out


def ratio(value: float) -> str:
    if not math.isfinite(value):
        return "∞"
    return f"{value:.2f}"


def date(timestamp: float | None) -> str:
    """Local date and minute of a wall-clock time, e.g. ``"2024-05-01 13:07"``."""
    if timestamp is None or not math.isfinite(timestamp) or timestamp <= 0:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


#: How each torrent state reads in the table (short, lower case, no jargon).
STATE_LABELS = {
    TorrentState.FETCHING_METADATA: "metadata",
    TorrentState.CHECKING: "checking",
    TorrentState.DOWNLOADING: "downloading",
    TorrentState.SEEDING: "seeding",
    TorrentState.PAUSED: "paused",
    TorrentState.ERROR: "error",
}


def state(value: TorrentState) -> str:
    return STATE_LABELS.get(value, str(value))


def parse_rate(text: str) -> int | None:
    """Parse a rate limit typed by a user: ``""``/``0``/``"unlimited"`` is None.

    Accepts a plain number of KiB/s, or a number with a unit (``B``, ``K``,
    ``KiB``, ``M``, ``MiB``, ``G``, optionally followed by ``/s``).  Raises
    ``ValueError`` with a message meant for the user.
    """
    t = text.strip().lower().removesuffix("/s").strip()
    if t in ("", "0", "none", "unlimited", "off", "∞"):
        return None
    units = {
        "b": 1,
        "k": 1024,
        "kb": 1024,
        "kib": 1024,
        "m": 1 << 20,
        "mb": 1 << 20,
        "mib": 1 << 20,
        "g": 1 << 30,
        "gb": 1 << 30,
        "gib": 1 << 30,
    }
    number = t.rstrip("abcdefghijklmnopqrstuvwxyz ")
    unit = t[len(number) :].strip()
    if not number.strip():
        raise ValueError(f"{text!r} is not a rate (try 500 KiB or 2 MiB)")
    if unit and unit not in units:
        raise ValueError(f"unknown unit {unit!r}: use B, KiB, MiB or GiB")
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"{text!r} is not a rate (try 500 KiB or 2 MiB)") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{text!r} is not a rate (try 500 KiB or 2 MiB)")
    result = int(value * units[unit or "kib"])
    if result <= 0:
        return None
    return result
