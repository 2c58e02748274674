"""Schema changes of declared datasets: keys, unique constraints and references are drift and
get written by `db revision`; a migration that existing rows would break is refused, and one
that fails leaves the database exactly as it was (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

BEFORE = """
[[pipelines]]
name = "wards"
dataset = "wards"
source = "wards.csv"

[[pipelines]]
name = "beds"
dataset = "beds"
source = "beds.csv"
mode = "append"

[[datasets]]
name = "wards"
primary_key = ["ward"]
[datasets.columns]
ward = { type = "text", required = true }

[[datasets]]
name = "beds"
mode = "append"
[datasets.columns]
bed = { type = "integer", required = true }
ward = { type = "text" }
code = { type = "text" }
"""

AFTER = (
    BEFORE.replace(
        'name = "beds"\nmode = "append"\n[datasets',
        'name = "beds"\nmode = "append"\nprimary_key = ["bed"]\n[datasets',
    )
    .replace('ward = { type = "text" }\ncode', 'ward = { type = "text", references = "wards.ward" }\ncode')
    .replace('code = { type = "text" }', 'code = { type = "text", unique = true }')
)


def _setup(cli, tmp_path: Path, url: str, beds: str) -> Path:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "healthetl.toml"
    cfg.write_text(BEFORE, encoding="utf-8")
    (tmp_path / "wards.csv").write_text("ward\nNorth\n", encoding="utf-8")
    (tmp_path / "beds.csv").write_text("bed,ward,code\n" + beds, encoding="utf-8")
    assert cli("db", "upgrade", "--db", url).exit_code == 0
    assert cli("db", "revision", "-m", "wards and beds", "--db", url).exit_code == 0
    assert cli("db", "upgrade", "--db", url).exit_code == 0
    assert cli("run", "--db", url).exit_code == 0
    return cfg


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    names = set(sa.inspect(engine).get_table_names())
    engine.dispose()
    return names


def _pk(url: str, table: str) -> list[str]:
    engine = sa.create_engine(url)
    cols = list(sa.inspect(engine).get_pk_constraint(table)["constrained_columns"])
    engine.dispose()
    return cols


def test_key_unique_and_reference_changes_are_drift_and_get_a_revision(
    cli, tmp_path: Path, db_url: str
) -> None:
    cfg = _setup(cli, tmp_path, db_url, "1,North,a\n2,North,b\n")
    cfg.write_text(AFTER, encoding="utf-8")
    # before the revision: nothing loads, and the message names each change
    result = cli("run", "--db", db_url)
    assert result.exit_code == 3
    assert "primary key of beds changed (none -> bed)" in result.output
    assert "new unique constraint on beds (code)" in result.output
    assert "new reference on beds (ward)" in result.output
    result = cli("db", "revision", "-m", "keys", "--db", db_url)
    assert result.exit_code == 0, result.output
    text = next(p for p in (tmp_path / "migrations").glob("*keys.py")).read_text()
    assert "create_primary_key('pk_beds'" in text and "uq_beds_code" in text and "fk_beds_ward_wards" in text
    assert "create_index('ix_beds_ward'" in text  # the reference's column is indexed
    assert cli("db", "upgrade", "--db", db_url).exit_code == 0
    assert _pk(db_url, "beds") == ["bed"]
    # an append of an existing key now fails whole instead of creating a duplicate
    assert cli("run", "--db", db_url, "--pipeline", "beds").exit_code == 3
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM beds")).scalar() == 2
    engine.dispose()
    # and the revision goes back down cleanly
    heads = cli("db", "history", "-f", "json", "--db", db_url)
    assert heads.exit_code == 0
    assert cli("db", "downgrade", "project@-1", "--db", db_url).exit_code == 0
    assert _pk(db_url, "beds") == []


def test_a_missing_index_warns_but_does_not_block_and_gets_a_revision(
    cli, tmp_path: Path, db_url: str
) -> None:
    """A database migrated before references were indexed: loads go on, with a warning that
    names the index, and `db revision` writes the index alone."""
    cfg = _setup(cli, tmp_path, db_url, "1,North,a\n")
    cfg.write_text(AFTER.replace('mode = "append"', 'mode = "merge"'), encoding="utf-8")
    assert cli("db", "revision", "-m", "keys", "--db", db_url).exit_code == 0
    assert cli("db", "upgrade", "--db", db_url).exit_code == 0
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP INDEX ix_beds_ward"))
    engine.dispose()
    result = cli("run", "--db", db_url, "--pipeline", "beds")
    assert result.exit_code == 0, result.output
    assert "new index on beds (ward)" in result.output and "db revision" in result.output
    current = cli("db", "current", "--db", db_url)
    assert "new index on beds (ward)" in current.output
    result = cli("db", "revision", "-m", "index", "--db", db_url)
    assert result.exit_code == 0, result.output
    text = next(p for p in (tmp_path / "migrations").glob("*index.py")).read_text()
    assert "create_index('ix_beds_ward'" in text and "create_table" not in text
    assert cli("db", "upgrade", "--db", db_url).exit_code == 0
    engine = sa.create_engine(db_url)
    assert "ix_beds_ward" in {i["name"] for i in sa.inspect(engine).get_indexes("beds")}
    engine.dispose()
    assert "new index" not in cli("run", "--db", db_url, "--pipeline", "beds").output


def test_rows_that_break_a_new_constraint_refuse_the_upgrade(cli, tmp_path: Path, db_url: str) -> None:
    # a duplicate bed, a duplicate code and a bed in a ward that does not exist
    cfg = _setup(cli, tmp_path, db_url, "1,North,a\n1,South,a\n2,North,b\n")
    cfg.write_text(AFTER, encoding="utf-8")
    assert cli("db", "revision", "-m", "keys", "--db", db_url).exit_code == 0
    before = _tables(db_url)
    result = cli("db", "upgrade", "--db", db_url)
    assert result.exit_code == 3, result.output
    assert "nothing was changed" in result.output and "Traceback" not in result.output
    assert "beds.pk_beds (bed): 1 value(s) held by 2 rows" in result.output
    assert "beds.uq_beds_code (code): 1 value(s) held by 2 rows" in result.output
    assert "beds.fk_beds_ward_wards (ward -> wards.ward): 1 rows without a match" in result.output
    assert _tables(db_url) == before and _pk(db_url, "beds") == []
    # fix the data, and the same upgrade goes through
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM beds WHERE ward = 'South'"))
    engine.dispose()
    result = cli("db", "upgrade", "--db", db_url)
    assert result.exit_code == 0, result.output
    assert _pk(db_url, "beds") == ["bed"]


def test_a_migration_that_fails_midway_leaves_nothing_behind(cli, tmp_path: Path, db_url: str) -> None:
    """A change the pre-check does not cover (a column made required while rows hold NULL)
    fails inside the migration: it is rolled back whole (no `_alembic_tmp_*` table on SQLite),
    and the next upgrade after fixing the data succeeds."""
    cfg = _setup(cli, tmp_path, db_url, "1,,a\n2,North,b\n")
    cfg.write_text(BEFORE.replace('ward = { type = "text" }', 'ward = { type = "text", required = true }'))
    assert cli("db", "revision", "-m", "ward required", "--db", db_url).exit_code == 0
    before = _tables(db_url)
    result = cli("db", "upgrade", "--db", db_url)
    assert result.exit_code == 3, result.output
    assert "rolled back" in result.output and "nothing was changed" in result.output
    assert "Traceback" not in result.output and "unexpected" not in result.output
    assert _tables(db_url) == before
    assert not any(t.startswith("_alembic_tmp") for t in _tables(db_url))
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE beds SET ward = 'North' WHERE ward IS NULL"))
    engine.dispose()
    result = cli("db", "upgrade", "--db", db_url)
    assert result.exit_code == 0, result.output
    assert cli("run", "--db", db_url, "--pipeline", "wards").exit_code == 0
