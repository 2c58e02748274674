"""Object storage benchmark: `healthetl extract` of a CSV (plain and gzipped) from an S3-compatible
server (moto's, on a free loopback port), side by side with the same file on the local disk.

    python benchmarks/object_storage_bench.py --rows 1000000

It prints rows/s and the peak RSS of each extract (its own process). Reading from the store streams
ranges of the object: peak memory should stay near the local read's, far below the file's size,
however large the object is. Needs the s3 extra and moto (`pip install -e ".[dev]"`).
"""

from __future__ import annotations

import argparse
import gzip
import os
import random
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).parent / "out"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}

#: run in the measured process: the extract, then its own peak RSS (VmHWM) on the last line
_CHILD = """
import sys
from healthetl.cli import main
try:
    main()
except SystemExit as exc:
    code = exc.code or 0
else:
    code = 0
peak = 0.0
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        peak = int(line.split()[1]) / 1024
print(f"PEAK_MB {peak:.1f}", file=sys.stderr)
sys.exit(code)
"""


def generate(rows: int, path: Path, seed: int = 7) -> Path:
    if path.exists():
        return path
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        fh.write("booking_id,patient_id,doctor_id,booking_date,status\n")
        for i in range(1, rows + 1):
            day = f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
            fh.write(f"{i},{rng.randint(1, 50_000)},{rng.randint(100, 140)},{day},confirmed\n")
    return path


def extract(source: str, out: Path, env: dict[str, str]) -> dict[str, float]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, "extract", "appointments", source, "-o", str(out)],
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"extract {source} failed:\n{done.stderr}")
    peak = next(float(line.split()[1]) for line in done.stderr.splitlines() if line.startswith("PEAK_MB"))
    import pyarrow.parquet as pq

    return {"rows": pq.read_metadata(out).num_rows, "seconds": seconds, "peak_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()

    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the server's request log
    os.environ.update(CREDENTIALS)
    csv_path = generate(args.rows, OUT / f"appointments_{args.rows}.csv")
    gz_path = csv_path.with_suffix(".csv.gz")
    if not gz_path.exists():
        gz_path.write_bytes(gzip.compress(csv_path.read_bytes(), compresslevel=6))
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{server._server.server_port}"
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="bench")
        for path in (csv_path, gz_path):
            s3.upload_file(str(path), "bench", path.name)
        env = {**os.environ, **CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}
        sizes = (
            f"CSV {csv_path.stat().st_size / 2**20:.0f} MB, gzipped {gz_path.stat().st_size / 2**20:.0f} MB"
        )
        print(f"{args.rows:,} rows; {sizes}")
        print(f"{'source':<40} {'rows/s':>12} {'seconds':>8} {'peak MB':>8}")
        for label, source in (
            ("local csv (baseline)", str(csv_path)),
            ("s3 csv", f"s3://bench/{csv_path.name}"),
            ("local csv.gz (baseline)", str(gz_path)),
            ("s3 csv.gz", f"s3://bench/{gz_path.name}"),
        ):
            result = extract(source, OUT / "extract.parquet", env)
            rate = result["rows"] / result["seconds"]
            print(f"{label:<40} {rate:>12,.0f} {result['seconds']:>8.1f} {result['peak_mb']:>8.0f}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
