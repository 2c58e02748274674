"""Memory and time against size: the same dirty appointment CSV at 1M, 3M and 10M rows loaded
into PostgreSQL by healthetl (``replace``; every row validated, the key history spilled past
``HEALTHETL_KEYS_IN_MEMORY``), each load in its own process, with its peak RSS:

    python benchmarks/scale_bench.py                    # 1M, 3M, 10M
    python benchmarks/scale_bench.py --sizes 100000 300000 1000000 --sqlite

Flat memory means the peak does not grow with the file (goal: under 300 MB at every size);
linear time means microseconds per row stay level. The raw ``COPY`` of each file into a text
table with a primary key runs beside it as the baseline of the same size. ``--sqlite`` adds the
same loads into SQLite files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import load_bench  # noqa: E402 (generator, contenders, database set-up and tear-down are shared)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 3_000_000, 10_000_000])
    parser.add_argument("--sqlite", action="store_true", help="also load each file into SQLite")
    args = parser.parse_args()
    admin = load_bench.admin_url()
    names = ["raw_copy", "healthetl"] + (["healthetl_sqlite"] if args.sqlite else [])
    rows: list[tuple[int, float, dict[str, dict[str, float]]]] = []
    for size in args.sizes:
        csv_path = load_bench.generate(size, load_bench.OUT / f"appointments_{size}.csv")
        name, url = load_bench._prepare(admin)
        try:
            rows.append(
                (
                    size,
                    csv_path.stat().st_size / 1e6,
                    {n: load_bench._child(n, url, str(csv_path)) for n in names},
                )
            )
        finally:
            load_bench._drop(admin, name)
    print(
        f"\n{'rows':>12}{'CSV MB':>8}  "
        + "".join(f"{n + ' s':>22}{'us/row':>8}{'peak MB':>9}" for n in names)
    )
    for size, mb, results in rows:
        cells = "".join(
            f"{r['seconds']:22.1f}{r['seconds'] / size * 1e6:8.2f}{r['peak_mb']:9.0f}"
            for r in (results[n] for n in names)
        )
        print(f"{size:12,}{mb:8.0f}  {cells}")


if __name__ == "__main__":
    main()
