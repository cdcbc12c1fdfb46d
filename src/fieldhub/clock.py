"""Wall-clock time in epoch milliseconds, the unit of every timestamp in fieldhub."""

import time


def now_ms() -> int:
    """Current wall-clock time as integer epoch milliseconds."""
    return time.time_ns() // 1_000_000
