"""A run of a job: its record (status, object, rows, bytes, seconds) kept in state.db."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from engine.errors import Interrupted, LakeportError, TransientError
from engine.lease import Lease
from engine.secrets import redact
from engine.store import Store
from pipelines.output import human_bytes

FAILED = "failed"
SUCCEEDED = "succeeded"
NO_NEW_FILE = "no new file"
ALREADY_IMPORTED = "already imported"
WAITING = "waiting for next file"
STOPPED = "stopped: no next file"
INTERRUPTED = "interrupted"


@dataclass
class RunRecord:
    """What one run did. `--output json` prints it as it is."""

    job: str
    status: str = "running"
    object: str | None = None
    """The object imported; for an export, its manifest."""
    kind: str = "import"
    """`import`, `export` (of an audience) or `events` (an event export): which counters
    below mean something."""
    run_id: int | None = None
    rows_read: int = 0
    rows_imported: int = 0
    rows_skipped: int = 0
    """Rows dropped by the diff: they were in the previous file."""
    rows_rejected: int = 0
    bytes: int = 0
    seconds: float = 0.0
    error: str | None = None
    note: str | None = None
    """Anything else the user should know (a header-only file, a reset diff...)."""
    users: int = 0
    """Users exported."""
    files: list[str] | None = None
    """The files an export wrote (its manifest last)."""
    events: int = 0
    """Events exported."""
    streams: dict[str, int] | None = None
    """Events exported, by stream."""
    retry: bool = False
    """Whether a failure may pass: the same run, started again later, may succeed (a network
    or S3 error that went on, a source that changed while it was read)."""

    @property
    def failed(self) -> bool:
        return self.status == FAILED

    def as_json(self) -> dict[str, Any]:
        shown = asdict(self)
        shown["seconds"] = round(self.seconds, 3)
        other = _HIDDEN[self.kind]
        return {
            k: v
            for k, v in shown.items()
            if (v is not None or k == "object") and k not in other and k != "kind"
        }

    def summary(self) -> str:
        head = f"job '{self.job}': {self.status}"
        if self.object:
            head += f": {self.object}"
        if self.failed:
            return f"{head}\n  {self.error}"
        if self.status != SUCCEEDED:
            return head + (f" ({self.note})" if self.note else "")
        if self.kind in ("export", "events"):
            return self._export_summary(head)
        rate = self.rows_read / self.seconds if self.seconds > 0 else 0.0
        lines = [
            head,
            f"  {self.rows_read:,} rows read, {self.rows_imported:,} imported, "
            f"{self.rows_skipped:,} unchanged (diff), {self.rows_rejected:,} rejected",
            f"  {human_bytes(self.bytes)} in {self.seconds:.2f} s ({rate:,.0f} rows/s)",
        ]
        if self.note:
            lines.append(f"  {self.note}")
        return "\n".join(lines)

    def _export_summary(self, head: str) -> str:
        count, what = (self.events, "events") if self.kind == "events" else (self.users, "users")
        rate = count / self.seconds if self.seconds > 0 else 0.0
        files = self.files or []
        data = len(files) - 1  # the last is the manifest
        lines = [
            head,
            f"  {count:,} {what} in {data:,} file{'' if data == 1 else 's'} and a manifest, "
            f"{human_bytes(self.bytes)} in {self.seconds:.2f} s ({rate:,.0f} {what}/s)",
        ]
        if self.streams:
            lines.append("  " + ", ".join(f"{n:,} from {name}" for name, n in self.streams.items()))
        lines += [f"  {name}" for name in files]
        if self.note:
            lines.append(f"  {self.note}")
        return "\n".join(lines)


_IMPORT_ONLY = {"rows_read", "rows_imported", "rows_skipped", "rows_rejected"}
_HIDDEN = {
    "import": {"users", "files", "events", "streams"},
    "export": _IMPORT_ONLY | {"events", "streams"},
    "events": _IMPORT_ONLY | {"users"},
}
"""The counters that mean nothing to a kind of run."""


def recorded(
    store: Store,
    job: str,
    work: Callable[[RunRecord], None],
    kind: str = "import",
    *,
    wait: float | None = 0.0,
) -> RunRecord:
    """Run `work` under the job's lease (one run of a job at a time), keeping its record in
    state.db: a lakeport error makes a failed run; an interruption (Ctrl-C, SIGTERM) an
    `interrupted` one, and goes on up. A run whose process dies shows `died` when the runs
    are next read.

    Args:
        wait: Seconds to wait while another run of the job holds the lease (None: as long as
            it takes); past that, `JobRunning` is raised and no run is recorded.
    """
    lease = f"job:{job}"
    with Lease(store.state, lease, wait=wait):
        return _recorded(store, job, work, kind, lease)


def interruption(exc: BaseException) -> str:
    """What an interrupted run's record says."""
    how = exc.signal_name if isinstance(exc, Interrupted) else "SIGINT (Ctrl-C)"
    return (
        f"interrupted by {how}: nothing that was not committed is kept; run the job again, "
        "it finishes or undoes what this run left"
    )


def _recorded(
    store: Store, job: str, work: Callable[[RunRecord], None], kind: str, lease: str
) -> RunRecord:
    run_id = store.state.start_run(job, lease=lease)
    record = RunRecord(job, kind=kind, run_id=run_id)
    started = time.perf_counter()
    try:
        work(record)
        if record.status == "running":
            record.status = SUCCEEDED
    except LakeportError as exc:
        record.status = FAILED
        record.error = redact(str(exc))
        record.retry = isinstance(exc, TransientError)
    except (KeyboardInterrupt, Interrupted) as exc:
        record.status = INTERRUPTED
        record.error = interruption(exc)
        raise
    finally:
        record.seconds = time.perf_counter() - started
        stats = {
            k: v
            for k, v in record.as_json().items()
            if k not in ("job", "status", "error", "run_id")
        }
        store.state.finish_run(
            run_id,
            record.status if record.status != "running" else FAILED,
            stats,
            object_key=record.object,
            error=record.error,
        )
    return record
