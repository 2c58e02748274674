"""Every examples/<name>/healthetl.toml runs end to end and accounts for every row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import REPO

EXAMPLES = sorted(p.parent.name for p in (REPO / "examples").glob("*/healthetl.toml"))


def test_there_are_examples() -> None:
    assert {"vip-healthtech", "noshow"} <= set(EXAMPLES)


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs(cli, name: str, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'example.db'}"
    config = REPO / "examples" / name / "healthetl.toml"
    result = cli("run", "--config", config, "--db", db)
    assert result.exit_code == 0, result.output
    runs = json.loads(cli("report", "--last", "-f", "json", "--config", config, "--db", db).stdout)
    assert runs, "the example ran no pipeline"
    for run in runs:
        assert run["status"] == "succeeded"
        assert run["rows_loaded"] > 0
        assert run["rows_in"] == run["rows_loaded"] + run["rows_quarantined"] + run["duplicates_dropped"]
