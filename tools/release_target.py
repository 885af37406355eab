"""Resolve a release tag to the workspace member it releases, checking the version.

Tags are `<distribution name>-v<version>`, one package per tag, e.g. `nnx-interfaces-v0.2.0`
or `nnx-imagenet-v0.1.1`; the version must equal the member's `pyproject.toml` version.

    python tools/release_target.py nnx-interfaces-v0.2.0
    # prints: nnx-interfaces packages/nnx-interfaces

Used by .github/workflows/release.yml; exits 1 with what to do when the tag does not fit.
"""

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TAG = re.compile(r"^(?P<name>[a-z0-9][a-z0-9-]*?)-v(?P<version>\d[0-9A-Za-z.+!-]*)$")


class TagError(ValueError):
    """The tag names no member, or a version other than the member's."""


def members(root: Path = ROOT) -> dict[str, tuple[str, str]]:
    """{distribution name: (member folder, version)} for every workspace member."""
    workspace = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["uv"]["workspace"]
    out = {}
    for folder in workspace["members"]:
        project = tomllib.loads((root / folder / "pyproject.toml").read_text())["project"]
        out[project["name"]] = (folder, project["version"])
    return out


def resolve(tag: str, root: Path = ROOT) -> tuple[str, str]:
    """(distribution name, member folder) for `tag`; raises TagError explaining the convention."""
    known = members(root)
    match = TAG.match(tag.removeprefix("refs/tags/"))
    if not match:
        raise TagError(
            f"tag {tag!r} is not <package>-v<version>; expected e.g. 'nnx-interfaces-v0.2.0' "
            f"with a package among {sorted(known)}."
        )
    name, version = match["name"], match["version"]
    if name not in known:
        raise TagError(f"tag {tag!r} names {name!r}, which is not one of {sorted(known)}.")
    folder, declared = known[name]
    if version != declared:
        raise TagError(
            f"tag {tag!r} says version {version} but {folder}/pyproject.toml says {declared}; "
            f"bump the version in pyproject.toml (and its CHANGELOG) first, or tag "
            f"{name}-v{declared}."
        )
    return name, folder


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python tools/release_target.py <package>-v<version>", file=sys.stderr)
        return 2
    try:
        name, folder = resolve(argv[0])
    except TagError as e:
        print(f"release: {e}", file=sys.stderr)
        return 1
    print(name, folder)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
