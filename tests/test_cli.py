"""The command surface: help text everywhere, version, init, datasets, URL precedence."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from healthetl import __version__
from healthetl.cli import app
from healthetl.config import load_project, resolve_database_url
from healthetl.db.engine import mask_url, normalise_url

COMMANDS = [
    ["init"],
    ["extract"],
    ["validate"],
    ["load"],
    ["run"],
    ["query"],
    ["report"],
    ["db"],
    ["db", "upgrade"],
    ["db", "downgrade"],
    ["db", "current"],
    ["db", "history"],
    ["db", "revision"],
    ["dataset", "infer"],
    ["state"],
    ["state", "show"],
    ["state", "runs"],
    ["state", "set"],
    ["state", "reset"],
    ["state", "import"],
    ["state", "audit"],
    ["dataset"],
    ["dataset", "list"],
    ["dataset", "show"],
    ["quarantine"],
    ["quarantine", "list"],
    ["quarantine", "show"],
    ["quarantine", "replay"],
    ["quarantine", "resolve"],
    ["serve"],
    ["token"],
    ["token", "add"],
    ["token", "list"],
    ["token", "revoke"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(cli, command: list[str]) -> None:
    result = cli(*command, "--help")
    assert result.exit_code == 0
    assert "Usage:" in result.output
    # the first line of the docstring is shown: no command goes undocumented
    assert len([line for line in result.output.splitlines() if line.strip()]) > 3


def test_every_registered_command_is_tested_for_help() -> None:
    import typer.main

    group = typer.main.get_command(app)
    names = set()
    for name, cmd in group.commands.items():  # type: ignore[attr-defined]
        names.add((name,))
        for sub in getattr(cmd, "commands", {}):
            names.add((name, sub))
    assert names == {tuple(c) for c in COMMANDS}


def test_version_and_module_entry_point(cli) -> None:
    assert cli("--version").stdout.strip() == f"healthetl {__version__}"
    done = subprocess.run([sys.executable, "-m", "healthetl", "--version"], capture_output=True, text=True)
    assert done.stdout.strip() == f"healthetl {__version__}"


def test_init_writes_a_starter_that_loads(cli, tmp_path: Path) -> None:
    assert cli("init", tmp_path / "proj").exit_code == 0
    project = load_project(tmp_path / "proj" / "healthetl.toml")
    assert [p.name for p in project.pipelines] == ["doctors", "appointments"]
    assert project.database_url == f"sqlite:///{tmp_path / 'proj' / 'healthetl.db'}"
    assert cli("init", tmp_path / "proj").exit_code == 2  # never overwrites


def test_dataset_list_and_show(cli) -> None:
    datasets = json.loads(cli("dataset", "list", "-f", "json").stdout)
    assert {d["dataset"] for d in datasets} == {
        "doctors",
        "appointments",
        "visits",
        "facilities",
        "medilink_facilities",
        "medilink_patients",
        "medilink_medical_records",
        "medilink_triage_visits",
        "synthea_organizations",
        "synthea_providers",
        "synthea_patients",
        "synthea_encounters",
        "synthea_conditions",
        "synthea_medications",
        "synthea_procedures",
        "synthea_allergies",
        "synthea_careplans",
        "synthea_immunizations",
        "synthea_devices",
        "fhir_patient",
        "fhir_encounter",
        "fhir_condition",
        "fhir_observation",
        "fhir_medication_request",
        "fhir_procedure",
        "fhir_immunization",
        "fhir_allergy_intolerance",
        "fhir_organization",
        "fhir_practitioner",
        "fhir_location",
    }
    cols = json.loads(cli("dataset", "show", "appointments", "-f", "json").stdout)
    by_name = {c["column"]: c for c in cols}
    assert "foreign_key doctors.doctor_id" in by_name["doctor_id"]["checks"]
    assert by_name["patient_id"]["identifying"] == "yes"
    assert cli("dataset", "show", "nurses").exit_code == 2


def test_database_url_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "healthetl.toml"
    cfg.write_text('[database]\nurl = "sqlite:///from-toml.db"\n')
    project = load_project(cfg)
    monkeypatch.delenv("HEALTHETL_DATABASE_URL", raising=False)
    assert resolve_database_url(None, None) == "sqlite:///healthetl.db"
    assert resolve_database_url(None, project) == f"sqlite:///{tmp_path / 'from-toml.db'}"
    monkeypatch.setenv("HEALTHETL_DATABASE_URL", "sqlite:///from-env.db")
    assert resolve_database_url(None, project) == "sqlite:///from-env.db"
    assert resolve_database_url("sqlite:///flag.db", project) == "sqlite:///flag.db"


def test_postgres_urls_use_psycopg3_and_passwords_are_masked() -> None:
    for url in ("postgresql://u:pw@h/db", "postgres://u:pw@h/db", "postgresql+psycopg://u:pw@h/db"):
        assert normalise_url(url).drivername == "postgresql+psycopg"
    assert mask_url("postgresql://u:topsecret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert "topsecret" not in mask_url("postgresql://u:topsecret@h:5432/db?x=1")


def test_default_database_is_sqlite_in_cwd(cli, tmp_path: Path) -> None:
    assert cli("db", "upgrade").exit_code == 0
    assert (tmp_path / "healthetl.db").exists()


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["run", "--help"], ["serve", "--help"]])
def test_help_and_version_import_no_data_library(args: list[str]) -> None:
    """`--help` and `--version` stay instant: the heavy libraries are imported by the commands
    that use them (the time itself is measured in benchmarks/cli_startup_bench.py)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        f"sys.argv = ['healthetl', *{args!r}]\n"
        "from healthetl.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "names = ('pandas', 'pandera', 'sqlalchemy', 'alembic', 'pyarrow', 'psycopg')\n"
        "heavy = [m for m in names if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "HEAVY []" in done.stdout, done.stdout[-500:] + done.stderr[-500:]
