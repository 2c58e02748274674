"""Patient visits: a growing daily extract, loaded incrementally through raw, staging and
analytics layers."""

from __future__ import annotations

from healthetl.datasets.spec import Analytic, Column, Dataset, Param, Quality, Query

VISITS = Dataset(
    name="visits",
    description="Patient visits (staging): one row per visit, the latest version of each.",
    table="stg_visits",
    raw_table="raw_visits",
    primary_key=("visit_id",),
    dedupe_order=("last_updated",),
    cursor="last_updated",
    lookback_hours=24.0,
    default_mode="merge",
    columns=(
        Column("patient_id", "text", required=True, identifying=True, description="Patient id"),
        Column("visit_id", "text", required=True, description="Visit id (business key)"),
        Column("visit_date", "date", required=True, date_window=("2000-01-01", "today+1y")),
        Column("diagnosis_code", "text", required=True, description="Diagnosis code (e.g. ICD-10)"),
        Column("provider_id", "text", required=True),
        Column("visit_cost", "decimal", required=True, minimum=0.0),
        Column(
            "last_updated",
            "timestamp",
            required=True,
            description="When the source last changed the visit (UTC); the incremental cursor",
        ),
    ),
    quality=Quality(null_rate={"visit_cost": 0.05}),
    analytics=(
        Analytic(
            table="fact_visits",
            description="One row per visit, the latest version (analytics).",
            key=("visit_id",),
            partition="visit_id",
            columns=(
                Column("visit_id", "text", required=True),
                Column("patient_id", "text", required=True),
                Column("provider_id", "text", required=True),
                Column("diagnosis_code", "text", required=True),
                Column("visit_date", "date", required=True),
                Column("visit_cost", "decimal", required=True),
                Column("last_updated", "timestamp", required=True),
                Column("run_id", "text", required=True),
            ),
            select="""
                SELECT visit_id, patient_id, provider_id, diagnosis_code, visit_date, visit_cost,
                       last_updated, run_id
                FROM stg_visits {where}
            """,
        ),
        Analytic(
            table="daily_visit_metrics",
            description="Visits and costs per visit day (analytics).",
            key=("visit_date",),
            partition="visit_date",
            columns=(
                Column("visit_date", "date", required=True),
                Column("visit_count", "integer", required=True),
                Column("patient_count", "integer", required=True),
                Column("total_cost", "decimal", required=True),
                Column("avg_cost", "decimal", required=True),
            ),
            select="""
                SELECT visit_date, COUNT(*) AS visit_count,
                       COUNT(DISTINCT patient_id) AS patient_count,
                       SUM(visit_cost) AS total_cost, AVG(visit_cost) AS avg_cost
                FROM fact_visits {where}
                GROUP BY visit_date
            """,
        ),
    ),
    queries=(
        Query(
            "daily-visits",
            "Visits, patients and costs per day between two dates (inclusive).",
            """
            SELECT visit_date, visit_count, patient_count, total_cost, avg_cost
            FROM daily_visit_metrics
            WHERE visit_date BETWEEN :start AND :end
            ORDER BY visit_date
            """,
            {"start": Param("date", "2000-01-01", "first day"), "end": Param("date", "today", "last day")},
        ),
    ),
)

#: the datasets this module declares (registered by healthetl.datasets.builtin)
DATASETS = (VISITS,)
