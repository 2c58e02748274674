"""FHIR R4 Bulk Data exports ($export: one NDJSON file per resource type) as relational tables.

One row per resource, keyed by ``resourceType/id`` and upserted on it (no snapshot date is
invented), with child tables for the repeating elements analysis needs (identifiers, names,
telecoms, addresses, codings, observation components). The flattening is declared with the
nested-JSON paths of :mod:`healthetl.datasets.paths` (index, filter, ``ofType``, templates).
References to a patient resolve to the patient's row (an unknown one is quarantined with the
reference named); a patient's events dated before their birth are a warning.
"""

from __future__ import annotations

from healthetl.datasets.builtin.common import not_before_birth
from healthetl.datasets.nesting import Child, Nested
from healthetl.datasets.spec import Column, Compare, Dataset, Lookup, Param, Query
from healthetl.fhir import RESOURCES

US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition"
SSN = "http://hl7.org/fhir/sid/us-ssn"
NPI = "http://hl7.org/fhir/sid/us-npi"


def _key(resource: str) -> tuple[Column, ...]:
    return (
        Column("resource_key", "text", required=True, description=f"{resource}/<id>: the key references use"),
        Column("id", "text", required=True, description="the resource's logical id"),
        Column("last_updated", "timestamp", description="meta.lastUpdated (UTC): the natural cursor"),
    )


_KEY_PATHS = {"resource_key": "{resourceType}/{id}", "last_updated": "meta.lastUpdated"}


def _resource(
    name: str,
    description: str,
    *,
    columns: tuple[Column, ...] = (),
    paths: dict[str, str] | None = None,
    coded: tuple[tuple[str, str, bool], ...] = (),
    patient: str | None = None,
    encounter: bool = False,
    children: tuple[Child, ...] = (),
    compares: tuple[Compare, ...] = (),
    queries: tuple[Query, ...] = (),
) -> Dataset:
    """One resource type's table, keyed by ``resourceType/id`` and upserted (no snapshots).

    ``coded``: (prefix, path, required) of CodeableConcepts whose first coding is kept as
    ``<prefix>_code``, ``_system`` (present whenever a code is) and ``_display``. ``patient``: the
    element referring to the patient (``subject`` or ``patient``), resolved to the patient's row,
    whose birth date the not-before-birth checks read. ``encounter``: keep ``encounter.reference``."""
    resource = next(r for r, d in RESOURCES.items() if d == name)
    cols: list[Column] = list(_key(resource))
    all_paths = dict(_KEY_PATHS)
    for prefix, path, required in coded:
        cols += [
            Column(f"{prefix}_code", "text", required=required),
            Column(f"{prefix}_system", "text", required=required, description="the code system (a URI)"),
            Column(f"{prefix}_display", "text"),
        ]
        all_paths |= {
            f"{prefix}_{part}": f"{path}.coding[0].{part}" for part in ("code", "system", "display")
        }
    cols += columns
    lookups: tuple[Lookup, ...] = ()
    if patient is not None:
        raw = "subject" if patient == "subject" else f"{patient}_reference"
        cols += [
            Column(raw, "text", required=True, stored=False, description="the reference as written"),
            Column("patient", "text", references="fhir_patient.resource_key", description="Patient/<id>"),
            Column("patient_birth_date", "date", stored=False),
        ]
        all_paths[raw] = f"{patient}.reference"
        lookups = (
            Lookup(
                "patient", "fhir_patient", {raw: "resource_key"}, fetch={"patient_birth_date": "birth_date"}
            ),
        )
    if encounter:
        cols.append(Column("encounter", "text", description="Encounter/<id>"))
        all_paths["encounter"] = "encounter.reference"
    return Dataset(
        name=name,
        description=description,
        table=name,
        primary_key=("resource_key",),
        default_mode="merge",
        lookups=lookups,
        columns=tuple(cols),
        compares=compares,
        queries=queries,
        nested=Nested(paths={**all_paths, **(paths or {})}, children=children, snapshot_column=None),
    )


