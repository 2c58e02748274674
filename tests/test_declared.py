"""Bring your own dataset: declared in healthetl.toml (and a Python module), migrated by the
project's own Alembic revisions, loaded, queried; checked against answers computed here."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from tests.conftest import DATA, REPO

NOSHOW = DATA / "noshow" / "noshow_sample.csv"


def _project(tmp_path: Path, extra_columns: str = "") -> Path:
    """The example's declaration, pointed at the test sample, without its migrations."""
    folder = tmp_path / "proj"
    (folder / "data").mkdir(parents=True)
    shutil.copy(NOSHOW, folder / "data" / "noshow.csv")
    text = (REPO / "examples" / "noshow" / "healthetl.toml").read_text(encoding="utf-8")
    text = text.replace('source = "data/*.csv.gz"', 'source = "data/noshow.csv"')
    text = text.replace("[datasets.columns]\n", "[datasets.columns]\n" + extra_columns, 1)
    (folder / "healthetl.toml").write_text(text, encoding="utf-8")
    return folder / "healthetl.toml"


def _expected() -> tuple[pd.DataFrame, dict[str, set[int]]]:
    """Rows that must load, and the appointment ids each rule must reject (plain pandas)."""
    raw = pd.read_csv(NOSHOW, dtype=str)
    bad = {
        "pattern": set(raw.loc[~raw["PatientId"].str.fullmatch(r"\d{1,15}"), "AppointmentID"]),
        "range": set(raw.loc[~pd.to_numeric(raw["Age"]).between(0, 120), "AppointmentID"]),
        "appointment_not_before_scheduling": set(
            raw.loc[
                raw["AppointmentDay"].str[:10]
                < pd.to_datetime(raw["ScheduledDay"], utc=True).dt.strftime("%Y-%m-%d"),
                "AppointmentID",
            ]
        ),
    }
    rejected = set().union(*bad.values())
    good = raw[~raw["AppointmentID"].isin(rejected)]
    return good, {k: {int(v) for v in ids} for k, ids in bad.items()}


def test_declared_dataset_end_to_end(cli, tmp_path: Path, db_url: str) -> None:
    cfg = _project(tmp_path)
    good, bad = _expected()
    assert all(bad.values()), "the sample must exercise every rule"

    # no migration yet: refused, with the command to run
    result = cli("run", "--config", cfg, "--db", db_url)
    assert result.exit_code == 3
    assert "table noshow_appointments does not exist yet" in result.output
    assert "healthetl db revision" in result.output

    result = cli("db", "revision", "-m", "add noshow", "--config", cfg, "--db", db_url)
    assert result.exit_code == 0, result.output
    revisions = list((cfg.parent / "migrations").glob("*.py"))
    assert len(revisions) == 1
    assert "create_table('noshow_appointments'" in revisions[0].read_text()

    result = cli("run", "--config", cfg, "--db", db_url)
    assert result.exit_code == 0, result.output

    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        loaded = conn.execute(sa.text("SELECT appointment_id FROM noshow_appointments")).scalars()
        loaded_ids = set(loaded)
        q = conn.execute(
            sa.text("SELECT rule, source_row, original FROM quarantine WHERE dataset = 'noshow'")
        ).all()
    engine.dispose()
    assert loaded_ids == {int(v) for v in good["AppointmentID"]}
    for rule, ids in bad.items():
        got = {int(json.loads(r.original)["appointment_id"]) for r in q if r.rule == rule}
        assert got == ids, rule

    # the named query, against rates computed here
    out = cli(
        "query",
        "noshow-rate-by-neighbourhood",
        "--param",
        "min_appointments=50",
        "-f",
        "json",
        "--config",
        cfg,
        "--db",
        db_url,
    )
    assert out.exit_code == 0, out.output
    per = good.groupby("Neighbourhood")["No-show"].agg(["size", lambda s: (s == "Yes").sum()])
    per.columns = ["appointments", "no_shows"]
    per = per[per["appointments"] >= 50]
    got = {
        r["neighbourhood"]: (r["appointments"], r["no_shows"], float(r["no_show_rate_pct"]))
        for r in json.loads(out.stdout)
    }
    assert got == {
        n: (int(r.appointments), int(r.no_shows), round(100.0 * r.no_shows / r.appointments, 2))
        for n, r in per.iterrows()
    }


