"""MkDocs hook: one API reference page per package, generated from the source tree at build time.

Each page renders the package docstring, then every public module under it (`::: module`, by
mkdocstrings from the docstrings), so a module added to a package is documented without editing
the docs. The pages are `docs/api/<package>.md` in the built site; mkdocs.yml's nav lists them.
"""

from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
# (distribution, import name, source folder): the workspace members, lowest layer first.
PACKAGES = [
    ("nnx-backbones", "nnx_backbones", "packages/nnx-backbones/src"),
    ("nnx-interfaces", "nnx_interfaces", "packages/nnx-interfaces/src"),
    ("nnx-samplers", "nnx_samplers", "packages/nnx-samplers/src"),
    ("nnx-eval", "nnx_eval", "packages/nnx-eval/src"),
    ("nnx-train", "nnx_train", "packages/nnx-train/src"),
    ("nnx-imagenet", "nnx_imagenet", "apps/imagenet/src"),
]


def public_modules(src: Path, package: str) -> list[str]:
    """Dotted names of the package's modules and subpackages, skipping `_private` ones."""
    names = []
    for path in sorted((src / package).rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if any(p.startswith("_") for p in parts) or len(parts) == 1:
            continue
        names.append(".".join(parts))
    return names


def api_page(dist: str, package: str, src: Path) -> str:
    lines = [
        f"# {dist} API",
        "",
        f"::: {package}",
        "    options:",
        "      members: false",
        "      show_root_heading: false",
        "",
    ]
    for module in public_modules(src, package):
        lines += [f"::: {module}", ""]
    return "\n".join(lines)


def on_files(files: Files, config) -> Files:
    for dist, package, src in PACKAGES:
        content = api_page(dist, package, ROOT / src)
        files.append(File.generated(config, f"api/{package}.md", content=content))
    return files
