"""An import job's state and how it moves with the stream commit: its place in its file
sequence (`last_file`), and `Commit`, which keeps the journal entry of an object's commit until
the rejected rows, the diff snapshot and the file sequence have moved with it. `settle` finishes
or undoes what a stopped run left, as the Delta log says."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from engine.crash import crash_point
from engine.diff import Snapshots
from engine.storage import FileInfo
from engine.store import Source, Store, append_id

logger = logging.getLogger(__name__)

LAST_FILE = "last_file"


@dataclass(frozen=True)
class Picked:
    file: FileInfo
    time: datetime | None
    """The time in its name, for a sequence."""


def last_file(store: Store, job: str) -> tuple[datetime, str] | None:
    """The time and name of the last file this job imported in its sequence."""
    stored = store.state.get_watermark(job, LAST_FILE)
    if stored is None:
        return None
    value = json.loads(stored)
    if value.get("time") is None:
        return None
    return datetime.fromisoformat(value["time"]), str(value["name"])


def remember_file(store: Store, job: str, picked: Picked) -> None:
    value = {
        "name": picked.file.name,
        "url": picked.file.url,
        "etag": picked.file.etag,
        "time": picked.time.isoformat() if picked.time else None,
    }
    store.state.set_watermark(job, LAST_FILE, json.dumps(value))


def has_imported(store: Store, job: str) -> bool:
    return store.state.get_watermark(job, LAST_FILE) is not None


JOURNAL = "import"
"""The journal entry of an import whose commit is under way."""


@dataclass(frozen=True)
class Commit:
    """One object's commit to a stream, with what moves with it: the rejected rows, the diff
    snapshot and the job's place in its file sequence. Kept in the journal from `begin` to the
    end of `finish`, so that a run that stops anywhere in between is finished (the Delta log
    has the commit) or undone (it has not) by `settle`."""

    job: str
    stream: str
    source: Source
    picked: Picked

    @property
    def id(self) -> str:
        return append_id(self.job, self.source)

    def snapshots(self, store: Store) -> Snapshots:
        return Snapshots(store.snapshots_path(self.job), spill=store.path / "tmp")

    def staged_rejects(self, store: Store) -> Path:
        return self.snapshots(store).pending(self.id)[0]

    def begin(self, store: Store) -> None:
        store.state.put_journal(self.job, JOURNAL, self.as_json())

    def finish(self, store: Store) -> None:
        """After the stream commit: the rest moves on; each step may be done again."""
        commit_rejected(store, self.stream, self.job, self.source, self.staged_rejects(store))
        crash_point("rejected")
        self.snapshots(store).promote(self.id)
        crash_point("snapshot")
        remember_file(store, self.job, self.picked)
        store.state.delete_journal(self.job, JOURNAL)

    def undo_files(self, store: Store) -> None:
        """What a run that did not commit wrote beside the stream: its pending snapshot and
        rejected rows, and the stream's data files no commit references."""
        self.snapshots(store).discard(self.id)
        self.staged_rejects(store).unlink(missing_ok=True)
        store.remove_unreferenced(self.stream)

    def as_json(self) -> dict[str, Any]:
        picked = self.picked
        return {
            "stream": self.stream,
            "key": self.source.key,
            "etag": self.source.etag,
            "file": {
                "url": picked.file.url,
                "name": picked.file.name,
                "size": picked.file.size,
                "etag": picked.file.etag,
            },
            "time": picked.time.isoformat() if picked.time else None,
        }

    @classmethod
    def from_json(cls, job: str, value: dict[str, Any]) -> Commit:
        file = value["file"]
        info = FileInfo(
            url=file["url"],
            name=file["name"],
            size=int(file["size"]),
            last_modified=None,
            etag=file["etag"],
        )
        time = datetime.fromisoformat(value["time"]) if value.get("time") else None
        return cls(job, value["stream"], Source(value["key"], value["etag"]), Picked(info, time))


def settle(store: Store, job: str, *, raising: bool = False) -> str | None:
    """Finish or undo the commit a run of `job` left in the journal, as the Delta log says;
    what was done, or None when nothing was left. A failure is raised with `raising`, else
    left for the next run (it is settled then)."""
    entry = store.state.get_journal(job, JOURNAL)
    if entry is None:
        return None
    commit = Commit.from_json(job, entry)
    try:
        if store.is_committed(commit.stream, job, commit.source):
            commit.finish(store)
            return f"finished the commit of {commit.source.key} that an earlier run began"
        commit.undo_files(store)
        store.state.delete_journal(job, JOURNAL)
        return f"undid the unfinished import of {commit.source.key} that an earlier run began"
    except Exception:
        if raising:
            raise
        logger.warning("the import of %s is left for the next run to settle", commit.source.key)
        return None


def commit_rejected(store: Store, stream: str, job: str, source: Source, staged: Path) -> None:
    """After the stream commit: the staged rejected rows go to the stream's rejected table.

    Also run when a re-run finds the object already committed, so a crash between the two
    commits loses no rejected row.
    """
    if not staged.is_file():
        return
    table = pq.ParquetFile(staged)
    reader = pa.RecordBatchReader.from_batches(table.schema_arrow, table.iter_batches())
    store.append_rejected(stream, reader, source=source, job=job)
    staged.unlink()
