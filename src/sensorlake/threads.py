"""Background threads that carry their name down to the OS, so `top -H` and `ps -L` (and
the benchmarks' per-thread CPU figures) tell the log writer, the worker and the API apart."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading
from collections.abc import Callable
from typing import Any

_PR_SET_NAME = 15
_libc: Any = None
if sys.platform.startswith("linux"):
    try:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:  # pragma: no cover - no libc to call
        _libc = None


def name_this_thread(name: str) -> None:
    """Set the calling thread's OS-level name (Linux keeps the first 15 bytes)."""
    if _libc is not None:
        _libc.prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)


def start_thread(target: Callable[..., object], name: str, *args: object,
                 daemon: bool = True) -> threading.Thread:
    """Start `target(*args)` in a daemon thread named `name` (in Python and in the OS)."""

    def run() -> None:
        name_this_thread(name)
        target(*args)

    thread = threading.Thread(target=run, name=name, daemon=daemon)
    thread.start()
    return thread