def _codings(table: str, path: str, description: str) -> Child:
    return Child(
        table,
        path,
        "coding_ordinal",
        (
            Column("system", "text", required=True, description="the code system (a URI)"),
            Column("code", "text", required=True),
            Column("display", "text"),
        ),
        {},
        description=description,
    )


def _identifiers(table: str, *, identifying: bool) -> Child:
    return Child(
        table,
        "identifier",
        "identifier_ordinal",
        (
            Column("system", "text"),
            Column("value", "text", required=True, identifying=identifying),
            Column("use", "text"),
            Column("type_code", "text"),
        ),
        {"type_code": "type.coding[0].code"},
        description="Identifiers (MRN, SSN, NPI, ...) of a resource.",
    )


def _names(table: str, *, identifying: bool) -> Child:
    return Child(
        table,
        "name",
        "name_ordinal",
        (
            Column("use", "text"),
            Column("family", "text", identifying=identifying),
            Column("given", "text", identifying=identifying, description="the first given name"),
            Column("prefix", "text"),
            Column("text", "text", identifying=identifying),
        ),
        {"given": "given[0]", "prefix": "prefix[0]"},
        description="Names (official, maiden, ...).",
    )


def _telecoms(table: str, *, identifying: bool) -> Child:
    return Child(
        table,
        "telecom",
        "telecom_ordinal",
        (
            Column("system", "text"),
            Column("value", "text", identifying=identifying),
            Column("use", "text"),
        ),
        {},
        description="Phone numbers, e-mail addresses.",
    )


def _addresses(table: str, *, identifying: bool) -> Child:
    return Child(
        table,
        "address",
        "address_ordinal",
        (
            Column("line", "text", identifying=identifying, description="the first address line"),
            Column("city", "text"),
            Column("state", "text"),
            Column("postal_code", "text", identifying=identifying),
            Column("country", "text"),
        ),
        {"line": "line[0]", "postal_code": "postalCode"},
        description="Postal addresses.",
    )


def _not_before_birth(column: str) -> Compare:
    """A warning by default: a FHIR export's dates are the source system's to correct."""
    return not_before_birth(column, "patient_birth_date", severity="warning")


def _ends_after_start(start: str, end: str) -> Compare:
    return Compare("end_not_before_start", end, ">=", other=start, description="ends before it starts")


def _omb(extension: str) -> str:
    """A US Core race/ethnicity extension's OMB category code."""
    return f"extension[url={US_CORE}/{extension}].extension[url=ombCategory].valueCoding.code"


_AGE_GROUP = """
SELECT CASE WHEN age < 18 THEN '0-17' WHEN age < 40 THEN '18-39' WHEN age < 65 THEN '40-64'
            ELSE '65+' END AS age_group,
       COUNT(*) AS patients
FROM ({ages}) a
GROUP BY 1
ORDER BY 1
"""

_PATIENTS_BY_AGE = Query(
    "fhir-patients-by-age-group",
    "Living patients by age group on a day (--param as_of=YYYY-MM-DD, default today).",
    _AGE_GROUP.format(
        ages="SELECT CAST((julianday(:as_of) - julianday(birth_date)) / 365.25 AS INTEGER) AS age "
        "FROM fhir_patient WHERE deceased_at IS NULL"
    ),
    {"as_of": Param("date", default="today")},
    dialect_sql={
        "postgresql": _AGE_GROUP.format(
            ages="SELECT EXTRACT(YEAR FROM age(CAST(:as_of AS date), birth_date)) AS age "
            "FROM fhir_patient WHERE deceased_at IS NULL"
        )
    },
    person_counts=("patients",),
)

