"""``run --engine dask``: the same pipelines with their per-partition work on Dask workers.

A project of four pipelines (a referenced table; a CSV with duplicates, bad rows, quoted line
breaks and a unique column; NDJSON merged by a dedupe order; Parquet in row groups) is loaded once
locally and once on a cluster of two worker processes, each file cut into several partitions;
the tables, the quarantine and the run counts must be the same. Then: a rerun changes nothing, a
bad partition fails the run cleanly, a worker killed mid-run changes nothing, a killed coordinator
leaves the tables as they were and the next run succeeds.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from healthetl import pseudonym
from tests.conftest import fresh_database, scalar, subprocess_env
from tests.s3server import credentials, upload

distributed = pytest.importorskip("distributed", reason="the dask extra is not installed")

pytestmark = pytest.mark.postgres

PROJECT = """
[[pipelines]]
name = "wards"
dataset = "wards"
source = "data/wards.csv"

[[pipelines]]
name = "visits"
dataset = "ward_visits"
source = "data/visits*.csv"
[pipelines.quality]
invalid_date_rate = 0.1

[[pipelines]]
name = "readings"
dataset = "readings"
source = "data/readings*.ndjson"
mode = "merge"

[[pipelines]]
name = "labs"
dataset = "labs"
source = "data/labs.parquet"

[[datasets]]
name = "wards"
primary_key = ["ward"]
[datasets.columns]
ward = { type = "text", required = true }

[[datasets]]
name = "ward_visits"
primary_key = ["visit_id"]
[datasets.columns]
visit_id = { type = "integer", required = true }
patient_id = { type = "text", required = true, identifying = true, pseudonymise = true }
ward = { type = "text", references = "wards.ward" }
visit_date = { type = "date", required = true }
cost = { type = "float", min = 0, severity = { range = "warning" } }
code = { type = "text", unique = true }
note = "text"

[[datasets]]
name = "readings"
primary_key = ["reading_id"]
dedupe_order = ["updated"]
[datasets.columns]
reading_id = { type = "text", required = true }
value = { type = "float", required = true }
updated = { type = "timestamp", required = true }

[[datasets]]
name = "labs"
primary_key = ["lab_id"]
[datasets.columns]
lab_id = { type = "integer", required = true }
result = { type = "float", min = 0 }
"""

#: small partitions, so every file of the project is cut into several
PARTITION = "16KB"


def _visits(rng: random.Random, first: int, n: int) -> list[str]:
    """Visit rows: mostly valid; some bad (date, missing patient, unknown ward), some with a
    warning (a negative cost); notes
    with quoted commas and line breaks; exact repeats of earlier valid rows (duplicate keys
    far apart, so across partitions) and of codes; valid rows with an earlier bad row's key (which
    it does not hold), so rows that repeat that bad row repeat one key but not the other."""
    rows: list[str] = []
    valid: list[str] = []
    rejected: list[int] = []
    for i in range(first, first + n):
        date = f"2025-{1 + i % 12:02d}-{1 + i % 28:02d}"
        cost = f"{rng.randint(0, 900)}.{rng.randint(0, 99):02d}"
        ward = rng.choice(["north", "south", "east"])
        patient = f"P{rng.randint(1, 400):05d}"
        note = rng.choice(["", "routine", '"follow-up, with ""quotes"""', '"two\nlines"'])
        kind = rng.random()
        if kind < 0.03:
            date = "2025-13-45"
        elif kind < 0.05:
            cost = "-5"
        elif kind < 0.06:
            patient = ""
        elif kind < 0.07:
            ward = "mars"
        line = f"{i},{patient},{ward},{date},{cost},C{i},{note}"
        if kind >= 0.07 or 0.03 <= kind < 0.05:  # a negative cost is a warning: the row loads
            valid.append(line)
        else:
            rejected.append(i)
        rows.append(line)
        if rejected and rng.random() < 0.01:  # a valid row with a rejected row's key: it holds none
            rows.append(f"{rng.choice(rejected)},P00002,south,2025-06-06,2.00,R{i},")
        if valid and rng.random() < 0.02:  # a repeat of an earlier valid row: a duplicate key
            rows.append(rng.choice(valid))
        if valid and rng.random() < 0.01:  # another visit with an earlier valid row's code
            code = rng.choice(valid).split(",")[5]
            rows.append(f"{first + n + 1000 + i},P00001,north,2025-05-05,1.00,{code},")
    return rows


