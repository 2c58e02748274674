"""Clinical identifiers and codes as column types: real valid and invalid values, the stored
form, and the types at work in a declared dataset and the built-in ones."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from healthetl import codes

# Real values: NPIs of the Synthea practitioners in tests' FHIR bulk sample (Synthea's 999999xxxx
# range); SNOMED CT codes of its Conditions; ZIP codes and telephone numbers of CMS Hospital General
# Information (data.cms.gov, see examples/ and ../shared/data/real/cms-hospital-general-info/SOURCE.md);
# LOINC codes and ICD-10-CM codes as published by Regenstrief and CMS.
VALID = {
    "npi": [("9999908392", "9999908392"), ("9999903799", "9999903799"), ("1234567893", "1234567893")],
    "snomed": [
        ("44054006", "44054006"),
        ("38341003", "38341003"),
        ("160903007", "160903007"),
        ("741062008", "741062008"),
    ],
    "loinc": [
        ("2345-7", "2345-7"),
        ("718-7", "718-7"),
        ("4548-4", "4548-4"),
        ("29463-7", "29463-7"),
        ("39156-5", "39156-5"),
    ],
    "icd10cm": [
        ("E11.9", "E11.9"),
        ("e119", "E11.9"),
        ("I10", "I10"),
        ("S72.001A", "S72.001A"),
        ("U07.1", "U07.1"),
        ("C4A.0", "C4A.0"),
        ("Z3A.01", "Z3A.01"),
    ],
    "us_zip": [("36301", "36301"), ("02139-4307", "02139-4307"), ("021394307", "02139-4307")],
    "us_ssn": [("123-45-6789", "123-45-6789"), ("219 09 9998", "219-09-9998"), ("536904399", "536-90-4399")],
    "e164_phone": [
        ("+1 334 793 8701", "+13347938701"),
        ("+2348031234567", "+2348031234567"),
        ("+44 20 7946 0018", "+442079460018"),
    ],
}
INVALID = {
    "npi": ["1234567890", "999990839", "99999083921", "ABCDEFGHIJ"],
    "snomed": ["44054007", "38341004", "12345", "0044054006"],
    "loinc": ["2345-8", "718-0", "2345", "12345678-9"],
    "icd10cm": ["E1", "123.4", "E11..9", "E11.12345"],
    "us_zip": ["3630", "ABCDE", "36301-43", "363011"],
    # the Woolworth wallet card, area 000/666/9xx, group 00, serial 0000, and Synthea's 999 area
    "us_ssn": ["078-05-1120", "000-12-3456", "666-12-3456", "123-00-4567", "123-45-0000", "999-67-1234"],
    # CMS phone numbers that libphonenumber refuses (no such area codes), and numbers without +
    "e164_phone": ["+17922205500", "+10936933841", "+13600000000", "3347938701"],
}


@pytest.mark.parametrize(("kind", "value", "stored"), [(k, v, s) for k, vs in VALID.items() for v, s in vs])
def test_valid_codes_are_stored_in_one_form(kind: str, value: str, stored: str) -> None:
    assert codes.CANONICAL[kind](value) == stored
    assert codes.CANONICAL[kind](stored) == stored  # the stored form is a fixed point


@pytest.mark.parametrize(("kind", "value"), [(k, v) for k, vs in INVALID.items() for v in vs])
def test_invalid_codes_are_refused(kind: str, value: str) -> None:
    assert codes.CANONICAL[kind](value) is None


def test_every_cms_zip_code_is_a_us_zip() -> None:
    sample = Path(__file__).parent / "data" / "cms" / "hospital_general_information_sample.csv"
    with sample.open(encoding="utf-8") as f:
        zips = [row["ZIP Code"] for row in csv.DictReader(f)]
    assert zips and all(codes.canonical_us_zip(z) == z for z in zips)


PROJECT = """
[[datasets]]
name = "claims"
primary_key = ["claim_id"]

[datasets.columns]
claim_id = { type = "integer", required = true }
npi = { type = "npi", required = true }
diagnosis = { type = "icd10cm", required = true }
lab = { type = "loinc" }
finding = { type = "snomed" }
zip = { type = "us_zip" }
ssn = { type = "us_ssn" }
mrn = { type = "mrn", pattern = "MRN[0-9]{6}" }
phone = { type = "e164_phone" }
"""

ROWS = [
    # claim_id, npi, diagnosis, lab, finding, zip, ssn, mrn, phone
    [
        "1",
        "9999908392",
        "e119",
        "2345-7",
        "44054006",
        "021394307",
        "536904399",
        "MRN000123",
        "+1 334 793 8701",
    ],
    ["2", "1234567890", "E11.9", "2345-7", "44054006", "02139", "536-90-4399", "MRN000124", "+13347938701"],
    ["3", "9999903799", "E11..9", "2345-8", "44054007", "0213", "078-05-1120", "M123", "3347938701"],
]


def test_declared_code_columns_validate_and_store_one_form(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "healthetl.toml").write_text(PROJECT, encoding="utf-8")
    source = tmp_path / "claims.csv"
    with source.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["claim_id", "npi", "diagnosis", "lab", "finding", "zip", "ssn", "mrn", "phone"])
        writer.writerows(ROWS)
    result = cli(
        "validate",
        "claims",
        str(source),
        "-o",
        "clean.csv",
        "--rejects",
        "rejects.csv",
        "--report",
        "dq.json",
        "--fail-on",
        "never",
    )
    assert result.exit_code == 0, result.output
    with (tmp_path / "clean.csv").open(encoding="utf-8") as f:
        (clean,) = list(csv.DictReader(f))
    assert (clean["npi"], clean["diagnosis"], clean["zip"], clean["ssn"], clean["phone"]) == (
        "9999908392",
        "E11.9",
        "02139-4307",
        "536-90-4399",
        "+13347938701",
    )
    with (tmp_path / "rejects.csv").open(encoding="utf-8") as f:
        rejects = list(csv.DictReader(f))
    by_row: dict[str, set[str]] = {}
    for r in rejects:
        by_row.setdefault(r["source_row"], set()).add(r["rule"])
    assert by_row == {
        "2": {"npi"},
        "3": {"icd10cm", "loinc", "snomed", "us_zip", "us_ssn", "pattern", "e164_phone"},
    }
    # the SSN and the record number identify a person: their values are named nowhere
    shown = result.output + (tmp_path / "dq.json").read_text() + "".join(r["reason"] for r in rejects)
    for secret in ("078-05-1120", "536-90-4399", "M123", "MRN000123"):
        assert secret not in shown
    show = cli("dataset", "show", "claims", "--format", "json")
    described = {c["column"]: c for c in json.loads(show.stdout)}
    assert described["ssn"]["identifying"] == "yes" and described["mrn"]["identifying"] == "yes"
    assert described["npi"]["identifying"] == "" and "npi" in described["npi"]["checks"]


def test_an_mrn_column_needs_its_pattern(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "healthetl.toml").write_text(
        '[[datasets]]\nname = "x"\nprimary_key = ["mrn"]\n[datasets.columns]\nmrn = { type = "mrn" }\n',
        encoding="utf-8",
    )
    result = cli("dataset", "show", "x")
    assert result.exit_code == 2 and "mrn needs the pattern" in result.output


def test_builtin_datasets_use_the_code_types() -> None:
    from healthetl.datasets import BUILTIN

    assert BUILTIN["fhir_practitioner"].column("npi").type == "npi"
    assert BUILTIN["synthea_patients"].column("zip").type == "us_zip"
