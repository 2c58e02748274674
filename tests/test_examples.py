"""Every examples/<name>/healthetl.toml runs end to end and accounts for every row."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.browser import render_page
from tests.conftest import REPO

EXAMPLES = sorted(p.parent.name for p in (REPO / "examples").glob("*/healthetl.toml"))


def test_there_are_examples() -> None:
    assert {"vip-healthtech", "noshow"} <= set(EXAMPLES)


@contextmanager
def served(name: str, tmp_path: Path) -> Iterator[Path]:
    """The example's project file; an example that reads an API serves it (its ``serve.py``, on
    a free port, stopped afterwards) and is run from a copy pointed at that port."""
    folder = REPO / "examples" / name
    if not (folder / "serve.py").exists():
        yield folder / "healthetl.toml"
        return
    proc = subprocess.Popen(
        [sys.executable, str(folder / "serve.py"), "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip().removeprefix("serving ").rsplit("/", 1)[0]
        assert url.startswith("http://127.0.0.1:"), url
        copy = tmp_path / name
        shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("*.db"))
        config = copy / "healthetl.toml"
        config.write_text(
            config.read_text(encoding="utf-8").replace("http://127.0.0.1:8765", url), encoding="utf-8"
        )
        yield config
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs(cli, browser, name: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db = f"sqlite:///{tmp_path / 'example.db'}"
    with served(name, tmp_path) as config:
        _runs(cli, config, db)
        _html_report(cli, browser, config, db, tmp_path)


def _html_report(cli, browser, config: Path, db: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The example's HTML data-quality report, as headless Chromium renders it: charts drawn,
    nothing fetched."""
    page = tmp_path / "report.html"
    result = cli("report", "--html", page, "--config", config, "--db", db)
    assert result.exit_code == 0, result.output
    assert page.stat().st_size < 1024 * 1024
    shown = render_page(browser, page)
    assert shown.requests == [page.resolve().as_uri()], "the report fetched something"
    assert {"Summary by data-quality category", "Row accounting", "Check history", "Freshness"} <= set(
        shown.headings
    )
    assert shown.charts, "no chart rendered"
    for chart in shown.charts:
        assert chart["width"] > 100 and chart["height"] > 10, chart
        assert chart["shapes"] > 0 and chart["ink"] > 0.01, chart


def _runs(cli, config: Path, db: str) -> None:  # type: ignore[no-untyped-def]
    result = cli("run", "--config", config, "--db", db)
    assert result.exit_code == 0, result.output
    runs = json.loads(cli("report", "--last", "-f", "json", "--config", config, "--db", db).stdout)
    assert runs, "the example ran no pipeline"
    for run in runs:
        assert run["status"] == "succeeded"
        assert run["rows_loaded"] > 0
        assert run["rows_in"] == run["rows_loaded"] + run["rows_quarantined"] + run["duplicates_dropped"]