_ENCOUNTERS_PER_MONTH = Query(
    "fhir-encounters-per-class-month",
    "Encounters per class and month (UTC).",
    "SELECT class_code, strftime('%Y-%m', period_start) AS month, COUNT(*) AS encounters "
    "FROM fhir_encounter GROUP BY 1, 2 ORDER BY 2, 1",
    dialect_sql={
        "postgresql": "SELECT class_code, to_char(period_start AT TIME ZONE 'UTC', 'YYYY-MM') "
        "AS month, COUNT(*) AS encounters FROM fhir_encounter GROUP BY 1, 2 ORDER BY 2, 1"
    },
)

_TOP_CONDITIONS = Query(
    "fhir-top-conditions",
    "The most frequent conditions (--param limit=10).",
    "SELECT code_system, code_code AS code, code_display AS display, COUNT(*) AS conditions, "
    "COUNT(DISTINCT patient) AS patients FROM fhir_condition "
    "GROUP BY code_system, code_code, code_display ORDER BY conditions DESC, code LIMIT :limit",
    {"limit": Param("integer", default="10")},
    person_counts=("patients",),
)

_ACTIVE_MEDICATIONS = Query(
    "fhir-active-medications-per-patient",
    "Patients by their number of active medication requests.",
    "SELECT active_requests, COUNT(*) AS patients FROM ("
    "SELECT patient, COUNT(*) AS active_requests FROM fhir_medication_request "
    "WHERE status = 'active' GROUP BY patient) p GROUP BY active_requests ORDER BY active_requests",
    person_counts=("patients",),
)


PATIENTS = _resource(
    "fhir_patient",
    "FHIR Patient resources.",
    columns=(
        Column("gender", "text", vocabulary=dict.fromkeys(("male", "female", "other", "unknown"), ())),
        Column("birth_date", "date", required=True, identifying=True, date_window=("1880-01-01", "today")),
        Column("deceased_at", "timestamp", identifying=True),
        Column("family", "text", identifying=True, description="name[0].family"),
        Column("given", "text", identifying=True, description="name[0].given[0]"),
        Column("ssn", "text", identifying=True, description=f"identifier[system={SSN}].value"),
        Column("marital_status", "text"),
        Column("race", "text", description="US Core race, OMB category code"),
        Column("ethnicity", "text", description="US Core ethnicity, OMB category code"),
        Column("birth_sex", "text"),
    ),
    compares=(
        Compare(
            "deceased_not_before_birth",
            "deceased_at",
            ">=",
            other="birth_date",
            description="deceasedDateTime is before birthDate",
        ),
    ),
    paths={
        "birth_date": "birthDate",
        "deceased_at": "deceased.ofType(DateTime)",
        "family": "name[0].family",
        "given": "name[0].given[0]",
        "ssn": f"identifier[system={SSN}].value",
        "marital_status": "maritalStatus.coding[0].code",
        "race": _omb("us-core-race"),
        "ethnicity": _omb("us-core-ethnicity"),
        "birth_sex": f"extension[url={US_CORE}/us-core-birthsex].valueCode",
    },
    children=(
        _identifiers("fhir_patient_identifiers", identifying=True),
        _names("fhir_patient_names", identifying=True),
        _telecoms("fhir_patient_telecoms", identifying=True),
        _addresses("fhir_patient_addresses", identifying=True),
    ),
    queries=(_PATIENTS_BY_AGE,),
)

ENCOUNTERS = _resource(
    "fhir_encounter",
    "FHIR Encounter resources.",
    coded=(("type", "type[0]", False),),
    patient="subject",
    columns=(
        Column("status", "text", required=True),
        Column("class_code", "text", required=True, description="v3 ActCode: AMB, IMP, EMER, HH, VR, ..."),
        Column("period_start", "timestamp", required=True),
        Column("period_end", "timestamp"),
        Column("service_provider", "text", description="reference to the Organization"),
        Column("reason_code", "text"),
    ),
    paths={
        "class_code": "class.code",
        "period_start": "period.start",
        "period_end": "period.end",
        "service_provider": "serviceProvider.reference",
        "reason_code": "reasonCode[0].coding[0].code",
    },
    compares=(_ends_after_start("period_start", "period_end"), _not_before_birth("period_start")),
    children=(_identifiers("fhir_encounter_identifiers", identifying=False),),
    queries=(_ENCOUNTERS_PER_MONTH,),
)

