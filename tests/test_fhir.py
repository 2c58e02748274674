"""FHIR R4 Bulk Data exports: the real 10-patient sample (examples/fhir-bulk, from
smart-on-fhir/sample-bulk-fhir-datasets, CC0) into the built-in fhir_* tables on SQLite and
PostgreSQL, expected counts computed here from the NDJSON files; upserts on resourceType/id,
references to patients resolved (orphans quarantined), events before birth warned, the
declared paths (index, filter, ofType, choice, template), manifests by path and by URL."""

from __future__ import annotations

import gzip
import json
import shutil
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from healthetl.datasets.paths import PathError, get_path
from tests.conftest import REPO

EXPORT = REPO / "examples" / "fhir-bulk" / "data"


def resources(kind: str, folder: Path = EXPORT) -> list[dict[str, Any]]:
    found = []
    for path in sorted(folder.glob(f"{kind}.*ndjson*")):
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as fh:
            found += [json.loads(line) for line in fh if line.strip()]
    return found


def _rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(sa.text(sql)).all()]
    engine.dispose()
    return rows


def _count(url: str, table: str) -> int:
    return int(_rows(url, f"SELECT COUNT(*) FROM {table}")[0][0])


def _project(tmp_path: Path, source: str = "export") -> Path:
    config = tmp_path / "healthetl.toml"
    config.write_text(
        f'[[pipelines]]\nname = "ehr"\nsource = "{source}"\ndatasets = "fhir"\n', encoding="utf-8"
    )
    return config


@pytest.fixture
def export(tmp_path: Path) -> Path:
    folder = tmp_path / "export"
    shutil.copytree(EXPORT, folder)
    return folder


def _write(folder: Path, kind: str, records: list[dict[str, Any]]) -> None:
    for old in folder.glob(f"{kind}.*"):
        old.unlink()
    text = "".join(json.dumps(r) + "\n" for r in records)
    (folder / f"{kind}.000.ndjson").write_text(text, encoding="utf-8")


# ---------------------------------------------------------------------------------- the sample
def test_a_bulk_export_loads_every_resource_type(cli, export: Path, tmp_path: Path, db_url: str) -> None:
    result = cli("run", "--config", _project(tmp_path), "--db", db_url)
    assert result.exit_code == 0, result.output

    tables = {
        "Patient": "fhir_patient",
        "Encounter": "fhir_encounter",
        "Condition": "fhir_condition",
        "MedicationRequest": "fhir_medication_request",
        "Procedure": "fhir_procedure",
        "Immunization": "fhir_immunization",
        "AllergyIntolerance": "fhir_allergy_intolerance",
        "Organization": "fhir_organization",
        "Practitioner": "fhir_practitioner",
        "Location": "fhir_location",
    }
    for kind, table in tables.items():
        assert _count(db_url, table) == len({r["id"] for r in resources(kind)}), kind
    patients, encounters, conditions = resources("Patient"), resources("Encounter"), resources("Condition")
    # child tables: one row per repeating element
    assert _count(db_url, "fhir_patient_names") == sum(len(p["name"]) for p in patients)
    assert _count(db_url, "fhir_patient_identifiers") == sum(len(p["identifier"]) for p in patients)
    assert _count(db_url, "fhir_patient_addresses") == sum(len(p.get("address", [])) for p in patients)
    assert _count(db_url, "fhir_condition_codings") == sum(len(c["code"]["coding"]) for c in conditions)
    # encounter classes, and every subject resolved to its patient's row
    classes = Counter(e["class"]["code"] for e in encounters)
    assert (
        dict(_rows(db_url, "SELECT class_code, COUNT(*) FROM fhir_encounter GROUP BY class_code")) == classes
    )
    subjects = Counter(e["subject"]["reference"] for e in encounters)
    assert dict(_rows(db_url, "SELECT patient, COUNT(*) FROM fhir_encounter GROUP BY patient")) == subjects
    # keyed by resourceType/id; a dateTime with an offset is stored in UTC
    first = encounters[0]
    (start,) = _rows(
        db_url, f"SELECT period_start FROM fhir_encounter WHERE resource_key = 'Encounter/{first['id']}'"
    )[0]
    stored = start if isinstance(start, datetime) else datetime.fromisoformat(str(start))
    stored = stored if stored.tzinfo else stored.replace(tzinfo=UTC)
    assert "+00:00" not in first["period"]["start"]  # the sample writes local offsets (-04:00, -05:00)
    assert stored == datetime.fromisoformat(first["period"]["start"]).astimezone(UTC)
    # filters and extensions: the SSN by its system, the race by its extension URL
    ssn = {
        p["id"]: next(
            i["value"] for i in p["identifier"] if i.get("system") == "http://hl7.org/fhir/sid/us-ssn"
        )
        for p in patients
    }
    assert dict(_rows(db_url, "SELECT id, ssn FROM fhir_patient")) == ssn
    assert {r[0] for r in _rows(db_url, "SELECT race FROM fhir_patient")} <= {
        "2106-3",
        "2054-5",
        "2028-9",
        "1002-5",
        "2076-8",
        "2131-1",
    }
    # every record accounted for; Synthea writes no meta.lastUpdated: reported as drift
    (run,) = json.loads(cli("report", "--last", "-f", "json", "--db", db_url).stdout)
    assert run["rows_in"] == run["rows_loaded"] + run["rows_quarantined"] + run["duplicates_dropped"]
    assert run["rows_quarantined"] == 0
    assert "last_updated (meta.lastUpdated)" in result.output
    # resource types without a dataset are named, not silently ignored
    left_out = next(line for line in result.output.splitlines() if "not loaded" in line)
    assert "Device.000.ndjson.gz" in left_out and "PractitionerRole.000.ndjson.gz" in left_out

    # a second run of the same export changes nothing: upserts, children replaced, not added
    again = cli("run", "--config", _project(tmp_path), "--db", db_url)
    assert again.exit_code == 0, again.output
    assert _count(db_url, "fhir_encounter") == len(encounters)
    assert _count(db_url, "fhir_patient_names") == sum(len(p["name"]) for p in patients)


