"""The documented shell pipe and a one-process run, beside ``psql \\copy`` of the same CSV into a
table with the same primary key (and foreign key), in the same invocation:

    python benchmarks/pipe_bench.py --rows 500000 --repeat 3

Contenders, each timed as the user runs it (a fresh process, the table emptied first):
  * ``psql \\copy`` of the clean CSV into ``bench_typed`` (appointments' columns, keys and types);
  * ``healthetl extract -o - | healthetl validate - -o - | healthetl load -`` of that CSV;
  * ``healthetl run`` of a project whose pipeline reads that CSV.
Printed: wall seconds (median), rows/s, the rate as a share of ``\\copy``'s (goals: pipe >= 0.5,
run >= 0.8) and CPU use (user + sys over wall, of all the contender's processes: 2.0 is both cores;
"machine": every process's busy time over wall, the database server's included).
The database is a fresh one next to HEALTHETL_BENCH_DATABASE_URL (default: the test server),
dropped at the end. Peak memory per process is load_bench.py's (a pipe has three).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import load_bench  # noqa: E402 (the generator and the database set-up are shared)

HEALTHETL = str(Path(sys.executable).parent / "healthetl")


def _machine_busy() -> float:
    """Seconds of CPU the whole machine has spent busy (every core, every process: the database
    server too), from /proc/stat; 0 where there is no /proc."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0.0
    ticks = [int(f) for f in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds of the command's processes, busy CPU seconds of the machine)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy = _machine_busy()
    started = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - started
    busy = _machine_busy() - busy
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), busy


def _psql_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def _empty(url: str, table: str) -> None:
    subprocess.run(["psql", "-q", _psql_url(url), "-c", f"TRUNCATE {table}"], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    admin = load_bench.admin_url()
    dirty = load_bench.generate(args.rows, load_bench.OUT / f"appointments_{args.rows}.csv")
    load_bench._clean_copy(dirty)
    clean = dirty.with_suffix(".clean.csv")
    rows = sum(1 for _ in clean.open(encoding="utf-8")) - 1
    name, url = load_bench._prepare(admin)
    project = load_bench.OUT / "pipe_bench.toml"
    project.write_text(
        f'[[pipelines]]\nname = "appointments"\ndataset = "appointments"\nsource = "{clean}"\n'
        '[pipelines.date_window]\nbooking_date = ["2000-01-01", "2100-12-31"]\n',
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if k != "HEALTHETL_DATABASE_URL"}
    pipe = (
        f"set -o pipefail; {HEALTHETL} extract appointments {clean} -o - "
        f"| {HEALTHETL} validate appointments - -o - --fail-on never "
        f"| {HEALTHETL} load appointments - --db '{url}'"
    )
    contenders = {
        "psql \\copy (baseline)": (
            "bench_typed",
            [
                "psql",
                "-q",
                _psql_url(url),
                "-c",
                f"\\copy bench_typed (booking_id, patient_id, doctor_id, booking_date, status) "
                f"FROM '{clean}' WITH (FORMAT csv, HEADER true)",
            ],
        ),
        "healthetl extract | validate | load": ("appointments", ["bash", "-c", pipe]),
        "healthetl run (one process)": (
            "appointments",
            [HEALTHETL, "run", "--config", str(project), "--db", url, "--force"],
        ),
    }
    try:
        results: dict[str, tuple[float, float, float]] = {}
        for label, (table, cmd) in contenders.items():
            walls, cpus, machine = [], [], []
            for _ in range(args.repeat):
                _empty(url, table)
                wall, cpu, busy = _timed(cmd, env)
                walls.append(wall)
                cpus.append(cpu / wall)
                machine.append(busy / wall)
            results[label] = (statistics.median(walls), statistics.median(cpus), statistics.median(machine))
    finally:
        load_bench._drop(admin, name)
    base = rows / results["psql \\copy (baseline)"][0]
    print(f"{rows:,} clean appointment rows ({clean.stat().st_size / 1e6:.1f} MB), median of {args.repeat}")
    print(f"{'contender':40} {'wall s':>8} {'rows/s':>10} {'x copy':>7} {'cpu/wall':>9} {'machine':>8}")
    for label, (wall, cpu, busy) in results.items():
        rate = rows / wall
        print(f"{label:40} {wall:8.2f} {rate:10,.0f} {rate / base:7.2f} {cpu:9.2f} {busy:8.2f}")


if __name__ == "__main__":
    main()
