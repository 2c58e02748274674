"""The real Synthea export as related tables, on SQLite and PostgreSQL; every expected value is
computed here from the CSV files with pandas."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from tests.conftest import REPO

SYNTHEA = REPO / "examples" / "synthea"


def _csv(name: str) -> pd.DataFrame:
    return pd.read_csv(SYNTHEA / "data" / f"{name}.csv.gz", dtype=str)


def _expected() -> dict[str, set[str]]:
    """The rows a correct load rejects, per file (by a row identity), following the rules."""
    patients = _csv("patients").set_index("Id")
    enc = _csv("encounters")
    born = enc["PATIENT"].map(patients["BIRTHDATE"])
    bad_enc = set(enc.loc[enc["START"].str[:10] < born, "Id"])
    out: dict[str, set[str]] = {"encounters": bad_enc}
    events = {  # file -> (natural key, the date compared with the birth date)
        "conditions": (["PATIENT", "ENCOUNTER", "CODE", "START"], "START"),
        "medications": (["PATIENT", "ENCOUNTER", "CODE", "START"], "START"),
        "procedures": (["PATIENT", "ENCOUNTER", "CODE", "START"], "START"),
        "allergies": (["PATIENT", "ENCOUNTER", "CODE", "START"], "START"),
        "devices": (["PATIENT", "ENCOUNTER", "CODE", "START"], "START"),
        "careplans": (["Id"], "START"),
        "immunizations": (["PATIENT", "ENCOUNTER", "CODE", "DATE"], "DATE"),
    }
    for name, (key, when) in events.items():
        f = _csv(name).reset_index()
        dup = f[key].astype(str).agg("|".join, axis=1).duplicated(keep="first")
        orphan = f["ENCOUNTER"].isin(bad_enc)
        before = f[when].str[:10] < f["PATIENT"].map(patients["BIRTHDATE"])
        out[name] = set(f.loc[dup | orphan | before, "index"].astype(str))
    return out


def _written(cli, cfg: Path, url: str) -> tuple[dict, dict[str, dict]]:
    run = json.loads(cli("report", "--last", "-f", "json", "--config", cfg, "--db", url).stdout)[0]
    return run, {t["table_name"]: t for t in run["tables"]}


def test_synthea_export_loads_related_tables(cli, tmp_path: Path, db_url: str) -> None:
    cfg = SYNTHEA / "healthetl.toml"
    result = cli("run", "--config", cfg, "--db", db_url)
    assert result.exit_code == 0, result.output
    run, tables = _written(cli, cfg, db_url)
    bad = _expected()
    for name in (
        "organizations",
        "providers",
        "patients",
        "encounters",
        "conditions",
        "medications",
        "procedures",
        "allergies",
        "careplans",
        "immunizations",
        "devices",
    ):
        rows = len(_csv(name))
        rejected = len(bad.get(name, set()))
        t = tables[f"synthea_{name}"]
        assert (t["rows_processed"], t["inserted"], t["quarantined"]) == (rows, rows - rejected, rejected), (
            name
        )
    assert run["rows_in"] == run["rows_loaded"] + run["rows_quarantined"]

    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        orphans = conn.execute(
            sa.text(
                "SELECT COUNT(*) FROM synthea_encounters e LEFT JOIN synthea_patients p "
                "ON p.patient_key = e.patient_key WHERE p.patient_key IS NULL"
            )
        ).scalar()
    engine.dispose()
    assert orphans == 0

    # the named queries, against pandas on the accepted rows
    enc = _csv("encounters")
    enc = enc[~enc["Id"].isin(bad["encounters"])]
    jan = enc[enc["START"].str.startswith("2021-01")]
    expected = jan.groupby("ENCOUNTERCLASS").size().to_dict()
    out = cli(
        "query",
        "encounters-per-month",
        "--param",
        "start=2021-01-01",
        "--param",
        "end=2021-02-01",
        "-f",
        "json",
        "--config",
        cfg,
        "--db",
        db_url,
    )
    assert {r["encounterclass"]: r["encounters"] for r in json.loads(out.stdout)} == expected

    cond = _csv("conditions").reset_index()
    cond = cond[~cond["index"].astype(str).isin(bad["conditions"])]
    top = cond.groupby(["DESCRIPTION", "CODE"]).size().sort_values(ascending=False)
    out = cli("query", "top-conditions", "--param", "limit=3", "-f", "json", "--config", cfg, "--db", db_url)
    got = [(r["description"], r["conditions"]) for r in json.loads(out.stdout)]
    assert got == [(d, int(n)) for (d, _c), n in top.head(3).items()]

    # the same export again: every row unchanged, nothing duplicated
    rerun = cli("run", "--config", cfg, "--db", db_url)
    assert rerun.exit_code == 0
    second, again = _written(cli, cfg, db_url)
    for name, t in again.items():
        assert (t["inserted"], t["updated"]) == (0, 0), name
        assert t["unchanged"] == tables[name]["inserted"], name
    # each dataset's row count is compared with its own previous load, not the batch's total
    drops = [q for q in second["quality"] if q["check_name"] == "row_count_drop"]
    assert len(drops) == len(again) and all(q["passed"] and q["observed"] == 0 for q in drops)
    assert "row_count_drop" not in rerun.output


def test_orphans_and_impossible_encounters(cli, tmp_path: Path, sqlite_url: str) -> None:
    folder = tmp_path / "synthea"
    shutil.copytree(SYNTHEA, folder)
    enc = _csv("encounters").head(3).copy()
    enc.loc[0, "Id"] = "00000000-0000-0000-0000-000000000001"
    enc.loc[0, "PATIENT"] = "00000000-0000-0000-0000-0000000000ff"  # nobody
    enc.loc[1, "Id"] = "00000000-0000-0000-0000-000000000002"
    enc.loc[1, "STOP"] = "1901-01-01T00:00:00Z"  # stops before it starts
    enc = enc.head(2)
    enc.to_csv(folder / "data" / "encounters.csv.extra.csv", index=False)
    result = cli("run", "--config", folder / "healthetl.toml", "--db", sqlite_url)
    assert result.exit_code == 0, result.output
    engine = sa.create_engine(sqlite_url)
    with engine.connect() as conn:
        q = conn.execute(
            sa.text("SELECT rule, reason FROM quarantine WHERE source_file = 'encounters.csv.extra.csv'")
        ).all()
    engine.dispose()
    rules = {r.rule: r.reason for r in q}
    # a patient's UUID identifies them: the reason names the column, not the value
    assert rules["reference"] == "no synthea_patients matches patient"
    assert rules["stop_not_before_start"] == "stop is before start"