def _write_project(folder: Path) -> Path:
    rng = random.Random(16)
    data = folder / "data"
    data.mkdir(parents=True)
    header = "visit_id,patient_id,ward,visit_date,cost,code,note\n"
    (data / "wards.csv").write_text("ward\nnorth\nsouth\neast\n")
    # rows B repeat the key of an A of another file and are rejected, so B's code is held by
    # nobody: the C with it loads, in B's partition (90002) and in a later one (90004)
    a_rows = ["90001,P00003,north,2025-01-01,1.00,Z1,", "90003,P00003,north,2025-01-01,1.00,Z3,"]
    b_rows = ["90001,P00004,east,2025-01-02,1.00,Z2,", "90002,P00005,east,2025-01-02,1.00,Z2,"]
    b_rows.append("90003,P00004,east,2025-01-02,1.00,Z4,")
    c_row = "90004,P00006,east,2025-01-03,1.00,Z4,"
    (data / "visits1.csv").write_text(header + "\n".join([*a_rows, *_visits(rng, 1, 1500)]) + "\n")
    (data / "visits2.csv").write_text(header + "\n".join([*b_rows, *_visits(rng, 1400, 800), c_row]) + "\n")
    lines = []
    for i in range(2500):
        rid = f"R{rng.randint(1, 900)}"
        value = "n/a" if rng.random() < 0.02 else f"{rng.random() * 100:.3f}"
        updated = f"2025-06-{1 + i % 28:02d}T{i % 24:02d}:00:00Z"
        lines.append(f'{{"reading_id": "{rid}", "value": "{value}", "updated": "{updated}"}}')
    (data / "readings1.ndjson").write_text("\n".join(lines) + "\n")
    labs = pd.DataFrame(
        {
            "lab_id": [str(i) for i in range(1, 3001)],
            "result": [str(-1 if i % 97 == 0 else i / 10) for i in range(1, 3001)],
        }
    )
    labs.to_parquet(data / "labs.parquet", row_group_size=250)
    (folder / "healthetl.toml").write_text(textwrap.dedent(PROJECT))
    return folder / "healthetl.toml"


#: the pseudonym key of the module's runs: in the environment of the command line and of the
#: workers (which read it themselves: it is never sent with the tasks)
KEY = "dask-test-key-" + "k" * 32


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    """A cluster of two worker processes for the module's tests (as a user's cluster would be)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv(pseudonym.KEY_ENV, KEY)  # before the workers start, so they inherit it
        with credentials():  # the test object store's, which the workers read from (their own copy)
            cluster = distributed.LocalCluster(
                n_workers=2,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address="127.0.0.1:0",
            )
        try:
            yield cluster.scheduler_address
        finally:
            cluster.close()


def _healthetl(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "healthetl", *args],
        cwd=cwd,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _on_cluster(folder: Path, url: str, scheduler: str, size: str, *more: str) -> tuple[str, ...]:
    """The arguments of a ``run`` of the project on the cluster at ``scheduler``."""
    config = str(folder / "healthetl.toml")
    return (
        "run",
        "--config",
        config,
        "--db",
        url,
        "--engine",
        "dask",
        "--scheduler",
        scheduler,
        "--partition-size",
        size,
        *more,
    )


def _migrated(cli, folder: Path, url: str) -> None:  # type: ignore[no-untyped-def]
    """The project's tables in ``url`` (its revision written the first time)."""
    config = str(folder / "healthetl.toml")
    assert cli("db", "upgrade", "--db", url, "--config", config).exit_code == 0
    if not list((folder / "migrations").glob("*.py")):
        result = cli("db", "revision", "-m", "dask test tables", "--db", url, "--config", config)
        assert result.exit_code == 0, result.output
    assert cli("db", "upgrade", "--db", url, "--config", config).exit_code == 0


