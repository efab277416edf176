"""Ctrl-C as a request to stop cleanly: the first one lets the current step finish and the caller save; a second
one aborts at once. Shared by generation and the toy trainers."""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Iterator


class StopFlag:
    """Callable: whether a stop has been asked for."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def __call__(self) -> bool:
        return self.event.is_set()


@contextlib.contextmanager
def ctrl_c_stops_after_step(notice: str = "stopping after this step and saving") -> Iterator[StopFlag]:
    """While running, the first Ctrl-C sets the yielded flag (and prints ``notice``); a second one aborts.

    Outside the main thread signals cannot be handled, and the flag is never set.
    """
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):  # noqa: ARG001
        if flag.event.is_set():
            raise KeyboardInterrupt
        flag.event.set()
        print(f"\npixgen: {notice} (Ctrl-C again to abort)...", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)
