"""Reading ahead: the next chunk of a source is read and parsed on a second thread while the
current one is validated and written, so the reading (Arrow's parser, decompression, object
storage requests: all of them release the GIL) runs on the other core.

One chunk waits at most (``depth``), so memory grows by one chunk, not by the file. An error of
the reader is raised where the consumer takes the next chunk; a consumer that stops early (an
error, an interrupt) stops the reader, which closes the source on its own thread."""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterable
from typing import TypeVar

T = TypeVar("T")

_END = object()


def read_ahead(items: Iterable[T], depth: int = 1) -> Generator[T, None, None]:
    """``items``, produced one step ahead on a thread. Close the generator (``contextlib.closing``)
    when stopping early: that stops and joins the thread at once, not when it is collected."""
    waiting: queue.Queue[tuple[object, BaseException | None]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def hand_over(entry: tuple[object, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                waiting.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        source = iter(items)
        try:
            for item in source:
                if not hand_over((item, None)):
                    return
            hand_over((_END, None))
        except BaseException as exc:  # raised on the consumer's thread
            hand_over((None, exc))
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    reader = threading.Thread(target=work, name="healthetl-read", daemon=True)
    reader.start()
    try:
        while True:
            item, error = waiting.get()
            if error is not None:
                raise error
            if item is _END:
                return
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        reader.join()
