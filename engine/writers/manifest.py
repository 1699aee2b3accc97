"""The manifest of an export: what it wrote, written last, so that a reader who finds it knows
every file it lists is complete.

`<stem>_manifest.json` holds the run (id, job, what was exported: the audience, or the streams and
the table versions their events came from; started, finished), the format (and
for multi-CSV each table's columns), the schema of the rows (field names and types), and for each
file its key, rows, bytes and SHA-256.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import pyarrow as pa

from engine.storage.folders import Destination
from engine.writers.sink import WrittenFile


def manifest(
    files: Sequence[WrittenFile],
    schema: pa.Schema,
    *,
    run_id: str,
    job: str,
    about: Mapping[str, Any],
    started: datetime,
    finished: datetime,
    details: Mapping[str, Any] | None = None,
) -> bytes:
    """The manifest's JSON text; `about` (what was exported) and `details` (the format, its
    tables...) go in as they are."""
    document: dict[str, Any] = {
        "run_id": run_id,
        "job": job,
        **about,
        "started": started.isoformat(),
        "finished": finished.isoformat(),
        **(details or {}),
        "schema": [{"name": f.name, "type": _type_name(f.type)} for f in schema],
        "files": [
            {"key": f.key, "rows": f.rows, "bytes": f.bytes, "sha256": f.sha256} for f in files
        ],
        "rows": sum(f.rows for f in files),
        "bytes": sum(f.bytes for f in files),
    }
    return (json.dumps(document, indent=2) + "\n").encode()


def write_manifest(destination: Destination, key: str, text: bytes) -> None:
    """Write the manifest (after every data file)."""
    target = destination.open(key)
    try:
        target.write(text)
        target.complete()
    except BaseException:
        target.abort()
        raise


def _type_name(kind: pa.DataType) -> str:
    """The type as the manifest names it: text held as string views (an in-memory layout,
    not a type of the files) is `string`."""
    return str(_plain(kind))


def _plain(kind: pa.DataType) -> pa.DataType:
    if pa.types.is_string_view(kind):
        return pa.string()
    if pa.types.is_list(kind):
        return pa.list_(kind.value_field.with_type(_plain(kind.value_type)))
    return kind