def _tables(url: str) -> dict[str, list[tuple[object, ...]]]:
    """Everything the runs wrote, sorted, without run ids (quarantine: the row as received is
    compared except for cross-partition duplicates, whose original is the row as standardised)."""
    queries = {
        "wards": "SELECT ward FROM wards ORDER BY 1",
        "visits": "SELECT visit_id, patient_id, ward, visit_date, cost, code, note FROM ward_visits ORDER BY 1",  # noqa: E501
        "readings": "SELECT reading_id, value, updated FROM readings ORDER BY 1",
        "labs": "SELECT lab_id, result FROM labs ORDER BY 1",
        "quarantine": (
            "SELECT dataset, source_file, source_row, column_name, rule, severity, reason, "
            "CASE WHEN rule IN ('duplicate_key', 'unique') THEN NULL ELSE original END "
            "FROM quarantine ORDER BY 1, 2, 3, 4, 5"
        ),
        "runs": (
            "SELECT pipeline, status, rows_in, rows_loaded, rows_quarantined, duplicates_dropped, "
            "rows_warned FROM etl_runs ORDER BY started_at"
        ),
    }
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return {name: [tuple(r) for r in conn.exec_driver_sql(sql)] for name, sql in queries.items()}
    finally:
        engine.dispose()


def _partitions(output: str, pipeline: str) -> int:
    """How many partitions a run's output says ``pipeline``'s sources were cut into (0: none said)."""
    found = re.search(rf"{pipeline}: (\d+) partitions on ", output)
    return int(found.group(1)) if found else 0


def _staging_tables(url: str) -> list[object]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return list(
                conn.exec_driver_sql(
                    "SELECT tablename FROM pg_tables WHERE starts_with(tablename, 'healthetl_stage_')"
                ).scalars()
            )
    finally:
        engine.dispose()


@pytest.fixture
def second_pg(pg_server: str) -> Iterator[str]:
    """Another fresh PostgreSQL database (a local run's, to compare with)."""
    with fresh_database(pg_server) as url:
        yield url


def test_dask_run_loads_what_a_local_run_loads(
    cli, tmp_path: Path, pg_url: str, second_pg: str, scheduler: str
) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "proj"
    _write_project(folder)
    _migrated(cli, folder, second_pg)
    local = cli("run", "--config", str(folder / "healthetl.toml"), "--db", second_pg)
    assert local.exit_code == 0, local.output
    _migrated(cli, folder, pg_url)
    args = _on_cluster(folder, pg_url, scheduler, PARTITION)
    result = cli(*args)
    assert result.exit_code == 0, result.output
    for name in ("visits", "readings", "labs"):  # each cut into several partitions
        assert _partitions(result.output, name) > 1, result.output
    expected, got = _tables(second_pg), _tables(pg_url)
    for k in expected:
        if expected[k] != got[k]:
            a, b = set(expected[k]), set(got[k])
            print("DIFF", k, len(expected[k]), len(got[k]))
            print("DIFF  only local:", sorted(a - b, key=str)[:8])
            print("DIFF  only dask :", sorted(b - a, key=str)[:8])
    assert got == expected
    # the data holds every kind of failure the test means to check, across partitions too
    assert {90001, 90002, 90003, 90004} <= {r[0] for r in got["visits"]}  # the A and C rows
    patients = {r[1] for r in got["visits"]}  # stored as the pseudonyms a local run stores
    assert patients and not any(re.fullmatch(r"P\d{5}", p) for p in patients)
    rules = {(r[0], r[4]) for r in got["quarantine"]}
    assert {
        ("ward_visits", "duplicate_key"),
        ("ward_visits", "unique"),
        ("ward_visits", "date"),
        ("ward_visits", "foreign_key"),
        ("ward_visits", "range"),  # a warning: the row loads, counted as warned
    } <= rules
    assert next(r for r in got["runs"] if r[0] == "visits")[6] > 0
    assert {("readings", "number"), ("labs", "range")} <= rules
    readings = next(r for r in got["runs"] if r[0] == "readings")
    assert readings[5] > 0  # older versions dropped by the dedupe order
    for run in got["runs"]:  # rows_in = loaded + quarantined + duplicates dropped
        assert run[2] == run[3] + run[4] + run[5]
    assert _staging_tables(pg_url) == []

    again = cli(*args)  # a rerun: the same tables, the same counts in its own run rows
    assert again.exit_code == 0, again.output
    rerun = _tables(pg_url)
    for name in ("wards", "visits", "readings", "labs"):
        assert rerun[name] == expected[name]
    assert rerun["runs"][4:] == expected["runs"]


