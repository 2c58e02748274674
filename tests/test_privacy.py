"""Small-cell suppression of person counts in named queries."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from healthetl.privacy import suppress
from tests.conftest import REPO


def test_small_counts_are_hidden_with_a_complement() -> None:
    columns = ["age_group", "patients", "visits"]
    rows = [("0-17", 3, 40), ("18-39", 25, 2), ("40-64", 12, 90), ("65+", 0, 7)]
    out = suppress(columns, rows, ["patients"], 11)
    # 3 is small; alone in its column, so the next smallest (12) goes too; 0 identifies no one;
    # visits are not a person count
    assert [r[1] for r in out.rows] == ["<11", 25, "<11", 0]
    assert [r[2] for r in out.rows] == [40, 2, 90, 7]
    assert out.cells == 2
    two_small = suppress(columns, [("a", 1, 0), ("b", 2, 0), ("c", 50, 0)], ["patients"], 11)
    assert [r[1] for r in two_small.rows] == ["<11", "<11", 50]  # two hidden: no complement needed
    assert suppress(columns, rows, ["patients"], 0).rows == rows  # 0 turns it off
    assert suppress(columns, rows, ["patients"], 3).rows[0][1] == 3  # a lower threshold


def test_named_queries_suppress_person_counts(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    project = tmp_path / "medilink"
    shutil.copytree(REPO / "examples" / "medilink", project)
    config, db = project / "healthetl.toml", f"sqlite:///{tmp_path / 'm.db'}"
    assert cli("run", "--config", config, "--db", db).exit_code == 0
    hidden = cli("query", "patients-by-age-group", "-f", "json", "--config", config, "--db", db)
    assert hidden.exit_code == 0, hidden.output
    rows = json.loads(hidden.stdout)
    assert rows and all(r["patients"] == "<11" for r in rows)  # two patients: every cell is small
    shown = cli(
        "query",
        "patients-by-age-group",
        "-f",
        "json",
        "--min-cell-count",
        "0",
        "--config",
        config,
        "--db",
        db,
    )
    assert shown.exit_code == 0
    assert sum(r["patients"] for r in json.loads(shown.stdout)) == 2
    assert "small-cell suppression is off" in shown.output  # said, on stderr
    # the project file sets the threshold too
    text = config.read_text(encoding="utf-8")
    config.write_text("[privacy]\nmin_cell_count = 1\n\n" + text, encoding="utf-8")
    relaxed = cli("query", "patients-by-age-group", "-f", "json", "--config", config, "--db", db)
    assert sum(r["patients"] for r in json.loads(relaxed.stdout)) == 2
    # ad-hoc SQL declares no person counts
    adhoc = cli(
        "query",
        "--sql",
        "SELECT COUNT(*) AS n FROM medilink_patients",
        "-f",
        "json",
        "--config",
        config,
        "--db",
        db,
    )
    assert json.loads(adhoc.stdout) == [{"n": 2}]