def test_named_queries_answer_from_the_tables(cli, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'x.db'}"
    config = REPO / "examples" / "fhir-bulk" / "healthetl.toml"
    assert cli("run", "--config", config, "--db", db).exit_code == 0
    top = json.loads(
        cli(
            "query", "fhir-top-conditions", "--param", "limit=2", "-f", "json", "--config", config, "--db", db
        ).stdout
    )
    displays = Counter(c["code"]["coding"][0]["display"] for c in resources("Condition"))
    assert [(r["display"], r["conditions"]) for r in top] == displays.most_common(2)
    per_month = json.loads(
        cli("query", "fhir-encounters-per-class-month", "-f", "json", "--config", config, "--db", db).stdout
    )
    assert sum(r["encounters"] for r in per_month) == len(resources("Encounter"))
    groups = json.loads(
        cli(
            "query",
            "fhir-patients-by-age-group",
            "--param",
            "as_of=2023-03-31",
            "--min-cell-count",
            "0",
            "-f",
            "json",
            "--config",
            config,
            "--db",
            db,
        ).stdout
    )
    living = [p for p in resources("Patient") if "deceasedDateTime" not in p]
    assert sum(r["patients"] for r in groups) == len(living)
    active = json.loads(
        cli(
            "query",
            "fhir-active-medications-per-patient",
            "--min-cell-count",
            "0",
            "-f",
            "json",
            "--config",
            config,
            "--db",
            db,
        ).stdout
    )
    per_patient = Counter(
        m["subject"]["reference"] for m in resources("MedicationRequest") if m["status"] == "active"
    )
    assert {(r["active_requests"], r["patients"]) for r in active} == set(
        Counter(per_patient.values()).items()
    )


# ------------------------------------------------------------------------- rules and references
def _patient(pid: str, birth: str, family: str = "Doe") -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": pid,
        "gender": "female",
        "birthDate": birth,
        "name": [{"use": "official", "family": family, "given": ["Ann"]}],
        "identifier": [{"system": "http://hl7.org/fhir/sid/us-ssn", "value": "999-00-0001"}],
    }


def _encounter(eid: str, patient: str, start: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "id": eid,
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": patient},
        "period": {"start": start, "end": start},
        **extra,
    }


