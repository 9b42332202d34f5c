"""Time spent making, once, what every later valuation reuses: not a valuation's own work.

In: builders that run on first use (a pack's generated straight lines and evaluation plan,
a facts reference's compiled validators) report the time they took. Out: `spent_ns`, the
process's running total, which `engine.api` reads before and after a valuation.

A valuation's time budget (`value(..., budget=)`, `tiv serve --valuation-budget`) is for
its own work. Whichever valuation comes first to a pack or to a kind of facts would
otherwise pay the milliseconds of making these, and a tight budget would refuse it for
that alone (a service's first batch after a start or reload, say). So the time they took
while a valuation ran is added to its deadline. The total is per process, not per thread:
a valuation running while another thread makes something gets that time too, which only
ever makes a budget more lenient, for as long as the making took.
"""

from __future__ import annotations

import time

spent_ns = 0  # nanoseconds spent making first-use state in this process, all threads


def made(started_ns: int) -> None:
    """Count the time since `started_ns` (time.monotonic_ns) as first-use making."""
    global spent_ns
    spent_ns += time.monotonic_ns() - started_ns


def credited(deadline: int | None, since: int) -> int | None:
    """`deadline` moved later by the first-use making done since `spent_ns` was `since`."""
    return None if deadline is None else deadline + spent_ns - since
