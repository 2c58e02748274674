"""Expected answers computed from the source workbooks with an independent reader (openpyxl)
and plain Python, following the rules the README documents. Nothing here calls healthetl."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import openpyxl


def _cells(path: Path) -> list[dict[str, object]]:
    wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    ws = wb.worksheets[0]
    rows = ws.iter_rows(values_only=True)
    header = [str(h).strip().lower() for h in next(rows)]
    out = [dict(zip(header, r, strict=False)) for r in rows]
    wb.close()
    return out


def _int(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int):
        return value
    text = str(value).strip()
    # documented rule: digits, optionally with a zero fraction as spreadsheets write floats
    match = re.fullmatch(r"\+?(\d+)(?:\.0+)?", text)
    return int(match.group(1)) if match else None


def _date(value: object) -> date | None:
    text = str(value).strip()
    for fmt in ("%Y-%m-%d", "%m/%d/%Y", "%Y/%m/%d"):
        try:
            return datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    return None


STATUS = {"confirmed": "confirmed", "cancelled": "cancelled", "canceled": "cancelled"}


@dataclass
class Clinic:
    doctors: dict[int, str]
    rows_in: int = 0
    valid: list[dict[str, object]] = field(default_factory=list)
    rejected_rows: set[int] = field(default_factory=set)

    def confirmed_per_doctor(self) -> dict[str, int]:
        counts = Counter(
            self.doctors[a["doctor_id"]]  # type: ignore[index]
            for a in self.valid
            if a["status"] == "confirmed"
        )
        return {name: counts.get(name, 0) for name in self.doctors.values()}

    def patient_confirmed(self, patient_id: int) -> list[int]:
        return sorted(
            a["booking_id"]  # type: ignore[misc]
            for a in self.valid
            if a["patient_id"] == patient_id and a["status"] == "confirmed"
        )

    def cancelled_between(self, start: date, end: date) -> list[int]:
        return sorted(
            a["booking_id"]  # type: ignore[misc]
            for a in self.valid
            if a["status"] == "cancelled" and start <= a["booking_date"] <= end  # type: ignore[operator]
        )


def clinic(folder: Path, window: tuple[date, date]) -> Clinic:
    doctors = {int(r["doctor_id"]): str(r["name"]) for r in _cells(folder / "doctors.xlsx")}  # type: ignore[arg-type]
    result = Clinic(doctors)
    seen: set[int] = set()
    for i, r in enumerate(_cells(folder / "appointments.xlsx"), start=1):
        result.rows_in += 1
        booking, patient, doctor = (
            _int(r["booking_id"]),
            _int(r["patient_id"]),
            _int(r["doctor_id"]),
        )
        day = _date(r["booking_date"])
        status = STATUS.get(re.sub(r"[^a-z]", "", str(r["status"] or "").lower()))
        ok = (
            booking is not None
            and booking not in seen
            and patient is not None
            and doctor in doctors
            and day is not None
            and window[0] <= day <= window[1]
            and status is not None
        )
        if not ok:
            result.rejected_rows.add(i)
            continue
        seen.add(booking)  # type: ignore[arg-type]
        result.valid.append(
            {
                "booking_id": booking,
                "patient_id": patient,
                "doctor_id": doctor,
                "booking_date": day,
                "status": status,
            }
        )
    return result
