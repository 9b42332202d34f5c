"""A bounded load test of `tiv serve` over loopback: throughput and p50/p99 latency.

    .venv/bin/python bench/load_test.py [--requests 2000] [--batches 100] [--batch-size 50]
                                        [--concurrency 8] [--duration 60] [--workers 1] [--audit]

Starts its own server on a free 127.0.0.1 port (open mode, loopback only), sends a fixed
number of single-shipment requests and then of batch requests from `--concurrency`
client threads over keep-alive connections, and stops the server. Each phase ends at its
request count or after --duration seconds, whichever comes first. Nothing leaves the
machine: the only address used is 127.0.0.1.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from batch_throughput import shipments  # noqa: E402

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def start_server(port: int, workers: int, audit: Path | None) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "engine.cli", "--rules", str(ROOT), "serve"]
    command += ["--host", HOST, "--port", str(port), "--workers", str(workers)]
    command += ["--audit", str(audit)] if audit else []
    command += ["--no-access-log", "--log-level", "warning", "--max-batch", "1000"]
    server = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection(HOST, port, timeout=2)
            connection.request("GET", "/readyz")
            if connection.getresponse().status == 200:
                return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("the server did not come up within 60 s")


def run_phase(
    port: int, path: str, bodies: list[bytes], concurrency: int, count: int, duration: float
) -> tuple[list[float], int, float]:
    """Send `count` requests (cycling through `bodies`); (latencies, errors, elapsed)."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    next_index = 0
    deadline = time.monotonic() + duration

    def client() -> None:
        nonlocal next_index, errors
        connection = http.client.HTTPConnection(HOST, port, timeout=60)
        while True:
            with lock:
                if next_index >= count or time.monotonic() > deadline:
                    return
                body = bodies[next_index % len(bodies)]
                next_index += 1
            started = time.perf_counter()
            connection.request("POST", path, body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)
                if response.status != 200:
                    errors += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors, time.perf_counter() - started


def report(name: str, latencies: list[float], errors: int, elapsed: float, per: int) -> None:
    if not latencies:
        print(f"{name}: no requests completed")
        return
    ordered = sorted(latencies)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    rate = len(ordered) / elapsed
    print(
        f"{name}: {len(ordered):,} requests in {elapsed:.1f} s = {rate:,.0f} req/s "
        f"({rate * per:,.0f} shipments/s); p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms; "
        f"{errors} non-200"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="single-shipment requests")
    parser.add_argument("--batches", type=int, default=100, help="batch requests")
    parser.add_argument("--batch-size", type=int, default=50, help="shipments per batch request")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads")
    parser.add_argument("--duration", type=float, default=60.0, help="cap per phase, seconds")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes")
    parser.add_argument(
        "--audit", action="store_true", help="record every valuation in a scratch audit log"
    )
    args = parser.parse_args()

    corpus: list[dict[str, Any]] = list(shipments(500, seed=11))
    singles = [json.dumps(facts).encode() for facts in corpus]
    batches = [
        json.dumps(corpus[i : i + args.batch_size]).encode()
        for i in range(0, len(corpus) - args.batch_size + 1, args.batch_size)
    ]
    port = free_port()
    scratch = tempfile.TemporaryDirectory(prefix="tiv-load-")
    audit = Path(scratch.name) / "audit.sqlite" if args.audit else None
    server = start_server(port, args.workers, audit)
    try:
        # Warm up: the first valuations build the matcher's networks.
        run_phase(port, "/v1/valuations?policy=standard&trace=false", singles, 2, 50, 30)
        print(
            f"server: {args.workers} worker(s){', audit log on' if audit else ''}; client: "
            f"{args.concurrency} threads; loopback {HOST}:{port}"
        )
        for trace in ("true", "false"):
            path = f"/v1/valuations?policy=standard&trace={trace}"
            result = run_phase(port, path, singles, args.concurrency, args.requests, args.duration)
            report(f"single (trace={trace})", *result, per=1)
        path = "/v1/valuations/batch?policy=standard"
        result = run_phase(port, path, batches, args.concurrency, args.batches, args.duration)
        report(f"batch of {args.batch_size}", *result, per=args.batch_size)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        scratch.cleanup()


if __name__ == "__main__":
    main()
