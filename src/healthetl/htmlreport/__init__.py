"""``healthetl report --html``: one self-contained HTML data-quality report (inline styles, charts
as inline SVG, no script, nothing fetched), assembled from the ledger's tables.

Per run: the row accounting, what it did to each table, the rules rows failed (by column and rule,
with their reasons and a few rejected rows, identifying and undeclared fields masked), the batch
checks against their thresholds; across runs: every check's history, each pipeline's freshness,
drift findings, and a summary by Kahn's data-quality categories.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from markupsafe import Markup
from sqlalchemy.engine import Engine

from healthetl import __version__
from healthetl.catalog import Catalog
from healthetl.datasets.categories import CATEGORIES, category
from healthetl.db.engine import mask_url
from healthetl.htmlreport import charts
from healthetl.ledger import audit, dq, quarantine, runs, watermarks

#: at most this many runs in one report (``--since`` over a long history): the newest
MAX_RUNS = 60
#: rejected rows shown per run, column and rule
EXAMPLES_PER_RULE = 3


@dataclass
class Report:
    title: str
    generated_at: str
    database: str
    selection: str
    runs: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    freshness: list[dict[str, Any]] = field(default_factory=list)
    drift: list[dict[str, Any]] = field(default_factory=list)
    categories: list[dict[str, Any]] = field(default_factory=list)
    left_out: int = 0


def collect(
    engine: Engine,
    catalog: Catalog,
    *,
    pipeline: str | None = None,
    run_id: str | None = None,
    since: datetime | None = None,
) -> Report:
    """What the report shows: the runs chosen (one run, every run since a date, or the latest run
    of each pipeline), each pipeline's check history and freshness."""
    if run_id is not None:
        chosen, selection = runs.runs(engine, run_id=run_id, limit=None), f"run {run_id}"
    elif since is not None:
        chosen = runs.runs(engine, pipeline=pipeline, since=since, limit=None)
        selection = f"runs since {since:%Y-%m-%d}"
    else:
        chosen, selection = (
            list(reversed(runs.latest_per_pipeline(engine))),
            "the latest run of each pipeline",
        )
    if pipeline:
        chosen = [r for r in chosen if r["pipeline"] == pipeline]
        selection += f", pipeline {pipeline}"
    left_out = max(len(chosen) - MAX_RUNS, 0)
    chosen = chosen[:MAX_RUNS]
    ids = [r["run_id"] for r in chosen]
    tables = audit.entries(engine, run_ids=ids)
    rules = quarantine.rule_counts(engine, ids)
    checks = dq.history(engine, None, run_ids=ids)
    examples = quarantine.examples(engine, ids, EXAMPLES_PER_RULE)
    report = Report(
        title="healthetl data-quality report",
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        database=mask_url(engine.url),
        selection=selection,
        left_out=left_out,
    )
    for r in chosen:
        report.runs.append(_run(catalog, r, tables, rules, checks, examples))
    pipelines = sorted({r["pipeline"] for r in chosen})
    report.history = _history(engine, pipelines)
    report.freshness = _freshness(engine, pipelines, report.history)
    report.drift = [c for c in checks if c["check_name"].startswith("drift_")]
    report.categories = _categories(report.runs)
    return report


