"""Run the CPU benchmark suite and rewrite the results table in bench/README.md.

    uv run --frozen --no-sync python bench/run.py            # every benchmark that exists, --quick
    uv run --frozen --no-sync python bench/run.py --full     # without --quick (slow)
    uv run --frozen --no-sync python bench/run.py --only data,samplers
    uv run --frozen --no-sync python bench/run.py --table-only   # re-render from results/*.json

Each benchmark is `bench/<name>.py` exposing `main(quick) -> dict` and writing
`bench/results/<name>.json`; each runs in its own subprocess (so its XLA flags and device count are
its own) with a time limit. The table between the README's `<!-- results:begin -->` and
`<!-- results:end -->` markers is regenerated from the JSON files: one section per benchmark with
its device, jax version and date, and one row per case.
"""

import argparse
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

BENCH = pathlib.Path(__file__).resolve().parent
RESULTS = BENCH / "results"
README = BENCH / "README.md"
ORDER = (
    "train_step",
    "samplers",
    "inference",
    "eval",
    "scaling",
    "parallel",
    "data",
    "flowmaps_2d",
)
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
META = ("device", "jax_version", "date", "quick", "host", "cpu_count")


def available() -> list[str]:
    """Benchmark names present on disk, in suite order (unknown extras last)."""
    found = {p.stem for p in BENCH.glob("*.py")
             if p.stem not in ("run", "__init__") and not p.stem.startswith("_")}  # fmt: skip
    return [n for n in ORDER if n in found] + sorted(found - set(ORDER))


def run_one(name: str, quick: bool, timeout: float) -> dict:
    """Run `bench/<name>.py` in its own process group (killed whole on timeout, children too);
    returns {"name", "ok", "seconds", "error"}."""
    cmd = [sys.executable, str(BENCH / f"{name}.py")] + (["--quick"] if quick else [])
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=BENCH.parent,
        start_new_session=True,
    )  # fmt: skip
    try:
        _, stderr = proc.communicate(timeout=timeout)
        ok, err = proc.returncode == 0, stderr[-2000:] if proc.returncode else ""
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        ok, err = False, f"timed out after {timeout:.0f} s"
    return {"name": name, "ok": ok, "seconds": time.perf_counter() - t0, "error": err}


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return v.replace("|", "/")
    return json.dumps(v)[:60].replace("|", "/")


def _scalars(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_scalars(v, f"{prefix}{k}."))
        elif not isinstance(v, list) or len(v) <= 4:
            out[f"{prefix}{k}"] = v
    return out


def render(name: str, data: dict) -> str:
    """Markdown section for one result JSON: metadata line, then a table of its cases."""
    meta = ", ".join(f"{k}: {_fmt(data[k])}" for k in META if k in data)
    lines = [f"### {name}", ""]
    if data.get("metric"):
        lines += [f"{data['metric']}", ""]
    lines += [f"_{meta}_", ""]
    tables = {k: v for k, v in data.items() if isinstance(v, dict) and v and
              all(isinstance(r, dict) for r in v.values())}  # fmt: skip
    lists = {k: v for k, v in data.items() if isinstance(v, list) and v and
             all(isinstance(r, dict) for r in v)}  # fmt: skip
    tables.update({k: {str(i): r for i, r in enumerate(v)} for k, v in lists.items()})
    for key, rows in tables.items():
        rows = {r: _scalars(v) for r, v in rows.items()}
        cols = list(dict.fromkeys(c for r in rows.values() for c in r))
        lines += [f"| {key} | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 1)]
        lines += [f"| {r} | " + " | ".join(_fmt(v.get(c, "")) for c in cols) + " |"
                  for r, v in rows.items()]  # fmt: skip
        lines.append("")
    rest = {k: v for k, v in _scalars({k: v for k, v in data.items() if k not in tables}).items()
            if k not in META and k not in ("benchmark", "metric")}  # fmt: skip
    if rest:
        lines += ["| field | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in rest.items()]
        lines.append("")
    return "\n".join(lines)


def rewrite_table(runs: list[dict] | None = None) -> str:
    """Regenerate the README's results block from every results/*.json; return the block."""
    names = [n for n in ORDER if (RESULTS / f"{n}.json").is_file()]
    names += sorted(p.stem for p in RESULTS.glob("*.json") if p.stem not in ORDER)
    parts = []
    if runs:
        parts += ["Last `bench/run.py`: " + ", ".join(
            f"{r['name']} {'ok' if r['ok'] else 'FAILED'} ({r['seconds']:.0f} s)" for r in runs
        ) + ".", ""]  # fmt: skip
    for n in names:
        parts.append(render(n, json.loads((RESULTS / f"{n}.json").read_text())))
    block = "\n".join(parts).rstrip() + "\n"
    text = README.read_text() if README.is_file() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text = text.rstrip() + f"\n\n## Results\n\n{BEGIN}\n{END}\n"
    head, _, tail = text.partition(BEGIN)
    _, _, tail = tail.partition(END)
    README.write_text(f"{head}{BEGIN}\n{block}{END}{tail}")
    return block


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="run without --quick")
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per benchmark")
    parser.add_argument("--table-only", action="store_true", help="only re-render the table")
    args = parser.parse_args()
    runs = []
    if not args.table_only:
        names = [n for n in args.only.split(",") if n] or available()
        missing = sorted(set(names) - set(available()))
        if missing:
            print(f"unknown benchmark(s) {missing}; available: {available()}", file=sys.stderr)
            return 2
        t0 = time.perf_counter()
        for name in names:
            print(f"[bench] {name} ...", flush=True)
            r = run_one(name, quick=not args.full, timeout=args.timeout)
            print(f"[bench] {name}: {'ok' if r['ok'] else 'FAILED'} in {r['seconds']:.0f} s"
                  + (f"\n{r['error']}" if r["error"] else ""), flush=True)  # fmt: skip
            runs.append(r)
        print(f"[bench] suite: {time.perf_counter() - t0:.0f} s", flush=True)
    rewrite_table(runs)
    print(f"[bench] results table rewritten in {README}")
    return 0 if all(r["ok"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
