"""`state.db`: authorizations, jobs, runs, watermarks and committed appends, in SQLite.

The schema is versioned with `PRAGMA user_version`; `MIGRATIONS[i]` takes a database from version
`i` to `i + 1`, and each runs in one transaction. Secrets are never stored here, only references to
them (see `engine.secrets`).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from engine.errors import StoreError

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE settings (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE authorizations (
        name        TEXT PRIMARY KEY,
        kind        TEXT NOT NULL,
        settings    TEXT NOT NULL,  -- JSON of the fields that are not secret
        secret_refs TEXT NOT NULL,  -- JSON of field -> env:NAME | store:ID
        created_at  TEXT NOT NULL
    );
    CREATE TABLE jobs (
        name       TEXT PRIMARY KEY,
        type       TEXT NOT NULL,
        spec       TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE runs (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        job         TEXT NOT NULL,
        status      TEXT NOT NULL,
        started_at  TEXT NOT NULL,
        finished_at TEXT,
        object      TEXT,
        stats       TEXT NOT NULL DEFAULT '{}',
        error       TEXT
    );
    CREATE INDEX runs_by_job ON runs (job, id);
    CREATE TABLE watermarks (
        job        TEXT NOT NULL,
        key        TEXT NOT NULL,
        value      TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (job, key)
    );
    CREATE TABLE appends (
        app_id        TEXT PRIMARY KEY,
        stream        TEXT NOT NULL,
        job           TEXT NOT NULL,
        source        TEXT NOT NULL,
        etag          TEXT,
        rows          INTEGER,
        table_version INTEGER,
        committed_at  TEXT NOT NULL
    );
    """,
    """
    CREATE TABLE audiences (
        name       TEXT PRIMARY KEY,
        expression TEXT NOT NULL,  -- an SQL condition on profile fields, checked at creation
        created_at TEXT NOT NULL
    );
    """,
    """
    CREATE TABLE leases (
        name         TEXT PRIMARY KEY,  -- job:NAME, or append:STREAM:ID for a stream writer
        pid          INTEGER NOT NULL,
        host         TEXT NOT NULL,
        run_id       INTEGER,
        started_at   TEXT NOT NULL,
        heartbeat_at TEXT NOT NULL
    );
    CREATE TABLE journal (
        job        TEXT NOT NULL,
        entry      TEXT NOT NULL,  -- what a run has begun and not yet finished (JSON value)
        value      TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (job, entry)
    );
    ALTER TABLE runs ADD COLUMN pid INTEGER;
    ALTER TABLE runs ADD COLUMN host TEXT;
    """,
    """
    CREATE TABLE schedules (
        job        TEXT PRIMARY KEY,          -- a kept-updated job, as the scheduler keeps it
        state      TEXT NOT NULL DEFAULT 'active',  -- active | paused | stopped
        due_at     TEXT,                      -- when it runs next (UTC), NULL: not planned yet
        attempt    INTEGER NOT NULL DEFAULT 0,  -- retries so far of a run that failed transiently
        started_at TEXT,                      -- the last run the scheduler started
        started_due TEXT,                     -- the time that run was due
        ended_at   TEXT,                      -- and when it ended
        outcome    TEXT,                      -- what it came to (a run status, or an error)
        updated_at TEXT NOT NULL
    );
    """,
)


_SET_WATERMARK = (
    "INSERT INTO watermarks (job, key, value, updated_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (job, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"
)
LEASE_SECONDS = 60.0
"""A lease whose holder has not beaten its heart for this long is free, wherever it ran."""
RUNNING = "running"
DIED = "died"


def now() -> datetime:
    return datetime.now(UTC)


def this_host() -> str:
    return socket.gethostname()


@dataclass(frozen=True)
class Holder:
    """Who holds a lease: a process on a host, since when, for which run."""

    name: str
    pid: int
    host: str
    run_id: int | None
    started_at: str
    heartbeat_at: str

    def alive(self, ttl: float = LEASE_SECONDS) -> bool:
        """Whether the holder may still be at work: on this host, its process exists and has
        beaten its heart lately; elsewhere, its heart has beaten within `ttl`."""
        if self.host == this_host() and not _process_exists(self.pid):
            return False
        beat = datetime.fromisoformat(self.heartbeat_at)
        return now() - beat < timedelta(seconds=ttl)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


