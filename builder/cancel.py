"""Process-wide cancellation: a signal stops builder cleanly, in every thread.

The CLI installs :func:`handlers` for SIGINT, SIGTERM and SIGHUP.  The first
signal sets one process-wide flag and raises :class:`~builder.errors.Interrupted`
in the main thread (Python runs signal handlers there only).  Other threads
notice the flag where they wait or commit:

* :func:`builder._proc.run` polls it while a child runs, kills the child's
  process group and raises ``Interrupted``: worker threads stop their ``uv``
  instead of finishing it;
* :func:`builder.files.fsio.atomic_write` checks it just before the rename: after a
  signal nothing new is written (a rename that already happened stays).

Later signals only set the flag again: the cleanup running after the first one
(children killed, temp and staging dirs removed) is not cut short by a second
Ctrl-C.  SIGKILL cannot be caught: children then run on until their own bound
(see docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from builder.errors import Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

_flag = threading.Event()
_signum = 0
_deferred = 0  # >0 while the main thread is in a section a signal must not cut (spawning a child)


def requested() -> bool:
    """True once a stop signal arrived."""
    return _flag.is_set()


def signum() -> int:
    """The first stop signal received (SIGINT if none: a request without a signal)."""
    return _signum or signal.SIGINT


def check() -> None:
    """Raise :class:`Interrupted` if a stop signal arrived (any thread)."""
    if _flag.is_set():
        raise Interrupted(_signum or signal.SIGINT)


def request(signum: int) -> None:
    """Ask every thread to stop, as the signal ``signum`` does."""
    global _signum
    if not _flag.is_set():
        _signum = signum
    _flag.set()


def reset() -> None:
    """Forget a previous request (a new command in the same process, tests)."""
    global _signum
    _signum = 0
    _flag.clear()


def _handle(signum: int, _frame: FrameType | None) -> None:
    first = not _flag.is_set()
    request(signum)
    if first and not _deferred:
        raise Interrupted(signum)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold a signal's exception until the block ends; the caller then calls :func:`check`.

    Used around starting a child: an exception raised between fork and the
    return of ``Popen`` would leave a child nobody knows about.
    """
    global _deferred
    if threading.current_thread() is not threading.main_thread():
        yield  # signals are handled in the main thread only; workers poll the flag
        return
    _deferred += 1
    try:
        yield
    finally:
        _deferred -= 1


@contextlib.contextmanager
def handlers() -> Iterator[None]:
    """Route SIGINT/SIGTERM/SIGHUP to :class:`Interrupted` for the duration (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    reset()
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, _handle)
    try:
        yield
    finally:
        # After a stop signal the process is on its way out: keep the handler,
        # which now only sets the flag, so a second Ctrl-C during the exit
        # cannot end it by the signal itself.  Otherwise restore.
        if not _flag.is_set():
            for s, h in previous.items():
                signal.signal(s, h if h is not None else signal.SIG_DFL)
