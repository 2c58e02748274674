"""`healthetl report --html`: one self-contained page, identifying values masked, data escaped,
checked in headless Chromium."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from tests.browser import render_page
from tests.conftest import REPO

DIRTY = (
    "facility_name,first_name,last_name,sex,dob,phone\n"
    "General Hospital,Zebedee,Quuxworth,<script>alert(1)</script>,2090-01-01,+2348031234567\n"
    "General Hospital,Ada,Obi,F,1991-02-03,08031234567\n"
)


def _loaded(cli, tmp_path: Path) -> tuple[Path, str]:  # type: ignore[no-untyped-def]
    shutil.copytree(REPO / "examples" / "medilink", tmp_path / "medilink")
    config = tmp_path / "medilink" / "healthetl.toml"
    db = f"sqlite:///{tmp_path / 'm.db'}"
    assert cli("run", "--config", config, "--db", db).exit_code == 0
    dirty = tmp_path / "patients_new.csv"
    dirty.write_text(DIRTY, encoding="utf-8")
    loaded = cli("load", "medilink_patients", dirty, "--mode", "merge", "--config", config, "--db", db)
    assert loaded.exit_code in (0, 1), loaded.output
    return config, db


def test_report_masks_identifying_values_and_escapes_data(cli, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config, db = _loaded(cli, tmp_path)
    page = tmp_path / "report.html"
    result = cli("report", "--html", page, "--since", "2000-01-01", "--config", config, "--db", db)
    assert result.exit_code == 0, result.output
    html = page.read_text(encoding="utf-8")
    for secret in ("Zebedee", "Quuxworth", "2090-01-01", "+2348031234567", "Obi"):
        assert secret not in html
    assert "first_name=***" in html and "date_window" in html
    assert "<script>" not in html and "&lt;script&gt;" in html  # a value from the data, escaped
    # every rule is tagged with its Kahn category; the date window is plausibility
    assert re.search(r"date_window</td><td><span class=\"badge cat\">plausibility", html)
    assert re.search(r"vocabulary</td><td><span class=\"badge cat\">conformance", html)
    shown = render_page(browser, page, tmp_path / "report.png")
    assert shown.requests == [page.resolve().as_uri()]
    assert "Check history" in shown.headings and "Drift findings" in shown.headings
    labels = [c["label"] for c in shown.charts]
    assert any(label.startswith("rows failing each rule") for label in labels)
    assert all(c["ink"] > 0.01 and c["shapes"] > 0 for c in shown.charts)
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_history_draws_every_run_and_marks_failures(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config, db = _loaded(cli, tmp_path)
    bigger = tmp_path / "more.csv"
    rows = "".join(f"General Hospital,Name{i},Family{i},F,1990-01-{i:02d},\n" for i in range(1, 9))
    bigger.write_text("facility_name,first_name,last_name,sex,dob,phone\n" + rows, encoding="utf-8")
    smaller = tmp_path / "fewer.csv"
    smaller.write_text("facility_name,first_name,last_name,sex,dob,phone\n" + rows.splitlines(True)[0])
    for f in (bigger, smaller):  # 8 rows, then 1: the accepted rows drop by 88% (> 30%)
        assert (
            cli("load", "medilink_patients", f, "--mode", "merge", "--config", config, "--db", db).exit_code
            == 0
        )
    page = tmp_path / "report.html"
    assert cli("report", "--html", page, "--config", config, "--db", db).exit_code == 0
    html = page.read_text(encoding="utf-8")
    history = html[html.index('id="history"') : html.index('id="freshness"')]
    assert "<polyline" in history  # two runs or more: a line
    assert "row_count_drop" in history and "(failed)" in history  # the drop: a red dot
    assert 'stroke-dasharray="6 4"' in history  # the threshold


def test_report_selection_errors(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config, db = _loaded(cli, tmp_path)
    page = tmp_path / "r.html"
    unknown = cli("report", "--html", page, "--run-id", "nope", "--config", config, "--db", db)
    assert unknown.exit_code == 2 and "no run 'nope'" in unknown.output and not page.exists()
    bad = cli("report", "--html", page, "--since", "last week", "--config", config, "--db", db)
    assert bad.exit_code == 2 and "--since" in bad.output
    both = cli("report", "--html", page, "--last", "--since", "2025-01-01", "--config", config, "--db", db)
    assert both.exit_code == 2
    terminal = cli("report", "--since", "2025-01-01", "--config", config, "--db", db)
    assert terminal.exit_code == 2 and "--html" in terminal.output
