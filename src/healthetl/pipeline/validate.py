"""``validate``: a source checked against its dataset's rules, valid rows and rejects written
apart (to files or an Arrow stream for the next stage), and an optional JSON report."""

from __future__ import annotations

import json
import sys
from contextlib import closing
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy.engine import Engine

from healthetl.catalog import Catalog
from healthetl.config import PipelineOptions
from healthetl.datasets.spec import Dataset
from healthetl.datasets.standardise import LookupTable
from healthetl.errors import HealthetlError
from healthetl.failures import FAILURE_COLUMNS, REJECTED, mark_rejected
from healthetl.ledger import quarantine
from healthetl.pipeline.extract import frames_from
from healthetl.pipeline.readahead import read_ahead
from healthetl.pipeline.references import lookup_tables, reference_keys
from healthetl.pipeline.validator import Validator
from healthetl.results import ValidateResult
from healthetl.sources import SOURCE_ROW, open_writer


def validate(
    dataset: Dataset,
    source: str,
    options: PipelineOptions,
    *,
    catalog: Catalog,
    clean_output: str | None = None,
    rejects_output: str | None = None,
    report_path: Path | None = None,
    engine: Engine | None = None,
    csv_safe: bool = False,
) -> ValidateResult:
    known: dict[str, pd.Index] | None = None
    lookups: dict[str, LookupTable] | None = None
    if engine is not None:
        with engine.connect() as conn:
            known = reference_keys(conn, dataset, catalog)
            lookups = lookup_tables(conn, dataset, catalog)
    validator = Validator(dataset, options, known, lookups=lookups)
    writer = partial(open_writer, inputs=(source,), csv_safe=csv_safe)
    clean_writer = writer(clean_output) if clean_output else None
    rejects_writer = writer(rejects_output) if rejects_output else None
    visible = dataset.visible_fields
    # an Arrow stream is the format between stages: rejected rows travel in it, marked, so
    # the `load` at the end of a pipe quarantines and counts them
    carry = clean_writer is not None and clean_writer.kind == "arrow"
    failure: BaseException | None = None
    try:
        with closing(read_ahead(frames_from([source], options))) as frames:  # parsing on a thread
            for frame in frames:
                batch = validator.validate(frame)
                if clean_writer is not None:
                    clean_writer.write(with_rejected(batch.clean, batch.failures) if carry else batch.clean)
                if rejects_writer is not None and not batch.failures.empty:
                    rejects_writer.write(_masked(batch.failures, visible).astype({"source_row": "int64"}))
        if rejects_writer is not None and rejects_writer.rows == 0:
            empty = pd.DataFrame({c: pd.Series([], dtype="str") for c in FAILURE_COLUMNS})
            rejects_writer.write(empty.astype({"source_row": "int64"}))
    except BaseException as exc:
        failure = exc
        raise
    finally:  # a failed validation ends its stream without the trailer: the next stage refuses it
        for w in (clean_writer, rejects_writer):
            if w is not None:
                w.__exit__(type(failure) if failure else None, failure, None)
    if report_path is not None:
        write_report(report_path, {"source": source, **validator.summary.to_dict()})
    return ValidateResult(validator.summary, clean_output, rejects_output)


def with_rejected(clean: pd.DataFrame, failures: pd.DataFrame) -> pd.DataFrame:
    """Valid rows followed by the rejected ones, marked (see ``failures.REJECTED``)."""
    marked = mark_rejected(failures)
    out = clean.assign(**{REJECTED: pd.Series(pd.NA, index=clean.index, dtype="str")})
    if marked.empty:
        return out
    return pd.concat([out, marked], ignore_index=True).astype(
        {c: "str" for c in out.columns if c != SOURCE_ROW}
    )


def write_report(path: Path, report: dict[str, Any]) -> None:
    """The JSON report to ``path``; ``-`` is standard output (for schedulers)."""
    text = json.dumps(report, indent=2, default=str) + "\n"
    if str(path) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise HealthetlError(f"{path}: cannot write report ({exc.strerror or exc})") from None


def _masked(failures: pd.DataFrame, visible: set[str]) -> pd.DataFrame:
    """A rejects file holds each row as received with its identifying and undeclared fields
    masked (and marked so: such a row cannot be replayed from the quarantine; load its source
    again). The unmasked row is kept only by a load, in the quarantine table."""
    distinct = failures["original"].dropna().unique()
    hidden = {o: quarantine.masked_json(str(o), visible) for o in distinct}
    return failures.assign(original=failures["original"].map(hidden))
