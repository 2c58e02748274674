"""FHIR R4 resource types healthetl loads from a Bulk Data export, and where: one built-in dataset
per type (declared in :mod:`healthetl.datasets.builtin.fhir`). A pipeline with
``datasets = "fhir"`` reads an export folder (``<ResourceType>.*.ndjson[.gz]``) or its
``manifest.json`` into them."""

from __future__ import annotations

#: resource type -> dataset (and table) name
RESOURCES = {
    "Patient": "fhir_patient",
    "Encounter": "fhir_encounter",
    "Condition": "fhir_condition",
    "Observation": "fhir_observation",
    "MedicationRequest": "fhir_medication_request",
    "Procedure": "fhir_procedure",
    "Immunization": "fhir_immunization",
    "AllergyIntolerance": "fhir_allergy_intolerance",
    "Organization": "fhir_organization",
    "Practitioner": "fhir_practitioner",
    "Location": "fhir_location",
}


def file_patterns() -> dict[str, str]:
    """Dataset -> the file names of its resource type in an export folder."""
    return {dataset: f"{resource}.*ndjson*" for resource, dataset in RESOURCES.items()}
