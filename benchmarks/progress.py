"""Progress lines on stderr, stamped with the time since the run started."""

from __future__ import annotations

import sys
import time

_START = time.perf_counter()


def note(message: str) -> None:
    """Print one progress line on stderr (the table and the JSON path go to stdout)."""
    elapsed = time.perf_counter() - _START
    print(f"[{elapsed:7.1f}s] {message}", file=sys.stderr, flush=True)
