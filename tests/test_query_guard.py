"""`healthetl query` runs exactly one side-effect-free query, whatever the SQL tries, on both
databases, through the superuser connection the suite uses: no file appears, no table changes."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import VIP

POSTGRES = [
    "COPY (SELECT 1) TO PROGRAM 'touch {marker}'",
    "COPY (SELECT * FROM doctors) TO '{marker}'",
    "SELECT lo_export(lo_from_bytea(0, 'x'), '{marker}')",
    "SELECT pg_read_file('/etc/hostname')",
    "SELECT \"pg_read_file\"('/etc/hostname')",
    "SELECT set_config('default_transaction_read_only', 'off', false)",
    "SELECT pg_terminate_backend(pg_backend_pid())",
    "SELECT pg_advisory_lock(1)",
    "SELECT query_to_xml('DELETE FROM doctors', true, true, '')",
    "WITH gone AS (DELETE FROM doctors RETURNING *) SELECT * FROM gone",
    "SELECT 1; DELETE FROM doctors",
    "DELETE FROM doctors",
    "SELECT * INTO stolen FROM doctors",
    "DO $$ BEGIN DELETE FROM doctors; END $$",
    "SET ROLE postgres",
    "SELECT * FROM doctors FOR UPDATE",
]
SQLITE = [
    "ATTACH DATABASE '{marker}' AS other",
    "VACUUM INTO '{marker}'",
    "PRAGMA query_only = 0",
    "SELECT load_extension('/tmp/nothing')",
    "WITH gone AS (SELECT 1) DELETE FROM doctors",
    "SELECT 1; DELETE FROM doctors",
    "DELETE FROM doctors",
    "CREATE TABLE stolen AS SELECT * FROM doctors",
]


def _doctors(url: str) -> list[tuple[object, ...]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(sa.text("SELECT * FROM doctors ORDER BY doctor_id"))]
        tables = set(sa.inspect(conn).get_table_names())
    engine.dispose()
    assert "stolen" not in tables
    return rows


@pytest.fixture
def loaded(cli, db_url: str) -> str:  # type: ignore[no-untyped-def]
    assert cli("db", "upgrade", "--db", db_url).exit_code == 0
    assert cli("load", "doctors", VIP / "doctors.xlsx", "--db", db_url).exit_code == 0
    return db_url


def test_hostile_sql_is_refused_and_changes_nothing(cli, loaded: str, tmp_path: Path) -> None:
    statements = POSTGRES if loaded.startswith("postgresql") else SQLITE
    before = _doctors(loaded)
    tmp_path.chmod(0o777)  # the database server's OS user could write here: a file would show
    for template in statements:
        marker = tmp_path / f"x-{uuid.uuid4().hex[:8]}"
        result = cli("query", "--sql", template.format(marker=marker), "--db", loaded)
        assert result.exit_code == 2, (template, result.output)
        assert "refused" in result.output and "Traceback" not in result.output, template
        assert not marker.exists(), template
        assert _doctors(loaded) == before, template


def test_ordinary_queries_still_run(cli, loaded: str) -> None:
    for sql in (
        "SELECT specialty, COUNT(*) AS n FROM doctors GROUP BY specialty ORDER BY 1",
        "WITH d AS (SELECT doctor_id FROM doctors) SELECT COUNT(*) FROM d",
        "SELECT doctor_id FROM doctors UNION SELECT 1 ORDER BY 1",
        "SELECT name FROM doctors WHERE name LIKE 'Dr.%' AND doctor_id = :d",
    ):
        result = cli("query", "--sql", sql, "--param", "d=100", "-f", "json", "--db", loaded)
        if ":d" not in sql:
            result = cli("query", "--sql", sql, "-f", "json", "--db", loaded)
        assert result.exit_code == 0, (sql, result.output)


def test_a_select_only_role_is_used_when_configured(cli, pg_url: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    role = f"healthetl_reader_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE ROLE "{role}" NOLOGIN')
    try:
        assert cli("db", "upgrade", "--db", pg_url).exit_code == 0
        assert cli("load", "doctors", VIP / "doctors.xlsx", "--db", pg_url).exit_code == 0
        monkeypatch.setenv("HEALTHETL_QUERY_ROLE", role)
        # the role may not read doctors yet: the query runs as that role, not as the superuser
        denied = cli("query", "--sql", "SELECT COUNT(*) FROM doctors", "--db", pg_url)
        assert denied.exit_code == 2 and "permission denied" in denied.output
        with engine.connect() as conn:
            conn.exec_driver_sql(f'GRANT SELECT ON doctors TO "{role}"')
        ok = cli("query", "--sql", "SELECT current_user AS who", "-f", "json", "--db", pg_url)
        assert ok.exit_code == 0 and role in ok.stdout
    finally:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'DROP OWNED BY "{role}"')
            conn.exec_driver_sql(f'DROP ROLE "{role}"')
        engine.dispose()
