"""What a connection's handler generators ask of their driver, and a driver that runs them inline.

A handler (:meth:`~dpsql.proxy.wire.connection.Connection.handle`) is a generator that yields one
of these requests when it needs the driver: :class:`Offload` (run a blocking call in a worker
thread and send back its result or exception), :class:`StartTLS` (upgrade the socket after 'S')
or :class:`Drain` (flush and wait until the transport accepts more output). The asyncio server
(:mod:`dpsql.proxy.server`) is the real driver; :func:`run_sync` drives a handler inline.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Offload:
    """Run ``fn`` off the event loop; the generator receives its return value (or its exception).
    ``cancel`` interrupts it from any thread; ``timeout`` (seconds) calls ``cancel`` when it expires."""

    fn: Callable[[], Any]
    cancel: Callable[[], None] | None = None
    timeout: float | None = None
    timed_out: bool = False


@dataclass(slots=True)
class StartTLS:
    """Upgrade the connection to TLS (after 'S' was flushed)."""


@dataclass(slots=True)
class Drain:
    """Flush pending output and resume when the transport can take more."""


Request = Offload | StartTLS | Drain
Handler = Generator[Request, Any, None]


def run_sync(gen: Handler | None, *, tls: Callable[[], None] | None = None) -> None:
    """Drive a handler generator inline: offloaded calls run in this thread (for tests and tools)."""
    if gen is None:
        return
    value: Any = None
    exc: BaseException | None = None
    while True:
        try:
            req = gen.throw(exc) if exc is not None else gen.send(value)
        except StopIteration:
            return
        value, exc = None, None
        if isinstance(req, Offload):
            try:
                value = req.fn()
            except BaseException as e:
                exc = e
        elif isinstance(req, StartTLS):
            if tls is None:
                raise RuntimeError("TLS requested but the sync driver has no TLS")
            tls()
