"""Imports under the faults of real S3 and real networks: every row exactly once, or a clear
failure that commits nothing and a re-run that finishes the work.

`CASES` is the table: each fault, the operation and request it hits, and the outcome expected.
Every case runs for csv-import and json-import, with the diff off and on, through the
fault-injecting proxy (tests/faults.py) in front of the S3 server; `LOCAL_CASES` are the faults
a local folder can have. Rows are counted as a multiset against the source files.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from engine.store import Store
from pipelines import importing, jobs
from pipelines.runs import RunRecord
from tests.conftest import S3Server, imported_rows
from tests.faults import FaultProxy, Rule

LAKEPORT = "import sys; from pipelines.cli import main; sys.argv[0] = 'lakeport'; main()"
ROWS = 240
WIDE = 3000
"""Bytes of payload a row: rows longer than the proxy's tiny segments."""

Row = tuple[str, str, str]


def rows_of(version: str, count: int = ROWS, start: int = 0) -> list[Row]:
    return [
        (f"u{i}", f"{version}-e{i % 7}", f"{i:06d}" + "x" * WIDE)
        for i in range(start, start + count)
    ]


def encode(kind: str, rows: list[Row]) -> bytes:
    if kind == "csv":
        return ("user_id,event,payload\n" + "".join(f"{u},{e},{p}\n" for u, e, p in rows)).encode()
    return "".join(
        json.dumps({"user_id": u, "event": e, "payload": p}) + "\n" for u, e, p in rows
    ).encode()


def job_text(kind: str, folder: str, auth: str | None, *, diff: bool) -> str:
    lines = [
        'name = "faulty"',
        f'type = "{kind}-import"',
        f'bucket = "{folder}"',
        'prefix = "events_"',
        'stream = "events"',
        f"diff = {'true' if diff else 'false'}",
    ]
    if auth:
        lines.append(f'auth = "{auth}"')
    return "\n".join(lines) + "\n"


def stream_rows(store: Store) -> Counter[Row]:
    frame = store.stream("events").select("user_id", "event", "payload").collect()
    return Counter(frame.iter_rows())


expected = imported_rows


@dataclass(frozen=True)
class Target:
    """The object the faults strike: a way to replace it, and its bytes."""

    replace: Callable[[], None]
    whole: Callable[[], bytes]


@dataclass(frozen=True)
class Case:
    """One fault: where it strikes, and whether the run gets past it (`ok`) or fails with
    `error` having committed nothing."""

    name: str
    rules: Callable[[Target], list[Rule]]
    error: str | None = None


CASES = [
    Case("500 on GET", lambda _: [Rule("get", "status", arg=500)]),
    Case("503 SlowDown on GET", lambda _: [Rule("get", "status", arg=503)]),
    Case("RequestTimeout on GET", lambda _: [Rule("get", "status", arg=400)]),
    Case("500 on LIST", lambda _: [Rule("list", "status", arg=500)]),
    Case("reset mid-body", lambda _: [Rule("get", "reset", arg=100_000)]),
    Case("reset twice", lambda _: [Rule("get", "reset", arg=50_000, nth=n) for n in (1, 2)]),
    Case("tiny TCP segments", lambda _: [Rule("get", "tiny", nth=None, arg=300)]),
    Case("slow answer", lambda _: [Rule("get", "slow", arg=1.5)]),
    Case(
        "a 200 answers the resumed Range read",
        lambda target: [
            Rule("get", "reset", arg=100_000),
            Rule("get", "ignore-range", nth=2, whole=target.whole),
        ],
        error="the whole object (no Content-Range)",
    ),
    Case(
        "body cut short, Content-Length consistent",
        lambda _: [Rule("get", "truncate", arg=200_000)],
        error="changed while it was read",
    ),
    Case(
        "body cut mid-field, Content-Length consistent",
        lambda _: [Rule("get", "truncate", arg=200_017)],
        error="changed while it was read",
    ),
    Case(
        "object replaced between LIST and GET",
        lambda target: [Rule("get", "replace", action=target.replace)],
        error="changed while it was read",
    ),
]


def run(store: Store, text: str) -> RunRecord:
    return jobs.run(store, jobs.load(text, "faulty.toml"))