def test_changed_declaration_needs_a_revision(cli, tmp_path: Path, db_url: str) -> None:
    cfg = _project(tmp_path)
    result = cli("db", "revision", "-m", "add noshow", "--config", cfg, "--db", db_url)
    assert result.exit_code == 3 and "healthetl db upgrade" in result.output  # empty database
    assert cli("db", "upgrade", "--config", cfg, "--db", db_url).exit_code == 0
    assert cli("db", "revision", "-m", "add noshow", "--config", cfg, "--db", db_url).exit_code == 0
    assert cli("run", "--config", cfg, "--db", db_url).exit_code == 0
    result = cli("db", "revision", "-m", "again", "--config", cfg, "--db", db_url)
    assert result.exit_code == 2 and "nothing to do" in result.output

    # declare one more column: detected before any load, never altered silently
    changed = _project(tmp_path / "v2", 'referral = { type = "text" }\n')
    shutil.copytree(cfg.parent / "migrations", changed.parent / "migrations")
    result = cli("run", "--config", changed, "--db", db_url)
    assert result.exit_code == 3
    assert "column noshow_appointments.referral is new" in result.output
    result = cli("query", "noshow-rate-by-neighbourhood", "--config", changed, "--db", db_url)
    assert result.exit_code == 3  # every table-touching command refuses

    result = cli("db", "revision", "-m", "add referral", "--config", changed, "--db", db_url)
    assert result.exit_code == 0, result.output
    second = max((changed.parent / "migrations").glob("*.py"), key=lambda p: p.stat().st_mtime)
    assert "add_column" in second.read_text() and "referral" in second.read_text()
    assert cli("run", "--config", changed, "--db", db_url).exit_code == 0

    history = json.loads(cli("db", "history", "-f", "json", "--config", changed, "--db", db_url).stdout)
    assert [r["branch"] for r in history].count("project") == 2
    result = cli("db", "downgrade", "base", "--config", changed, "--db", db_url)
    assert result.exit_code == 0, result.output
    engine = sa.create_engine(db_url)
    assert "noshow_appointments" not in sa.inspect(engine).get_table_names()
    engine.dispose()


