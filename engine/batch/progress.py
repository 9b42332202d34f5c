"""The one progress bar of the long verbs (batch, impact, corpus): tqdm on a terminal.

It shows count, percent, rate and ETA on stderr, and nothing at all when stderr is not a
terminal (a log file or a pipe gets the summary line only). The bar starts when the work
does, at the first update, and counts from there: rows an earlier run already did (a
resumed batch) are neither counted in its rate nor in the summary's, so the two agree.
"""

from __future__ import annotations

import sys
from typing import Never, TextIO

from tqdm import tqdm

__all__ = ["ProgressBar", "is_terminal"]


def is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class ProgressBar:
    """`label:  45%|████▌     | 45,000/100,000 [00:15<00:18, 3,020.00 rows/s]`."""

    def __init__(
        self,
        label: str,
        total: int,
        *,
        unit: str = "row",
        stream: TextIO | None = None,
        enabled: bool | None = None,
    ) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.stream = stream or sys.stderr
        self.enabled = is_terminal(self.stream) if enabled is None else enabled
        self._bar: tqdm[Never] | None = None

    def update(self, done: int, failed: int | None = None) -> None:
        """`done` of `total` finished (and `failed` of them, where that is counted)."""
        if not self.enabled:
            return
        bar = self._bar
        if bar is None:
            # smoothing=0: the rate shown is the average since the start, as in the summary.
            bar = self._bar = tqdm(
                total=self.total,
                initial=done,
                desc=self.label,
                unit=self.unit,
                file=self.stream,
                smoothing=0,
                mininterval=0.1,
                dynamic_ncols=True,
            )
        if failed is not None:
            bar.set_postfix_str(f"failed {failed:,}", refresh=False)
        bar.update(done - bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
