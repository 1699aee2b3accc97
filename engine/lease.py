"""One run of a job at a time: a lease in state.db that a dead holder cannot keep.

The holder's process beats the lease's heart from a thread while it works. Another process
finds the lease free when the holder's process is gone (same host) or its heart has not beaten
for `LEASE_SECONDS` (any host), and takes it over.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType

from engine.errors import TransientError
from engine.state import LEASE_SECONDS, Holder, StateDB

BEAT_SECONDS = LEASE_SECONDS / 4


class JobRunning(TransientError):
    """Another run of the job holds its lease."""

    def __init__(self, job: str, holder: Holder) -> None:
        self.holder = holder
        super().__init__(
            f"job '{job}' is running (pid {holder.pid} on {holder.host}, since "
            f"{holder.started_at[:19].replace('T', ' ')} UTC): wait for it to finish, or run "
            "with --wait to start when it has"
        )


class Lease:
    """The lease `name`, held from `__enter__` to `__exit__`, its heart beaten meanwhile.

    Args:
        state: The store's state.db.
        name: What is leased (`job:NAME`, or `append:TABLE_URI|APP_ID` for an append).
        wait: Seconds to wait for a held lease (0: fail at once with `JobRunning`; None:
            wait as long as it takes).
    """

    def __init__(
        self, state: StateDB, name: str, *, wait: float | None = 0.0, poll: float = 0.5
    ) -> None:
        self.state = state
        self.name = name
        self.wait = wait
        self.poll = poll
        self._stop = threading.Event()
        self._beating: threading.Thread | None = None

    def __enter__(self) -> Lease:
        deadline = None if self.wait is None else time.monotonic() + self.wait
        while (holder := self.state.take_lease(self.name)) is not None:
            if deadline is not None and time.monotonic() >= deadline:
                raise JobRunning(self.name.removeprefix("job:"), holder)
            time.sleep(self.poll)
        self._beating = threading.Thread(target=self._beat, name="lakeport-lease", daemon=True)
        self._beating.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._beating is not None:
            self._beating.join(timeout=5)
        self.state.release_lease(self.name)

    def _beat(self) -> None:
        while not self._stop.wait(BEAT_SECONDS):
            try:
                self.state.beat_lease(self.name)
            except Exception:  # a busy database: the next beat tries again, well within the TTL
                continue