def test_python_module_model_and_transform(cli, tmp_path: Path, sqlite_url: str) -> None:
    folder = tmp_path / "proj"
    folder.mkdir()
    (folder / "visits.csv").write_text(
        "visit_id,patient_ref,age,ward\n1,P1,34,north\n2,P2,12,south\n3,P3,70,East\n4,P4,15,west\n"
    )
    (folder / "rules.py").write_text(
        textwrap.dedent("""
        import pandas as pd
        import pandera.pandas as pa
        from pandera.typing import Series


        class AdultWards(pa.DataFrameModel):
            age: Series[pd.Int64Dtype] = pa.Field(ge=18)
            ward: Series[str] = pa.Field(isin=["NORTH", "SOUTH", "EAST"])


        def transform(frame):
            return frame.assign(ward=frame["ward"].str.upper())
    """)
    )
    (folder / "healthetl.toml").write_text(
        textwrap.dedent("""
        [[pipelines]]
        name = "visits"
        dataset = "ward_visits"
        source = "visits.csv"

        [[datasets]]
        name = "ward_visits"
        primary_key = ["visit_id"]
        model = "rules.py:AdultWards"
        transform = "rules.py:transform"
        [datasets.columns]
        visit_id = "integer"
        patient_ref = { type = "text", identifying = true }
        age = { type = "integer", required = true }
        ward = { type = "text" }
    """)
    )
    cfg = folder / "healthetl.toml"
    assert cli("db", "upgrade", "--config", cfg, "--db", sqlite_url).exit_code == 0
    assert cli("db", "revision", "-m", "visits", "--config", cfg, "--db", sqlite_url).exit_code == 0
    result = cli("run", "--config", cfg, "--db", sqlite_url)
    assert result.exit_code == 0, result.output
    engine = sa.create_engine(sqlite_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT visit_id, ward FROM ward_visits ORDER BY 1")).all()
        q = conn.execute(
            sa.text("SELECT source_row, column_name, rule, reason FROM quarantine ORDER BY source_row, rule")
        ).all()
    engine.dispose()
    assert rows == [(1, "NORTH"), (3, "EAST")]
    assert [(r.source_row, r.column_name) for r in q] == [(2, "age"), (4, "age"), (4, "ward")]
    assert all("AdultWards" in r.reason for r in q)


def test_a_transform_that_leaves_text_is_a_one_line_contract_error(cli, tmp_path: Path) -> None:
    """The rules check text: a transform that turns a column into numbers stops the run with one
    line naming the dataset and the column, and nothing is loaded."""
    (tmp_path / "visits.csv").write_text("visit_id,age\n1,34\n2,12\n")
    (tmp_path / "rules.py").write_text(
        "def transform(frame):\n    return frame.assign(age=frame['age'].map(len))\n"
    )
    (tmp_path / "healthetl.toml").write_text(
        '[[pipelines]]\nname = "visits"\ndataset = "ages"\nsource = "visits.csv"\n\n'
        '[[datasets]]\nname = "ages"\nprimary_key = ["visit_id"]\ntransform = "rules.py:transform"\n'
        '[datasets.columns]\nvisit_id = "integer"\nage = "integer"\n'
    )
    result = cli("validate", "ages", tmp_path / "visits.csv", "--config", tmp_path / "healthetl.toml")
    assert result.exit_code != 0
    assert "ages: column age failed dtype" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_scientific_notation_in_a_declared_integer_is_quarantined(cli, tmp_path: Path) -> None:
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "ids.csv").write_text("patient_id,n\n29872499824296,1\n9377952927E-5,2\n")
    (folder / "healthetl.toml").write_text(
        '[[datasets]]\nname = "ids"\n[datasets.columns]\n'
        'patient_id = { type = "integer", identifying = true }\nn = "integer"\n'
    )
    rejects = tmp_path / "rej.csv"
    result = cli(
        "validate", "ids", folder / "ids.csv", "--config", folder / "healthetl.toml", "--rejects", rejects
    )
    assert result.exit_code == 1
    rej = pd.read_csv(rejects, dtype=str)
    assert rej["reason"].tolist() == ["patient_id is not an integer"]
    assert rej["source_row"].tolist() == ["2"]
    assert "9377952927" not in result.output


