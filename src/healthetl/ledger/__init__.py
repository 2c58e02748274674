"""The bookkeeping tables, one module each: every statement on them lives here.

- ``runs``: the run ledger (``etl_runs``), one row per execution, and the per-pipeline lock.
- ``audit``: what each batch did to each table (``etl_audit_log``).
- ``files``: files an inbox pipeline or the raw layer already holds (``loaded_files``).
- ``watermarks``: incremental state (``pipeline_state``) and its manual changes (``state_audit``).
- ``checks``: batch-level data-quality results (``dq_results``).
- ``quarantine``: rejected rows and their lifecycle (``quarantine``).
- ``report``: the views the command line shows, assembled from the above.

The stages call these at their boundaries; the command line reads through ``report``.
"""