CONDITIONS = _resource(
    "fhir_condition",
    "FHIR Condition resources (problems, diagnoses).",
    coded=(("code", "code", True),),
    patient="subject",
    encounter=True,
    columns=(
        Column("clinical_status", "text"),
        Column("verification_status", "text"),
        Column("category", "text"),
        Column("onset_at", "timestamp"),
        Column("abatement_at", "timestamp"),
        Column("recorded_at", "timestamp"),
    ),
    paths={
        "clinical_status": "clinicalStatus.coding[0].code",
        "verification_status": "verificationStatus.coding[0].code",
        "category": "category[0].coding[0].code",
        "onset_at": "onset.ofType(DateTime)",
        "abatement_at": "abatement.ofType(DateTime)",
        "recorded_at": "recordedDate",
    },
    compares=(_not_before_birth("onset_at"),),
    children=(_codings("fhir_condition_codings", "code.coding", "Every coding of a condition's code."),),
    queries=(_TOP_CONDITIONS,),
)

OBSERVATIONS = _resource(
    "fhir_observation",
    "FHIR Observation resources (vital signs, labs, surveys).",
    coded=(("code", "code", True),),
    patient="subject",
    encounter=True,
    columns=(
        Column("status", "text", required=True),
        Column("category", "text"),
        Column("effective_at", "timestamp"),
        Column("value_quantity", "float"),
        Column("value_unit", "text"),
        Column("value_code", "text"),
        Column("value_text", "text", description="value[x] of any other type, as text"),
    ),
    paths={
        "category": "category[0].coding[0].code",
        "effective_at": "effective.ofType(DateTime)",
        "value_quantity": "value.ofType(Quantity).value",
        "value_unit": "value.ofType(Quantity).unit",
        "value_code": "value.ofType(CodeableConcept).coding[0].code",
        "value_text": "value.ofType(String)",
    },
    compares=(_not_before_birth("effective_at"),),
    children=(
        _codings("fhir_observation_codings", "code.coding", "Every coding of an observation's code."),
        Child(
            "fhir_observation_components",
            "component",
            "component_ordinal",
            (
                Column("code", "text", required=True),
                Column("system", "text", required=True),
                Column("display", "text"),
                Column("value_quantity", "float"),
                Column("value_unit", "text"),
                Column("value_code", "text"),
            ),
            {
                "code": "code.coding[0].code",
                "system": "code.coding[0].system",
                "display": "code.coding[0].display",
                "value_quantity": "value.ofType(Quantity).value",
                "value_unit": "value.ofType(Quantity).unit",
                "value_code": "value.ofType(CodeableConcept).coding[0].code",
            },
            description="Components of an observation (systolic and diastolic pressure, ...).",
        ),
    ),
)

MEDICATION_REQUESTS = _resource(
    "fhir_medication_request",
    "FHIR MedicationRequest resources (prescriptions).",
    coded=(("medication", "medication.ofType(CodeableConcept)", True),),
    patient="subject",
    encounter=True,
    columns=(
        Column("status", "text", required=True),
        Column("intent", "text", required=True),
        Column("authored_at", "timestamp"),
        Column("requester", "text"),
    ),
    paths={"authored_at": "authoredOn", "requester": "requester.reference"},
    compares=(_not_before_birth("authored_at"),),
    queries=(_ACTIVE_MEDICATIONS,),
)

PROCEDURES = _resource(
    "fhir_procedure",
    "FHIR Procedure resources.",
    coded=(("code", "code", True),),
    patient="subject",
    encounter=True,
    columns=(
        Column("status", "text", required=True),
        Column("performed_start", "timestamp"),
        Column("performed_end", "timestamp"),
    ),
    paths={
        "performed_start": "performed.ofType(Period).start",
        "performed_end": "performed.ofType(Period).end",
    },
    compares=(_ends_after_start("performed_start", "performed_end"), _not_before_birth("performed_start")),
    children=(_codings("fhir_procedure_codings", "code.coding", "Every coding of a procedure's code."),),
)

