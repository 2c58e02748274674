"""How long the command line takes to answer before it does any work: `--version`, `--help` and a
command's `--help`, the median of 10 runs each, beside the interpreter alone and beside importing
Typer (the floor for a Typer program). Goal: under 0.25 s.

    python benchmarks/cli_startup_bench.py [--runs 10]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

HEALTHETL = str(Path(sys.executable).parent / "healthetl")
CASES = [
    ("python -c pass (baseline)", [sys.executable, "-c", "pass"]),
    ("python -c 'import typer' (baseline)", [sys.executable, "-c", "import typer"]),
    ("healthetl --version", [HEALTHETL, "--version"]),
    ("healthetl --help", [HEALTHETL, "--help"]),
    ("healthetl run --help", [HEALTHETL, "run", "--help"]),
    ("healthetl query --help", [HEALTHETL, "query", "--help"]),
    ("healthetl serve --help", [HEALTHETL, "serve", "--help"]),
]


def median_seconds(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    print(f"{'command':40} {'median s':>9}")
    for label, cmd in CASES:
        print(f"{label:40} {median_seconds(cmd, args.runs):9.3f}")


if __name__ == "__main__":
    main()