@pytest.mark.parametrize("diff", [False, True], ids=["plain", "diff"])
@pytest.mark.parametrize("kind", ["csv", "json"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_an_s3_fault(
    case: Case, kind: str, diff: bool, tmp_path: Path, s3: S3Server, proxy: FaultProxy
) -> None:
    store = Store(tmp_path / "store")
    store.authorizations.add(replace(s3.authorization("proxied"), endpoint_url=proxy.endpoint))
    bucket = s3.new_bucket()
    text = job_text(kind, f"s3://{bucket}/in", "proxied", diff=diff)
    first = rows_of("v1")
    s3.put(bucket, "in/events_20261101.csv", encode(kind, first))
    assert run(store, text).status == "succeeded"
    # The second file shares half its rows with the first (the diff drops those).
    second = rows_of("v1", start=ROWS // 2)
    s3.put(bucket, "in/events_20261102.csv", encode(kind, second))
    replaced = rows_of("v2", count=ROWS + 10)

    def replace_object() -> None:
        s3.put(bucket, "in/events_20261102.csv", encode(kind, replaced))

    proxy.add(*case.rules(Target(replace_object, lambda: encode(kind, second))))
    record = run(store, text)
    fired = [r for r in proxy.rules if r.fired]
    assert fired, f"the fault of {case.name!r} never struck: {proxy.requests}"
    proxy.clear()
    if case.error is None:
        assert record.status == "succeeded", record.error
        assert stream_rows(store) == expected(first, second, diff=diff)
        return
    assert record.status == "failed"
    assert case.error in (record.error or "")
    assert "run the job again" in (record.error or "")
    assert stream_rows(store) == expected(first, diff=diff)  # nothing of the second
    again = run(store, text)
    assert again.status == "succeeded", again.error
    now = replaced if "replaced" in case.name else second
    assert stream_rows(store) == expected(first, now, diff=diff)
    assert run(store, text).status in ("no new file", "waiting for next file")


@pytest.mark.parametrize("diff", [False, True], ids=["plain", "diff"])
@pytest.mark.parametrize("kind", ["csv", "json"])
@pytest.mark.parametrize("fault", ["replaced", "truncated"])
def test_a_local_file_that_changes_after_it_was_listed(
    fault: str, kind: str, diff: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    store = Store(tmp_path / "store")
    text = job_text(kind, str(folder), None, diff=diff)
    first = rows_of("v1")
    (folder / "events_20261101.csv").write_bytes(encode(kind, first))
    assert run(store, text).status == "succeeded"
    second = rows_of("v1", start=ROWS // 2)
    target = folder / "events_20261102.csv"
    target.write_bytes(encode(kind, second))
    now = rows_of("v2") if fault == "replaced" else second[: ROWS // 4]
    pick = importing.pick_file

    def pick_then_change(*args: Any, **kwargs: Any) -> Any:
        picked = pick(*args, **kwargs)
        target.write_bytes(encode(kind, now))
        return picked

    monkeypatch.setattr(importing, "pick_file", pick_then_change)
    record = run(store, text)
    assert record.status == "failed"
    assert "changed while it was read" in (record.error or "")
    assert stream_rows(store) == expected(first, diff=diff)
    monkeypatch.setattr(importing, "pick_file", pick)
    assert run(store, text).status == "succeeded"
    assert stream_rows(store) == expected(first, now, diff=diff)


@pytest.mark.parametrize("kind", ["csv", "json"])
@pytest.mark.parametrize("case", [c for c in CASES if c.error], ids=lambda c: c.name)
def test_a_failing_fault_ends_the_cli_with_exit_1_and_one_clear_line(
    case: Case, kind: str, tmp_path: Path, s3: S3Server, proxy: FaultProxy
) -> None:
    # Also for the process as a whole: no fatal interpreter error while threads unwind.
    store_path = tmp_path / "store"
    Store(store_path).authorizations.add(
        replace(s3.authorization("proxied"), endpoint_url=proxy.endpoint)
    )
    bucket = s3.new_bucket()
    body = encode(kind, rows_of("v1", count=2000))
    s3.put(bucket, "in/events_20261101.csv", body)
    job = tmp_path / "job.toml"
    job.write_text(job_text(kind, f"s3://{bucket}/in", "proxied", diff=False))

    def replace_object() -> None:
        s3.put(bucket, "in/events_20261101.csv", body + body[-3020:])

    proxy.add(*case.rules(Target(replace_object, lambda: body)))
    done = subprocess.run(
        [sys.executable, "-c", LAKEPORT, "--store", str(store_path), "run", str(job)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert case.error is not None
    assert case.error in done.stderr
    assert "Fatal Python error" not in done.stderr
    assert "Traceback" not in done.stderr