@dataclass(frozen=True)
class StoredAuthorization:
    name: str
    kind: str
    settings: dict[str, Any]
    secret_refs: dict[str, str]
    created_at: str


@dataclass(frozen=True)
class Run:
    id: int
    job: str
    status: str
    started_at: str
    finished_at: str | None
    object: str | None
    stats: dict[str, Any]
    error: str | None


@dataclass(frozen=True)
class ScheduleRow:
    """What the scheduler keeps of a kept-updated job (times as ISO 8601 UTC text)."""

    job: str
    state: str = "active"
    due_at: str | None = None
    attempt: int = 0
    started_at: str | None = None
    started_due: str | None = None
    ended_at: str | None = None
    outcome: str | None = None


_SCHEDULE_COLUMNS = "job, state, due_at, attempt, started_at, started_due, ended_at, outcome"


class StateDB:
    """The store's SQLite database. Each method is one short transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._migrate()

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self.path}: {exc}") from exc
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("BEGIN IMMEDIATE")
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()

    def _migrate(self) -> None:
        with self._connect() as conn:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > len(MIGRATIONS):
                raise StoreError(
                    f"{self.path} has schema version {version}, newer than this lakeport "
                    f"knows ({len(MIGRATIONS)}): upgrade lakeport"
                )
            for target in range(version, len(MIGRATIONS)):
                for statement in MIGRATIONS[target].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {target + 1}")

    def schema_version(self) -> int:
        with self._connect() as conn:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])

    # Store settings

    def get_setting(self, key: str) -> str | None:
        with self._connect() as conn:
            row = conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_setting(self, key: str, value: str) -> None:
        with self._connect() as conn:
            conn.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def delete_setting(self, key: str) -> bool:
        with self._connect() as conn:
            return conn.execute("DELETE FROM settings WHERE key = ?", (key,)).rowcount > 0

    # Authorizations

    def put_authorization(
        self, name: str, kind: str, settings: dict[str, Any], secret_refs: dict[str, str]
    ) -> None:
        with self._connect() as conn:
            conn.execute(
                "INSERT INTO authorizations (name, kind, settings, secret_refs, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (name, kind, json.dumps(settings), json.dumps(secret_refs), now().isoformat()),
            )

    def get_authorization(self, name: str) -> StoredAuthorization | None:
        with self._connect() as conn:
            row = conn.execute(
                "SELECT name, kind, settings, secret_refs, created_at FROM authorizations "
                "WHERE name = ?",
                (name,),
            ).fetchone()
        return None if row is None else _authorization(row)

    def list_authorizations(self) -> list[StoredAuthorization]:
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT name, kind, settings, secret_refs, created_at FROM authorizations "
                "ORDER BY name"
            ).fetchall()
        return [_authorization(row) for row in rows]

    def delete_authorization(self, name: str) -> bool:
        with self._connect() as conn:
            return conn.execute("DELETE FROM authorizations WHERE name = ?", (name,)).rowcount > 0

    # Jobs

    def put_job(self, name: str, job_type: str, spec: str, *, replace: bool = False) -> bool:
        """Register a job; False when the name is taken and `replace` is not set."""
        stamp = now().isoformat()
        with self._connect() as conn:
            if conn.execute("SELECT 1 FROM jobs WHERE name = ?", (name,)).fetchone():
                if not replace:
                    return False
                conn.execute(
                    "UPDATE jobs SET type = ?, spec = ?, updated_at = ? WHERE name = ?",
                    (job_type, spec, stamp, name),
                )
                # Its schedule may be another: planned again from the new file.
                conn.execute(
                    "UPDATE schedules SET due_at = NULL, attempt = 0 WHERE job = ?", (name,)
                )
                return True
            conn.execute(
                "INSERT INTO jobs (name, type, spec, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (name, job_type, spec, stamp, stamp),
            )
        return True

    def get_job(self, name: str) -> tuple[str, str] | None:
        """The job's type and spec text."""
        with self._connect() as conn:
            row = conn.execute("SELECT type, spec FROM jobs WHERE name = ?", (name,)).fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

    def list_jobs(self) -> list[tuple[str, str, str]]:
        """Name, type and last update of every registered job."""
        with self._connect() as conn:
            rows = conn.execute("SELECT name, type, updated_at FROM jobs ORDER BY name").fetchall()
        return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]

    def job_files(self) -> list[tuple[str, str, str]]:
        """Name, type and spec text of every registered job."""
        with self._connect() as conn:
            rows = conn.execute("SELECT name, type, spec FROM jobs ORDER BY name").fetchall()
        return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]

    def delete_job(self, name: str) -> bool:
        with self._connect() as conn:
            deleted = conn.execute("DELETE FROM jobs WHERE name = ?", (name,)).rowcount > 0
            conn.execute("DELETE FROM watermarks WHERE job = ?", (name,))
            conn.execute("DELETE FROM schedules WHERE job = ?", (name,))
        return deleted

    # Schedules: what the scheduler keeps of each kept-updated job

    def schedule_of(self, job: str) -> ScheduleRow:
        """The job's schedule row (a new, active one when it has none yet)."""
        with self._connect() as conn:
            row = conn.execute(f"SELECT {_SCHEDULE_COLUMNS} FROM schedules WHERE job = ?", (job,))
            found = row.fetchone()
        return ScheduleRow(job) if found is None else ScheduleRow(*found)

    def schedules(self) -> dict[str, ScheduleRow]:
        with self._connect() as conn:
            rows = conn.execute(f"SELECT {_SCHEDULE_COLUMNS} FROM schedules").fetchall()
        return {str(r[0]): ScheduleRow(*r) for r in rows}

    def set_schedule(self, job: str, **changed: Any) -> None:
        """Change fields of the job's schedule row (made if it has none)."""
        unknown = set(changed) - set(ScheduleRow.__dataclass_fields__) - {"job"}
        if unknown:
            raise ValueError(f"no schedule field {', '.join(sorted(unknown))}")
        names = ", ".join(changed)
        updates = ", ".join(f"{n} = excluded.{n}" for n in (*changed, "updated_at"))
        with self._connect() as conn:
            conn.execute(
                f"INSERT INTO schedules (job, {names}, updated_at) "
                f"VALUES (?, {', '.join('?' for _ in changed)}, ?) "
                f"ON CONFLICT (job) DO UPDATE SET {updates}",
                (job, *changed.values(), now().isoformat()),
            )

    # Audiences

    def put_audience(self, name: str, expression: str) -> bool:
        """Keep an audience; False when the name is taken."""
        with self._connect() as conn:
            try:
                conn.execute(
                    "INSERT INTO audiences (name, expression, created_at) VALUES (?, ?, ?)",
                    (name, expression, now().isoformat()),
                )
            except sqlite3.IntegrityError:
                return False
        return True

    def audiences(self) -> dict[str, str]:
        """Every audience's expression, by name."""
        with self._connect() as conn:
            rows = conn.execute("SELECT name, expression FROM audiences ORDER BY name").fetchall()
        return {str(r[0]): str(r[1]) for r in rows}

    def delete_audience(self, name: str) -> bool:
        with self._connect() as conn:
            return conn.execute("DELETE FROM audiences WHERE name = ?", (name,)).rowcount > 0

    # Watermarks

    def get_watermark(self, job: str, key: str) -> str | None:
        with self._connect() as conn:
            row = conn.execute(
                "SELECT value FROM watermarks WHERE job = ? AND key = ?", (job, key)
            ).fetchone()
        return None if row is None else str(row[0])

    def set_watermark(self, job: str, key: str, value: str) -> None:
        with self._connect() as conn:
            conn.execute(
                _SET_WATERMARK,
                (job, key, value, now().isoformat()),
            )

    # Leases: one holder at a time, lost when the holder dies

    def take_lease(self, name: str, *, ttl: float = LEASE_SECONDS) -> Holder | None:
        """Take the lease `name` for this process; None when it is taken, else the holder
        that is in the way (alive). A dead holder's lease is taken over."""
        stamp = now().isoformat()
        with self._connect() as conn:
            held = _holder(conn, name)
            if held is not None and held.alive(ttl):
                return held
            conn.execute(
                "INSERT INTO leases (name, pid, host, run_id, started_at, heartbeat_at) "
                "VALUES (?, ?, ?, NULL, ?, ?) ON CONFLICT (name) DO UPDATE SET pid = excluded.pid, "
                "host = excluded.host, run_id = NULL, started_at = excluded.started_at, "
                "heartbeat_at = excluded.heartbeat_at",
                (name, os.getpid(), this_host(), stamp, stamp),
            )
        return None

    def beat_lease(self, name: str) -> bool:
        """Renew this process's lease; False when it is no longer this process's."""
        with self._connect() as conn:
            return (
                conn.execute(
                    "UPDATE leases SET heartbeat_at = ? WHERE name = ? AND pid = ? AND host = ?",
                    (now().isoformat(), name, os.getpid(), this_host()),
                ).rowcount
                > 0
            )

    def release_lease(self, name: str) -> None:
        with self._connect() as conn:
            conn.execute(
                "DELETE FROM leases WHERE name = ? AND pid = ? AND host = ?",
                (name, os.getpid(), this_host()),
            )

    def leases(self, prefix: str = "") -> list[Holder]:
        """The leases whose name starts with `prefix`, alive or not."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT name, pid, host, run_id, started_at, heartbeat_at FROM leases "
                "WHERE substr(name, 1, ?) = ? ORDER BY started_at",
                (len(prefix), prefix),
            ).fetchall()
        return [Holder(*row) for row in rows]

    # The journal: what a run has begun and must be finished or undone by the next one

    def put_journal(self, job: str, entry: str, value: dict[str, Any]) -> None:
        with self._connect() as conn:
            conn.execute(
                "INSERT INTO journal (job, entry, value, created_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (job, entry) DO UPDATE SET value = excluded.value",
                (job, entry, json.dumps(value), now().isoformat()),
            )

    def get_journal(self, job: str, entry: str) -> dict[str, Any] | None:
        with self._connect() as conn:
            row = conn.execute(
                "SELECT value FROM journal WHERE job = ? AND entry = ?", (job, entry)
            ).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def journal(self) -> list[tuple[str, str]]:
        """Every (job, entry) in the journal: the runs left to finish or undo."""
        with self._connect() as conn:
            rows = conn.execute("SELECT job, entry FROM journal ORDER BY job, entry").fetchall()
        return [(str(r[0]), str(r[1])) for r in rows]

    def delete_journal(self, job: str, entry: str) -> None:
        with self._connect() as conn:
            conn.execute("DELETE FROM journal WHERE job = ? AND entry = ?", (job, entry))

    def end_journal(
        self,
        job: str,
        entry: str,
        watermarks: dict[str, str] | None = None,
        *,
        run: tuple[int, str] | None = None,
    ) -> None:
        """Drop a journal entry; in the same transaction, move the job's `watermarks` (what
        the run that ends has done) and mark its `run` (id, object) succeeded: a process that
        stops after this leaves the work done and said so, and before it, not done."""
        with self._connect() as conn:
            conn.execute("DELETE FROM journal WHERE job = ? AND entry = ?", (job, entry))
            for key, value in (watermarks or {}).items():
                conn.execute(
                    _SET_WATERMARK,
                    (job, key, value, now().isoformat()),
                )
            if run is not None:
                conn.execute(
                    "UPDATE runs SET status = 'succeeded', finished_at = ?, object = ? "
                    "WHERE id = ? AND status = 'running'",
                    (now().isoformat(), run[1], run[0]),
                )

    def watermarks(self, job: str) -> dict[str, str]:
        """Every watermark of a job, by key."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT key, value FROM watermarks WHERE job = ?", (job,)
            ).fetchall()
        return {str(r[0]): str(r[1]) for r in rows}

    # Runs

    def start_run(
        self, job: str, object_key: str | None = None, *, lease: str | None = None
    ) -> int:
        """A new run, `running`; with `lease` (held by this process), the lease names it, so
        that the run shows `died` once the lease is lost without the run finishing."""
        with self._connect() as conn:
            cursor = conn.execute(
                "INSERT INTO runs (job, status, started_at, object, pid, host) "
                "VALUES (?, 'running', ?, ?, ?, ?)",
                (job, now().isoformat(), object_key, os.getpid(), this_host()),
            )
            run_id = int(cursor.lastrowid or 0)
            if lease is not None:
                conn.execute(
                    "UPDATE leases SET run_id = ? WHERE name = ? AND pid = ? AND host = ?",
                    (run_id, lease, os.getpid(), this_host()),
                )
            return run_id

    def set_run_object(self, run_id: int, object_key: str) -> None:
        """Name the object a run works on as soon as it is known (a run that dies says it)."""
        with self._connect() as conn:
            conn.execute("UPDATE runs SET object = ? WHERE id = ?", (object_key, run_id))

    def finish_run(
        self,
        run_id: int,
        status: str,
        stats: dict[str, Any],
        *,
        object_key: str | None = None,
        error: str | None = None,
    ) -> None:
        with self._connect() as conn:
            conn.execute(
                "UPDATE runs SET status = ?, finished_at = ?, stats = ?, error = ?, "
                "object = COALESCE(?, object) WHERE id = ?",
                (status, now().isoformat(), json.dumps(stats), error, object_key, run_id),
            )

    def runs(self, job: str | None = None, limit: int = 20) -> list[Run]:
        """The latest runs, newest first. A run still `running` whose process has lost its
        job's lease (it died: killed, or its machine stopped) is marked `died` here."""
        query = "SELECT id, job, status, started_at, finished_at, object, stats, error FROM runs"
        params: tuple[Any, ...] = ()
        if job is not None:
            query += " WHERE job = ?"
            params = (job,)
        with self._connect() as conn:
            rows = conn.execute(query + " ORDER BY id DESC LIMIT ?", (*params, limit)).fetchall()
            found = [Run(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), r[7]) for r in rows]
            return [_died(conn, run) if run.status == RUNNING else run for run in found]

    # Appends (the state's copy of what the Delta log already guarantees)

    def record_append(
        self,
        app_id: str,
        *,
        stream: str,
        job: str,
        source: str,
        etag: str | None,
        rows: int | None,
        table_version: int | None,
    ) -> None:
        with self._connect() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO appends (app_id, stream, job, source, etag, rows, "
                "table_version, committed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (app_id, stream, job, source, etag, rows, table_version, now().isoformat()),
            )

    def append_recorded(self, app_id: str) -> bool:
        with self._connect() as conn:
            row = conn.execute("SELECT 1 FROM appends WHERE app_id = ?", (app_id,)).fetchone()
        return row is not None


