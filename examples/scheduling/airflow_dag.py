"""An Airflow DAG running a healthetl project: one task per pipeline, in the project's dependency
order, each pushing its JSON result to XCom (the return value of a PythonOperator's callable).

Copy it into the DAGs folder and set HEALTHETL_CONFIG (the project file) and HEALTHETL_DATABASE_URL.
It uses healthetl's Python API, so a task's failure is an exception Airflow sees (and retries), and
the task functions work without Airflow (tests call them directly).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from typing import Any

import healthetl

CONFIG = os.environ.get("HEALTHETL_CONFIG", "/srv/healthetl/healthetl.toml")


def run_pipeline(pipeline: str, config: str = CONFIG, db: str | None = None) -> dict[str, Any]:
    """One pipeline's run; what it returns is the run's JSON result, pushed to XCom."""
    result = healthetl.run(config, db=db or os.environ.get("HEALTHETL_DATABASE_URL"), pipelines=[pipeline])
    return {"pipelines": [r.report() for r in result.results], "idle": result.idle}


def pipeline_order(config: str = CONFIG) -> list[tuple[str, list[str]]]:
    """The project's pipelines with the ones each waits for (its ``depends_on``)."""
    import tomllib

    with open(config, "rb") as fh:
        project = tomllib.load(fh)
    return [(str(p["name"]), [str(d) for d in p.get("depends_on", [])]) for p in project.get("pipelines", [])]


try:
    from airflow import DAG
    from airflow.operators.python import PythonOperator
except ImportError:  # outside Airflow (tests, linting): the functions above still work
    DAG = None

if DAG is not None:
    with DAG(
        dag_id="healthetl",
        schedule="15 2 * * *",
        start_date=datetime(2025, 1, 1),
        catchup=False,
        default_args={"retries": 1, "retry_delay": timedelta(minutes=10)},
    ) as dag:
        order = pipeline_order()
        tasks = {
            name: PythonOperator(task_id=name, python_callable=run_pipeline, op_kwargs={"pipeline": name})
            for name, _ in order
        }
        for name, waits_for in order:
            for upstream in waits_for:
                tasks[upstream] >> tasks[name]
