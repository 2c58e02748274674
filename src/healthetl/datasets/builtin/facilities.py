"""Healthcare facilities and their accreditations, delivered as daily NDJSON snapshots of nested
records (location, services, labs with certifications, accreditations)."""

from __future__ import annotations

from healthetl.datasets.nesting import Child, Nested
from healthetl.datasets.spec import Column, Compare, Dataset, Param, Query

US_STATES = (
    "AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ NM "
    "NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY AS GU MP PR VI UM"
).split()

_LATEST = "COALESCE(:snapshot_date, (SELECT MAX(snapshot_date) FROM facility_snapshots))"

_EXPIRING_SELECT = """
    SELECT f.facility_id, f.facility_name, a.accreditation_body, a.accreditation_id, a.valid_until,
           {days} AS days_until_expiry
    FROM facility_snapshots f
    JOIN facility_accreditations a
      ON a.snapshot_date = f.snapshot_date AND a.facility_id = f.facility_id
    WHERE f.snapshot_date = {latest}
      AND a.valid_until BETWEEN :as_of AND {until}
    ORDER BY a.valid_until, f.facility_id, a.accreditation_id
"""

FACILITIES = Dataset(
    name="facilities",
    description="Healthcare facilities, one row per facility and snapshot date.",
    table="facility_snapshots",
    primary_key=("snapshot_date", "facility_id"),
    default_mode="replace",
    columns=(
        Column("snapshot_date", "date", required=True, description="the day of the snapshot"),
        Column("facility_id", "text", required=True, pattern=r"FAC[0-9]+"),
        Column("facility_name", "text", required=True),
        Column("address", "text"),
        Column("city", "text"),
        Column(
            "state",
            "text",
            required=True,
            vocabulary=dict.fromkeys(US_STATES, ()),
            description="US state or territory, two letters",
        ),
        Column("zip", "text", required=True, pattern=r"[0-9]{5}", description="ZIP code (text)"),
        Column("employee_count", "integer", required=True, minimum=0.0),
        Column("number_of_offered_services", "integer", required=True),
        Column("accreditation_count", "integer", required=True),
    ),
    compares=(
        Compare(
            "at_least_one_accreditation",
            "accreditation_count",
            ">=",
            value=1,
            description="the facility has no accreditation",
        ),
    ),
    nested=Nested(
        paths={
            "address": "location.address",
            "city": "location.city",
            "state": "location.state",
            "zip": "location.zip",
            "number_of_offered_services": "services#",
            "accreditation_count": "accreditations#",
        },
        children=(
            Child(
                "facility_services",
                "services",
                "service_ordinal",
                (Column("service", "text", required=True),),
                {"service": "."},
                description="Services a facility offers.",
            ),
            Child(
                "facility_labs",
                "labs",
                "lab_ordinal",
                (Column("lab_name", "text", required=True),),
                {},
                children=(
                    Child(
                        "facility_lab_certifications",
                        "certifications",
                        "certification_ordinal",
                        (Column("certification", "text", required=True),),
                        {"certification": "."},
                        description="Certifications of a facility's lab.",
                    ),
                ),
                description="Labs of a facility.",
            ),
            Child(
                "facility_accreditations",
                "accreditations",
                "accreditation_ordinal",
                (
                    Column("accreditation_body", "text", required=True),
                    Column("accreditation_id", "text", required=True),
                    Column("valid_until", "date", required=True),
                ),
                {},
                description="Accreditations of a facility, in the order the source lists them.",
            ),
        ),
    ),
    queries=(
        Query(
            "facility-metrics",
            "Per facility: employees, services offered and the expiry of its first accreditation "
            "(latest snapshot, or --param snapshot_date=YYYY-MM-DD).",
            f"""
            SELECT f.facility_id, f.facility_name AS name, f.employee_count,
                   f.number_of_offered_services,
                   (SELECT a.valid_until FROM facility_accreditations a
                     WHERE a.snapshot_date = f.snapshot_date AND a.facility_id = f.facility_id
                       AND a.accreditation_ordinal = 1) AS first_accreditation_valid_until
            FROM facility_snapshots f
            WHERE f.snapshot_date = {_LATEST}
            ORDER BY f.facility_id
            """,
            {"snapshot_date": Param("date", help="snapshot (default: latest)", optional=True)},
        ),
        Query(
            "expiring-accreditations",
            "Accreditations expiring within N days of a date, both inclusive, with the days left "
            "(--param within_days=180 --param as_of=YYYY-MM-DD; default today).",
            _EXPIRING_SELECT.format(
                days="CAST(julianday(a.valid_until) - julianday(:as_of) AS INTEGER)",
                latest=_LATEST,
                until="date(:as_of, '+' || :within_days || ' days')",
            ),
            {
                "within_days": Param("integer", "180", "window length in days"),
                "as_of": Param("date", "today", "first day of the window"),
                "snapshot_date": Param("date", help="snapshot (default: latest)", optional=True),
            },
            dialect_sql={
                "postgresql": _EXPIRING_SELECT.format(
                    days="(a.valid_until - CAST(:as_of AS date))",
                    latest=_LATEST,
                    until="CAST(:as_of AS date) + CAST(:within_days AS integer)",
                )
            },
        ),
        Query(
            "accredited-per-state",
            "Facilities with at least one accreditation, per state (--param valid_on=DATE: only "
            "accreditations still valid that day).",
            f"""
            SELECT f.state, COUNT(DISTINCT f.facility_id) AS accredited_facilities
            FROM facility_snapshots f
            JOIN facility_accreditations a
              ON a.snapshot_date = f.snapshot_date AND a.facility_id = f.facility_id
            WHERE f.snapshot_date = {_LATEST}
              AND (:valid_on IS NULL OR a.valid_until >= :valid_on)
            GROUP BY f.state
            ORDER BY f.state
            """,
            {
                "valid_on": Param("date", help="count accreditations valid that day", optional=True),
                "snapshot_date": Param("date", help="snapshot (default: latest)", optional=True),
            },
        ),
    ),
)

#: the datasets this module declares (registered by healthetl.datasets.builtin)
DATASETS = (FACILITIES,)