def _holder(conn: sqlite3.Connection, name: str) -> Holder | None:
    row = conn.execute(
        "SELECT name, pid, host, run_id, started_at, heartbeat_at FROM leases WHERE name = ?",
        (name,),
    ).fetchone()
    return None if row is None else Holder(*row)


def _died(conn: sqlite3.Connection, run: Run) -> Run:
    """`run` as it is, or marked `died` when no live holder of its job's lease runs it."""
    held = _holder(conn, f"job:{run.job}")
    if held is not None and held.run_id == run.id and held.alive():
        return run
    pid, host = conn.execute("SELECT pid, host FROM runs WHERE id = ?", (run.id,)).fetchone()
    where = f" (pid {pid} on {host})" if pid is not None else ""
    error = (
        f"the process{where} stopped without finishing the run (killed, or its machine "
        "stopped): run the job again; it finishes or undoes what this run left"
    )
    conn.execute(
        "UPDATE runs SET status = ?, error = ? WHERE id = ? AND status = ?",
        (DIED, error, run.id, RUNNING),
    )
    return Run(run.id, run.job, DIED, run.started_at, run.finished_at, run.object, run.stats, error)


def _authorization(row: tuple[Any, ...]) -> StoredAuthorization:
    return StoredAuthorization(
        name=row[0],
        kind=row[1],
        settings=json.loads(row[2]),
        secret_refs=json.loads(row[3]),
        created_at=row[4],
    )
