"""healthetl: turn health-data exports into clean, validated, queryable tables."""

__version__ = "0.1.0"
