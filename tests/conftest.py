"""Shared test settings.

Hypothesis example counts come from HYPOTHESIS_EXAMPLES (CI sets >= 5000) so
property tests run the same code locally with fewer examples when wanted.
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    max_examples=int(os.environ.get("HYPOTHESIS_EXAMPLES", "5000")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("default")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The interop cases' transfer rates, one line each (see tests/support/interop_report)."""
    from tests.support.interop_report import LINES

    if LINES:
        terminalreporter.section("interop transfer rates")
        for line in LINES:
            terminalreporter.write_line(line)
