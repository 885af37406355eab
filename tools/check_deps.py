"""Check that each workspace member declares exactly the third-party packages its code imports.

For every member, the top-level imports of `src/**/*.py` (found with `ast`, lazy imports included)
are mapped to distributions with `importlib.metadata.packages_distributions()` and compared with
`[project].dependencies`. An import with no declared distribution fails; so does a declared
distribution that nothing imports ("declared where used, never more"). Imports of optional,
never-locked packages (torch, tensorflow) are allowed when listed under
`[tool.nnx-deps] optional-imports` in the member's pyproject.

Run: `uv run python tools/check_deps.py` (exit 1 with a report on any mismatch).
"""

import ast
import importlib.metadata as md
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MEMBERS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["uv"]["workspace"]["members"]
# Distributions whose import name differs from anything a packages_distributions() lookup finds,
# or that are used without an import statement (e.g. a runtime plugin).
ALIASES = {"jax[tpu]": "jax", "jax[cuda12]": "jax"}
RUNTIME_ONLY = {"jaxlib"}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(req: str) -> str:
    return normalise(re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0])


def imported_modules(src: Path) -> set[str]:
    mods: set[str] = set()
    for path in src.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods.add(node.module.split(".")[0])
    return mods


def workspace_distributions() -> dict[str, str]:
    """Import name → distribution name of every workspace member (editable installs are not
    listed by `packages_distributions()`)."""
    out = {}
    for member in MEMBERS:
        name = tomllib.loads((ROOT / member / "pyproject.toml").read_text())["project"]["name"]
        for pkg in (ROOT / member / "src").iterdir():
            if (pkg / "__init__.py").exists():
                out[pkg.name] = normalise(name)
    return out


def main() -> int:
    dists_of = {k: list(v) for k, v in md.packages_distributions().items()}
    workspace = workspace_distributions()
    for module, dist in workspace.items():
        dists_of[module] = [dist]
    stdlib = set(sys.stdlib_module_names)
    problems: list[str] = []
    for member in MEMBERS:
        pyproject = tomllib.loads((ROOT / member / "pyproject.toml").read_text())
        own = pyproject["project"]["name"]
        own_module = normalise(own).replace("-", "_")
        declared = {requirement_name(r) for r in pyproject["project"].get("dependencies", [])}
        optional = set(pyproject.get("tool", {}).get("nnx-deps", {}).get("optional-imports", []))
        used: set[str] = set()
        for mod in sorted(imported_modules(ROOT / member / "src")):
            if mod in stdlib or mod == own_module or mod == "__future__":
                continue
            if mod in optional:
                continue
            dists = {normalise(d) for d in dists_of.get(mod, [])}
            if not dists:
                problems.append(
                    f"{own}: imports '{mod}', which no installed distribution provides. Declare "
                    f"it in {member}/pyproject.toml, or list it under [tool.nnx-deps] "
                    f"optional-imports if it is an optional, lazily imported package."
                )
                continue
            if not dists & declared:
                problems.append(
                    f"{own}: imports '{mod}' (distribution {', '.join(sorted(dists))}) but "
                    f"{member}/pyproject.toml does not declare it in [project].dependencies."
                )
            used |= dists & declared
        unused = declared - used - RUNTIME_ONLY
        if pyproject.get("project", {}).get("scripts"):
            # An application pins every workspace layer (==) even where it imports one only
            # through another; its third-party dependencies are still checked.
            unused -= set(workspace.values())
        for dist in sorted(unused):
            problems.append(
                f"{own}: declares '{dist}' but no module under {member}/src imports it; remove "
                f"it from [project].dependencies (declared where used, never more)."
            )
    if problems:
        print("Dependency declarations do not match imports:\n  " + "\n  ".join(problems))
        return 1
    print(f"Dependency declarations match imports in all {len(MEMBERS)} workspace members.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
