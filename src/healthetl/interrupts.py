"""Stopping a run: SIGTERM (a scheduler ending the job) is handled like Ctrl-C.

The handler raises ``KeyboardInterrupt`` where the main thread happens to be. Python drops an
exception raised while it runs a finaliser (a ``__del__``, a weakref callback, the garbage
collector), so a signal landing there would be lost and the run would go on to the end. The
handler therefore also leaves the request behind, and the loops that read a file chunk by chunk
call :func:`check`, which raises it again at the next chunk.

Some C code crashes the process when an exception is raised in Python code it calls back (pandas'
JSON writer, seen segfaulting under a SIGTERM): such calls run inside :func:`deferred`, where the
handler only leaves the request, raised when the block ends; :func:`json_text` is pandas' writer so."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

_pending: str | None = None
#: how many :func:`deferred` blocks the main thread is in (handlers run on the main thread only)
_holding = 0

#: ``str(KeyboardInterrupt)`` of a SIGTERM; a Ctrl-C has none
TERMINATED = "terminated"


def _handler(signum: int, frame: FrameType | None) -> None:
    global _pending
    _pending = TERMINATED if signum == signal.SIGTERM else ""
    if not _holding:
        raise KeyboardInterrupt(_pending)


def install() -> None:
    """Handle SIGTERM and SIGINT (the command line's ``main`` only: a library caller keeps its own)."""
    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)


def check() -> None:
    """Raise the interrupt a signal asked for, if it has not ended the run already."""
    if _pending is not None:
        raise KeyboardInterrupt(_pending)


def settle() -> None:
    """Let an interrupt the command handled end the process with the exit code it chose.

    CPython marks an interrupt that escapes code run from a string (``exec``: dataclasses build
    their methods so, e.g. while pandera is imported mid-run) as unhandled, and a process so
    marked ends by killing itself with SIGINT, whatever exit code it asked for. Running a string
    clears the mark (CPython resets it before each such run)."""
    if _pending is not None:
        exec("pass")


@contextmanager
def deferred() -> Iterator[None]:
    """Run a block the interrupt may not break into; an interrupt asked for meanwhile is raised
    when it ends. For C code that cannot take an exception from a call back into Python. Only the
    main thread is interrupted (Python runs signal handlers there), so elsewhere it does nothing."""
    global _holding
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _holding += 1
    try:
        yield
    finally:
        _holding -= 1
    if not _holding:
        check()


def json_text(frame: pd.DataFrame, **options: Any) -> str:
    """``frame.to_json(**options)``, never interrupted midway: pandas' JSON writer crashes the
    process (a segmentation fault, seen under SIGTERM) when an exception is raised inside it."""
    with deferred():
        text: str | None = frame.to_json(**options)
    assert text is not None  # no path given: the text is returned
    return text
