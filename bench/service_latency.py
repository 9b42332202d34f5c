"""Open-loop latency and batch throughput of `tiv serve`, measured with `hey`.

    .venv/bin/python bench/service_latency.py [--rates 250 500 750 1000] [--duration 10]
                                              [--workers 1] [--batch-workers 2]
                                              [--batch-size 500] [--batch-clients 4]
                                              [--trace] [--skip-batch] [--skip-single]

Needs `hey` (Debian and Ubuntu: `apt-get install hey`); it stops with that message when
`hey` is missing. Starts its own server on a free 127.0.0.1 port (open mode, loopback
only) and stops it at the end; nothing leaves the machine.

1. Single valuations at fixed request rates (open loop): for each rate R, `hey -z
   DURATION -q R/C -c C` sends R requests/s from C connections, each on its own timer
   (hey's -q is per connection), whatever the answers' latency; C is chosen so that each
   connection sends 50 requests/s or fewer, which keeps every timer far from its
   latency. Prints p50/p90/p99 per rate and the highest rate whose p99 stayed at or under
   --p99-goal (10 ms). One generated shipment is the body (trace off unless --trace).
2. The batch endpoint with `--batch-workers` server processes: closed loop, each of
   `--batch-clients` connections sends the next batch of `--batch-size` shipments as
   soon as its answer arrives; prints shipments valued per second, and the CPU seconds
   each server process spent meanwhile (Linux), which shows how the connections were
   shared: a worker that got none spent none.

The load average of the machine (1 minute) is printed before and after each phase:
these figures are only comparable on a machine that was otherwise idle. Before the batch
phase, as many busy processes as server workers spin for a second and the CPU they got is
printed ("cores free"): on a shared machine (or a virtual one whose neighbours are busy)
the load average can look idle while 2 workers get one core between them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from batch_throughput import shipments
from load_test import HOST, free_port, start_server

HEY_MISSING = (
    "bench/service_latency.py needs the `hey` HTTP load generator: install the Debian "
    "package `hey` (apt-get install hey) or put `hey` on PATH"
)


@dataclass(frozen=True)
class HeyRun:
    requests_per_s: float
    percentiles: dict[int, float]  # percent -> seconds (hey leaves out 99% under 100 requests)
    slowest: float
    statuses: dict[int, int]
    errors: int  # transport errors (timeouts, refused connections)


def hey_path() -> str:
    found = shutil.which("hey")
    if found is None:
        raise SystemExit(HEY_MISSING)
    return found


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min)"


def run_hey(url: str, body: Path, *, duration: float, connections: int, rate: float) -> HeyRun:
    """`hey` POSTing `body` to `url`; `rate` is per connection (0: as fast as answered)."""
    command = [hey_path(), "-z", f"{duration:g}s", "-c", str(connections), "-m", "POST"]
    command += ["-T", "application/json", "-D", str(body), "-t", "20"]
    if rate:
        command += ["-q", f"{rate:g}"]
    done = subprocess.run([*command, url], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"hey failed ({done.returncode}): {done.stderr.strip()}")
    return parse_hey(done.stdout)


def parse_hey(text: str) -> HeyRun:
    """The figures of hey's summary text."""
    found = re.search(r"Requests/sec:\s+([0-9.]+)", text)
    if found is None:
        raise SystemExit(f"hey printed no summary:\n{text}")
    percentiles = {
        int(percent): float(seconds)
        for percent, seconds in re.findall(r"^\s+([0-9]+)% in ([0-9.]+) secs", text, re.M)
        if int(percent) > 0  # hey prints "0% in 0.0000 secs" for a percentile it lacks
    }
    slowest = re.search(r"Slowest:\s+([0-9.]+) secs", text)
    statuses = {
        int(code): int(count) for code, count in re.findall(r"\[([0-9]{3})\]\s+([0-9]+)", text)
    }
    errors = 0
    if "Error distribution:" in text:
        tail = text.split("Error distribution:", 1)[1]
        errors = sum(int(n) for n in re.findall(r"\[([0-9]+)\]", tail))
    return HeyRun(
        float(found.group(1)),
        percentiles,
        float(slowest.group(1)) if slowest else 0.0,
        statuses,
        errors,
    )


