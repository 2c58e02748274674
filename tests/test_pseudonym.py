"""Keyed pseudonymisation at load: identifying text stored as HMAC-SHA256 under a secret key,
stable across runs, so lookups, references and upserts still work."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO, column, scalar

KEY = "correct horse battery staple, and then some"  # 43 characters


def _project(tmp_path: Path) -> Path:
    project = tmp_path / "medilink"
    shutil.copytree(REPO / "examples" / "medilink", project)
    config = project / "healthetl.toml"
    text = config.read_text(encoding="utf-8")
    config.write_text(
        text.replace('phone_country_code = "234"', 'phone_country_code = "234"\npseudonymise = true')
    )
    return config


def test_identifying_text_is_stored_as_stable_keyed_pseudonyms(
    cli, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    config = _project(tmp_path)
    monkeypatch.setenv("HEALTHETL_PSEUDONYM_KEY", KEY)
    first = cli("run", "--config", config, "--db", db_url)
    assert first.exit_code == 0, first.output
    names = column(db_url, "SELECT first_name FROM medilink_patients ORDER BY patient_id")
    assert len(names) == 2 and all(re.fullmatch(r"[0-9a-f]{64}", str(n)) for n in names)
    assert "John" not in str(column(db_url, "SELECT last_name || phone FROM medilink_patients"))
    # not a plain hash anyone could compute over a list of names
    assert hashlib.sha256(b"john").hexdigest() not in names
    # dates are not text: kept (generalise them if they must not be)
    assert str(scalar(db_url, "SELECT min(dob) FROM medilink_patients")).startswith("1985-05-15")
    # natural-key lookups still resolve: the visit and the record found their patient
    assert scalar(db_url, "SELECT count(*) FROM medilink_triage_visits WHERE patient_id IS NOT NULL") == 1
    # nothing rejected (a phone the installed libphonenumber does not know is only a warning)
    assert scalar(db_url, "SELECT count(*) FROM quarantine WHERE severity = 'error'") == 0
    # the same files again: the same pseudonyms, every row unchanged, nothing duplicated
    again = cli("run", "--config", config, "--db", db_url, "--force")
    assert again.exit_code == 0, again.output
    assert column(db_url, "SELECT first_name FROM medilink_patients ORDER BY patient_id") == names
    assert scalar(db_url, "SELECT count(*) FROM medilink_patients") == 2
    assert (
        scalar(
            db_url,
            "SELECT sum(inserted) + sum(updated) FROM etl_audit_log WHERE run_id = "
            "(SELECT run_id FROM etl_runs ORDER BY started_at DESC LIMIT 1)",
        )
        == 0
    )


def test_another_key_gives_other_pseudonyms(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    config = _project(tmp_path)
    found = []
    for n, key in enumerate((KEY, KEY[::-1])):
        monkeypatch.setenv("HEALTHETL_PSEUDONYM_KEY", key)
        db = f"sqlite:///{tmp_path / f'k{n}.db'}"
        assert cli("run", "--config", config, "--db", db).exit_code == 0
        found.append(set(column(db, "SELECT first_name FROM medilink_patients")))
    assert not found[0] & found[1]


@pytest.mark.parametrize("key", [None, "too short"])
def test_a_missing_or_short_key_is_refused_and_nothing_loads(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str | None
) -> None:  # type: ignore[no-untyped-def]
    config = _project(tmp_path)
    if key is None:
        monkeypatch.delenv("HEALTHETL_PSEUDONYM_KEY", raising=False)
    else:
        monkeypatch.setenv("HEALTHETL_PSEUDONYM_KEY", key)
    db = f"sqlite:///{tmp_path / 'x.db'}"
    result = cli("run", "--config", config, "--db", db)
    assert result.exit_code == 2 and "HEALTHETL_PSEUDONYM_KEY" in result.output
    assert "Traceback" not in result.output
    assert scalar(db, "SELECT count(*) FROM medilink_patients") == 0


def test_declarations_are_checked(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HEALTHETL_PSEUDONYM_KEY", KEY)
    (tmp_path / "healthetl.toml").write_text(
        '[[datasets]]\nname = "people"\nprimary_key = ["id"]\n[datasets.columns]\n'
        'id = { type = "integer" }\nborn = { type = "date", pseudonymise = true }\n',
        encoding="utf-8",
    )
    refused = cli("dataset", "show", "people")
    assert refused.exit_code == 2 and "pseudonymise needs a text column" in refused.output
    (tmp_path / "healthetl.toml").write_text(
        '[[datasets]]\nname = "people"\nprimary_key = ["id"]\nraw = true\n[datasets.columns]\n'
        'id = { type = "integer" }\nname = { type = "text", pseudonymise = true }\n\n'
        '[[pipelines]]\nname = "people"\ndataset = "people"\nsource = "people.csv"\n',
        encoding="utf-8",
    )
    (tmp_path / "people.csv").write_text("id,name\n1,Ada\n", encoding="utf-8")
    db = f"sqlite:///{tmp_path / 'p.db'}"
    assert cli("db", "upgrade", "--db", db).exit_code == 0
    assert cli("db", "revision", "-m", "people", "--db", db).exit_code == 0
    assert cli("db", "upgrade", "--db", db).exit_code == 0
    raw = cli("run", "--db", db)
    assert raw.exit_code == 2 and "raw layer" in raw.output
