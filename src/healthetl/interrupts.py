"""Stopping a run: SIGTERM (a scheduler ending the job) is handled like Ctrl-C.

The handler raises ``KeyboardInterrupt`` where the main thread happens to be. Python drops an
exception raised while it runs a finaliser (a ``__del__``, a weakref callback, the garbage
collector), so a signal landing there would be lost and the run would go on to the end. The
handler therefore also leaves the request behind, and the loops that read a file chunk by chunk
call :func:`check`, which raises it again at the next chunk."""

from __future__ import annotations

import signal
from types import FrameType

_pending: str | None = None

#: ``str(KeyboardInterrupt)`` of a SIGTERM; a Ctrl-C has none
TERMINATED = "terminated"


def _handler(signum: int, frame: FrameType | None) -> None:
    global _pending
    _pending = TERMINATED if signum == signal.SIGTERM else ""
    raise KeyboardInterrupt(_pending)


def install() -> None:
    """Handle SIGTERM and SIGINT (the command line's ``main`` only: a library caller keeps its own)."""
    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)


def check() -> None:
    """Raise the interrupt a signal asked for, if it has not ended the run already."""
    if _pending is not None:
        raise KeyboardInterrupt(_pending)