def test_orphans_missing_elements_and_events_before_birth(cli, tmp_path: Path) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    _write(folder, "Patient", [_patient("p1", "1980-05-01")])
    no_status = _encounter("e4", "Patient/p1", "2020-01-01T10:00:00+02:00")
    del no_status["status"]
    _write(
        folder,
        "Encounter",
        [
            _encounter("e1", "Patient/p1", "2020-01-01T10:00:00+02:00"),
            _encounter("e2", "Patient/nobody", "2020-01-01T10:00:00Z"),  # an orphan
            _encounter("e3", "Patient/p1", "1970-01-01T00:00:00Z"),  # before the patient's birth
            no_status,
        ],
    )
    db = f"sqlite:///{tmp_path / 'x.db'}"
    result = cli("run", "--config", _project(tmp_path), "--db", db)
    assert result.exit_code == 0, result.output
    assert sorted(r[0] for r in _rows(db, "SELECT id FROM fhir_encounter")) == ["e1", "e3"]  # e3 warned only
    reasons = dict(
        _rows(
            db,
            "SELECT source_row, reason FROM quarantine WHERE dataset = 'fhir_encounter' ORDER BY source_row",
        )
    )
    assert "Patient/nobody" in reasons[2]
    assert "status" in _rows(db, "SELECT column_name FROM quarantine WHERE source_row = 4")[0][0]
    report = json.loads(cli("report", "--last", "-f", "json", "--db", db).stdout)
    (run,) = report
    assert run["rows_in"] == 5 and run["rows_loaded"] == 3 and run["rows_quarantined"] == 2
    assert run["rows_warned"] == 1  # e3, before the patient's birth, loaded with a warning
    assert "period_start_not_before_birth" in cli("report", "--last", "--db", db).output


def test_an_updated_resource_is_upserted_and_its_children_replaced(cli, tmp_path: Path, db_url: str) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    first = _patient("p1", "1980-05-01", family="Doe")
    first["name"].append({"use": "maiden", "family": "Roe", "given": ["Ann"]})
    _write(folder, "Patient", [first, _patient("p2", "1990-01-01")])
    assert cli("run", "--config", _project(tmp_path), "--db", db_url).exit_code == 0
    assert _count(db_url, "fhir_patient_names") == 3

    _write(folder, "Patient", [_patient("p1", "1980-05-01", family="Smith")])  # a later export: p1 changed
    result = cli("run", "--config", _project(tmp_path), "--db", db_url)
    assert result.exit_code == 0, result.output
    assert dict(_rows(db_url, "SELECT id, family FROM fhir_patient")) == {"p1": "Smith", "p2": "Doe"}
    names = _rows(
        db_url, "SELECT resource_key, family FROM fhir_patient_names ORDER BY resource_key, name_ordinal"
    )
    assert names == [("Patient/p1", "Smith"), ("Patient/p2", "Doe")]


