"""Shipments per second of `tiv batch` on a generated bordereau, for 1 and 2 workers.

    .venv/bin/python bench/batch_throughput.py [--rows 100000] [--workers 1 2] [--seed 7]

Generates the corpus (engine.compliance.corpus), writes it as JSONL, then values it once
per worker count with `run_batch`, the code behind `tiv batch`: reading, valuing, writing
and checkpointing all included.
Checks that every worker count wrote the same bytes (by sha256), and reports the peak
resident memory of the main process and of the largest worker, sampled from /proc during
the run (Linux), and its growth: from the first sample after a tenth of the rows (rules
loaded, every code path warm) to the end, per process (the valuing one: the main process
with 1 worker, each worker with more). Flat memory is a growth of a few MiB however many
rows (try --rows 1000000 --workers 1 for a million valuations in one process).
--repeat runs each worker count several times; the load average is printed with each,
and the CPU seconds spent by the main process and by the workers: on a machine shared
with others (where the kernel may share CPU per session, not per process) the CPU
figures say what the run cost when its wall time says mostly how busy the machine was.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.batch import BatchOptions, run_batch  # noqa: E402
from engine.compliance.corpus import generate  # noqa: E402


def shipments(n: int, seed: int) -> Iterator[dict[str, Any]]:
    """`n` synthetic shipments (engine.compliance.corpus: lanes, currencies, charges)."""
    yield from generate(n, seed)


class _PeakMemory:
    """Samples the resident memory of this process and its children every 0.2 s; `mark`
    (called at a tenth of the rows) takes the baseline the growth is measured from."""

    def __init__(self) -> None:
        self.main = 0
        self.worker = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._baseline: dict[int, int] | None = None
        self._last: dict[int, int] = {}

    def mark(self) -> None:
        if self._baseline is None:
            self._baseline = self._sample()

    def growth(self) -> int:
        """KiB: the largest growth of one process from the mark to its last sample."""
        base = self._baseline or {}
        return max((self._last[pid] - kib for pid, kib in base.items() if pid in self._last),
                   default=0)  # fmt: skip

    def _sample(self) -> dict[int, int]:
        me = os.getpid()
        found = {pid: _rss_kib(pid) for pid in (me, *_children(me))}
        return {pid: kib for pid, kib in found.items() if kib}

    def __enter__(self) -> _PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.wait(0.2):
            sample = self._sample()
            if sample:
                # Workers that ended (the pool shutting down) keep their last sample.
                self._last.update(sample)
            for pid, kib in sample.items():
                if pid == me:
                    self.main = max(self.main, kib // 1024)
                else:
                    self.worker = max(self.worker, kib // 1024)


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass  # gone, or not Linux
    return 0


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as listing:
            return [int(child) for child in listing.read().split()]
    except OSError:
        return []


def _cpu_seconds() -> tuple[float, float]:
    """User + system CPU seconds of this process, and of its children that have ended."""
    me, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                        resource.RUSAGE_CHILDREN))  # fmt: skip
    return me.ru_utime + me.ru_stime, children.ru_utime + children.ru_stime


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=1, help="runs per worker count")
    parser.add_argument(
        "--distinct",
        type=int,
        help="generate this many shipments and repeat them up to --rows (a long bordereau "
        "for the memory figure without the minutes of generating it)",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="tiv-bench-") as folder:
        source = Path(folder) / "bordereau.jsonl"
        started = time.perf_counter()
        distinct = min(args.distinct or args.rows, args.rows)
        generated = Path(folder) / "distinct.jsonl"
        # Streamed to disk and back: the corpus never sits in this process's memory, whose
        # peak is reported below.
        with generated.open("w", encoding="utf-8") as handle:
            for facts in shipments(distinct, args.seed):
                handle.write(json.dumps(facts) + "\n")
        written = 0
        with source.open("wb") as out:
            while written < args.rows:  # --distinct: the generated shipments again and again
                with generated.open("rb") as handle:
                    for line in itertools.islice(handle, args.rows - written):
                        out.write(line)
                        written += 1
        generated.unlink()
        print(
            f"corpus: {args.rows:,} shipments ({distinct:,} distinct), "
            f"{source.stat().st_size / 1e6:.1f} MB, generated in "
            f"{time.perf_counter() - started:.1f} s"
        )
        digests = []
        for workers in args.workers:
            for _ in range(args.repeat):
                output = Path(folder) / f"out-{workers}.jsonl"
                options = BatchOptions(
                    input=source, output=output, policy="standard", workers=workers
                )
                before = os.getloadavg()[0]
                cpu = _cpu_seconds()
                with _PeakMemory() as memory:

                    def progress(done: int, failed: int, memory: _PeakMemory = memory) -> None:
                        if done >= args.rows // 10:
                            memory.mark()

                    summary = run_batch(ROOT, options, progress)
                rate = summary.rows / summary.seconds
                main_cpu, workers_cpu = (b - a for a, b in zip(cpu, _cpu_seconds(), strict=True))
                print(
                    f"workers={workers}: {summary.rows:,} rows ({summary.failed:,} failed) in "
                    f"{summary.seconds:.1f} s = {rate:,.0f} shipments/s; peak RSS main "
                    f"{memory.main} MiB, largest worker {memory.worker} MiB; RSS growth "
                    f"after the first tenth {memory.growth() / 1024:+.1f} MiB; CPU main "
                    f"{main_cpu:.1f} s, workers {workers_cpu:.1f} s; load average "
                    f"{before:.2f} before, {os.getloadavg()[0]:.2f} after"
                )
                digests.append(_sha256(output))
                output.unlink()
        same = len(set(digests)) == 1
        print(f"outputs identical across worker counts: {same}")
        if not same:
            sys.exit(1)


if __name__ == "__main__":
    main()
