"""How long to wait before retrying a failed step: capped exponential backoff with jitter.

Pure (no I/O); called by ``_reconcile`` and ``_handlers`` for the delays they give kopf
(``kopf.TemporaryError(delay=...)``) and for the runtime-credentials loop. The n-th retry after a
failure (``attempt`` 0, 1, 2… — kopf's ``retry`` count) waits ``initial * 2**n`` capped at ``cap``,
drawn from the upper half of that (equal jitter), so retries of many objects spread out instead
of arriving together, and none comes sooner than half its step.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from ._constants import BACKOFF_INITIAL_SECONDS, BACKOFF_MAX_SECONDS


def backoff_delay(
    attempt: int,
    *,
    initial: float = BACKOFF_INITIAL_SECONDS,
    cap: float = BACKOFF_MAX_SECONDS,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds before retry number ``attempt`` (0-based): in ``[step / 2, step]``,
    ``step = min(cap, initial * 2**attempt)``.

    * ``initial`` *(optional)* - the first step (default :data:`BACKOFF_INITIAL_SECONDS`).
    * ``cap`` *(optional)* - the largest step (default :data:`BACKOFF_MAX_SECONDS`); at least
      ``initial``.
    * ``rand`` *(optional)* - a source of floats in ``[0, 1)`` (tests pin it).
    """
    cap = max(cap, initial)
    # 2 ** attempt overflows a float for absurd counts; past the cap the exponent no longer matters.
    step = cap if attempt >= 64 else min(cap, initial * 2.0 ** max(attempt, 0))
    return step / 2 + rand() * step / 2