def test_observations_with_choice_values_and_components(cli, tmp_path: Path) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    _write(folder, "Patient", [_patient("p1", "1980-05-01")])
    loinc = "http://loinc.org"
    pressure = {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"coding": [{"system": loinc, "code": "85354-9", "display": "Blood pressure panel"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2021-06-01T08:00:00-05:00",
        "component": [
            {
                "code": {"coding": [{"system": loinc, "code": "8480-6"}]},
                "valueQuantity": {"value": 120, "unit": "mm[Hg]"},
            },
            {
                "code": {"coding": [{"system": loinc, "code": "8462-4"}]},
                "valueQuantity": {"value": 80, "unit": "mm[Hg]"},
            },
        ],
    }
    weight = {
        "resourceType": "Observation",
        "id": "o2",
        "status": "final",
        "code": {"coding": [{"system": loinc, "code": "29463-7"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2021-06-01T08:00:00Z",
        "valueQuantity": {"value": 71.5, "unit": "kg"},
    }
    smoking = {
        **weight,
        "id": "o3",
        "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": "8517006"}]},
    }
    del smoking["valueQuantity"]
    _write(folder, "Observation", [pressure, weight, smoking])
    db = f"sqlite:///{tmp_path / 'x.db'}"
    result = cli("run", "--config", _project(tmp_path), "--db", db)
    assert result.exit_code == 0, result.output
    rows = _rows(db, "SELECT id, value_quantity, value_unit, value_code FROM fhir_observation ORDER BY id")
    assert rows == [("o1", None, None, None), ("o2", 71.5, "kg", None), ("o3", None, None, "8517006")]
    components = _rows(
        db, "SELECT code, value_quantity FROM fhir_observation_components ORDER BY component_ordinal"
    )
    assert components == [("8480-6", 120.0), ("8462-4", 80.0)]


# ------------------------------------------------------------------------------------ manifests
def test_a_manifest_lists_the_files_by_path(cli, export: Path, tmp_path: Path) -> None:
    outputs = [
        {"type": p.name.split(".")[0], "url": p.name, "count": 0}
        for p in sorted(export.iterdir())
        if p.name.endswith(".gz")
    ]
    (export / "manifest.json").write_text(json.dumps({"output": outputs, "requiresAccessToken": False}))
    db = f"sqlite:///{tmp_path / 'x.db'}"
    result = cli("run", "--config", _project(tmp_path, "export/manifest.json"), "--db", db)
    assert result.exit_code == 0, result.output
    assert _count(db, "fhir_encounter") == len(resources("Encounter"))
    assert _count(db, "fhir_patient") == len(resources("Patient"))
    assert "not loaded, no dataset of the pipeline takes them: Device, PractitionerRole" in result.output


@pytest.fixture
def bulk_server(export: Path) -> Iterator[tuple[str, list[dict[str, str]]]]:
    """The export's files over HTTP (loopback, free port), as a bulk data server hands them out."""
    seen: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            seen.append(dict(self.headers))
            path = export / self.path.lstrip("/")
            if not path.exists():
                self.send_response(404)
                self.end_headers()
                return
            body = gzip.decompress(path.read_bytes())
            self.send_response(200)
            self.send_header("Content-Type", "application/fhir+ndjson")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_manifest_by_url_streams_the_files_with_the_token(
    cli, export: Path, tmp_path: Path, bulk_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, seen = bulk_server
    token = "bulk-token-0042"
    monkeypatch.setenv("HEALTHETL_FHIR_TOKEN", token)
    kinds = ("Patient", "Encounter")
    outputs = [{"type": k, "url": f"{url}/{k}.000.ndjson.gz"} for k in kinds]
    (tmp_path / "manifest.json").write_text(json.dumps({"output": outputs, "requiresAccessToken": True}))
    db = f"sqlite:///{tmp_path / 'x.db'}"
    result = cli("run", "--config", _project(tmp_path, "manifest.json"), "--db", db)
    assert result.exit_code == 0, result.output
    assert _count(db, "fhir_encounter") == len(resources("Encounter"))
    assert all(h.get("Authorization") == f"Bearer {token}" for h in seen) and len(seen) == 2
    assert token not in result.output

    monkeypatch.delenv("HEALTHETL_FHIR_TOKEN")
    missing = cli("run", "--config", _project(tmp_path, "manifest.json"), "--db", db)
    assert missing.exit_code != 0 and "set HEALTHETL_FHIR_TOKEN" in missing.output


# ----------------------------------------------------------------------------- the declared paths
RECORD = {
    "resourceType": "Patient",
    "id": "p1",
    "name": [{"family": "Doe", "given": ["Ann", "B."]}, {"family": "Roe"}],
    "identifier": [
        {"system": "http://hospital.example.org/mrn", "value": "M1"},
        {"system": "http://hl7.org/fhir/sid/us-ssn", "value": "999-00-0001"},
    ],
    "extension": [{"url": "http://x.org/a.b", "valueCoding": {"code": "c1"}}],
    "deceasedDateTime": "2020-01-01T00:00:00Z",
    "valueQuantity": {"value": 5},
}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("name[0].family", "Doe"),
        ("name[1].family", "Roe"),
        ("name[2].family", None),
        ("name[0].given[1]", "B."),
        ("name.family", None),  # an array needs an index or a filter
        ("identifier[system=http://hl7.org/fhir/sid/us-ssn].value", "999-00-0001"),
        ("identifier[system=http://nowhere].value", None),
        ("extension[url=http://x.org/a.b].valueCoding.code", "c1"),
        ("deceased[x]", "2020-01-01T00:00:00Z"),
        ("deceased.ofType(DateTime)", "2020-01-01T00:00:00Z"),
        ("deceased.ofType(Boolean)", None),
        ("value.ofType(Quantity).value", 5),
        ("{resourceType}/{id}", "Patient/p1"),
        ("{resourceType}/{missing}", None),
        ("name#", 2),
    ],
)
def test_paths(path: str, expected: Any) -> None:
    assert get_path(RECORD, path) == expected


def test_a_path_that_cannot_be_read_is_a_declaration_error() -> None:
    with pytest.raises(PathError):
        get_path(RECORD, "name[first].family")
    with pytest.raises(PathError):
        get_path(RECORD, "ofType(Quantity)")


def test_fhir_datasets_show_identifying_columns(cli) -> None:
    result = cli("dataset", "show", "fhir_patient")
    assert result.exit_code == 0, result.output
    assert "birth_date" in result.output and "identifying" in result.output
    assert "fhir_patient_names" in result.output


DECLARED = """
[[pipelines]]
name = "labs"
dataset = "lab_results"
source = "results.ndjson"

[[datasets]]
name = "lab_results"
primary_key = ["result_key"]
mode = "merge"
[datasets.columns]
result_key = { type = "text", required = true }
loinc = { type = "text", required = true }
value = "float"
mrn = { type = "text", identifying = true }
[datasets.nested]
snapshot_column = false          # no snapshots: upserted on the key
[datasets.nested.paths]
result_key = "{resourceType}/{id}"
loinc = "code.coding[system=http://loinc.org].code"
value = "value.ofType(Quantity).value"
mrn = "subject.identifier[0].value"
"""


def test_a_declared_nested_dataset_uses_the_same_paths_and_upserts(cli, tmp_path: Path) -> None:
    def result(rid: str, value: float) -> dict[str, Any]:
        return {
            "resourceType": "Observation",
            "id": rid,
            "code": {
                "coding": [
                    {"system": "http://snomed.info/sct", "code": "x"},
                    {"system": "http://loinc.org", "code": "2345-7"},
                ]
            },
            "valueQuantity": {"value": value},
            "subject": {"identifier": [{"value": "MRN-1"}]},
        }

    (tmp_path / "healthetl.toml").write_text(DECLARED, encoding="utf-8")
    data = tmp_path / "results.ndjson"
    data.write_text(json.dumps(result("r1", 5.5)) + "\n" + json.dumps(result("r2", 6.0)) + "\n")
    db = f"sqlite:///{tmp_path / 'x.db'}"
    config = tmp_path / "healthetl.toml"
    for args in (["db", "upgrade"], ["db", "revision", "-m", "lab results"], ["run"]):
        done = cli(*args, "--config", config, "--db", db)
        assert done.exit_code == 0, done.output
    assert _rows(db, "SELECT result_key, loinc, value, mrn FROM lab_results ORDER BY 1") == [
        ("Observation/r1", "2345-7", 5.5, "MRN-1"),
        ("Observation/r2", "2345-7", 6.0, "MRN-1"),
    ]
    data.write_text(json.dumps(result("r1", 7.25)) + "\n")  # r1 corrected: upserted, r2 kept
    assert cli("run", "--config", config, "--db", db).exit_code == 0
    assert _rows(db, "SELECT result_key, value FROM lab_results ORDER BY 1") == [
        ("Observation/r1", 7.25),
        ("Observation/r2", 6.0),
    ]

    (tmp_path / "healthetl.toml").write_text(
        DECLARED.replace("code.coding[system=", "code.coding[system"), encoding="utf-8"
    )
    bad = cli("run", "--config", config, "--db", db)
    assert bad.exit_code == 2 and "nested.paths.loinc" in bad.output


@pytest.fixture
def fhir_server() -> Iterator[tuple[str, list[str]]]:
    """A FHIR server's Patient search: searchset Bundles of 5, the next page in link[relation=next]."""
    patients = resources("Patient")
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            seen.append(self.path)
            offset = int(self.path.partition("_offset=")[2] or 0)
            base = f"http://127.0.0.1:{self.server.server_address[1]}/fhir/Patient"
            links = [{"relation": "self", "url": f"{base}?_offset={offset}"}]
            if offset + 5 < len(patients):
                links.append({"relation": "next", "url": f"{base}?_offset={offset + 5}"})
            bundle = {
                "resourceType": "Bundle",
                "type": "searchset",
                "total": len(patients),
                "link": links,
                "entry": [{"resource": p} for p in patients[offset : offset + 5]],
            }
            body = json.dumps(bundle).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/fhir", seen
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_fhir_search_api_loads_into_the_fhir_tables(cli, tmp_path: Path, fhir_server, db_url: str) -> None:
    url, seen = fhir_server
    config = tmp_path / "healthetl.toml"
    config.write_text(
        '[[pipelines]]\nname = "patients"\ndataset = "fhir_patient"\n[pipelines.api]\n'
        f'url = "{url}"\npath = "/Patient"\nrecords = "entry[].resource"\n'
        'pagination = { type = "next_link", next_path = "link[relation=next].url" }\n',
        encoding="utf-8",
    )
    result = cli("run", "--config", config, "--db", db_url)
    assert result.exit_code == 0, result.output
    patients = resources("Patient")
    assert len(seen) == -(-len(patients) // 5)  # every page once
    assert _count(db_url, "fhir_patient") == len(patients)
    assert _count(db_url, "fhir_patient_names") == sum(len(p["name"]) for p in patients)
    assert _count(db_url, "api_pages") == len(seen)  # the pages are kept as received


def test_a_fhir_search_run_is_replayed_from_its_pages(cli, tmp_path: Path, fhir_server) -> None:
    url, seen = fhir_server
    config = tmp_path / "healthetl.toml"
    config.write_text(
        '[[pipelines]]\nname = "patients"\ndataset = "fhir_patient"\n[pipelines.api]\n'
        f'url = "{url}"\npath = "/Patient"\nrecords = "entry[].resource"\n'
        'pagination = { type = "next_link", next_path = "link[relation=next].url" }\n',
        encoding="utf-8",
    )
    db = f"sqlite:///{tmp_path / 'x.db'}"
    assert cli("run", "--config", config, "--db", db).exit_code == 0
    (run_id,) = _rows(db, "SELECT run_id FROM etl_runs")[0]
    calls = len(seen)
    engine = sa.create_engine(db)
    with engine.begin() as conn:
        for table in ("fhir_patient_names", "fhir_patient_identifiers", "fhir_patient_telecoms"):
            conn.execute(sa.text(f"DELETE FROM {table}"))
        conn.execute(sa.text("DELETE FROM fhir_patient_addresses"))
        conn.execute(sa.text("DELETE FROM fhir_patient"))
    engine.dispose()
    replay = cli("run", "--config", config, "--db", db, "--from-raw", run_id)
    assert replay.exit_code == 0, replay.output
    assert len(seen) == calls  # the server was not asked again
    assert _count(db, "fhir_patient") == len(resources("Patient"))


COMPOSITE = """
[[pipelines]]
name = "orders"
dataset = "orders"
source = "orders.ndjson"

[[datasets]]
name = "orders"
primary_key = ["site", "order_id"]
mode = "merge"
[datasets.columns]
site = { type = "text", required = true }
order_id = { type = "integer", required = true }
[datasets.nested]
snapshot_column = false
[[datasets.nested.children]]
table = "order_items"
path = "items"
ordinal = "item_ordinal"
columns = { code = { type = "text", required = true } }
"""


def test_an_upserted_record_with_a_key_of_several_columns_replaces_its_children(
    cli, tmp_path: Path, db_url: str
) -> None:
    config = tmp_path / "healthetl.toml"
    config.write_text(COMPOSITE, encoding="utf-8")
    data = tmp_path / "orders.ndjson"

    def deliver(*orders: tuple[str, int, list[str]]) -> None:
        lines = [
            json.dumps({"site": s, "order_id": o, "items": [{"code": c} for c in items]})
            for s, o, items in orders
        ]
        data.write_text("\n".join(lines) + "\n", encoding="utf-8")

    deliver(("north", 1, ["a", "b", "c"]), ("south", 1, ["x"]))
    for args in (["db", "upgrade"], ["db", "revision", "-m", "orders"], ["run"]):
        done = cli(*args, "--config", config, "--db", db_url)
        assert done.exit_code == 0, done.output
    deliver(("north", 1, ["d"]))  # north/1 now has one item; south/1 is untouched
    done = cli("run", "--config", config, "--db", db_url)
    assert done.exit_code == 0, done.output
    items = _rows(db_url, "SELECT site, order_id, code FROM order_items ORDER BY site, item_ordinal")
    assert items == [("north", 1, "d"), ("south", 1, "x")]
