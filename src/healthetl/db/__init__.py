"""Database access: URLs and engines, table metadata, migrations, bulk loads, queries."""
