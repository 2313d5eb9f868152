"""Human-readable sizes, rates and durations for command-line output (pure)."""

from __future__ import annotations

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def size(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'``; exact bytes below 1 KiB."""
    if n < 1024:
        return f"{int(n)} B"
    value = float(n)
    for unit in _UNITS[1:]:
        value /= 1024
        if value < 1024 or unit == _UNITS[-1]:
            return f"{value:.1f} {unit}" if value < 100 else f"{value:.0f} {unit}"
    raise AssertionError("unreachable")


def rate(bytes_per_s: float) -> str:
    return f"{size(bytes_per_s)}/s"


def duration(seconds: float | None) -> str:
    """Compact ETA: ``'42s'``, ``'3m05s'``, ``'2h07m'``, ``'3d04h'``; ``'∞'`` when unknown."""
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "\u221e"
    s = int(max(0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def bar(fraction: float, width: int = 30) -> str:
    """A text progress bar of ``width`` cells."""
    fraction = min(1.0, max(0.0, fraction))
    full = int(fraction * width)
    return "#" * full + "-" * (width - full)
