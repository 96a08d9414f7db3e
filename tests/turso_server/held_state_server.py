"""``turso-server`` whose state-file writes wait while the file ``$HELD_STATE_GATE`` exists.

A real disk cannot be made slow on demand, and what a request sees while the state file is being
written (or a kill -9 in the middle of that write) is what the durability tests need. Everything
else is the real server, run as ``turso-server`` is.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from turso_server import _state
from turso_server.cli import main

GATE = Path(os.environ["HELD_STATE_GATE"])
_real_write = _state._write_atomically


def _held_write(path: Path, text: str) -> None:
    while GATE.exists():
        time.sleep(0.01)
    _real_write(path, text)


_state._write_atomically = _held_write
main()
