"""Crash points: a test hook that ends the process at a named stage of a run.

`LAKEPORT_CRASH_AT=stage[:n]` ends the process the `n`th time (default 1) the run reaches
`stage`, in the way `LAKEPORT_CRASH_WITH` says: `exit` (os._exit, as SIGKILL or a power cut
would: nothing runs after it), `SIGINT` (Ctrl-C) or `SIGTERM`. Unset, a crash point is one
comparison with None. The import stages are listed in `IMPORT_STAGES`.
"""

from __future__ import annotations

import os
import signal
import time

AT_ENV = "LAKEPORT_CRASH_AT"
WITH_ENV = "LAKEPORT_CRASH_WITH"
CRASH_EXIT_CODE = 70

IMPORT_STAGES = (
    "listed",  # the file is picked, nothing read
    "read",  # mid-read: after the first batch of rows was parsed
    "diffed",  # mid-diff: after the first batch was fingerprinted and compared
    "before-commit",  # every row read, the Delta commit not started
    "committed",  # right after the Delta commit
    "rejected",  # after the rejected rows' commit, before the diff snapshot moves
    "snapshot",  # after the snapshot moved, before the file sequence moves
)

_armed: tuple[str, int] | None = None
_seen: dict[str, int] = {}


def arm(spec: str | None) -> None:
    """Set the crash point (`stage[:n]`), or clear it with None."""
    global _armed
    _seen.clear()
    if not spec:
        _armed = None
        return
    stage, _, nth = spec.partition(":")
    _armed = (stage, int(nth or 1))


arm(os.environ.get(AT_ENV))


def crash_point(stage: str) -> None:
    """End the process here if the crash hook names this stage (and this is its `n`th time)."""
    if _armed is None or _armed[0] != stage:
        return
    _seen[stage] = _seen.get(stage, 0) + 1
    if _seen[stage] != _armed[1]:
        return
    how = os.environ.get(WITH_ENV, "exit")
    if how == "exit":
        os._exit(CRASH_EXIT_CODE)
    os.kill(os.getpid(), signal.SIGTERM if how == "SIGTERM" else signal.SIGINT)
    # The signal's handler runs in the main thread; a worker thread waits here for it.
    time.sleep(1)
