"""How an export's files become the export, whatever stops the run on the way.

`Staging` wraps the destination for the sinks. A file whose key is free is written under its
key; a file whose key is taken (a re-export with a fixed `filename`: the previous export is
there) is written under a staged key beside it, so the previous export stays whole until the
new one is decided. Everything a run begins or completes is kept in its ledger, which the
caller saves (state.db's journal) before each step is taken.

`Staging.commit` then decides: the ledger says `committing`, the staged files are put in
place, the manifest last (written beforehand under a staged key when it replaces another), and
only then the previous export's files that the new manifest does not list are removed. After
the decision only renames (local) or server-side copies (S3) and deletes are left, which a later
run can always finish. `settle`, run by the next run of
the job or by `lakeport cleanup`, finishes a run that was deciding (it rolls forward) and takes
back everything of a run that had not (it rolls back): its open uploads, temporary files and
files that no manifest lists.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from engine.crash import crash_point
from engine.errors import ConfigError
from engine.storage.folders import Begun, Destination, Target

logger = logging.getLogger("engine.writers")

WRITING = "writing"
COMMITTING = "committing"
STAGED = ".lakeport-staged-"
"""The prefix of a staged file's name (beside the file it is to replace)."""

Save = Callable[[dict[str, Any] | None], None]
"""Keeps the ledger (None: the run left nothing to settle)."""


class Staging:
    """The destination as the sinks see it (see the module)."""

    def __init__(self, destination: Destination, run_id: str, manifest: str, save: Save) -> None:
        self.destination = destination
        self.save = save
        self.ledger: dict[str, Any] = {
            "run": run_id,
            "phase": WRITING,
            "manifest": manifest,
            "files": {},
        }
        """`files`: for each key, where it is written (`at`), what its target began
        (`begun`) and whether it is complete."""
        self._staged: set[str] = set()
        """Keys written under a staged key even when free (the manifest, at the end)."""

    def _keep(self) -> None:
        self.save(self.ledger)

    def _at(self, key: str) -> str:
        entry = self.ledger["files"].get(key)
        return key if entry is None else str(entry["at"])

    # Destination, for the sinks

    def open(self, key: str, on_begin: Begun | None = None) -> Target:
        """The target of `key`: under `key` when it is free, else (or when it must be staged)
        under a staged key beside it."""
        manifest = self.ledger["manifest"]
        if key in self.ledger["files"] or (key == manifest and key not in self._staged):
            raise ConfigError(
                f"two files of the export are named {key} (a data file and the manifest, or "
                "two file sets): change `filename`"
            )
        taken = key in self._staged or self.destination.size(key) is not None
        at = _staged(key, self.ledger["run"]) if taken else key
        entry: dict[str, Any] = {"at": at, "begun": {}, "complete": False}
        self.ledger["files"][key] = entry
        self._keep()

        def begun(what: dict[str, str]) -> None:
            entry["begun"] = what
            self._keep()

        return _Recorded(self.destination.open(at, begun), self, key)

    def remove(self, key: str) -> None:
        self.destination.remove(self._at(key))
        self.ledger["files"].pop(key, None)
        self._keep()

    def size(self, key: str) -> int | None:
        return self.destination.size(self._at(key))

    def link(self, key: str, seconds: int) -> str:
        return self.destination.link(key, seconds)

    def promote(self, staged: str, key: str) -> None:
        self.destination.promote(staged, key)

    def read(self, key: str) -> bytes | None:
        return self.destination.read(key)

    def undo(self, begun: dict[str, str]) -> None:
        self.destination.undo(begun)

    # The run's end

    def stage_manifest(self, text: bytes) -> None:
        """Before the decision: when any file is staged, or the manifest's key is taken, the
        manifest is staged too, so that what is left after the decision is copies (or
        renames) and deletes, which a later run can finish."""
        key = self.ledger["manifest"]
        self.ledger["manifest_text"] = text.decode()
        staged = any(e["at"] != k for k, e in self.ledger["files"].items())
        if not staged and self.destination.size(key) is None:
            return
        from engine.writers.manifest import write_manifest

        self._staged.add(key)
        write_manifest(self, key, text)

    def commit(self) -> None:
        """Decide, then put the staged files in place, the manifest last, and remove the
        previous export's files that the new manifest does not list. From the decision on,
        a run that stops is finished by `settle`, never taken back."""
        manifest = self.ledger["manifest"]
        entry = self.ledger["files"].get(manifest)
        previous = _listed(self.destination.read(manifest))
        self.ledger["phase"] = COMMITTING
        self.ledger["remove"] = sorted(previous - set(self.ledger["files"]))
        self.ledger["written"] = entry is not None  # the manifest is staged: promote it
        self._keep()
        crash_point("export-committing")
        _finish(self.destination, self.ledger)
        self.save(None)

    def abandon(self) -> None:
        """After the sinks took back what they wrote: take back what is left (a staged
        manifest, a file a sink could not remove); what cannot be taken back now stays in the
        ledger for the next run."""
        left = {}
        for key, entry in self.ledger["files"].items():
            try:
                _take_back(self.destination, entry)
            except Exception as exc:  # the run's own error is the one raised
                logger.warning("could not take back %s of a failed export: %s", key, exc)
                left[key] = entry
        self.ledger["files"] = left
        self.save(self.ledger if left else None)


