"""The scheduling recipes in examples/scheduling, each checked: the cron line and the systemd
service's command run as written (paths moved into a temporary folder), the GitHub Actions
workflow parses and its validate step gates on the exit code, and the Airflow DAG file imports
(without Airflow) and its task function runs a pipeline through the Python API."""

from __future__ import annotations

import configparser
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

RECIPES = REPO / "examples" / "scheduling"
VISITS = REPO / "examples" / "patient-visits" / "data"


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """/srv/healthetl as the recipes expect it: the project file and the data it names."""
    root = tmp_path / "srv"
    shutil.copytree(RECIPES, root / "examples" / "scheduling")
    shutil.copytree(REPO / "examples" / "patient-visits", root / "examples" / "patient-visits")
    return root / "examples" / "scheduling"


def _env(tmp_path: Path) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)  # where pip put the healthetl command
    return {
        **os.environ,
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "HEALTHETL_DATABASE_URL": f"sqlite:///{tmp_path / 'scheduled.db'}",
    }


def _moved(command: str, site: Path, logs: Path) -> str:
    return command.replace("/srv/healthetl", str(site)).replace("/var/log/healthetl", str(logs))


def test_the_cron_line_runs_and_appends_one_result_per_run(site: Path, tmp_path: Path) -> None:
    lines = [
        line for line in (RECIPES / "crontab").read_text().splitlines() if line and not line.startswith("#")
    ]
    (entry,) = lines
    fields = entry.split(None, 5)
    for field in fields[:5]:  # minute hour day month weekday
        assert re.fullmatch(r"[\d*/,-]+", field), field
    logs = tmp_path / "logs"
    logs.mkdir()
    for _ in range(2):
        done = subprocess.run(
            ["bash", "-c", _moved(fields[5], site, logs)], env=_env(tmp_path), capture_output=True, text=True
        )
        assert done.returncode == 0, (logs / "runs.log").read_text()
    results = [json.loads(line) for line in (logs / "runs.jsonl").read_text().splitlines()]
    assert len(results) == 2
    assert results[0]["pipelines"][0]["status"] == "succeeded"
    assert "succeeded" in (logs / "runs.log").read_text()  # the logs went to the other file


def test_the_systemd_units_are_well_formed_and_the_service_command_runs(site: Path, tmp_path: Path) -> None:
    service = configparser.ConfigParser(strict=False, interpolation=None)
    service.read(RECIPES / "healthetl.service")
    timer = configparser.ConfigParser(strict=False, interpolation=None)
    timer.read(RECIPES / "healthetl.timer")
    assert service["Service"]["Type"] == "oneshot"
    assert timer["Timer"]["OnCalendar"] and timer["Install"]["WantedBy"] == "timers.target"
    workdir = _moved(service["Service"]["WorkingDirectory"], site, tmp_path)
    done = subprocess.run(
        ["bash", "-c", service["Service"]["ExecStart"]],
        cwd=workdir,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["pipelines"][0]["dataset"] == "visits"


def test_the_github_workflow_gates_on_the_validate_exit_code(tmp_path: Path) -> None:
    workflow = yaml.safe_load((RECIPES / "github-workflow.yml").read_text())
    steps = workflow["jobs"]["validate"]["steps"]
    (gate,) = [s for s in steps if "healthetl validate" in s.get("run", "")]
    repo = tmp_path / "pr"
    (repo / "data" / "visits").mkdir(parents=True)
    source = next(VISITS.glob("*.csv"))  # the example's file: two of its rows fail their checks
    clean = subprocess.run(
        [
            "healthetl",
            "validate",
            "visits",
            str(source),
            "-o",
            str(repo / "data" / "visits" / "a_clean.csv"),
            "-f",
            "json",
        ],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
    )
    assert clean.returncode == 1  # the rows it rejected are why the gate exists
    rejected = json.loads(clean.stdout)["rows_quarantined"]
    assert rejected > 0
    run = ["bash", "-e", "-c", gate["run"]]  # GitHub runs a step's script with bash -e
    passed = subprocess.run(run, cwd=repo, env=_env(tmp_path), capture_output=True, text=True)
    assert passed.returncode == 0, passed.stderr
    assert [p.name for p in (repo / "dq").iterdir()] == ["a_clean.json"]

    shutil.copy(source, repo / "data" / "visits" / "b_delivered.csv")
    failed = subprocess.run(run, cwd=repo, env=_env(tmp_path), capture_output=True, text=True)
    assert failed.returncode == 1  # the pull request's check fails on the file with invalid rows
    assert json.loads((repo / "dq" / "b_delivered.json").read_text())["rows_quarantined"] == rejected


def test_the_airflow_dag_file_imports_and_its_task_runs_a_pipeline(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = site / "healthetl.toml"
    monkeypatch.setenv("HEALTHETL_CONFIG", str(config))
    spec = importlib.util.spec_from_file_location("healthetl_dag", RECIPES / "airflow_dag.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.pipeline_order(str(config)) == [("visits", [])]
    xcom = module.run_pipeline("visits", str(config), f"sqlite:///{tmp_path / 'airflow.db'}")
    (report,) = json.loads(json.dumps(xcom, default=str))["pipelines"]  # XCom needs JSON
    assert report["status"] == "succeeded"
    assert report["counts"]["rows_in"] == sum(
        len(p.read_text().splitlines()) - 1 for p in VISITS.glob("*.csv")
    )