def test_sources_in_a_bucket_are_cut_and_read_by_the_workers(
    cli, tmp_path: Path, pg_url: str, second_pg: str, scheduler: str, s3, bucket: str, endpoint: str
) -> None:  # type: ignore[no-untyped-def]
    """Sources in object storage (``s3://``): the coordinator cuts the objects into byte ranges
    and the workers read their ranges with their own credentials; the tables are those a local
    run of the same files on disk loads."""
    pytest.importorskip("s3fs")
    folder = tmp_path / "proj"
    _write_project(folder)
    _migrated(cli, folder, second_pg)
    local = cli("run", "--config", str(folder / "healthetl.toml"), "--db", second_pg)
    assert local.exit_code == 0, local.output
    upload(s3, folder / "data", bucket, "data")
    config = (folder / "healthetl.toml").read_text()
    remote = config.replace(
        'source = "data/', f'storage = {{ endpoint_url = "{endpoint}" }}\nsource = "s3://{bucket}/data/'
    )
    assert remote.count("s3://") == 4
    (folder / "healthetl.toml").write_text(remote)
    _migrated(cli, folder, pg_url)
    result = cli(*_on_cluster(folder, pg_url, scheduler, PARTITION))
    assert result.exit_code == 0, result.output
    for name in ("visits", "readings", "labs"):
        assert _partitions(result.output, name) > 1, result.output
    assert _tables(pg_url) == _tables(second_pg)
    assert _staging_tables(pg_url) == []


def test_bad_partition_fails_the_run_and_leaves_the_tables(
    cli, tmp_path: Path, pg_url: str, scheduler: str
) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "proj"
    _write_project(folder)
    _migrated(cli, folder, pg_url)
    args = _on_cluster(folder, pg_url, scheduler, PARTITION)
    assert cli(*args).exit_code == 0
    before = _tables(pg_url)
    lines = (folder / "data" / "visits2.csv").read_text().splitlines()
    # in the file's last partition, not its first: before a line that starts a record
    at = next(i for i in range(len(lines) - 40, 0, -1) if re.match(r"\d+,P\d+,", lines[i]))
    lines.insert(at, "5,P1,north,2025-01-01,1.0,C5,note,extra,fields")
    bad_line = at + 1
    (folder / "data" / "visits2.csv").write_text("\n".join(lines) + "\n")
    result = cli(*args, "--pipeline", "visits")
    assert result.exit_code == 3, result.output
    assert f"visits2.csv, line {bad_line}: malformed CSV" in result.output
    assert "Traceback" not in result.output
    after = _tables(pg_url)
    for name in ("wards", "visits", "readings", "labs"):
        assert after[name] == before[name]
    assert after["runs"][-1][:2] == ("visits", "failed")
    assert _staging_tables(pg_url) == []


