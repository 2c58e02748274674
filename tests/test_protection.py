"""Patient data protected by default: a full run of a project with identifying values in its input,
then every output a user or an operator sees (terminal, log file, JSON reports, HTML report,
rejects file, quarantine listings) searched for those values: none may appear. Shown only on
request, and that request recorded."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, scalar, subprocess_env

HEALTHETL = Path(sys.executable).parent / "healthetl"

PATIENTS = (
    "facility_name,first_name,last_name,sex,dob,phone\n"
    "General Hospital,Zebulon,Quarrington,M,1937-03-17,+2348031112222\n"
    "General Hospital,Philippa,Vantongeren,F,1952-11-29,08039998877\n"
    "General Hospital,Octavia,Blackwoodhux,F,2091-01-01,08035550123\n"  # born in the future
    "Nowhere Clinic,Ignatius,Fairweatherly,M,1961-06-30,+2348034443333\n"  # no such facility
)
VISITS = (
    "facility_name,patient_first_name,patient_last_name,triage_level,chief_complaint,vital_signs,"
    "conditions,recommendations\n"
    "General Hospital,Zebulon,Quarrington,3,Chest pain,BP: 140/90,Hypertension,Follow-up\n"
    "General Hospital,Xanthippe,Marchbanks,2,Fever,T: 39.1,,Rest\n"  # no such patient
    "General Hospital,Philippa,Vantongeren,9,Headache,,,\n"  # triage level out of range
)
#: every identifying value of the input, as written and as stored
SECRETS = [
    "Zebulon", "Quarrington", "1937-03-17", "+2348031112222", "Philippa", "Vantongeren", "1952-11-29",
    "08039998877", "+2348039998877", "Octavia", "Blackwoodhux", "2091-01-01", "08035550123", "Ignatius",
    "Fairweatherly", "1961-06-30", "+2348034443333", "Xanthippe", "Marchbanks",
]  # fmt: skip


def healthetl(*args: str | Path, cwd: Path) -> str:
    """Run the installed command; its whole terminal output (stdout and stderr)."""
    done = subprocess.run(
        [str(HEALTHETL), *map(str, args)], capture_output=True, text=True, cwd=cwd, env=subprocess_env()
    )
    assert done.returncode in (0, 1), f"{args}: {done.returncode}\n{done.stderr}"
    return done.stdout + done.stderr


def test_no_output_of_a_full_run_shows_an_identifying_value(tmp_path: Path) -> None:
    project = tmp_path / "medilink"
    shutil.copytree(REPO / "examples" / "medilink", project)
    (project / "inbox" / "patients.csv").write_text(PATIENTS, encoding="utf-8")
    (project / "inbox" / "triage_visits.csv").write_text(VISITS, encoding="utf-8")
    db = f"sqlite:///{tmp_path / 'medilink.db'}"
    config = project / "healthetl.toml"
    common = ("--config", config, "--db", db)

    shown = [
        healthetl("run", *common, "--log-file", tmp_path / "run.log", "--report", tmp_path / "run.json",
                  cwd=tmp_path),
        healthetl("run", *common, "--force", "--format", "json", cwd=tmp_path),
        healthetl("report", "--last", *common, cwd=tmp_path),
        healthetl("report", "--last", "-f", "json", *common, cwd=tmp_path),
        healthetl("report", "--html", tmp_path / "report.html", "--since", "2000-01-01", *common,
                  cwd=tmp_path),
        healthetl("state", "runs", *common, cwd=tmp_path),
        healthetl("quarantine", "list", "--limit", "0", *common, cwd=tmp_path),
        healthetl("quarantine", "list", "--by-rule", *common, cwd=tmp_path),
        healthetl(
            "validate", "medilink_patients", project / "inbox" / "patients.csv", "--pipeline", "medilink",
            "--rejects", tmp_path / "rejects.csv", "--report", tmp_path / "validate.json", "--config", config,
            "--fail-on", "never", cwd=tmp_path,
        ),
        healthetl(
            "validate", "medilink_triage_visits", project / "inbox" / "triage_visits.csv", "--db", db,
            "--rejects", tmp_path / "visit_rejects.ndjson", "--config", config, "--fail-on", "never",
            cwd=tmp_path,
        ),
    ]  # fmt: skip
    ids = [r["id"] for r in json.loads(healthetl("quarantine", "list", "-f", "json", *common, cwd=tmp_path))]
    assert len(ids) >= 4, "the defects were quarantined"
    shown += [healthetl("quarantine", "show", str(i), *common, cwd=tmp_path) for i in ids]
    files = ["run.log", "run.json", "report.html", "rejects.csv", "validate.json", "visit_rejects.ndjson"]
    shown += [(tmp_path / f).read_text(encoding="utf-8") for f in files]

    everything = "\n".join(shown)
    leaked = [s for s in SECRETS if s in everything]
    assert not leaked, f"identifying values shown: {leaked}"
    # the outputs are not empty: the defects are there, by rule, column and row
    assert "date_window" in everything and "reference" in everything and "range" in everything
    assert "***" in (tmp_path / "rejects.csv").read_text() and "***" in (tmp_path / "report.html").read_text()

    # asked for, a row is shown whole, and the asking is recorded
    before = scalar(db, "SELECT count(*) FROM api_access_log")
    revealed = healthetl("quarantine", "show", str(ids[0]), "--show-identifying", *common, cwd=tmp_path)
    assert any(s in revealed for s in SECRETS)
    assert "recorded" in revealed or "api_access_log" in revealed
    assert scalar(db, "SELECT count(*) FROM api_access_log") == before + 1
    assert str(scalar(db, "SELECT token FROM api_access_log ORDER BY id DESC LIMIT 1")).startswith("cli:")


def test_rows_from_a_rejects_file_are_not_replayed_masked(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A rejects file holds rows masked: quarantined from it, a row cannot be replayed (its
    names would load as ***); the replay says so and loads nothing."""
    project = tmp_path / "medilink"
    shutil.copytree(REPO / "examples" / "medilink", project)
    config, db = project / "healthetl.toml", f"sqlite:///{tmp_path / 'm.db'}"
    assert cli("run", "--config", config, "--db", db).exit_code == 0
    dirty = tmp_path / "patients.csv"
    dirty.write_text(PATIENTS, encoding="utf-8")
    checked = cli(
        "validate", "medilink_patients", dirty, "--db", db, "--config", config, "-o", tmp_path / "clean.csv",
        "--rejects", tmp_path / "rejects.csv", "--fail-on", "never",
    )  # fmt: skip
    assert checked.exit_code == 0, checked.output
    loaded = cli(
        "load", "medilink_patients", tmp_path / "clean.csv", "--rejects", tmp_path / "rejects.csv",
        "--mode", "merge", "--config", config, "--db", db,
    )  # fmt: skip
    assert loaded.exit_code in (0, 1), loaded.output
    assert scalar(db, "SELECT count(*) FROM quarantine WHERE original LIKE '%***%'") >= 2
    replay = cli("quarantine", "replay", "medilink_patients", "--config", config, "--db", db)
    assert replay.exit_code == 2 and "stored masked" in replay.output
    assert scalar(db, "SELECT count(*) FROM medilink_patients WHERE first_name = '***'") == 0
