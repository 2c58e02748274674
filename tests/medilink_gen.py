"""Generates Medilink exports in the README's exact layout, larger than the samples and with
deliberate defects, and says what a correct load must do with every row."""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

STATES = [("LAGOS", "Ikeja"), ("KANO", "Kano Municipal"), ("OYO", "Ibadan North"), ("RIVERS", "Obio-Akpor")]
FIRST = ["John", "Jane", "Ada", "Musa", "Ngozi", "Tunde", "Aisha", "Emeka", "Bola", "Chidi"]
LAST = ["Doe", "Smith", "Okafor", "Bello", "Adeyemi", "Eze", "Yusuf", "Obi", "Lawal", "Nwosu"]


@dataclass
class Batch:
    facilities: list[dict[str, str]] = field(default_factory=list)
    patients: list[dict[str, str]] = field(default_factory=list)
    records: list[dict[str, str]] = field(default_factory=list)
    visits: list[dict[str, str]] = field(default_factory=list)
    #: (file kind, row number) -> the rule that must reject it
    defects: dict[tuple[str, int], str] = field(default_factory=dict)

    def good(self, kind: str) -> list[dict[str, str]]:
        rows = getattr(self, kind)
        return [r for i, r in enumerate(rows, start=1) if (kind, i) not in self.defects]

    def write(self, folder: Path, suffix: str = "") -> None:
        folder.mkdir(parents=True, exist_ok=True)
        layouts = {
            "facilities": ["name", "state", "lga", "lat", "lon", "type"],
            "patients": ["facility_name", "first_name", "last_name", "sex", "dob", "phone"],
            "records": [
                "facility_name",
                "patient_first_name",
                "patient_last_name",
                "record_type",
                "diagnosis",
                "treatment",
                "medications",
                "notes",
            ],
            "visits": [
                "facility_name",
                "patient_first_name",
                "patient_last_name",
                "triage_level",
                "chief_complaint",
                "vital_signs",
                "conditions",
                "recommendations",
                "visit_date",
            ],
        }
        names = {
            "facilities": "facilities",
            "patients": "patients",
            "records": "medical_records",
            "visits": "triage_visits",
        }
        for kind, header in layouts.items():
            with (folder / f"{names[kind]}{suffix}.csv").open("w", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, fieldnames=header)
                writer.writeheader()
                writer.writerows(getattr(self, kind))


def generate(seed: int = 1, facilities: int = 6, patients: int = 60, today: date | None = None) -> Batch:
    rng = random.Random(seed)
    today = today or date.today()
    b = Batch()
    for i in range(facilities):
        state, lga = STATES[i % len(STATES)]
        b.facilities.append(
            {
                "name": f"Facility {i} Hospital",
                "state": state,
                "lga": lga,
                "lat": f"{rng.uniform(4, 13):.4f}",
                "lon": f"{rng.uniform(3, 14):.4f}",
                "type": "Hospital",
            }
        )
    b.facilities.append(
        {
            "name": "Broken Coordinates Clinic",
            "state": "LAGOS",
            "lga": "Ikeja",
            "lat": "123.0",
            "lon": "3.3",
            "type": "Clinic",
        }
    )
    b.defects[("facilities", len(b.facilities))] = "range"
    names = [f["name"] for f in b.facilities[:facilities]]
    people = set()
    while len(b.patients) < patients:
        first, last, fac = rng.choice(FIRST), rng.choice(LAST), rng.choice(names)
        if (first, last, fac) in people:
            continue
        people.add((first, last, fac))
        dob = today - timedelta(days=rng.randint(0, 95 * 365))
        b.patients.append(
            {
                "facility_name": fac,
                "first_name": first,
                "last_name": last,
                "sex": rng.choice(["M", "F", "male", "Female"]),
                "dob": dob.isoformat(),
                "phone": f"0803{rng.randint(1000000, 9999999)}",
            }
        )
    defects = [
        ({"facility_name": "Nowhere Clinic"}, "reference"),  # an orphan
        ({"sex": "X"}, "vocabulary"),
        ({"dob": (today + timedelta(days=30)).isoformat()}, "date_window"),  # born in the future
        ({"dob": "1890-01-01"}, "date_window"),  # implausible age
    ]
    for change, rule in defects:
        base = dict(b.patients[0])
        base.update(first_name="Defect", last_name=f"Case{len(b.patients)}", **change)
        b.patients.append(base)
        b.defects[("patients", len(b.patients))] = rule
    good_patients = b.good("patients")
    for n in range(patients):
        p = good_patients[n % len(good_patients)]
        who = {
            "facility_name": p["facility_name"],
            "patient_first_name": p["first_name"],
            "patient_last_name": p["last_name"],
        }
        b.records.append(
            {
                **who,
                "record_type": "Consultation",
                "diagnosis": f"Diagnosis {n}",
                "treatment": "Medication",
                "medications": "Amlodipine 5mg",
                "notes": "Monitor",
            }
        )
        day = today - timedelta(days=rng.randint(0, 20))
        b.visits.append(
            {
                **who,
                "triage_level": str(rng.randint(1, 5)),
                "chief_complaint": f"Complaint {n}",
                "vital_signs": "BP: 140/90",
                "conditions": "Hypertension",
                "recommendations": "Follow-up",
                "visit_date": day.isoformat(),
            }
        )
    b.records.append(
        {
            "facility_name": names[0],
            "patient_first_name": "Nobody",
            "patient_last_name": "Known",
            "record_type": "Consultation",
            "diagnosis": "X",
            "treatment": "Y",
            "medications": "",
            "notes": "",
        }
    )
    b.defects[("records", len(b.records))] = "reference"
    bad_visit = dict(b.visits[0], triage_level="7", chief_complaint="Too high")
    b.visits.append(bad_visit)
    b.defects[("visits", len(b.visits))] = "range"
    return b