def test_dataset_list_and_show_include_declared(cli, tmp_path: Path) -> None:
    cfg = _project(tmp_path)
    listed = json.loads(cli("dataset", "list", "-f", "json", "--config", cfg).stdout)
    declared = {d["dataset"]: d for d in listed}
    assert declared["noshow"]["declared_in"] == str(cfg.resolve())
    assert "doctors" in declared
    shown = json.loads(cli("dataset", "show", "noshow", "-f", "json", "--config", cfg).stdout)
    by = {c["column"]: c for c in shown}
    assert by["age"]["checks"] == "required, integer, range 0..120"
    assert by["no_show"]["checks"].startswith("required, boolean, map Yes->1, No->0")
    assert "(appointment_not_before_scheduling)" in by


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        ('age = { type = "number" }', "type must be one of"),
        ('age = { type = "integer", maximum = 3 }', "unknown key(s) maximum"),
        ('age = { type = "text", min = 3 }', "min/max apply to numeric"),
        ('age = { type = "integer", severity = { range = "fatal" } }', "must be error or warning"),
        # names reach SQL or the command line: quotes and ; are refused where they are declared
        ('"a;drop" = { type = "text" }', "column name 'a;drop' must be lower-case"),
        (
            'a = { type = "text" }\n[[datasets.queries]]\nname = "q\\"; x"\nsql = "SELECT 1"',
            "must be lower-case letters, digits, _ and - (no quotes or ;)",
        ),
        (
            'a = { type = "text" }\n[[datasets.queries]]\nname = "q"\nsql = "SELECT :p"\n'
            '[datasets.queries.params]\n"p\\"x" = "text"',
            "parameter name 'p\"x' must be lower-case",
        ),
    ],
)
def test_declaration_errors_are_usage_errors(cli, tmp_path: Path, snippet: str, message: str) -> None:
    (tmp_path / "healthetl.toml").write_text(f'[[datasets]]\nname = "x"\n[datasets.columns]\n{snippet}\n')
    result = cli("dataset", "show", "x")
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_infer_on_real_files_and_the_draft_loads(cli, tmp_path: Path, sqlite_url: str) -> None:
    result = cli("dataset", "infer", NOSHOW, "--name", "noshow", "-f", "json")
    assert result.exit_code == 0, result.output
    cols = {c["name"]: c for c in json.loads(result.stdout)["columns"]}
    assert cols["patient_id"]["type"] == "text"
    assert any("scientific notation" in n for n in cols["patient_id"]["notes"])
    assert cols["patient_id"]["identifying"] and not cols["patient_id"]["values"]
    assert cols["appointment_id"]["type"] == "integer"
    assert cols["scheduled_day"]["type"] == "timestamp"
    assert cols["appointment_day"]["type"] == "date"
    assert cols["no_show"]["type"] == "boolean"
    assert sorted(cols["gender"]["values"]) == ["F", "M"]
    assert (cols["age"]["minimum"], cols["age"]["maximum"]) == (
        str(pd.read_csv(NOSHOW)["Age"].min()),
        str(pd.read_csv(NOSHOW)["Age"].max()),
    )

    cms = DATA / "cms" / "hospital_general_information_sample.csv"
    cols = {c["name"]: c for c in json.loads(cli("dataset", "infer", cms, "-f", "json").stdout)["columns"]}
    assert cols["facility_id"]["type"] == "text"  # 010001: the leading zero is part of the id
    assert cols["zip_code"]["type"] == "text"
    assert cols["hospital_overall_rating"]["type"] == "integer"
    assert cols["hospital_overall_rating"]["missing_markers"] == ["Not Available"]

    # the draft is a working declaration: add a pipeline, generate the table, load
    draft = tmp_path / "draft.toml"
    assert cli("dataset", "infer", cms, "--name", "hospitals", "-o", draft).exit_code == 0
    project = tmp_path / "healthetl.toml"
    project.write_text(
        f'[[pipelines]]\nname = "h"\ndataset = "hospitals"\nsource = "{cms}"\n\n' + draft.read_text()
    )
    assert cli("db", "upgrade", "--db", sqlite_url).exit_code == 0
    assert cli("db", "revision", "-m", "hospitals", "--db", sqlite_url).exit_code == 0
    result = cli("run", "--db", sqlite_url)
    assert result.exit_code == 0, result.output
    runs = json.loads(cli("report", "--last", "-f", "json", "--db", sqlite_url).stdout)
    assert runs[0]["rows_loaded"] == 300


def test_project_migrations_need_the_project(cli, tmp_path: Path, sqlite_url: str) -> None:
    cfg = _project(tmp_path)
    assert cli("db", "upgrade", "--config", cfg, "--db", sqlite_url).exit_code == 0
    assert cli("db", "revision", "-m", "add", "--config", cfg, "--db", sqlite_url).exit_code == 0
    assert cli("db", "upgrade", "--config", cfg, "--db", sqlite_url).exit_code == 0
    result = cli("state", "runs", "--db", sqlite_url)  # no project file here
    assert result.exit_code == 3
    assert "this project does not know" in result.output and "--config" in result.output
    assert cli("state", "runs", "--config", cfg, "--db", sqlite_url).exit_code == 0


