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
"""


def test_python_blocks_lines_code_and_skip_reasons():
    blocks = python_blocks(DOC)
    assert [(line, code) for line, code, _ in blocks] == [
        (4, "a = 1\n"),
        (13, "fetch()\n"),
        (23, "b = a + 1\n"),
    ]
    assert [reason for *_, reason in blocks] == [None, "downloads weights", None]


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
