"""Run every benchmark (bench/bench_*.py), each in its own interpreter, and print the tables.

Each benchmark prints a small markdown section; this collects them in order into one
document for the README (and, with --output, a file). A benchmark that fails is reported
and the others still run; the exit status is then 1.

    python bench/run_all.py [--only runs polling] [--skip log] [--output bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from _common import machine

HERE = Path(__file__).resolve().parent
# The order of the README; any other bench_*.py (e.g. bench_sensor_tick.py) runs after these.
PREFERRED = [
    "vs_sdk", "scale", "polling", "mesh", "emulator", "faults", "runs", "concurrency", "log",
]  # fmt: skip
TIMEOUT_S = 900


def discover() -> list[str]:
    names = sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    return [n for n in PREFERRED if n in names] + [n for n in names if n not in PREFERRED]


def run_one(name: str) -> tuple[bool, str, float]:
    script = HERE / f"bench_{name}.py"
    started = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, str(script)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            cwd=HERE.parent,
        )
    except subprocess.TimeoutExpired:
        return False, f"timed out after {TIMEOUT_S} s", time.perf_counter() - started
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        return False, f"exit status {done.returncode}:\n{tail}", seconds
    return True, section_of(done.stdout), seconds


def section_of(stdout: str) -> str:
    """The markdown a benchmark printed, without log lines that reached stdout around it
    (e.g. a Dagster daemon's console logs): from the first `### ` heading on, minus lines
    that start with an ANSI colour code."""
    lines = stdout.strip().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("### ")), 0)
    kept = [line for line in lines[start:] if not line.startswith("\x1b[")]
    return "\n".join(kept).strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="e.g. runs polling")
    parser.add_argument("--skip", nargs="+", metavar="NAME", default=[])
    parser.add_argument("--output", type=Path, help="also write the document here")
    args = parser.parse_args(argv)

    names = [n for n in discover() if (not args.only or n in args.only) and n not in args.skip]
    unknown = set(args.only or []) - set(discover())
    if unknown:
        parser.error(f"no such benchmark: {', '.join(sorted(unknown))}")

    sections = [
        "## Benchmarks",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d} on {machine()} with `python bench/run_all.py`.",
        "",
    ]
    failed = []
    timings = []
    for name in names:
        print(f"running bench_{name}.py ...", file=sys.stderr, flush=True)
        ok, text, seconds = run_one(name)
        timings.append(f"bench_{name}.py {seconds:.0f} s")
        if not ok:
            failed.append(name)
            text = f"### bench_{name}.py FAILED\n\n```\n{text}\n```"
        sections += [text, ""]
    sections.append(f"Run times: {', '.join(timings)}.")
    document = "\n".join(sections).rstrip() + "\n"
    print(document)
    if args.output:
        args.output.write_text(document)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
