"""kopf's posting context outside ``kopf.run``: what ``kopf.info``/``kopf.warn`` need to enqueue.

Shared by the operator's unit tests, which call reconcile steps and handlers directly. The queue
is a real one; tests read the Events back from it instead of posting them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import kopf
from kopf._core.engines import posting


@contextlib.contextmanager
def kopf_events() -> Iterator[asyncio.Queue[Any]]:
    """Set kopf's posting context variables for the running loop; yields the event queue."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    settings = kopf.OperatorSettings()
    settings.posting.level = logging.INFO
    tokens: list[tuple[Any, Any]] = [
        (posting.settings_var, posting.settings_var.set(settings)),
        (posting.event_queue_var, posting.event_queue_var.set(queue)),
        (posting.event_queue_loop_var, posting.event_queue_loop_var.set(asyncio.get_running_loop())),
    ]
    try:
        yield queue
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def drained_reasons(queue: asyncio.Queue[Any]) -> list[str]:
    """The reasons of the Events queued so far, in order (the queue is emptied)."""
    reasons = []
    while not queue.empty():
        reasons.append(str(queue.get_nowait().reason))
    return reasons
