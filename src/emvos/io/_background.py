"""Background threads with bounded queues: read-ahead for decoding and write-behind for encoding.

Both helpers move slow I/O (video decoding, PNG and H.264 encoding) off the caller's thread so it
overlaps the model's compute, hold at most ``depth`` items in flight, and re-raise an error from
the background thread in the caller's thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterator
from contextlib import closing
from typing import Generic, TypeVar

T = TypeVar("T")

#: How long the consumer waits for the worker between drains of the queue when it stops early.
_JOIN_POLL_S = 0.05


class _Done:
    """Marks the end of a stream of items in a queue."""


class _Failed:
    """Carries an exception raised by the background thread to the consumer."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _drain(q: queue.Queue[object]) -> None:
    while True:
        try:
            q.get_nowait()
        except queue.Empty:
            return


def prefetch(produce: Callable[[], Generator[T, None, None]], depth: int, name: str) -> Iterator[T]:
    """Yield the items of ``produce()``, computed ahead on a background thread.

    ``produce`` is called on the background thread, which keeps at most ``depth`` items ready.
    An exception raised by ``produce()`` is re-raised here, in the consumer's thread, after the
    items before it. When the consumer stops early (the generator is closed or garbage
    collected), the thread is told to stop, ``produce()`` is closed on that thread (so its
    ``finally`` blocks release files) and the thread is joined before the close returns.
    """
    if depth < 1:
        raise ValueError(f"prefetch depth must be at least 1, got {depth}")
    items: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work() -> None:
        try:
            with closing(produce()) as iterator:
                for item in iterator:
                    if stop.is_set():
                        return
                    items.put(item)
            items.put(_Done())
        except BaseException as error:  # noqa: B036 - every failure must reach the consumer
            items.put(_Failed(error))

    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if isinstance(item, _Done):
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        # The worker may be blocked on a full queue: keep emptying it until the worker has seen
        # ``stop`` (it checks between items) or finished. When garbage collection closes this
        # generator on the worker thread itself, the worker stops at its next item on its own.
        while thread.is_alive() and threading.current_thread() is not thread:
            _drain(items)
            thread.join(_JOIN_POLL_S)


class BackgroundWorker(Generic[T]):
    """Threads that call ``handle(item)`` for each submitted item: in order with one thread, in any
    order with several (for items independent of each other, such as separate files).

    :meth:`submit` blocks while ``depth`` items are waiting, so a slow ``handle`` slows the caller
    down instead of filling memory. The first exception raised by ``handle`` is re-raised in the
    caller by the next :meth:`submit` or by :meth:`close`; the items after it are dropped.
    """

    def __init__(self, handle: Callable[[T], None], depth: int, name: str, threads: int = 1) -> None:
        if depth < 1:
            raise ValueError(f"queue depth must be at least 1, got {depth}")
        if threads < 1:
            raise ValueError(f"a background worker needs at least 1 thread, got {threads}")
        self._handle = handle
        self._items: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._discard = threading.Event()
        self._error: BaseException | None = None
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}" if threads > 1 else name,
                                          daemon=True) for i in range(threads)]
        for thread in self._threads:
            thread.start()

    def _work(self) -> None:
        while True:
            item = self._items.get()
            if isinstance(item, _Done):
                return
            if self._error is not None or self._discard.is_set():
                continue  # keep taking items so that submit() never blocks on a dead worker
            try:
                self._handle(item)  # type: ignore[arg-type]
            except BaseException as error:  # noqa: B036 - every failure must reach the caller
                if self._error is None:
                    self._error = error

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def submit(self, item: T) -> None:
        """Queue ``item`` for ``handle``; re-raise an earlier failure of ``handle`` first."""
        if self._closed:
            raise RuntimeError("submit() called after close()")
        self._raise_error()
        self._items.put(item)

    def close(self, *, discard_pending: bool = False) -> None:
        """Wait for the thread to finish and re-raise a failure of ``handle``.

        With ``discard_pending``, items not yet started are dropped (the one being handled is
        finished) and a failure of ``handle`` is not re-raised: use it when the caller is already
        unwinding because of its own error.
        """
        if self._closed:
            return
        self._closed = True
        if discard_pending:
            self._discard.set()
        for _ in self._threads:
            self._items.put(_Done())
        for thread in self._threads:
            thread.join()
        if discard_pending:
            self._error = None
        self._raise_error()