def test_killed_worker_changes_nothing(
    cli, tmp_path: Path, pg_url: str, second_pg: str, scheduler: str
) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "proj"
    _write_project(folder)
    big = folder / "data" / "visits1.csv"
    rng = random.Random(7)
    header = big.read_text().splitlines()[0]
    big.write_text(header + "\n" + "\n".join(_visits(rng, 1, 12_000)) + "\n")  # a run that lasts
    _migrated(cli, folder, second_pg)
    assert (
        cli(
            "run", "--config", str(folder / "healthetl.toml"), "--db", second_pg, "--pipeline", "wards"
        ).exit_code
        == 0
    )
    assert (
        cli(
            "run", "--config", str(folder / "healthetl.toml"), "--db", second_pg, "--pipeline", "visits"
        ).exit_code
        == 0
    )
    _migrated(cli, folder, pg_url)
    assert (
        cli(
            "run", "--config", str(folder / "healthetl.toml"), "--db", pg_url, "--pipeline", "wards"
        ).exit_code
        == 0
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "healthetl", *_on_cluster(folder, pg_url, scheduler, "24KB", "-p", "visits")],
        cwd=folder,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    client = distributed.Client(scheduler, timeout="30s")
    try:
        killed = None
        deadline = time.monotonic() + 120
        while killed is None and time.monotonic() < deadline and proc.poll() is None:
            busy = [w for w, tasks in client.processing().items() if tasks]
            if busy:
                pid = client.run(os.getpid, workers=busy[:1])[busy[0]]
                os.kill(pid, signal.SIGKILL)  # the worker dies mid-partition
                killed = busy[0]
            time.sleep(0.05)
        out, _ = proc.communicate(timeout=240)
    finally:
        client.close()
    assert killed is not None, "the run ended before a worker could be killed"
    assert proc.returncode == 0, out
    expected, got = _tables(second_pg), _tables(pg_url)
    assert got["visits"] == expected["visits"]
    assert got["quarantine"] == expected["quarantine"]
    assert _staging_tables(pg_url) == []


def test_killed_coordinator_leaves_the_tables_and_the_next_run_succeeds(
    cli, tmp_path: Path, pg_url: str, scheduler: str
) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "proj"
    _write_project(folder)
    big = folder / "data" / "visits1.csv"
    header = big.read_text().splitlines()[0]
    big.write_text(header + "\n" + "\n".join(_visits(random.Random(3), 1, 12_000)) + "\n")
    _migrated(cli, folder, pg_url)
    assert (
        cli(
            "run", "--config", str(folder / "healthetl.toml"), "--db", pg_url, "--pipeline", "wards"
        ).exit_code
        == 0
    )
    args = [*_on_cluster(folder, pg_url, scheduler, "24KB", "-p", "visits")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "healthetl", *args],
        cwd=folder,
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not _staging_tables(pg_url) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert scalar(pg_url, "SELECT COUNT(*) FROM ward_visits") == 0
    assert _staging_tables(pg_url)  # left behind by the killed coordinator
    result = _healthetl(*args, cwd=folder)
    assert result.returncode == 0, result.stdout + result.stderr
    assert scalar(pg_url, "SELECT COUNT(*) FROM ward_visits") > 10_000
    assert _staging_tables(pg_url) == []  # this run's, and the killed run's


def test_local_cluster_of_workers_and_refusals(cli, tmp_path: Path, pg_url: str, sqlite_url: str) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "proj"
    _write_project(folder)
    _migrated(cli, folder, pg_url)
    result = _healthetl(
        "run",
        "--config",
        str(folder / "healthetl.toml"),
        "--db",
        pg_url,
        "--engine",
        "dask",
        "--workers",
        "1",
        "-p",
        "wards",
        "-p",
        "labs",
        cwd=folder,
    )
    assert result.returncode == 0, result.stderr
    assert "a local Dask cluster of 1 worker process" in result.stderr
    assert scalar(pg_url, "SELECT COUNT(*) FROM labs") == 3000 - 3000 // 97

    refused = cli("run", "--config", str(folder / "healthetl.toml"), "--db", sqlite_url, "--engine", "dask")
    assert refused.exit_code == 2
    assert "--engine dask needs PostgreSQL" in refused.output and "SQLite has one writer" in refused.output
    assert (
        cli("run", "--config", str(folder / "healthetl.toml"), "--db", pg_url, "--workers", "2").exit_code
        == 2
    )  # only with --engine dask
    both = cli(*_on_cluster(folder, pg_url, "tcp://127.0.0.1:1", "1MB", "--workers", "2"))
    assert both.exit_code == 2 and "exclude each other" in both.output
    bad = cli(
        "run",
        "--config",
        str(folder / "healthetl.toml"),
        "--db",
        pg_url,
        "--engine",
        "dask",
        "--partition-size",
        "lots",
    )
    assert bad.exit_code == 2 and "not a size" in bad.output
