"""Real faults for the reliability tests: a TCP proxy in front of a service that can stall
(accepts bytes, forwards nothing: a network partition or a hung server), add latency (a slow
link or an overloaded server), refuse (the service is down), and recover."""

from __future__ import annotations

import contextlib
import gc
import socket
import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType


@contextlib.contextmanager
def without_collector_pauses() -> Iterator[None]:
    """For a timed burst served in this process: collect first, then keep the cyclic garbage
    collector off until the block ends. By the end of the suite the test process holds every
    earlier test's leftovers, and one full collection of them (with the finalizers it runs)
    took 0.8 to 1.1 s, measured with ``gc.callbacks``: it freezes the server's threads, the
    deadline's timers and the client's clocks alike, a pause a web process never has."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class StallingProxy:
    """Forwards 127.0.0.1:<port> to ``target``; ``stall()`` makes every connection, open or
    new, go silent in both directions until ``resume()``; ``slow(seconds)`` delays every chunk
    each way (a round trip costs twice that); ``refuse()`` drops every connection, open or new."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stalled = threading.Event()
        self.refusing = threading.Event()
        self.latency = 0.0
        self.closed = threading.Event()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def stall(self) -> None:
        self.stalled.set()

    def resume(self) -> None:
        self.stalled.clear()
        self.refusing.clear()
        self.latency = 0.0

    def slow(self, seconds: float) -> None:
        self.latency = seconds

    def refuse(self) -> None:
        self.refusing.set()
        for sock in list(self.sockets):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.closed.set()
        self.listener.close()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                # Shut down before closing: a close() alone, while a pump thread waits in recv()
                # on the socket, sends nothing, and the database kept every backend the app had
                # opened through the proxy (the fault matrix reached PostgreSQL's 100).
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def __enter__(self) -> StallingProxy:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.refusing.is_set():
                client.close()  # the peer sees its connection dropped at once, as from a dead service
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            self.sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        while not self.closed.is_set():
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data:
                with contextlib.suppress(OSError):
                    sink.shutdown(socket.SHUT_WR)
                return
            while self.stalled.is_set() and not self.closed.is_set():
                time.sleep(0.05)  # hold the bytes: the peer waits forever, as on a dead link
            if self.latency:
                time.sleep(self.latency)
            try:
                sink.sendall(data)
            except OSError:
                return


def failing_once_on_the_database(real: Callable[..., object]) -> Callable[..., object]:
    """``real``, except that its first call raises as a database connection dropped mid-query
    does (``OperationalError``): a blip, for a step a test patches with it."""
    from sqlalchemy.exc import OperationalError

    blips = iter([True])

    def blip_once(*args: object, **kwargs: object) -> object:
        if next(blips, False):
            raise OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))
        return real(*args, **kwargs)

    return blip_once
