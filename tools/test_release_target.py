"""tools/release_target.py: per-package release tags resolve to the right member and version."""

import subprocess
import sys
from pathlib import Path

import pytest
from release_target import TagError, members, resolve

ROOT = Path(__file__).resolve().parent.parent


def test_every_member_resolves_from_its_own_tag():
    known = members()
    assert set(known) == {
        "nnx-backbones",
        "nnx-interfaces",
        "nnx-samplers",
        "nnx-eval",
        "nnx-train",
        "nnx-imagenet",
    }
    for name, (folder, version) in known.items():
        assert resolve(f"{name}-v{version}") == (name, folder)
        assert resolve(f"refs/tags/{name}-v{version}") == (name, folder)
    assert resolve(f"nnx-imagenet-v{known['nnx-imagenet'][1]}")[1] == "apps/imagenet"


@pytest.mark.parametrize(
    ("tag", "says"),
    [
        ("nnx-interfaces-v99.0.0", "bump the version"),
        ("nnx-foo-v0.1.0", "not one of"),
        ("v0.1.0", "<package>-v<version>"),
        ("nnx-interfaces-0.1.0", "<package>-v<version>"),
    ],
)
def test_bad_tags_are_refused_with_the_fix(tag, says):
    with pytest.raises(TagError, match=says.replace("<", ".").replace(">", ".")):
        resolve(tag)


def test_cli_prints_name_and_folder_or_exits_1():
    ok = subprocess.run(
        [
            sys.executable,
            ROOT / "tools/release_target.py",
            "nnx-samplers-v" + members()["nnx-samplers"][1],
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0 and ok.stdout.split() == ["nnx-samplers", "packages/nnx-samplers"]
    bad = subprocess.run(
        [sys.executable, ROOT / "tools/release_target.py", "nnx-samplers-v9.9.9"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 1 and "pyproject.toml says" in bad.stderr


def test_release_workflow_uses_trusted_publishing_on_package_tags():
    text = (ROOT / ".github/workflows/release.yml").read_text()
    assert '"nnx-*-v*"' in text and "tools/release_target.py" in text
    assert "id-token: write" in text and "pypa/gh-action-pypi-publish@release/v1" in text
    assert "twine check --strict" in text
