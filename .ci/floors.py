"""The oldest supported versions, read from pyproject.toml, for CI's oldest-versions step.

    python .ci/floors.py constraints   # `name==floor` for every runtime dependency with a `>=`
    python .ci/floors.py test-tools    # the `test` extra less the interop matrix's packages

Direct dependencies only: what they pull in resolves as usual (pip has no lowest mode).
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
# name[extras] >=floor ... ; marker
REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9._-]+)(\[[^\]]*\])?\s*([^;]*?)\s*(;.*)?$")


def constraints(project: dict[str, object]) -> list[str]:
    lines = []
    for req in project["dependencies"]:  # type: ignore[attr-defined]
        match = REQUIREMENT.match(req)
        if match is None:
            raise SystemExit(f"floors.py: cannot read the requirement {req!r}")
        name, _, specs, marker = match.groups()
        floors = [s.strip()[2:].strip() for s in specs.split(",") if s.strip().startswith(">=")]
        if not floors:
            raise SystemExit(f"floors.py: {name} has no `>=` floor; give it one")
        lines.append(f"{name}=={floors[0]}{' ' + marker if marker else ''}")
    return lines


def test_tools(project: dict[str, object]) -> list[str]:
    # The interop matrix's servers and SDKs (the `interop` extra, which `test` includes by
    # naming the project itself) pin current versions of aiohttp and friends: left out here.
    name = project["name"]
    extras: dict[str, list[str]] = project["optional-dependencies"]  # type: ignore[assignment]
    return [req for req in extras["test"] if not req.startswith(f"{name}[")]


def main() -> None:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    if what == "constraints":
        print("\n".join(constraints(project)))
    elif what == "test-tools":
        print("\n".join(test_tools(project)))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
