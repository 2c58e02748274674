"""Sources in object storage: a real S3-compatible server (moto's, on a free loopback port) holds
the examples' files; a pipeline pointed at ``s3://`` loads the same tables as from local files,
an inbox on a bucket archives only after the commit, and a missing bucket, refused credentials
or an object deleted after listing fail with one line naming it."""

from __future__ import annotations

import gzip
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

boto3 = pytest.importorskip("boto3")
pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

from tests.s3server import CREDENTIALS  # noqa: E402
from tests.s3server import upload as _upload  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def _keys(s3, bucket: str, prefix: str = "") -> list[str]:  # type: ignore[no-untyped-def]
    found = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return sorted(o["Key"] for o in found)


def _remote_copy(example: Path, target: Path, url: str, endpoint: str) -> Path:
    """The example's project file with every ``source = "data/..."`` pointed at ``url``."""
    target.mkdir(parents=True)
    lines = []
    for line in (example / "healthetl.toml").read_text(encoding="utf-8").splitlines():
        if line.startswith('source = "data'):
            lines.append(line.replace('"data', f'"{url}/data', 1))
            lines.append(f'storage = {{ endpoint_url = "{endpoint}" }}')
        else:
            lines.append(line)
    for extra in example.iterdir():  # declarations, plugins, migrations: everything but data
        if extra.name not in ("data", "healthetl.toml") and not extra.name.endswith(".db"):
            copy = shutil.copytree if extra.is_dir() else shutil.copy
            copy(extra, target / extra.name)
    (target / "healthetl.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return target / "healthetl.toml"


def _tables(url: str) -> dict[str, list[tuple]]:
    """Every table's rows, sorted, without what differs from run to run (ids, times) or by
    where the file lived (a raw row's ``file_sha256``: an object is known by its ETag)."""
    engine = sa.create_engine(url)
    out: dict[str, list[tuple]] = {}
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        for table in inspector.get_table_names():
            if table.startswith(("etl_", "alembic", "dq_", "pipeline_state", "state_", "loaded_files")):
                continue
            columns = [
                c["name"]
                for c in inspector.get_columns(table)
                if not any(part in c["name"] for part in ("run_id", "_at", "quarantine_id", "file_sha256"))
            ]
            cols = ", ".join(f'"{c}"' for c in columns)
            rows = conn.execute(sa.text(f'SELECT {cols} FROM "{table}"')).all()
            out[table] = sorted((tuple(str(v) for v in r) for r in rows), key=repr)
    engine.dispose()
    return out


@pytest.mark.parametrize("example", ["vip-healthtech", "patient-visits", "medlaunch", "fhir-bulk"])
def test_an_example_from_a_bucket_loads_the_same_tables_as_from_disk(
    cli, s3, bucket: str, endpoint: str, tmp_path: Path, example: str
) -> None:
    folder = REPO / "examples" / example
    _upload(s3, folder / "data", bucket, f"{example}/data")
    remote = _remote_copy(folder, tmp_path / "remote", f"s3://{bucket}/{example}", endpoint)
    local_db, remote_db = f"sqlite:///{tmp_path / 'local.db'}", f"sqlite:///{tmp_path / 'remote.db'}"

    local = cli("run", "--config", folder / "healthetl.toml", "--db", local_db)
    assert local.exit_code == 0, local.output
    result = cli("run", "--config", remote, "--db", remote_db)
    assert result.exit_code == 0, result.output
    assert f"s3://{bucket}" in result.output  # runs name the objects they read

    local_tables, remote_tables = _tables(local_db), _tables(remote_db)
    assert sum(len(rows) for rows in local_tables.values()) > 0
    assert remote_tables == local_tables
    _raw_rows_carry_the_etags(remote_db, s3, bucket)

    # a second run does what it does on disk (a dataset with a raw layer skips what it holds)
    local_again = cli("run", "--config", folder / "healthetl.toml", "--db", local_db)
    assert local_again.exit_code == 0, local_again.output
    again = cli("run", "--config", remote, "--db", remote_db)
    assert again.exit_code == 0, again.output
    assert _tables(remote_db) == _tables(local_db)
    skipped = again.output.count("already loaded by run")
    assert skipped == local_again.output.count("already loaded by run")


def _raw_rows_carry_the_etags(url: str, s3, bucket: str) -> None:  # type: ignore[no-untyped-def]
    """A raw row read from an object is known by that object's ETag."""
    from healthetl.sources.base import object_fingerprint

    engine = sa.create_engine(url)
    with engine.connect() as conn:
        raw = [t for t in sa.inspect(conn).get_table_names() if t.startswith("raw_")]
        found = {
            r for t in raw for r in conn.execute(sa.text(f'SELECT DISTINCT file_sha256 FROM "{t}"')).scalars()
        }
        raw_rows = sum(conn.execute(sa.text(f'SELECT COUNT(*) FROM "{t}"')).scalar() or 0 for t in raw)
    engine.dispose()
    objects = s3.list_objects_v2(Bucket=bucket)["Contents"]
    assert found <= {object_fingerprint(o["ETag"], "") for o in objects}
    assert bool(found) == bool(raw_rows)


def _inbox_project(tmp_path: Path, bucket: str, endpoint: str) -> Path:
    cfg = tmp_path / "healthetl.toml"
    cfg.write_text(
        f'[[pipelines]]\nname = "visits"\ndataset = "visits"\nsource = "s3://{bucket}/inbox"\n'
        f'mode = "merge"\narchive = "archive/{{date}}"\n'
        f'storage = {{ endpoint_url = "{endpoint}" }}\n',
        encoding="utf-8",
    )
    return cfg


VISITS = REPO / "examples" / "patient-visits" / "data" / "2025-12-05_patient_visits.csv"


def test_a_bucket_inbox_archives_after_the_commit_and_skips_what_it_loaded(
    cli, s3, bucket: str, endpoint: str, tmp_path: Path, db_url: str
) -> None:
    cfg, today = _inbox_project(tmp_path, bucket, endpoint), datetime.now(UTC).strftime("%Y-%m-%d")
    rows = len(VISITS.read_text(encoding="utf-8").splitlines()) - 1
    s3.upload_file(str(VISITS), bucket, "inbox/visits_1.csv")

    first = cli("run", "--config", cfg, "--db", db_url)
    assert first.exit_code == 0, first.output
    assert _keys(s3, bucket, "inbox/") == []
    assert _keys(s3, bucket, "archive/") == [f"archive/{today}/visits_1.csv"]
    loaded = sa.create_engine(db_url)
    with loaded.connect() as conn:
        counts = conn.execute(
            sa.text("SELECT rows_in, rows_loaded, rows_quarantined, duplicates_dropped FROM etl_runs")
        ).one()
        in_table = conn.execute(sa.text("SELECT COUNT(*) FROM stg_visits")).scalar()
    assert counts[0] == rows == counts[1] + counts[2] + counts[3]  # every object row accounted for
    assert in_table == counts[1]

    # the same content under another key: skipped by its ETag, reported, archived beside the first
    s3.upload_file(str(VISITS), bucket, "inbox/visits_1_again.csv")
    again = cli("run", "--config", cfg, "--db", db_url)
    assert again.exit_code == 0, again.output
    assert "already loaded by run" in again.output
    assert _keys(s3, bucket, "inbox/") == []
    assert f"archive/{today}/visits_1_again.csv" in _keys(s3, bucket, "archive/")

    # a batch that fails (a file that is not CSV) leaves every object where it was
    s3.upload_file(str(VISITS), bucket, "inbox/visits_2.csv")
    s3.put_object(Bucket=bucket, Key="inbox/visits_3.csv", Body=b"\x00\x01\x02 not a csv\n")
    failed = cli("run", "--config", cfg, "--db", db_url)
    assert failed.exit_code != 0
    assert "s3://" in failed.output and "visits_3.csv" in failed.output
    assert _keys(s3, bucket, "inbox/") == ["inbox/visits_2.csv", "inbox/visits_3.csv"]
    with loaded.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM stg_visits")).scalar() == in_table
    loaded.dispose()


def test_a_missing_bucket_is_one_line_naming_it(cli, endpoint: str, tmp_path: Path) -> None:
    cfg = _inbox_project(tmp_path, "no-such-bucket", endpoint)
    result = cli("run", "--config", cfg, "--db", f"sqlite:///{tmp_path / 'x.db'}")
    assert result.exit_code == 3, result.output
    assert "s3://no-such-bucket/inbox: the bucket does not exist" in result.output
    assert "Traceback" not in result.output


def test_a_missing_object_in_a_bucket_named_bucket_is_not_a_missing_bucket(
    cli, s3, endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    name = f"clinic-bucket-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=name)
    result = cli("extract", "visits", f"s3://{name}/nothere.csv", "-o", tmp_path / "x.parquet")
    assert result.exit_code == 3
    assert f"s3://{name}/nothere.csv: object not found" in result.output
    assert "bucket does not exist" not in result.output


def test_an_object_deleted_between_listing_and_reading_fails_naming_it(
    s3, bucket: str, endpoint: str, tmp_path: Path
) -> None:
    from healthetl.catalog import catalog_for
    from healthetl.config import load_project
    from healthetl.db.engine import create
    from healthetl.db.migrate import upgrade
    from healthetl.errors import SourceError
    from healthetl.pipeline.load import load
    from healthetl.sources.discover import discover

    cfg = _inbox_project(tmp_path, bucket, endpoint)
    s3.upload_file(str(VISITS), bucket, "inbox/a.csv")
    s3.upload_file(str(VISITS), bucket, "inbox/b.csv")
    project = load_project(cfg)
    pipeline, catalog = project.pipeline("visits"), catalog_for(project)
    listed = discover(pipeline)
    assert [s.label for s in listed] == [f"s3://{bucket}/inbox/a.csv", f"s3://{bucket}/inbox/b.csv"]
    s3.delete_object(Bucket=bucket, Key="inbox/b.csv")

    engine = create(f"sqlite:///{tmp_path / 'x.db'}")
    upgrade(engine, catalog=catalog)
    with pytest.raises(SourceError) as failure:
        load(engine, catalog.dataset("visits"), listed, pipeline.options, catalog=catalog, force=True)
    assert f"s3://{bucket}/inbox/b.csv: object not found" in str(failure.value)
    with engine.connect() as conn:  # nothing half-written: a.csv's rows rolled back with the run
        assert conn.execute(sa.text("SELECT COUNT(*) FROM stg_visits")).scalar() == 0
    engine.dispose()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def locked_endpoint() -> Iterator[str]:
    """A second server that checks credentials (moto's IAM emulation) after its first two
    requests, which make the bucket and its object; started in its own process because moto
    reads that setting when it starts."""
    port = _free_port()
    env = {**os.environ, **CREDENTIALS, "INITIAL_NO_AUTH_ACTION_COUNT": "2"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("the S3 server with credential checks did not start in 30 s")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_refused_credentials_are_one_line_and_never_printed(
    cli, locked_endpoint: str, tmp_path: Path
) -> None:
    client = boto3.client("s3", endpoint_url=locked_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="locked")
    client.put_object(Bucket="locked", Key="inbox/visits.csv", Body=VISITS.read_bytes())
    cfg = _inbox_project(tmp_path, "locked", locked_endpoint)
    result = cli("run", "--config", cfg, "--db", f"sqlite:///{tmp_path / 'x.db'}")
    assert result.exit_code == 3, result.output
    assert "s3://locked/inbox: access denied" in result.output
    assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in result.output
    assert "Traceback" not in result.output


def test_extract_reads_an_object_named_on_the_command_line(
    cli, s3, bucket: str, endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stages run alone take an object's URL too; the store comes from AWS_ENDPOINT_URL."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    s3.put_object(Bucket=bucket, Key="drop/visits.csv.gz", Body=gzip.compress(VISITS.read_bytes()))
    out = tmp_path / "visits.parquet"
    result = cli("extract", "visits", f"s3://{bucket}/drop/visits.csv.gz", "-o", out)
    assert result.exit_code == 0, result.output
    import pyarrow.parquet as pq

    assert pq.read_table(out).num_rows == len(VISITS.read_text(encoding="utf-8").splitlines()) - 1
