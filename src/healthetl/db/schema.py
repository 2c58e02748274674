"""healthetl's own tables: the run ledger, audit log, loaded files, state, data-quality results
and quarantine. The datasets' tables are built from their declarations by the catalog
(:mod:`healthetl.catalog`), whose metadata (these tables plus the datasets') is what Alembic's
autogenerate and ``alembic check`` compare migrations against; nothing in healthetl ever calls
``create_all``.
"""

from __future__ import annotations

import sqlalchemy as sa

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

etl_runs = sa.Table(
    "etl_runs",
    metadata,
    sa.Column("run_id", sa.String(40), primary_key=True),
    sa.Column("pipeline", sa.Text, nullable=False),
    sa.Column("dataset", sa.Text, nullable=False),
    sa.Column("command", sa.String(20), nullable=False),
    sa.Column("mode", sa.String(20), nullable=True),
    sa.Column("source", sa.Text, nullable=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column(
        "rows_read",
        sa.BigInteger,
        nullable=False,
        server_default="0",
        comment="rows read from the sources, before the incremental window",
    ),
    sa.Column(
        "rows_skipped",
        sa.BigInteger,
        nullable=False,
        server_default="0",
        comment="rows older than the incremental window: not taken",
    ),
    sa.Column("rows_in", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("rows_loaded", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("rows_quarantined", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("duplicates_dropped", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("rows_warned", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column(
        "rows_rolled_back",
        sa.BigInteger,
        nullable=False,
        server_default="0",
        comment="valid rows of a failed run: not loaded because the run's transaction rolled back",
    ),
    sa.Column("error", sa.Text, nullable=True),
    comment="One row per pipeline execution (the run ledger).",
)
sa.Index("ix_etl_runs_pipeline_started", etl_runs.c.pipeline, etl_runs.c.started_at)

quarantine = sa.Table(
    "quarantine",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("run_id", sa.String(40), sa.ForeignKey("etl_runs.run_id"), nullable=False),
    sa.Column("dataset", sa.Text, nullable=False),
    sa.Column("source_file", sa.Text, nullable=True),
    sa.Column("source_row", sa.BigInteger, nullable=True),
    sa.Column("column_name", sa.Text, nullable=True),
    sa.Column("rule", sa.Text, nullable=False),
    sa.Column("severity", sa.String(10), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("original", sa.Text, nullable=True, comment="the row as received, JSON"),
    sa.Column(
        "status",
        sa.String(10),
        nullable=False,
        server_default="open",
        comment="open | replayed (loaded by a later run) | resolved (dealt with by hand)",
    ),
    sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("resolved_by", sa.String(40), nullable=True, comment="the replay run that loaded the row"),
    sa.Column("note", sa.Text, nullable=True, comment="why the row was resolved"),
    comment="One row per failed check of a rejected row; the row itself is in `original`.",
)
sa.Index("ix_quarantine_run_id", quarantine.c.run_id)
sa.Index("ix_quarantine_dataset_status", quarantine.c.dataset, quarantine.c.status)

pipeline_state = sa.Table(
    "pipeline_state",
    metadata,
    sa.Column("pipeline", sa.Text, primary_key=True),
    sa.Column(
        "watermark",
        sa.DateTime(timezone=True),
        nullable=True,
        comment="greatest cursor value of the rows the last successful load committed",
    ),
    sa.Column("lookback_hours", sa.Float, nullable=True),
    sa.Column("last_run_id", sa.String(40), nullable=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    comment="Incremental state per pipeline, written in the same transaction as its load.",
)

state_audit = sa.Table(
    "state_audit",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("pipeline", sa.Text, nullable=False),
    sa.Column("action", sa.String(20), nullable=False),
    sa.Column("previous_watermark", sa.DateTime(timezone=True), nullable=True),
    sa.Column("new_watermark", sa.DateTime(timezone=True), nullable=True),
    sa.Column("detail", sa.Text, nullable=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    comment="Every manual change of pipeline state (set, reset, import), with the previous value.",
)

dq_results = sa.Table(
    "dq_results",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(40), sa.ForeignKey("etl_runs.run_id"), nullable=False),
    sa.Column("pipeline", sa.Text, nullable=False),
    sa.Column("check_name", sa.Text, nullable=False),
    sa.Column("column_name", sa.Text, nullable=True),
    sa.Column("severity", sa.String(10), nullable=False),
    sa.Column("observed", sa.Float, nullable=True),
    sa.Column("threshold", sa.Float, nullable=True),
    sa.Column("passed", sa.Boolean(create_constraint=False), nullable=False),
    sa.Column("detail", sa.Text, nullable=True),
    comment="Batch-level data-quality checks of every run (history for `healthetl report`).",
)
sa.Index("ix_dq_results_run_id", dq_results.c.run_id)

loaded_files = sa.Table(
    "loaded_files",
    metadata,
    sa.Column("pipeline", sa.Text, primary_key=True),
    sa.Column("file_sha256", sa.String(64), primary_key=True),
    sa.Column("file_name", sa.Text, nullable=False),
    sa.Column("run_id", sa.String(40), sa.ForeignKey("etl_runs.run_id"), nullable=False),
    sa.Column("loaded_at", sa.DateTime(timezone=True), nullable=False),
    comment="Files an inbox pipeline has loaded, by content: a re-delivered file is skipped.",
)
sa.Index("ix_loaded_files_run_id", loaded_files.c.run_id)

api_pages = sa.Table(
    "api_pages",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(40), sa.ForeignKey("etl_runs.run_id"), nullable=False),
    sa.Column("pipeline", sa.Text, nullable=False),
    sa.Column("page", sa.Integer, nullable=False, comment="1-based, in the order fetched"),
    sa.Column("url", sa.Text, nullable=False, comment="as fetched, secrets masked"),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("next", sa.Text, nullable=True, comment="the page number, offset, cursor or link that led on"),
    sa.Column("body", sa.Text, nullable=False, comment="the response body as received"),
    comment="Pages an API pipeline fetched, as received; `--from-raw RUN_ID` replays from them.",
)
sa.Index("ix_api_pages_run_id", api_pages.c.run_id)

etl_audit_log = sa.Table(
    "etl_audit_log",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(40), sa.ForeignKey("etl_runs.run_id"), nullable=False, comment="the batch"),
    sa.Column("pipeline", sa.Text, nullable=False),
    sa.Column("table_name", sa.Text, nullable=False),
    sa.Column("rows_processed", sa.BigInteger, nullable=False),
    sa.Column("inserted", sa.BigInteger, nullable=False),
    sa.Column("updated", sa.BigInteger, nullable=False),
    sa.Column("unchanged", sa.BigInteger, nullable=False),
    sa.Column("quarantined", sa.BigInteger, nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    comment="One row per table per batch: what the batch did to it.",
)
sa.Index("ix_etl_audit_log_run_id", etl_audit_log.c.run_id)

api_access_log = sa.Table(
    "api_access_log",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column(
        "token", sa.Text, nullable=False, comment="the token's name (`loopback`: no tokens configured)"
    ),
    sa.Column("client", sa.Text, nullable=True, comment="the client's address"),
    sa.Column("method", sa.String(10), nullable=False),
    sa.Column("endpoint", sa.Text, nullable=False, comment="the route, e.g. /datasets/{name}/rows"),
    sa.Column("dataset", sa.Text, nullable=True),
    sa.Column("rows", sa.BigInteger, nullable=False, comment="rows returned with identifying values"),
    sa.Column("columns", sa.Text, nullable=False, comment="the identifying columns returned"),
    comment="Every `healthetl serve` response that returned values of identifying columns.",
)
sa.Index("ix_api_access_log_at", api_access_log.c.at)
