#!/usr/bin/env bash
# Packaging check for every workspace member, as a user outside the workspace would meet it:
#   1. build each member's sdist and, from it, its wheel (`uv build`), and `twine check --strict`
#      them (metadata and README render on PyPI; license file shipped);
#   2. for each member, a fresh virtual environment gets its wheel plus only the wheels of its
#      in-repository dependencies (third-party ones at the locked versions), imports it from
#      outside the repository, checks that the members above it are NOT importable, and runs the
#      first runnable ```python example of its README;
#   3. installs nnx-interfaces from source the way the docs say, without the workspace
#      (`pip install ./packages/nnx-backbones ./packages/nnx-interfaces`: uv pip with
#      --no-sources, i.e. pip's semantics), and by `git+…#subdirectory=` from this repository.
# Usage: bash tools/wheel_check.sh [member ...]   (default: every member)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python=3.11
repo_python=(uv run --no-sync --frozen python)

# name dir deps... for every member (deps: its in-repository dependencies, transitively).
"${repo_python[@]}" - > "$work/members.txt" <<'EOF'
import re, tomllib
from pathlib import Path

root = tomllib.loads(Path("pyproject.toml").read_text())
dirs = root["tool"]["uv"]["workspace"]["members"]
meta = {}
for d in dirs:
    p = tomllib.loads(Path(d, "pyproject.toml").read_text())["project"]
    deps = [re.split(r"[<>=!~ ;\[]", r, maxsplit=1)[0] for r in p.get("dependencies", [])]
    meta[p["name"]] = (d, deps)
def closure(name, seen):
    for dep in meta[name][1]:
        if dep in meta and dep not in seen:
            seen.append(dep)
            closure(dep, seen)
    return seen
for name, (d, _) in meta.items():
    print(name, d, *closure(name, []))
EOF
all_names=$(cut -d' ' -f1 "$work/members.txt" | tr '\n' ' ')
selected=${*:-$all_names}

echo "== build: sdist + wheel of every member"
uv build --all-packages -q -o "$work/dist"
ls "$work/dist"
"${repo_python[@]}" -m twine check --strict "$work"/dist/*
while read -r name dir _; do
  cmp -s LICENSE "$dir/LICENSE" || { echo "wheel check: $dir/LICENSE differs from ./LICENSE"; exit 1; }
  whl=$(ls "$work/dist/${name//-/_}"-*.whl)
  "${repo_python[@]}" -c "import sys, zipfile; names = zipfile.ZipFile(sys.argv[1]).namelist()
sys.exit(not any(n.endswith('.dist-info/licenses/LICENSE') for n in names))" "$whl" < /dev/null \
    || { echo "wheel check: $whl ships no LICENSE"; exit 1; }
done < "$work/members.txt"

# Third-party dependencies at the locked versions (deterministic, served from uv's cache).
uv export --frozen --all-packages --no-hashes --no-emit-workspace --no-header -q \
  > "$work/constraints.txt"

# The README's first ```python block without a skip-test marker (same parser as the tests).
first_example() {
  PYTHONPATH=tools "${repo_python[@]}" -c "
import sys
from markdown_examples import python_blocks
runnable = [code for _, code, skip in python_blocks(open(sys.argv[1]).read(), sys.argv[1]) if not skip]
print(runnable[0] if runnable else '', end='')" "$1"
}

run_isolated() {  # venv, what to run (a file), from a fresh folder outside the repository
  local venv=$1 script=$2 dir
  dir=$(mktemp -d -p "$work")
  (cd "$dir" && env -u PYTHONPATH -u XLA_FLAGS JAX_PLATFORMS=cpu WANDB_MODE=disabled \
    "$venv/bin/python" "$script")
}

for name in $selected; do
  SECONDS=0
  read -r _ dir deps < <(grep "^$name " "$work/members.txt") \
    || { echo "wheel check: unknown member $name (known: $all_names)"; exit 1; }
  echo "== $name alone (with: ${deps:-no other member})"
  venv="$work/venv-$name"
  uv venv -q --python "$python" "$venv"
  wheels=()
  for m in $name $deps; do wheels+=("$(ls "$work/dist/${m//-/_}"-*.whl)"); done
  uv pip install -q --python "$venv/bin/python" -c "$work/constraints.txt" "${wheels[@]}"
  pkg=${name//-/_}
  absent=()
  for other in $all_names; do
    case " $name $deps " in *" $other "*) ;; *) absent+=("${other//-/_}") ;; esac
  done
  # One process: import it, check the members above it are absent, then the README example.
  cat > "$work/check_$pkg.py" <<PY
import importlib.util

import $pkg

present = [m for m in "${absent[*]}".split() if importlib.util.find_spec(m) is not None]
assert not present, f"{present} importable in the $name-only environment"
print("$name", getattr($pkg, "__version__", ""), "imports alone; absent: ${absent[*]:-none}")
PY
  first_example "$dir/README.md" > "$work/example_$pkg.py"
  cp "$work/check_$pkg.py" "$work/import_$pkg.py"
  if [ -s "$work/example_$pkg.py" ]; then
    printf '\n# --- %s README, first runnable example ---\n' "$name" >> "$work/check_$pkg.py"
    cat "$work/example_$pkg.py" >> "$work/check_$pkg.py"
  else
    echo "$name: README has no runnable python example"
  fi
  run_isolated "$venv" "$work/check_$pkg.py" > "$work/check_$pkg.out"
  head -1 "$work/check_$pkg.out"
  echo "$name: done in ${SECONDS} s"
done

case " $selected " in *" nnx-interfaces "*)
  echo "== nnx-interfaces from source, without the workspace (pip semantics: --no-sources)"
  uv venv -q --python "$python" "$work/venv-src"
  uv pip install -q --no-sources --python "$work/venv-src/bin/python" -c "$work/constraints.txt" \
    ./packages/nnx-backbones ./packages/nnx-interfaces
  run_isolated "$work/venv-src" "$work/import_nnx_interfaces.py"
  echo "== nnx-interfaces by git+…#subdirectory= (this repository's HEAD)"
  uv venv -q --python "$python" "$work/venv-git"
  url="git+file://$root@$(git rev-parse HEAD)"
  uv pip install -q --no-sources --python "$work/venv-git/bin/python" -c "$work/constraints.txt" \
    "nnx-backbones @ $url#subdirectory=packages/nnx-backbones" \
    "nnx-interfaces @ $url#subdirectory=packages/nnx-interfaces"
  run_isolated "$work/venv-git" "$work/import_nnx_interfaces.py"
  ;;
esac
echo "wheel check: every selected member ($selected) builds, passes twine check, installs alone and runs its README example."
