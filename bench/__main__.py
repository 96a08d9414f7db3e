"""``python -m bench [NAME ...] [-- OPTION ...]``: run benchmark modules one after another.

A NAME selects ``bench_NAME.py`` (``consistency`` or ``bench_consistency``); none runs them all.
Options after ``--`` go to each selected module (``python -m bench keyval_http -- --executor
thread --executor inline``).
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    args = sys.argv[1:]
    names, options = (args[: args.index("--")], args[args.index("--") + 1 :]) if "--" in args else (args, [])
    selected = {name if name.startswith("bench_") else f"bench_{name}" for name in names}
    failed = 0
    for path in sorted(HERE.glob("bench_*.py")):
        if selected and path.stem not in selected:
            continue
        print(f"\n##### {path.stem}", flush=True)
        sys.argv = [str(path), *options]  # the module parses its own options, never our names
        try:
            runpy.run_path(str(path), run_name="__main__")
        except SystemExit as exc:  # a module's ``sys.exit(main())`` must not end the whole run
            if exc.code not in (None, 0):
                print(f"##### {path.stem} exited with {exc.code}", flush=True)
                failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
