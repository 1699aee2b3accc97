"""The floors of pyproject's dependencies (`name>=X`) as pip constraints (`name==X`), so that
`make test-min` installs the oldest versions lakeport says it works with; `--check` verifies
that the installed versions are exactly those.

    python tests/floors.py pyproject.toml > floors.txt
    python tests/floors.py pyproject.toml --check
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

_FLOOR = re.compile(r"^([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*>=\s*([^,;\s]+)")


def floors(pyproject: Path) -> dict[str, str]:
    """Each dependency (runtime and dev) with a floor, and the floor."""
    project = tomllib.loads(pyproject.read_text())["project"]
    found = {}
    for requirement in [*project["dependencies"], *project["optional-dependencies"]["dev"]]:
        match = _FLOOR.match(requirement)
        if match is None:
            raise SystemExit(f"{requirement!r} has no floor: give it one (name>=version)")
        found[match.group(1)] = match.group(3)
    return found


def main() -> None:
    pyproject = Path(sys.argv[1])
    wanted = floors(pyproject)
    if "--check" not in sys.argv:
        print("\n".join(f"{name}=={version}" for name, version in wanted.items()))
        return
    wrong = [
        f"{name} {metadata.version(name)} (floor {version})"
        for name, version in wanted.items()
        if metadata.version(name) != version
    ]
    if wrong:
        raise SystemExit("not the floors: " + ", ".join(wrong))
    print(f"{len(wanted)} dependencies at their floors")


if __name__ == "__main__":
    main()