class _Recorded:
    """A target whose completion goes in the ledger."""

    def __init__(self, target: Target, staging: Staging, key: str) -> None:
        self.target = target
        self.staging = staging
        self.key = key

    def write(self, data: bytes | memoryview) -> Any:
        return self.target.write(data)

    def complete(self) -> None:
        self.target.complete()
        entry = self.staging.ledger["files"][self.key]
        entry["complete"], entry["begun"] = True, {}
        self.staging._keep()
        crash_point("export-file")

    def abort(self) -> None:
        self.target.abort()
        entry = self.staging.ledger["files"].get(self.key)
        if entry is not None:
            entry["begun"] = {}
            self.staging._keep()


def settle(destination: Destination, ledger: dict[str, Any]) -> str:
    """Finish (rolling forward) or take back (rolling back) what the run of `ledger` left;
    what was done, for the run's note."""
    if ledger.get("phase") == COMMITTING:
        _finish(destination, ledger)
        return f"finished the export {ledger['manifest']} that an earlier run had decided"
    taken = [name for entry in ledger["files"].values() for name in _take_back(destination, entry)]
    for name in taken:
        logger.info("took back %s of an unfinished export", name)
    return f"took back {len(taken)} file(s) of an unfinished export by an earlier run" + (
        f": {', '.join(taken)}" if taken else ""
    )


def _take_back(destination: Destination, entry: dict[str, Any]) -> list[str]:
    """Undo what a file's target began and remove it if it completed; what was taken back."""
    taken = []
    if entry.get("begun"):
        destination.undo(entry["begun"])
        what = "an upload of" if "upload_of" in entry["begun"] else "a temporary file of"
        taken.append(f"{what} {entry['at']}")
    if entry.get("complete"):
        destination.remove(entry["at"])
        taken.append(str(entry["at"]))
    return taken


def _finish(destination: Destination, ledger: dict[str, Any]) -> None:
    """The decided run's steps, each of which may be done again: the data files put in
    place, then the manifest, then the previous export's files it does not list removed."""
    from engine.writers.manifest import write_manifest

    manifest = ledger["manifest"]
    files = ledger["files"]
    for key in [k for k in files if k != manifest] + [k for k in files if k == manifest]:
        entry = files[key]
        if key == manifest:
            crash_point("export-promoted")
        if entry["at"] != key and destination.size(entry["at"]) is not None:
            destination.promote(entry["at"], key)
    if not ledger.get("written"):
        crash_point("export-promoted")
        write_manifest(destination, manifest, ledger["manifest_text"].encode())
    crash_point("export-manifest")
    for key in ledger.get("remove", []):
        destination.remove(key)


def _staged(key: str, run_id: str) -> str:
    folder, _, name = key.rpartition("/")
    staged = f"{STAGED}{run_id}-{name}"
    return f"{folder}/{staged}" if folder else staged


def _listed(manifest_text: bytes | None) -> set[str]:
    """The keys a manifest lists (none when there is none, or it cannot be read)."""
    if manifest_text is None:
        return set()
    try:
        return {str(f["key"]) for f in json.loads(manifest_text)["files"]}
    except (ValueError, KeyError, TypeError):
        logger.warning("the previous manifest cannot be read: its files are left as they are")
        return set()
