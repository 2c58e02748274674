"""The shape of a validation failure record (a rejects file row; a quarantine row minus its run)."""

FAILURE_COLUMNS = ["source_file", "source_row", "column_name", "rule", "severity", "reason", "original"]
