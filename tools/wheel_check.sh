#!/usr/bin/env bash
# Build every member's wheel, then prove that nnx-interfaces installs and works alone:
# a fresh virtual environment gets only the nnx-backbones and nnx-interfaces wheels (plus their
# third-party dependencies from PyPI) and runs the first python example of nnx-interfaces' README
# from outside the repository. Packages to its right must not be importable there.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

uv build --all-packages --wheel -q -o "$work/dist"
ls "$work/dist"
uv venv -q --python 3.11 "$work/venv"
uv pip install -q --python "$work/venv/bin/python" \
  "$work"/dist/nnx_backbones-*.whl "$work"/dist/nnx_interfaces-*.whl

# The README's first ```python block is the example users copy.
awk '/^```python/{f=1;next} /^```/{if(f){exit}} f' packages/nnx-interfaces/README.md > "$work/example.py"
[ -s "$work/example.py" ] || { echo "wheel check: no python example in nnx-interfaces README"; exit 1; }
(cd "$work" && env -u PYTHONPATH JAX_PLATFORMS=cpu "$work/venv/bin/python" example.py)

for absent in nnx_samplers nnx_eval nnx_train nnx_imagenet; do
  if (cd "$work" && "$work/venv/bin/python" -c "import $absent" 2>/dev/null); then
    echo "wheel check: $absent is importable in the nnx-interfaces-only environment"; exit 1
  fi
done
echo "wheel check: nnx-interfaces installs alone and its README example runs."
