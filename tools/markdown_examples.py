"""Pytest plugin: every ```python block of every Markdown file under the test paths is a test.

The READMEs (root, packages/*, apps/imagenet, bench) and the docs pages (docs/**, tutorials
included) are collected like test modules, so their examples cannot rot. The blocks of one file
run in order in one shared namespace, like the cells of a notebook, with the working directory set
to a fresh temporary folder (files an example writes land there). A failing block fails its test
and the later blocks of that file are skipped, naming the block that failed.

A block that cannot run offline and quickly (a TPU launch, a download, a file the user must
provide) is skipped explicitly, with its reason, by an HTML comment on the line just above its
fence (invisible on GitHub and in the docs site); its syntax and imports are still checked:

    <!-- skip-test: downloads the Inception weights -->
    ```python
    ...
    ```

Tracebacks point at the Markdown file and line. Run only the examples with
`uv run pytest README.md bench/README.md packages/*/README.md apps/imagenet/README.md docs`.
"""

from __future__ import annotations

import ast
import os
import re
import tempfile
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)(?P<info>.*)$")
_SKIP = re.compile(r"^\s*<!--\s*skip-test\s*:?(?P<reason>.*?)-->\s*$")
_PYTHON = {"python", "py", "python3"}


def python_blocks(text: str, where: str = "<markdown>") -> list[tuple[int, str, str | None]]:
    """The ```python blocks of a Markdown text: (first code line, code, skip reason).

    Fences indented inside list items count too (their indentation is removed).

    `first code line` is 1-based. A block whose fence is preceded by `<!-- skip-test: why -->`
    carries that reason; a skip marker without a reason is an error (say why it cannot run).
    """
    lines = text.splitlines()
    blocks: list[tuple[int, str, str | None]] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = len(m["indent"]), m["fence"], m["lang"].lower()
        j = i + 1
        while j < len(lines) and not lines[j].lstrip(" ").startswith(fence[0] * len(fence)):
            j += 1
        if lang in _PYTHON:
            k = i - 1
            while k >= 0 and not lines[k].strip():
                k -= 1
            skip = _SKIP.match(lines[k]) if k >= 0 else None
            reason = None
            if skip:
                reason = skip["reason"].strip()
                if not reason:
                    raise ValueError(
                        f"{where}:{k + 1}: `<!-- skip-test -->` needs a reason, e.g. "
                        "`<!-- skip-test: downloads the SD-VAE weights -->`."
                    )
            # A fence indented inside a list item: its lines carry the same indentation.
            code = "\n".join(
                line[indent:] if not line[:indent].strip() else line.lstrip(" ")
                for line in lines[i + 1 : j]
            )
            blocks.append((i + 2, code + "\n", reason))
        i = j + 1
    return blocks


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix == ".md":
        return MarkdownFile.from_parent(parent, path=file_path)
    return None


class MarkdownFile(pytest.File):
    """One Markdown file; its python blocks share a namespace and a working directory."""

    def collect(self) -> Iterator[pytest.Item]:
        text = self.path.read_text(encoding="utf-8")
        self.namespace: dict[str, Any] = {"__name__": "__main__"}
        self.failed: int | None = None
        self.workdir: str | None = None
        for line, code, reason in python_blocks(text, str(self.path)):
            yield MarkdownBlock.from_parent(
                self, name=f"line{line}", line=line, code=code, reason=reason
            )

    def teardown(self) -> None:
        if getattr(self, "workdir", None):
            import shutil

            shutil.rmtree(self.workdir, ignore_errors=True)


class MarkdownBlock(pytest.Item):
    """One ```python block, run with `exec` in its file's namespace."""

    def __init__(self, *, line: int, code: str, reason: str | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.line, self.code, self.reason = line, code, reason

    def runtest(self) -> None:
        file: MarkdownFile = self.parent  # type: ignore[assignment]
        # Pad with blank lines so tracebacks name the Markdown file's own line numbers.
        padded = "\n" * (self.line - 1) + self.code
        if self.reason:
            # Still check what can be checked offline: the syntax and the imports it names.
            tree = ast.parse(padded, str(self.path))
            tree.body = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
            exec(compile(tree, str(self.path), "exec"), {"__name__": "__main__"})
            raise pytest.skip.Exception(self.reason, _use_item_location=True)
        if file.failed is not None:
            pytest.skip(f"the block at line {file.failed} of this file failed")
        if file.workdir is None:
            file.workdir = tempfile.mkdtemp(prefix="md-example-")
        code = compile(padded, str(self.path), "exec")
        cwd = os.getcwd()
        os.chdir(file.workdir)
        try:
            exec(code, file.namespace)
        except BaseException:
            file.failed = self.line
            raise
        finally:
            os.chdir(cwd)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style=None) -> str:
        frames = traceback.extract_tb(excinfo.tb)
        first = next((i for i, f in enumerate(frames) if f.filename == str(self.path)), 0)
        lines = traceback.format_list(frames[first:])
        lines += traceback.format_exception_only(excinfo.type, excinfo.value)
        return f"python block at {self.path}:{self.line} failed:\n" + "".join(lines)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, self.line - 1, f"python block at line {self.line}"