IMMUNIZATIONS = _resource(
    "fhir_immunization",
    "FHIR Immunization resources.",
    coded=(("vaccine", "vaccineCode", True),),
    patient="patient",
    encounter=True,
    columns=(
        Column("status", "text", required=True),
        Column("occurred_at", "timestamp"),
        Column("primary_source", "boolean"),
    ),
    paths={"occurred_at": "occurrence.ofType(DateTime)", "primary_source": "primarySource"},
    compares=(_not_before_birth("occurred_at"),),
)

ALLERGIES = _resource(
    "fhir_allergy_intolerance",
    "FHIR AllergyIntolerance resources.",
    coded=(("code", "code", True),),
    patient="patient",
    columns=(
        Column("clinical_status", "text"),
        Column("verification_status", "text"),
        Column("type", "text"),
        Column("category", "text"),
        Column("criticality", "text"),
        Column("recorded_at", "timestamp"),
    ),
    paths={
        "clinical_status": "clinicalStatus.coding[0].code",
        "verification_status": "verificationStatus.coding[0].code",
        "category": "category[0]",
        "recorded_at": "recordedDate",
    },
    compares=(_not_before_birth("recorded_at"),),
)

ORGANIZATIONS = _resource(
    "fhir_organization",
    "FHIR Organization resources (providers, payers).",
    columns=(
        Column("active", "boolean"),
        Column("name", "text", required=True),
        Column("type_code", "text"),
        Column("city", "text"),
        Column("state", "text"),
    ),
    paths={
        "type_code": "type[0].coding[0].code",
        "city": "address[0].city",
        "state": "address[0].state",
    },
    children=(
        _identifiers("fhir_organization_identifiers", identifying=False),
        _telecoms("fhir_organization_telecoms", identifying=False),
        _addresses("fhir_organization_addresses", identifying=False),
    ),
)

PRACTITIONERS = _resource(
    "fhir_practitioner",
    "FHIR Practitioner resources.",
    columns=(
        Column("npi", "npi", description=f"identifier[system={NPI}].value"),
        Column("active", "boolean"),
        Column("family", "text"),
        Column("given", "text"),
        Column("gender", "text"),
    ),
    paths={
        "npi": f"identifier[system={NPI}].value",
        "family": "name[0].family",
        "given": "name[0].given[0]",
    },
    children=(
        _identifiers("fhir_practitioner_identifiers", identifying=False),
        _names("fhir_practitioner_names", identifying=False),
        _telecoms("fhir_practitioner_telecoms", identifying=False),
        _addresses("fhir_practitioner_addresses", identifying=False),
    ),
)

LOCATIONS = _resource(
    "fhir_location",
    "FHIR Location resources.",
    columns=(
        Column("status", "text"),
        Column("name", "text"),
        Column("managing_organization", "text", description="reference to the Organization"),
        Column(
            "managing_organization_identifier",
            "text",
            description="the Organization's identifier, where the reference is by identifier",
        ),
        Column("city", "text"),
        Column("state", "text"),
        Column("postal_code", "text"),
        Column("latitude", "float", minimum=-90.0, maximum=90.0),
        Column("longitude", "float", minimum=-180.0, maximum=180.0),
    ),
    paths={
        "managing_organization": "managingOrganization.reference",
        "city": "address.city",
        "state": "address.state",
        "postal_code": "address.postalCode",
        "latitude": "position.latitude",
        "longitude": "position.longitude",
    },
    children=(),
)

DATASETS = (
    ORGANIZATIONS,
    PRACTITIONERS,
    LOCATIONS,
    PATIENTS,
    ENCOUNTERS,
    CONDITIONS,
    OBSERVATIONS,
    MEDICATION_REQUESTS,
    PROCEDURES,
    IMMUNIZATIONS,
    ALLERGIES,
)
