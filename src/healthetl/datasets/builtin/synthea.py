"""A standard Synthea CSV export (synthetic patients): UUID natural keys, generated integer ids,
references resolved by UUID, clinical events checked against the patient's birth."""

from __future__ import annotations

from dataclasses import replace

from healthetl.datasets.builtin.common import not_before_birth
from healthetl.datasets.spec import Column, ColumnType, Compare, Dataset, Lookup, Param, Query

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
PATIENT = Lookup(
    "patient_key", "synthea_patients", {"patient": "id"}, fetch={"patient_birthdate": "birthdate"}
)
ENCOUNTER = Lookup("encounter_key", "synthea_encounters", {"encounter": "id"})
ORGANIZATION = Lookup("organization_key", "synthea_organizations", {"organization": "id"})
PROVIDER = Lookup("provider_key", "synthea_providers", {"provider": "id"})
ENCOUNTER_CLASSES = (
    "ambulatory",
    "wellness",
    "outpatient",
    "emergency",
    "urgentcare",
    "inpatient",
    "home",
    "snf",
    "hospice",
    "virtual",
)


def _ref(name: str, target: str, key: str, *, required: bool = True) -> tuple[Column, Column]:
    """The UUID a file refers by (not stored) and the generated id it resolves to."""
    return (
        # a patient's UUID is a patient identifier; an organization's or an encounter's is not
        Column(name, "text", required=required, stored=False, pattern=UUID, identifying=name == "patient"),
        Column(key, "integer", references=f"{target}.{key}"),
    )


def _not_before_birth(column: str) -> Compare:
    return not_before_birth(column, "patient_birthdate")


ORGANIZATIONS = Dataset(
    name="synthea_organizations",
    description="Synthea organizations (providers' employers).",
    table="synthea_organizations",
    generated_id="organization_key",
    primary_key=("id",),
    default_mode="merge",
    columns=(
        Column("id", "text", required=True, pattern=UUID),
        Column("name", "text", required=True),
        Column("city", "text"),
        Column("state", "text"),
        Column("zip", "us_zip", description="ZIP or ZIP+4"),
    ),
)

PROVIDERS = Dataset(
    name="synthea_providers",
    description="Synthea providers (clinicians).",
    table="synthea_providers",
    generated_id="provider_key",
    primary_key=("id",),
    default_mode="merge",
    lookups=(ORGANIZATION,),
    columns=(
        Column("id", "text", required=True, pattern=UUID),
        *_ref("organization", "synthea_organizations", "organization_key"),
        Column("name", "text", required=True),
        Column("gender", "text", vocabulary={"M": (), "F": ()}),
        Column("speciality", "text"),
    ),
)

PATIENTS = Dataset(
    name="synthea_patients",
    description="Synthea patients (synthetic). SSNs, passports and addresses are not loaded.",
    table="synthea_patients",
    generated_id="patient_key",
    primary_key=("id",),
    default_mode="merge",
    columns=(
        Column("id", "text", required=True, pattern=UUID, identifying=True),  # the patient's UUID
        Column("birthdate", "date", required=True, identifying=True, date_window=("1880-01-01", "today")),
        Column("deathdate", "date", identifying=True),
        Column("first", "text", identifying=True),
        Column("last", "text", identifying=True),
        Column("gender", "text", required=True, vocabulary={"M": (), "F": ()}),
        Column("race", "text"),
        Column("ethnicity", "text"),
        Column("city", "text"),
        Column("county", "text"),
        Column("state", "text"),
        Column("zip", "us_zip", description="ZIP or ZIP+4"),
    ),
    compares=(
        Compare(
            "death_not_before_birth",
            "deathdate",
            ">=",
            other="birthdate",
            description="deathdate is before birthdate",
        ),
    ),
)

_PATIENT_REF = (
    *_ref("patient", "synthea_patients", "patient_key"),
    Column("patient_birthdate", "date", stored=False),
)

ENCOUNTERS = Dataset(
    name="synthea_encounters",
    description="Synthea encounters.",
    table="synthea_encounters",
    generated_id="encounter_key",
    primary_key=("id",),
    default_mode="merge",
    lookups=(PATIENT, ORGANIZATION, PROVIDER),
    columns=(
        Column("id", "text", required=True, pattern=UUID),
        Column("start", "timestamp", required=True),
        Column("stop", "timestamp"),
        *_PATIENT_REF,
        *_ref("organization", "synthea_organizations", "organization_key"),
        *_ref("provider", "synthea_providers", "provider_key"),
        Column("encounterclass", "text", required=True, vocabulary=dict.fromkeys(ENCOUNTER_CLASSES, ())),
        Column("code", "text", required=True),
        Column("description", "text", required=True),
        Column("base_encounter_cost", "decimal", minimum=0.0),
        Column("total_claim_cost", "decimal", minimum=0.0),
    ),
    compares=(
        Compare("stop_not_before_start", "stop", ">=", other="start", description="stop is before start"),
        _not_before_birth("start"),
    ),
)


def _event(
    name: str,
    description: str,
    key: tuple[str, ...],
    start_type: ColumnType,
    extra: tuple[Column, ...],
    *,
    id_name: str,
    leading: tuple[Column, ...] = (),
) -> Dataset:
    """A clinical event of a patient in an encounter (condition, medication, procedure, ...)."""
    return Dataset(
        name=name,
        description=description,
        table=name,
        generated_id=id_name,
        primary_key=key,
        default_mode="merge",
        lookups=(PATIENT, ENCOUNTER),
        columns=(
            *leading,
            Column("start", start_type, required=True),
            Column("stop", start_type),
            *_PATIENT_REF,
            *_ref("encounter", "synthea_encounters", "encounter_key"),
            Column("code", "text", required=True, description="SNOMED CT / RxNorm code"),
            Column("description", "text", required=True),
            *extra,
        ),
        compares=(_not_before_birth("start"),),
    )


