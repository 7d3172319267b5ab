"""Stopping work that runs in threads (`inv run` boots hosts in parallel).

A signal reaches only the main thread; it sets this flag and waits for the
workers, whose waiting loops call ``check()`` or ``sleep()`` and so leave
through their own cleanup (QEMU stopped, VM released, lease freed)."""

from __future__ import annotations

import threading

from hvlab.errors import Interrupted

_EVENT = threading.Event()
_reason = "interrupted"


def request(reason: str) -> None:
    global _reason
    _reason = reason
    _EVENT.set()


def check() -> None:
    if _EVENT.is_set():
        raise Interrupted(_reason)


def sleep(seconds: float) -> None:
    """time.sleep that ends early, raising Interrupted, when a stop is requested."""
    if _EVENT.wait(seconds):
        raise Interrupted(_reason)


def reset() -> None:
    _EVENT.clear()
