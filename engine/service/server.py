"""Serving: uvicorn with N worker processes on one TCP_NODELAY listener, taking turns."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import select
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import uvicorn
from fastapi import FastAPI

from engine.service.app import create_app
from engine.service.settings import Settings


class NoDelayConfig(uvicorn.Config):
    """uvicorn's Config, whose shared listening socket sets TCP_NODELAY.

    For several workers uvicorn makes the listening socket with protocol 0, so asyncio
    does not set TCP_NODELAY on the connections it accepts, and each response waits on
    the client's delayed ACK: ~40 ms a request (measured: 176 requests/s with 2 workers
    against 516 with 1; 1,343 with this). Accepted connections inherit the option.
    Module level, because the config is pickled to each worker process.
    """

    def bind_socket(self) -> socket.socket:
        sock = super().bind_socket()
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


log = logging.getLogger("uvicorn.error")

# How often a worker's accepting thread looks up from a wait for a connection to see
# whether its server was closed: a worker stops accepting within this after shutdown.
_ACCEPT_WAKE_S = 0.1
# A connection already waiting when a worker's accepting thread has handed one over is
# left this long to the others (see `_others_first`).
_TURN_S = 0.003


class TakingTurnsLoop(asyncio.SelectorEventLoop):
    """The event loop of a worker process: connections on the shared listener are taken in
    turn with the other workers.

    asyncio accepts every connection waiting on a listener each time it is readable, and
    every worker's loop is woken for each one: the first awake takes them all. A client
    that opens 4 kept-alive connections at once found all 4 on one of 2 workers in 10 of
    30 tries (3 on one, 1 on the other in 17; an even split in 3), and the other worker
    idle for as long as it kept them: half the throughput.

    Here a thread of each worker waits in a blocking accept(), and Linux wakes one
    waiting accept() per connection, the longest waiting first, so connections go round
    the workers in turn; the thread hands each to the loop (`connect_accepted_socket`)
    and leaves the next one, if it is waiting already, to the others for a moment (see
    `_others_first`). Measured the same way: an even split in 28 of 30 tries, 3 and 1 in
    2. The listener must stay blocking, so no worker may serve it with asyncio's own
    accept: uvicorn runs every worker with this loop (Linux; elsewhere as asyncio does).
    """

    async def create_server(
        self,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        host: Any = None,
        port: Any = None,
        *,
        sock: socket.socket | None = None,
        **options: Any,
    ) -> Any:
        tcp = sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6)
        if sock is None or not tcp or not sys.platform.startswith("linux"):
            return await super().create_server(protocol_factory, host, port, sock=sock, **options)
        sock.listen(options.get("backlog", 100))  # as asyncio would: uvicorn binds only
        return _TurnTakingServer(self, protocol_factory, sock, options.get("ssl"))


class _TurnTakingServer:
    """What uvicorn needs of an asyncio Server (`close`, `wait_closed`), accepting with a
    thread of its own in turn with the other workers (see `TakingTurnsLoop`)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        sock: socket.socket,
        ssl: Any,
    ) -> None:
        self._loop = loop
        self._protocol_factory = protocol_factory
        self._ssl = ssl
        # The thread's own descriptor: uvicorn closes `sock` at shutdown, which must not
        # pull it from under a waiting accept(). Blocking, with a receive timeout (which
        # Linux applies to accept) so the thread looks up every _ACCEPT_WAKE_S.
        self._listener = sock.dup()
        self._listener.setblocking(True)
        wake = struct.pack("ll", 0, int(_ACCEPT_WAKE_S * 1e6))
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, wake)
        self._waiting = select.poll()  # is a connection waiting? (see `_others_first`)
        self._waiting.register(self._listener, select.POLLIN)
        self._serving = True
        self._handing: set[asyncio.Task[Any]] = set()  # the loop holds tasks weakly
        self._thread = threading.Thread(target=self._accept, name="tiv-accept", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        try:
            while self._serving:
                try:
                    conn, _ = self._listener.accept()
                except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                    continue  # the timeout, or a client that gave up: look up, wait again
                except OSError as error:  # out of descriptors, say: as asyncio does
                    log.warning("tiv: accepting a connection failed (%s); retrying", error)
                    time.sleep(1)
                    continue
                try:
                    self._loop.call_soon_threadsafe(self._serve, conn)
                except RuntimeError:  # the loop has closed: nobody will answer it
                    conn.close()
                    return
                self._others_first()
        finally:
            self._listener.close()

    def _others_first(self) -> None:
        """Leave a connection that is waiting already to the other workers, for up to
        _TURN_S: connections that arrive together (a client opening several) would
        otherwise be taken by whichever thread comes back to accept() first, before the
        kernel has run the one it woke for them. A connection that arrives alone, or
        that no other worker takes in time, is accepted without waiting for it."""
        until = time.monotonic() + _TURN_S
        while time.monotonic() < until:
            if not self._waiting.poll(0):
                return
            time.sleep(_TURN_S / 10)

    def _serve(self, conn: socket.socket) -> None:
        # Served even after `close`: the loop is still answering open connections then.
        conn.setblocking(False)
        task = self._loop.create_task(
            self._loop.connect_accepted_socket(self._protocol_factory, conn, ssl=self._ssl)
        )
        self._handing.add(task)
        task.add_done_callback(self._handing.discard)

    def close(self) -> None:
        self._serving = False

    async def wait_closed(self) -> None:
        await asyncio.to_thread(self._thread.join)


def run_workers(workers: int, options: Mapping[str, Any]) -> None:
    """Serve with `workers` processes, as uvicorn.run does, on a TCP_NODELAY listener.

    Each worker builds its app with `from_env`; the settings must be in the environment.
    """
    from uvicorn.supervisors import Multiprocess

    config = NoDelayConfig(
        "engine.service.server:from_env",
        factory=True,
        workers=workers,
        loop="engine.service.server:TakingTurnsLoop",
        **options,
    )
    sock = config.bind_socket()
    if "target" in inspect.signature(Multiprocess).parameters:  # older uvicorn
        run = uvicorn.Server(config).run
        supervisor = Multiprocess(config, target=run, sockets=[sock])  # type: ignore[call-arg]
    else:
        supervisor = Multiprocess(config, sockets=[sock])
    supervisor.run()


def from_env() -> FastAPI:
    """The app of a uvicorn worker process: settings come from $TIV_SERVICE_SETTINGS."""
    return create_app(Settings.from_json(os.environ["TIV_SERVICE_SETTINGS"]))
