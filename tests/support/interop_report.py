"""Transfer rates measured by interop tests, printed once in pytest's terminal summary.

Interop cases call :func:`record`; ``tests/conftest.py`` prints every line
at the end of the run (also without ``-s``), so a CI log shows one line per
case with its rate next to the pass/fail results.
"""

from __future__ import annotations

MIB = 1 << 20

#: One line per recorded case, in the order the cases ran.
LINES: list[str] = []


def record(case: str, nbytes: int, seconds: float) -> str:
    """Note a case's transfer: ``case``, bytes moved and wall seconds; returns the line."""
    rate = nbytes / seconds / 1e6 if seconds > 0 else float("inf")
    line = f"{case:<36} {nbytes / MIB:7.1f} MiB in {seconds:6.2f} s = {rate:7.1f} MB/s"
    LINES.append(line)
    print(line)
    return line