def stop(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()


def single_phase(args: argparse.Namespace, folder: Path) -> None:
    body = folder / "single.json"
    body.write_text(json.dumps(next(iter(shipments(1, seed=11)))))
    port = free_port()
    server = start_server(port, args.workers, None)
    trace = "true" if args.trace else "false"
    url = f"http://{HOST}:{port}/v1/valuations?policy=standard&trace={trace}"
    try:
        run_hey(url, body, duration=3, connections=4, rate=50)  # warm up
        print(
            f"single valuations (trace={trace}), {args.workers} server worker(s), open loop, "
            f"{args.duration:g} s per rate; {load()}"
        )
        best = 0
        for rate in args.rates:
            connections = max(1, -(-rate // 50))
            run = run_hey(
                url, body, duration=args.duration, connections=connections,
                rate=rate / connections,
            )  # fmt: skip
            p = {k: v * 1000 for k, v in run.percentiles.items()}
            if 99 not in p:  # fewer than 100 answers: the slowest is the honest p99
                p[99] = run.slowest * 1000
            ok = run.statuses.get(200, 0)
            bad = sum(run.statuses.values()) - ok + run.errors
            meets = p.get(99, float("inf")) <= args.p99_goal and bad == 0
            best = max(best, rate) if meets else best
            print(
                f"  rate {rate:>5}/s ({connections} conn x {rate / connections:g}/s): "
                f"achieved {run.requests_per_s:,.0f}/s; p50 {p.get(50, 0):.1f} ms, "
                f"p90 {p.get(90, 0):.1f} ms, p99 {p.get(99, 0):.1f} ms; {ok:,} ok, {bad} not; "
                f"{'meets' if meets else 'misses'} p99 <= {args.p99_goal:g} ms; {load()}"
            )
        print(f"highest rate tried with p99 <= {args.p99_goal:g} ms: {best or 'none'}/s")
    finally:
        stop(server)


_SPIN = "import time\nend = time.monotonic() + 1\nwhile time.monotonic() < end: pass\n"


def cores_free(processes: int) -> float:
    """The cores `processes` busy processes got over a second (at most `processes`)."""
    before = os.times()
    spinners = [subprocess.Popen([sys.executable, "-c", _SPIN]) for _ in range(processes)]
    for spinner in spinners:
        spinner.wait()
    after = os.times()
    return (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User + system CPU seconds of each process (Linux /proc; empty elsewhere)."""
    seconds = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        seconds[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return seconds


def server_processes(server: subprocess.Popen[bytes]) -> list[int]:
    """The server's process and its workers (its children), from /proc."""
    pids = [server.pid]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if parent == server.pid:
            pids.append(int(stat.parent.name))
    return pids


def batch_phase(args: argparse.Namespace, folder: Path) -> None:
    body = folder / "batch.json"
    body.write_text(json.dumps(list(shipments(args.batch_size, seed=11))))
    port = free_port()
    server = start_server(port, args.batch_workers, None)
    url = f"http://{HOST}:{port}/v1/valuations/batch?policy=standard"
    try:
        run_hey(url, body, duration=3, connections=args.batch_workers, rate=0)  # warm up
        free = cores_free(args.batch_workers)
        before = load()
        processes = server_processes(server)
        cpu_before = cpu_seconds(processes)
        run = run_hey(url, body, duration=args.duration, connections=args.batch_clients, rate=0)
        cpu_after = cpu_seconds(processes)
        spent = [cpu_after[pid] - cpu_before[pid] for pid in cpu_after if pid in cpu_before]
        ok = run.statuses.get(200, 0)
        bad = sum(run.statuses.values()) - ok + run.errors
        print(
            f"batch endpoint, {args.batch_workers} server worker(s), {args.batch_clients} "
            f"connections, {args.batch_size} shipments per request: "
            f"{run.requests_per_s:,.1f} requests/s = "
            f"{run.requests_per_s * args.batch_size:,.0f} shipments/s; "
            f"p50 {run.percentiles.get(50, 0) * 1000:.0f} ms, "
            f"p95 {run.percentiles.get(95, 0) * 1000:.0f} ms, slowest {run.slowest * 1000:.0f} "
            f"ms; {ok:,} ok, {bad} not; "
            f"CPU s per server process: {', '.join(f'{cpu:.1f}' for cpu in spent) or '?'}; "
            f"before: {free:.2f} cores free, {before}; after: {load()}"
        )
    finally:
        stop(server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=int, nargs="+", default=[250, 500, 750, 1000])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    parser.add_argument("--workers", type=int, default=1, help="server workers, single phase")
    parser.add_argument("--p99-goal", type=float, default=10.0, help="milliseconds")
    parser.add_argument("--trace", action="store_true", help="single valuations with trace")
    parser.add_argument("--batch-workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--batch-clients", type=int, default=4)
    parser.add_argument("--skip-single", action="store_true")
    parser.add_argument("--skip-batch", action="store_true")
    args = parser.parse_args()
    hey_path()  # before starting anything
    with tempfile.TemporaryDirectory(prefix="tiv-latency-") as folder:
        if not args.skip_single:
            single_phase(args, Path(folder))
        if not args.skip_batch:
            batch_phase(args, Path(folder))


if __name__ == "__main__":
    main()