_EVENT_KEY = ("patient_key", "encounter_key", "code", "start")
CONDITIONS = _event(
    "synthea_conditions",
    "Synthea conditions (diagnoses).",
    ("patient_key", "encounter_key", "code", "start"),
    "date",
    (Column("system", "text"),),
    id_name="condition_key",
)
MEDICATIONS = _event(
    "synthea_medications",
    "Synthea medication orders.",
    ("patient_key", "encounter_key", "code", "start"),
    "timestamp",
    (
        Column("base_cost", "decimal", minimum=0.0),
        Column("dispenses", "integer", minimum=0.0),
        Column("totalcost", "decimal", minimum=0.0),
    ),
    id_name="medication_key",
)
PROCEDURES = _event(
    "synthea_procedures",
    "Synthea procedures.",
    ("patient_key", "encounter_key", "code", "start"),
    "timestamp",
    (Column("system", "text"), Column("base_cost", "decimal", minimum=0.0)),
    id_name="procedure_key",
)

ALLERGIES = _event(
    "synthea_allergies",
    "Synthea allergies.",
    _EVENT_KEY,
    "date",
    (Column("system", "text"), Column("type", "text"), Column("category", "text")),
    id_name="allergy_key",
)
DEVICES = _event(
    "synthea_devices",
    "Synthea devices.",
    _EVENT_KEY,
    "timestamp",
    (Column("udi", "text", description="unique device identifier"),),
    id_name="device_key",
)
CAREPLANS = _event(
    "synthea_careplans",
    "Synthea care plans.",
    ("id",),
    "date",
    (Column("reasoncode", "text"), Column("reasondescription", "text")),
    id_name="careplan_key",
    leading=(Column("id", "text", required=True, pattern=UUID),),
)
IMMUNIZATIONS = Dataset(
    name="synthea_immunizations",
    description="Synthea immunizations.",
    table="synthea_immunizations",
    generated_id="immunization_key",
    primary_key=("patient_key", "encounter_key", "code", "date"),
    default_mode="merge",
    lookups=(PATIENT, ENCOUNTER),
    columns=(
        Column("date", "timestamp", required=True),
        *_PATIENT_REF,
        *_ref("encounter", "synthea_encounters", "encounter_key"),
        Column("code", "text", required=True, description="CVX code"),
        Column("description", "text", required=True),
        Column("base_cost", "decimal", minimum=0.0),
    ),
    compares=(_not_before_birth("date"),),
)

_MONTHLY = """
    SELECT {month} AS month, encounterclass, COUNT(*) AS encounters,
           COUNT(DISTINCT patient_key) AS patients
    FROM synthea_encounters
    WHERE start >= :start AND start < :end
    GROUP BY {month}, encounterclass
    ORDER BY month, encounterclass
"""

QUERIES = (
    Query(
        "encounters-per-month",
        "Encounters and patients per month and encounter class (--param start=2020-01-01 --param end=...).",
        _MONTHLY.format(month="strftime('%Y-%m', start)"),
        {
            "start": Param("date", "1900-01-01", "first day"),
            "end": Param("date", "today", "day after the last"),
        },
        dialect_sql={"postgresql": _MONTHLY.format(month="to_char(start AT TIME ZONE 'UTC', 'YYYY-MM')")},
        person_counts=("patients",),
    ),
    Query(
        "top-conditions",
        "The most frequent conditions, with the number of patients who have them (--param limit=10).",
        """
        SELECT description, code, COUNT(*) AS conditions, COUNT(DISTINCT patient_key) AS patients
        FROM synthea_conditions
        GROUP BY description, code
        ORDER BY conditions DESC, description
        LIMIT :limit
        """,
        {"limit": Param("integer", "10", "how many")},
        person_counts=("patients",),
    ),
)

#: columns of the standard export this project does not load (so they are not reported as drift)
UNUSED = {
    "synthea_organizations": ("address", "lat", "lon", "phone", "revenue", "utilization"),
    "synthea_providers": ("address", "city", "state", "zip", "lat", "lon", "encounters", "procedures"),
    "synthea_patients": (
        "ssn",
        "drivers",
        "passport",
        "prefix",
        "middle",
        "suffix",
        "maiden",
        "marital",
        "birthplace",
        "address",
        "fips",
        "lat",
        "lon",
        "healthcare_expenses",
        "healthcare_coverage",
        "income",
    ),
    "synthea_encounters": ("payer", "payer_coverage", "reasoncode", "reasondescription"),
    "synthea_medications": ("payer", "payer_coverage", "reasoncode", "reasondescription"),
    "synthea_procedures": ("reasoncode", "reasondescription"),
    "synthea_allergies": ("reaction1", "description1", "severity1", "reaction2", "description2", "severity2"),
}

#: the datasets this module declares (registered by healthetl.datasets.builtin)
DATASETS = tuple(
    replace(ds, unused=UNUSED.get(ds.name, ()))
    for ds in (
        ORGANIZATIONS,
        PROVIDERS,
        PATIENTS,
        ENCOUNTERS,
        CONDITIONS,
        MEDICATIONS,
        ALLERGIES,
        CAREPLANS,
        IMMUNIZATIONS,
        DEVICES,
        replace(PROCEDURES, queries=QUERIES),
    )
)
