"""asyncpg from synchronous code: a private event loop on a background thread, and DSN helpers.

The execution backends and the ledgers have synchronous interfaces called from worker threads;
asyncpg is asynchronous. :class:`LoopThread` owns one event loop on one daemon thread and runs
coroutines on it with :func:`asyncio.run_coroutine_threadsafe`, so any thread may submit work
and wait for it. The loop never runs caller code other than the coroutines submitted to it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
from collections.abc import Awaitable
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

T = TypeVar("T")

_log = logging.getLogger("dpsql.aio")


def _quiet_exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Log what the loop could not deliver by message and exception class only: an exception's
    text may come from the database server and quote private values."""
    exc = context.get("exception")
    _log.warning("%s%s", context.get("message", "event loop error"), f" ({type(exc).__name__})" if exc is not None else "")


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


async def _await(aw: Awaitable[T]) -> T:
    return await aw


class LoopThread:
    """One event loop running forever on a daemon thread until :meth:`close`.

    Thread-safe: :meth:`submit` and :meth:`run` may be called from any thread except the loop's
    own. A LoopThread belongs to the process that created it; after ``fork()`` the child must
    make a new one (:attr:`pid` tells which process owns it).
    """

    def __init__(self, name: str = "dpsql-asyncio") -> None:
        self.pid = os.getpid()
        self._closed = False
        self._lock = threading.Lock()
        self.loop = _new_loop()
        self.loop.set_exception_handler(_quiet_exception_handler)
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()
        self._started.wait()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._started.set)
        try:
            self.loop.run_forever()
        finally:
            try:
                pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
                for t in pending:
                    t.cancel()
                if pending:
                    self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            finally:
                self.loop.close()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called (or the loop thread has died)."""
        return self._closed or not self._thread.is_alive()

    def submit(self, aw: Awaitable[T]) -> concurrent.futures.Future[T]:
        """Schedule ``aw`` (a coroutine or other awaitable) on the loop; cancelling the returned
        future cancels the task."""
        coro = aw if asyncio.iscoroutine(aw) else _await(aw)
        if self.closed or threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("the event loop thread is closed" if self.closed else "LoopThread.submit called from the loop's own thread")
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Awaitable[T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result (its exception is re-raised).

        On ``timeout`` the task is cancelled and :class:`TimeoutError` is raised."""
        fut = self.submit(coro)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise TimeoutError("the operation did not finish in time") from None

    def close(self, timeout: float = 10.0) -> None:
        """Stop the loop (pending tasks are cancelled) and join its thread; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._thread.is_alive() and os.getpid() == self.pid:
            self.loop.call_soon_threadsafe(self.loop.stop)
            if threading.current_thread() is not self._thread:
                self._thread.join(timeout)


def dsn_summary(dsn: str) -> str:
    """``user@host:port/database`` of a postgresql:// URL, without the password (for messages)."""
    try:
        u = urlsplit(dsn)
        host = u.hostname or "localhost"
        port = u.port or 5432
        user = unquote(u.username) if u.username else "(default user)"
        db = u.path.lstrip("/") or "(default database)"
    except ValueError:
        return "(unparseable URL)"
    return f"{user}@{host}:{port}/{db}"