def _run(
    catalog: Catalog,
    r: dict[str, Any],
    tables: list[dict[str, Any]],
    rules: list[dict[str, Any]],
    checks: list[dict[str, Any]],
    examples: list[dict[str, Any]],
) -> dict[str, Any]:
    run_id = r["run_id"]
    accounting = [
        ("loaded", float(r["rows_loaded"] or 0), charts.GREEN),
        ("quarantined", float(r["rows_quarantined"] or 0), charts.RED),
        ("duplicates dropped", float(r["duplicates_dropped"] or 0), charts.AMBER),
        ("rolled back", float(r["rows_rolled_back"] or 0), charts.PURPLE),
    ]
    written = []
    for t in (t for t in tables if t["run_id"] == run_id):
        written.append(
            {
                **t,
                "chart": charts.stacked_bar(
                    f"{t['table_name']}: inserted, updated, unchanged, quarantined",
                    [
                        ("inserted", float(t["inserted"]), charts.GREEN),
                        ("updated", float(t["updated"]), charts.BLUE),
                        ("unchanged", float(t["unchanged"]), charts.GREY),
                        ("quarantined", float(t["quarantined"]), charts.RED),
                    ],
                    width=420,
                ),
            }
        )
    failed = []
    for rule in (x for x in rules if x["run_id"] == run_id):
        shown = [
            e
            for e in examples
            if e["run_id"] == run_id and e["column_name"] == rule["column_name"] and e["rule"] == rule["rule"]
        ]
        for e in shown:
            e["fields"] = quarantine.masked(
                e["original"], quarantine.visible_fields(catalog, str(e["dataset"]))
            )
        failed.append(
            {
                **rule,
                "category": category(str(rule["rule"])),
                "reasons": sorted({str(e["reason"]) for e in shown}),
                "examples": shown,
            }
        )
    run_checks = [
        {
            **c,
            "category": category(str(c["check_name"])),
            "chart": charts.bullet(
                f"{c['check_name']}: observed against threshold", c["observed"], c["threshold"], c["passed"]
            ),
        }
        for c in checks
        if c["run_id"] == run_id
    ]
    rule_chart = charts.bars(
        f"rows failing each rule, run {run_id}",
        [
            (
                f"{x['column_name'] or '(row)'} · {x['rule']}",
                float(x["failures"]),
                charts.RED if x["severity"] == "error" else charts.AMBER,
            )
            for x in failed
        ],
    )
    return {
        **r,
        "accounting": charts.stacked_bar(f"rows in: {r['rows_in']}", accounting),
        "skipped": r.get("rows_skipped") or 0,
        "balanced": (r["rows_in"] or 0)
        == (r["rows_loaded"] or 0)
        + (r["rows_quarantined"] or 0)
        + (r["duplicates_dropped"] or 0)
        + (r["rows_rolled_back"] or 0),
        "tables": written,
        "rules": failed,
        "rule_chart": rule_chart if failed else None,
        "checks": run_checks,
    }


def _history(engine: Engine, pipelines: list[str]) -> list[dict[str, Any]]:
    """Every numeric check of these pipelines across all their runs, one line chart each."""
    series: dict[tuple[str, str, str | None], list[dict[str, Any]]] = defaultdict(list)
    for p in pipelines:
        for h in dq.history(engine, p):
            if h["observed"] is not None and not str(h["check_name"]).startswith("drift_"):
                series[(p, str(h["check_name"]), h["column_name"])].append(h)
    out = []
    for (p, check, column), points in sorted(
        series.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or "")
    ):
        threshold = points[-1]["threshold"]
        label = f"{p} · {check}" + (f" · {column}" if column else "")
        out.append(
            {
                "pipeline": p,
                "check": check,
                "column": column,
                "category": category(check),
                "runs": len(points),
                "failures": sum(1 for x in points if not x["passed"]),
                "chart": charts.line(
                    label,
                    [(str(x["started_at"])[:10], float(x["observed"]), bool(x["passed"])) for x in points],
                    float(threshold) if threshold is not None else None,
                ),
            }
        )
    return out


def _freshness(engine: Engine, pipelines: list[str], history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        states = {s.pipeline: s for s in watermarks.all_states(conn)}
    now = datetime.now(UTC)
    out = []
    for p in pipelines:
        state = states.get(p)
        mark = state.watermark if state else None
        out.append(
            {
                "pipeline": p,
                "watermark": mark.isoformat(timespec="seconds") if mark else None,
                "age_hours": round((now - mark).total_seconds() / 3600, 1) if mark else None,
                "checked": any(h["pipeline"] == p and h["check"] == "freshness_hours" for h in history),
            }
        )
    return out


def _categories(runs_shown: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per Kahn category: the row rules that failed (and how many rows) and the batch checks
    passed and failed, over the runs shown."""
    out = []
    for cat in CATEGORIES:
        rules = [x for r in runs_shown for x in r["rules"] if x["category"] == cat]
        checks = [c for r in runs_shown for c in r["checks"] if c["category"] == cat]
        out.append(
            {
                "category": cat,
                "rules_failed": len({(x["column_name"], x["rule"]) for x in rules}),
                "rows_failed": sum(int(x["failures"]) for x in rules),
                "checks_passed": sum(1 for c in checks if c["passed"]),
                "checks_failed": sum(1 for c in checks if not c["passed"]),
            }
        )
    return out


def render(report: Report) -> str:
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(
        loader=PackageLoader("healthetl.htmlreport", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template("report.html").render(report=report, version=__version__, Markup=Markup)


def write(path: Path, report: Report) -> int:
    """Write the report (under a temporary name, renamed into place); returns its size in bytes."""
    text = render(report)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return len(text.encode("utf-8"))
