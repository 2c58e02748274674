"""The only module that imports rich. Data goes to stdout; status, progress and errors to stderr."""

from __future__ import annotations

import csv
import json
import logging
import sys
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from healthetl.masking import scrub

err = Console(stderr=True, highlight=False, soft_wrap=True)
log = logging.getLogger("healthetl")


def traceback_text() -> str:
    """The current exception's traceback, passwords masked (for --debug)."""
    import traceback

    return scrub(traceback.format_exc())


def error(message: str) -> None:
    err.print(f"[bold red]error:[/] {_escape(scrub(message))}")


def info(message: str) -> None:
    """A status line on stderr (also written to the log file, if any)."""
    message = scrub(message)
    log.info(message)
    if not _logging_to_stderr():
        err.print(_escape(message))


def warn(message: str) -> None:
    message = scrub(message)
    log.warning(message)
    if not _logging_to_stderr():
        err.print(f"[yellow]warning:[/] {_escape(message)}")


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _logging_to_stderr() -> bool:
    return any(getattr(h, "_healthetl_stderr", False) for h in log.handlers)


def configure_logging(log_file: str | None) -> None:
    """Plain timestamped lines: to the log file when given, and to stderr when not a terminal."""
    log.handlers.clear()
    log.setLevel(logging.INFO)
    log.propagate = False
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S%z")
    if log_file:
        fh = logging.FileHandler(log_file, encoding="utf-8")
        fh.setFormatter(fmt)
        log.addHandler(fh)
    # the driver's own notes (e.g. "error ignored terminating <psycopg.Copy>" after a lost
    # connection) are detail behind the one error line: the log file keeps them, stderr does not
    driver = logging.getLogger("psycopg")
    driver.handlers = list(log.handlers) or [logging.NullHandler()]
    driver.propagate = False
    if not sys.stderr.isatty():
        sh = logging.StreamHandler(sys.stderr)
        sh.setFormatter(fmt)
        sh._healthetl_stderr = True  # type: ignore[attr-defined]
        log.addHandler(sh)


def log_to_stderr() -> None:
    """Log lines to stderr even on a terminal (a server's requests are its output)."""
    if not any(getattr(h, "_healthetl_stderr", False) for h in log.handlers):
        sh = logging.StreamHandler(sys.stderr)
        sh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S%z"))
        sh._healthetl_stderr = True  # type: ignore[attr-defined]
        log.addHandler(sh)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value


def rows(columns: Sequence[str], data: Sequence[Sequence[Any]], fmt: str, title: str | None = None) -> None:
    """Tabular data to stdout as a table, CSV or JSON (a list of objects)."""
    if fmt == "json":
        payload = [{c: _jsonable(v) for c, v in zip(columns, r, strict=True)} for r in data]
        sys.stdout.write(json.dumps(payload, indent=2, ensure_ascii=False, default=str) + "\n")
        return
    if fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[_cell(v) for v in r] for r in data])
        return
    table = Table(title=title, show_lines=False)
    for c in columns:
        table.add_column(c)
    for r in data:
        table.add_row(*[_escape(_cell(v)) for v in r])
    out = Console(highlight=False, soft_wrap=False)
    if not out.is_terminal:
        out = Console(highlight=False, soft_wrap=False, width=200)
    out.print(table)


def document(payload: Any, *, one_line: bool = False) -> None:
    """A JSON document on stdout; ``one_line``: a results line a scheduler can append to a log."""
    indent = None if one_line else 2
    sys.stdout.write(json.dumps(payload, indent=indent, ensure_ascii=False, default=str) + "\n")


class RunDisplay:
    """Progress of ``healthetl run``: a rich progress display on a terminal, log lines otherwise."""

    def __init__(self) -> None:
        self._progress: Progress | None = None
        self._tasks: dict[str, Any] = {}
        if err.is_terminal:
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(bar_width=None),
                TextColumn("{task.fields[rows]:>10,} rows"),
                TimeElapsedColumn(),
                console=err,
                transient=False,
            )

    def __enter__(self) -> RunDisplay:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        name = data.get("pipeline", "")
        if event == "upgraded":
            info(
                f"database upgraded from {', '.join(data['from']) or 'empty'} to "
                f"{', '.join(data['to'])} (migrations run automatically by `run`)"
            )
        elif event == "start":
            log.info("%s: run %s started, reading %s", name, data["run_id"], ", ".join(data["sources"]))
            if self._progress is not None:
                self._tasks[name] = self._progress.add_task(name, total=None, rows=0)
        elif event == "engine":
            info(f"{name}: {data['detail']}" if name else data["detail"])
        elif event == "left_out":
            log.info(
                "%s: not loaded, no dataset of the pipeline takes them: %s", name, ", ".join(data["files"])
            )
        elif event == "batch":
            log.info("%s: %d rows processed", name, data["rows"])
            if self._progress is not None and name in self._tasks:
                self._progress.update(self._tasks[name], rows=data["rows"])
        elif event == "done":
            counts = data.get("counts")
            if counts is not None:
                log.info(
                    "%s: %s, %d rows in, %d loaded, %d quarantined",
                    name,
                    data["status"],
                    counts.rows_in,
                    counts.rows_loaded,
                    counts.rows_quarantined,
                )
            else:
                log.info("%s: %s", name, data["status"])
            if self._progress is not None and name in self._tasks:
                task = self._tasks[name]
                rows_in = counts.rows_in if counts is not None else 0
                self._progress.update(
                    task,
                    total=1,
                    completed=1,
                    rows=rows_in,
                    description=f"{name} [{data['status']}]",
                )
