"""tools/markdown_examples.py: which fenced blocks run, and skip markers that must give a reason."""

import pytest
from markdown_examples import python_blocks

DOC = """# Title

```python
a = 1
```

```bash
echo not python
```

<!-- skip-test: downloads weights -->
```python
fetch()
```

````markdown
```python
inside another fence: not a block
```
````

~~~py
b = a + 1
~~~

1. In a list:

   ```python
   if b:
       c = b
   ```
"""


def test_python_blocks_lines_code_and_skip_reasons():
    blocks = python_blocks(DOC)
    assert [(line, code) for line, code, _ in blocks] == [
        (4, "a = 1\n"),
        (13, "fetch()\n"),
        (23, "b = a + 1\n"),
        (29, "if b:\n    c = b\n"),
    ]
    assert [reason for *_, reason in blocks] == [None, "downloads weights", None, None]
    namespace = {}
    for _, code, reason in blocks:
        if not reason:
            exec(code, namespace)
    assert namespace["c"] == 2


def test_tutorials_are_jupytext_notebooks_with_the_same_code():
    jupytext = pytest.importorskip("jupytext")  # the docs dependency group (synced in CI)
    from pathlib import Path

    tutorials = sorted((Path(__file__).resolve().parent.parent / "docs/tutorials").glob("*.md"))
    assert tutorials
    for path in tutorials:
        notebook = jupytext.read(path)
        code = [c.source.strip() for c in notebook.cells if c.cell_type == "code"]
        assert code == [b.strip() for _, b, _ in python_blocks(path.read_text(), str(path))]


def test_a_skip_marker_needs_a_reason():
    with pytest.raises(ValueError, match="needs a reason"):
        python_blocks("<!-- skip-test -->\n```python\nx = 1\n```\n", "README.md")


def test_repository_docs_have_examples():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    readmes = [
        root / "README.md",
        *root.glob("packages/*/README.md"),
        root / "apps/imagenet/README.md",
    ]
    runnable = [
        p for p in readmes if any(not skip for *_, skip in python_blocks(p.read_text(), str(p)))
    ]
    # Every package README carries at least one example that runs in CI.
    assert {p.parent.name for p in runnable} >= {
        "nnx-backbones",
        "nnx-interfaces",
        "nnx-samplers",
        "nnx-eval",
        "nnx-train",
        "imagenet",
    }
