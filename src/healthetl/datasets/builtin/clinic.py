"""The clinic's doctors and appointments, as exported to Excel by its scheduling system."""

from __future__ import annotations

from healthetl.datasets.spec import Column, Dataset, Param, Query

DOCTORS = Dataset(
    name="doctors",
    description="Doctors of a clinic: one row per doctor.",
    table="doctors",
    primary_key=("doctor_id",),
    columns=(
        Column("doctor_id", "integer", required=True, description="The clinic's doctor id"),
        Column("name", "text", required=True, description="Display name"),
        Column("specialty", "text", description="Clinical specialty"),
    ),
    renames={"id": "doctor_id", "doctor_name": "name", "speciality": "specialty"},
)

APPOINTMENTS = Dataset(
    name="appointments",
    description="Appointment bookings: one row per booking.",
    table="appointments",
    primary_key=("booking_id",),
    columns=(
        Column("booking_id", "integer", required=True, description="Booking id"),
        Column(
            "patient_id",
            "integer",
            required=True,
            identifying=True,
            description="Patient id (identifying: never shown in messages)",
        ),
        Column(
            "doctor_id",
            "integer",
            required=True,
            references="doctors.doctor_id",
            description="Doctor seen; must be a loaded doctor",
        ),
        Column(
            "booking_date",
            "date",
            required=True,
            date_window=("2000-01-01", "today+2y"),
            description="Date of the appointment",
        ),
        Column(
            "status",
            "text",
            required=True,
            vocabulary={"confirmed": ("confirm",), "cancelled": ("canceled", "cancel")},
            description="confirmed | cancelled",
        ),
    ),
    renames={"appointment_id": "booking_id", "date": "booking_date"},
    queries=(
        Query(
            "most-confirmed-doctor",
            "The doctor (or doctors, on a tie) with the most confirmed appointments.",
            """
            WITH per_doctor AS (
                SELECT d.doctor_id, d.name, COUNT(*) AS confirmed_appointments
                FROM appointments a JOIN doctors d ON d.doctor_id = a.doctor_id
                WHERE a.status = 'confirmed'
                GROUP BY d.doctor_id, d.name
            )
            SELECT doctor_id, name, confirmed_appointments FROM per_doctor
            WHERE confirmed_appointments = (SELECT MAX(confirmed_appointments) FROM per_doctor)
            ORDER BY doctor_id
            """,
        ),
        Query(
            "patient-confirmed-appointments",
            "Confirmed appointments of one patient (--param patient_id=34).",
            """
            SELECT a.booking_id, a.booking_date, a.doctor_id, d.name AS doctor_name
            FROM appointments a LEFT JOIN doctors d ON d.doctor_id = a.doctor_id
            WHERE a.patient_id = :patient_id AND a.status = 'confirmed'
            ORDER BY a.booking_date, a.booking_id
            """,
            {"patient_id": Param("integer", help="the patient's id")},
        ),
        Query(
            "cancelled-between",
            "Cancelled appointments between two dates, both inclusive "
            "(--param start=2025-10-21 --param end=2025-10-24).",
            """
            SELECT a.booking_id, a.booking_date, a.doctor_id, d.name AS doctor_name
            FROM appointments a LEFT JOIN doctors d ON d.doctor_id = a.doctor_id
            WHERE a.status = 'cancelled' AND a.booking_date BETWEEN :start AND :end
            ORDER BY a.booking_date, a.booking_id
            """,
            {
                "start": Param("date", help="first day, inclusive"),
                "end": Param("date", help="last day, inclusive"),
            },
        ),
        Query(
            "confirmed-per-doctor",
            "Confirmed appointments per doctor, every doctor listed (zero included).",
            """
            SELECT d.doctor_id, d.name, COUNT(a.booking_id) AS confirmed_appointments
            FROM doctors d
            LEFT JOIN appointments a ON a.doctor_id = d.doctor_id AND a.status = 'confirmed'
            GROUP BY d.doctor_id, d.name
            ORDER BY confirmed_appointments DESC, d.doctor_id
            """,
        ),
    ),
)

#: the datasets this module declares (registered by healthetl.datasets.builtin)
DATASETS = (DOCTORS, APPOINTMENTS)
