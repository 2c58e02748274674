"""Medilink: a health network's related CSV exports (facilities, patients, medical records,
triage visits) that refer to each other by natural keys (names), not ids. Each row gets a
generated integer id; references are resolved by natural key within the batch."""

from __future__ import annotations

from healthetl.datasets.spec import Column, Dataset, Lookup, Param, Query

FACILITY = Lookup("facility_id", "medilink_facilities", {"facility_name": "name"})
PATIENT = Lookup(
    "patient_id",
    "medilink_patients",
    {"facility_id": "facility_id", "patient_first_name": "first_name", "patient_last_name": "last_name"},
)

FACILITIES = Dataset(
    name="medilink_facilities",
    description="Health facilities, identified by name, state and LGA.",
    table="medilink_facilities",
    generated_id="facility_id",
    primary_key=("name", "state", "lga"),
    default_mode="merge",
    columns=(
        Column("name", "text", required=True),
        Column("state", "text", required=True),
        Column("lga", "text", required=True, description="local government area"),
        Column("lat", "float", minimum=-90.0, maximum=90.0),
        Column("lon", "float", minimum=-180.0, maximum=180.0),
        Column("type", "text"),
    ),
)

PATIENTS = Dataset(
    name="medilink_patients",
    description="Patients of a facility, identified by facility, names and date of birth.",
    table="medilink_patients",
    generated_id="patient_id",
    primary_key=("facility_id", "first_name", "last_name", "dob"),
    default_mode="merge",
    lookups=(FACILITY,),
    columns=(
        Column("facility_name", "text", required=True, stored=False),
        Column("facility_id", "integer", references="medilink_facilities.facility_id"),
        Column("first_name", "text", required=True, identifying=True),
        Column("last_name", "text", required=True, identifying=True),
        Column("sex", "text", required=True, vocabulary={"M": ("male",), "F": ("female",)}),
        # a real date, not in the future, and an age a person can have
        Column("dob", "date", required=True, identifying=True, date_window=("today-120y", "today")),
        Column("phone", "phone", identifying=True, severity={"phone": "warning"}),
    ),
)

_PATIENT_COLUMNS = (
    Column("facility_name", "text", required=True, stored=False),
    Column("patient_first_name", "text", required=True, identifying=True, stored=False),
    Column("patient_last_name", "text", required=True, identifying=True, stored=False),
    Column("facility_id", "integer", references="medilink_facilities.facility_id"),
    Column("patient_id", "integer", references="medilink_patients.patient_id"),
)

MEDICAL_RECORDS = Dataset(
    name="medilink_medical_records",
    description="Medical records of a patient.",
    table="medilink_medical_records",
    generated_id="record_id",
    primary_key=("patient_id", "record_type", "diagnosis", "treatment"),
    default_mode="merge",
    lookups=(FACILITY, PATIENT),
    columns=(
        *_PATIENT_COLUMNS,
        Column("record_type", "text", required=True),
        Column("diagnosis", "text", required=True),
        Column("treatment", "text", required=True),
        Column("medications", "text"),
        Column("notes", "text"),
    ),
)

TRIAGE_VISITS = Dataset(
    name="medilink_triage_visits",
    description="Triage visits; a file without visit_date is dated by the day it is loaded.",
    table="medilink_triage_visits",
    generated_id="visit_id",
    primary_key=("patient_id", "visit_date", "chief_complaint"),
    default_mode="merge",
    lookups=(FACILITY, PATIENT),
    columns=(
        *_PATIENT_COLUMNS,
        Column("visit_date", "date", required=True, default="today", date_window=("2000-01-01", "today")),
        Column("triage_level", "integer", required=True, minimum=1.0, maximum=5.0),
        Column("chief_complaint", "text", required=True),
        Column("vital_signs", "text"),
        Column("conditions", "text"),
        Column("recommendations", "text"),
    ),
    queries=(
        Query(
            "facility-stats",
            "Per facility: patients, medical records, triage visits and the average triage level.",
            "SELECT * FROM medilink_facility_stats ORDER BY facility_name, state, lga",
            person_counts=("patients",),
        ),
        Query(
            "patients-by-age-group",
            "Patients per age group (Infant, Child, Adolescent, Adult, Senior) and sex.",
            """
            SELECT age_group, sex, COUNT(*) AS patients
            FROM medilink_patient_age_groups
            GROUP BY age_group, sex
            ORDER BY MIN(age_years), sex
            """,
            person_counts=("patients",),
        ),
        Query(
            "triage-trends",
            "Triage visits per day with the 7-day moving average, between two dates.",
            """
            WITH daily AS (
                SELECT visit_date, COUNT(*) AS visits,
                       SUM(CASE WHEN priority IN ('Critical', 'High') THEN 1 ELSE 0 END) AS urgent
                FROM medilink_triage_priority
                GROUP BY visit_date
            )
            SELECT visit_date, visits, urgent,
                   ROUND(AVG(visits * 1.0) OVER (
                       ORDER BY visit_date ROWS BETWEEN 6 PRECEDING AND CURRENT ROW), 2) AS visits_7day_avg
            FROM daily
            WHERE visit_date BETWEEN :start AND :end
            ORDER BY visit_date
            """,
            {"start": Param("date", "2000-01-01", "first day"), "end": Param("date", "today", "last day")},
        ),
    ),
)

#: the datasets this module declares (registered by healthetl.datasets.builtin)
DATASETS = (FACILITIES, PATIENTS, MEDICAL_RECORDS, TRIAGE_VISITS)
