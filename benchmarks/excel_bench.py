"""Excel read benchmark: why healthetl reads workbooks with calamine and not openpyxl.

    python benchmarks/excel_bench.py --rows 100000

Writes an appointments-shaped workbook (openpyxl, write-only), then reads it back as text with
pandas ``read_excel(engine="calamine")`` (what healthetl uses) and ``engine="openpyxl"``, each in
its own process, printing seconds, rows/s and peak memory side by side.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).parent / "out"


def _peak_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def generate(rows: int) -> Path:
    path = OUT / f"appointments_{rows}.xlsx"
    if path.exists():
        return path
    import openpyxl

    OUT.mkdir(parents=True, exist_ok=True)
    rng = random.Random(3)
    wb = openpyxl.Workbook(write_only=True)
    ws = wb.create_sheet("appointments")
    ws.append(["booking_id", "patient_id", "doctor_id", "booking_date", "status"])
    for i in range(1, rows + 1):
        ws.append(
            [
                i,
                rng.randint(1, 50_000),
                rng.randint(100, 105),
                f"{rng.randint(1, 12):02d}/{rng.randint(1, 28):02d}/2025",
                rng.choice(["confirmed", "cancelled", "Confirmed", "canceled"]),
            ]
        )
    wb.save(path)
    return path


def read(engine: str, path: str) -> dict[str, float]:
    import pandas as pd

    start = time.perf_counter()
    frame = pd.read_excel(path, dtype=str, engine=engine)  # type: ignore[call-overload]
    return {"seconds": time.perf_counter() - start, "rows": len(frame), "peak_mb": _peak_mb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--child")
    parser.add_argument("--path")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(read(args.child, args.path)))
        return
    path = generate(args.rows)
    print(f"\n{args.rows:,} rows, {path.stat().st_size / 1e6:.1f} MB xlsx\n")
    print(f"{'reader':<34}{'wall s':>9}{'rows/s':>12}{'peak MB':>10}")
    for engine in ("calamine", "openpyxl"):
        done = subprocess.run(
            [sys.executable, __file__, "--child", engine, "--path", str(path)],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(done.stdout.strip().splitlines()[-1])
        label = f"pandas read_excel engine={engine}"
        print(f"{label:<34}{r['seconds']:>9.2f}{r['rows'] / r['seconds']:>12,.0f}{r['peak_mb']:>10.0f}")


if __name__ == "__main__":
    main()