def test_declared_related_datasets_with_generated_ids_and_lookups(cli, tmp_path: Path, db_url: str) -> None:
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "wards.csv").write_text("ward,floor\nNorth,1\nSouth,2\n")
    (tmp_path / "inbox" / "beds.csv").write_text(
        "ward,bed,phone\nnorth ,1,0803 123 4567\nSouth,2,\nEast,3,\n"
    )
    (tmp_path / "healthetl.toml").write_text(
        textwrap.dedent("""
        [[pipelines]]
        name = "hospital"
        source = "inbox"
        phone_country_code = "234"
        [pipelines.datasets]
        beds = "beds*.csv"
        wards = "wards*.csv"

        [[datasets]]
        name = "wards"
        generated_id = "ward_id"
        primary_key = ["ward"]
        [datasets.columns]
        ward = { type = "text", required = true }
        floor = "integer"

        [[datasets]]
        name = "beds"
        generated_id = "bed_id"
        primary_key = ["ward_id", "bed"]
        [[datasets.lookups]]
        column = "ward_id"
        dataset = "wards"
        on = { ward = "ward" }
        [datasets.columns]
        ward = { type = "text", required = true, stored = false }
        ward_id = { type = "integer", references = "wards.ward_id" }
        bed = { type = "integer", required = true }
        phone = { type = "phone" }
    """)
    )
    result = cli("db", "upgrade", "--db", db_url)
    assert result.exit_code == 0, result.output
    assert cli("db", "revision", "-m", "wards and beds", "--db", db_url).exit_code == 0
    result = cli("run", "--db", db_url)
    assert result.exit_code == 0, result.output
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        beds = conn.execute(
            sa.text(
                "SELECT w.ward, b.bed, b.phone FROM beds b "
                "JOIN wards w ON w.ward_id = b.ward_id ORDER BY b.bed"
            )
        ).all()
        reason = conn.execute(sa.text("SELECT reason FROM quarantine WHERE rule = 'reference'")).scalar()
    engine.dispose()
    # wards loaded first (a dependency), "north " matched "North", the phone became E.164
    assert [tuple(r) for r in beds] == [("North", 1, "+2348031234567"), ("South", 2, None)]
    assert reason == "no wards matches ward 'East'"


def test_declared_incremental_layers(cli, tmp_path: Path, sqlite_url: str) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "day1.csv").write_text(
        "lab_id,result,updated\nL1,5.0,2025-12-01T10:00:00Z\nL1,5.5,2025-12-01T11:00:00Z\nL2,7.0,2025-12-01T09:00:00Z\n"
    )
    (tmp_path / "healthetl.toml").write_text(
        textwrap.dedent("""
        [[pipelines]]
        name = "labs"
        dataset = "labs"
        source = "data/*.csv"
        [pipelines.quality]
        freshness_hours = 1000000

        [[datasets]]
        name = "labs"
        primary_key = ["lab_id"]
        raw = true
        dedupe_order = ["updated"]
        cursor = "updated"
        lookback_hours = 1
        [datasets.columns]
        lab_id = { type = "text", required = true }
        result = { type = "float", required = true }
        updated = { type = "timestamp", required = true }
    """)
    )
    assert cli("db", "upgrade", "--db", sqlite_url).exit_code == 0
    assert cli("db", "revision", "-m", "labs", "--db", sqlite_url).exit_code == 0
    assert "raw_labs" in next((tmp_path / "migrations").glob("*.py")).read_text()
    assert cli("run", "--db", sqlite_url).exit_code == 0
    # day 2: one row inside the lookback (newer version of L2), one behind it
    (tmp_path / "data" / "day2.csv").write_text(
        "lab_id,result,updated\nL2,7.5,2025-12-01T10:30:00Z\nL3,1.0,2025-11-30T00:00:00Z\n"
    )
    result = cli("run", "--db", sqlite_url)
    assert result.exit_code == 0, result.output
    assert "1 behind the watermark" in result.output and "already loaded by run" in result.output
    engine = sa.create_engine(sqlite_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT lab_id, result FROM labs ORDER BY lab_id")).all()
        raw = conn.execute(sa.text("SELECT COUNT(*) FROM raw_labs")).scalar()
        watermark = conn.execute(sa.text("SELECT watermark FROM pipeline_state")).scalar()
    engine.dispose()
    assert [tuple(r) for r in rows] == [("L1", 5.5), ("L2", 7.5)]
    assert raw == 5
    assert str(watermark).startswith("2025-12-01 11:00:00")
