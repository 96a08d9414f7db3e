"""The one retry policy for busy/conflict errors: ``transaction()``, ``run_transaction()`` and
autocommit writes on replicas all re-run through :func:`with_retries`. Used by ``_service`` and
``_backends``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ._errors import TursoBusyError
from ._leases import LEASE_BUSY

log = logging.getLogger("buntime.turso")
T = TypeVar("T")

DEFAULT_MAX_RETRIES = 5
DEFAULT_RETRY_DELAY = 0.005
MAX_RETRY_DELAY = 0.5


def backoff_delay(attempt: int, base: float, cap: float = MAX_RETRY_DELAY) -> float:
    """Exponential backoff with full jitter: uniform in ``[0, min(cap, base * 2**attempt)]``."""
    return random.uniform(0, min(cap, base * (2**attempt)))


async def with_retries(
    attempt: Callable[[], Awaitable[T]],
    max_retries: int = DEFAULT_MAX_RETRIES,
    retry_delay: float = DEFAULT_RETRY_DELAY,
) -> T:
    """Re-run ``attempt`` on busy/conflict errors with exponential backoff and full jitter."""
    retries = 0
    while True:
        try:
            return await attempt()
        except TursoBusyError as exc:
            if retries >= max_retries or exc.code == LEASE_BUSY:
                raise  # a busy lease was already waited for, up to TURSO_WRITE_TIMEOUT
            retries += 1
            log.debug("retrying Turso transaction (attempt %d/%d): %s", retries, max_retries, exc)
            await asyncio.sleep(backoff_delay(retries, retry_delay))
