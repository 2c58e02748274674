"""Validation: standardise a text frame, run the dataset's pandera schema, split the rows.

Every input row ends up in exactly one place: ``clean`` (loadable) or ``quarantined`` (at
least one error-severity failure). Rows that fail only warning-severity checks stay clean and
are counted. ``failures`` holds one record per failed check, the shape of the quarantine table.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd
import pandera.errors as pa_errors

from healthetl import cleaning
from healthetl.config import PipelineOptions
from healthetl.datasets.keys import key_series
from healthetl.datasets.predicates import HOLDERS
from healthetl.datasets.rules import CompiledDataset, Rule, compile_dataset
from healthetl.datasets.spec import Dataset
from healthetl.datasets.standardise import LookupTable, typed_frame
from healthetl.errors import DataContractError, DriftError
from healthetl.failures import FAILURE_COLUMNS, REJECTED, json_lines, unmark_rejected
from healthetl.results import BatchResult, Drift, ValidationSummary
from healthetl.sources import LINEAGE, SOURCE_FILE, SOURCE_ROW, normalise_name


class Validator:
    """One validation session: duplicate keys are tracked across all its batches."""

    def __init__(
        self,
        dataset: Dataset,
        options: PipelineOptions,
        known_keys: Mapping[str, pd.Index] | None = None,
        window: tuple[str, str] | None = None,
        lookups: Mapping[str, LookupTable] | None = None,
    ) -> None:
        """``window`` = (cursor column, first accepted value as canonical UTC text): rows
        whose cursor is older are skipped, not validated (incremental loads)."""
        self.dataset = dataset
        self.compiled: CompiledDataset = compile_dataset(dataset, options, known_keys, lookups)
        # pandera registers the backends its checks run on when a schema first meets a pandas
        # type (older versions: only then); the checks are called directly here (_column_failures)
        for column in self.compiled.schema.columns.values():
            column.get_backend(check_type=pd.Series)
        self.summary = ValidationSummary(dataset.name, skipped_checks=list(self.compiled.skipped))
        self.window = window
        self.drift_policy = options.drift
        self._declared = set(dataset.column_names)
        #: declared column -> the (normalised) source column it is read from
        self._received = {v: normalise_name(k) for k, v in dataset.renames.items()}
        #: leave the key checks to the caller and hand back every row's keys instead
        #: (``BatchResult.keys``): a partition's worker does, and the coordinator decides the
        #: duplicates of the whole run as a local load would
        self.defer_keys = False

    def validate(self, raw: pd.DataFrame) -> BatchResult:
        """Rows an earlier ``validate`` rejected arrive marked (``REJECTED``, in a stream
        between stages): they are not validated again; their failure records are taken as
        they come, so the run counts and quarantines them."""
        carried = pd.DataFrame(columns=FAILURE_COLUMNS)
        n_carried = 0
        if REJECTED in raw.columns:
            marked = raw[REJECTED].notna()
            n_carried = int(marked.sum())
            if n_carried:
                carried = unmark_rejected(raw.loc[marked])
            raw = raw.loc[~marked].drop(columns=REJECTED).reset_index(drop=True)
            if raw.empty and n_carried:  # nothing to validate: a batch of rejected rows only
                result = BatchResult(raw, carried, n_carried, n_carried, 0)
                self.summary.add(result)
                return result
        compiled = self.compiled
        std = compiled.standardise(raw)
        self._check_contract(raw, std)
        self._check_drift(raw)
        raw, std, skipped = self._behind_window(raw, std)
        failures = self._all_failures(raw, std)
        error_rows = set(failures.loc[failures["severity"] == "error", "_index"])
        warn_rows = set(failures.loc[failures["severity"] == "warning", "_index"]) - error_rows
        keep = ~std.index.isin(list(error_rows))
        clean = std.loc[keep]  # a new frame (copy-on-write): adding lineage never touches ``std``
        for col in LINEAGE:
            clean[col] = raw.loc[keep, col]
        for key_cols, tracker in compiled.trackers:
            tracker.add(key_series(clean, key_cols))
        keys = self._keys(raw, std, keep) if self.defer_keys else None
        failures = failures.drop(columns="_index")
        if n_carried:
            failures = pd.concat([failures, carried], ignore_index=True) if len(failures) else carried
        result = BatchResult(
            clean=clean,
            failures=failures,
            rows_in=len(raw) + n_carried,
            rows_quarantined=len(error_rows) + n_carried,
            rows_warned=len(warn_rows),
            rows_skipped=skipped,
            nulls={c: int(std[c].isna().sum()) for c in std.columns if c in self._declared},
            keys=keys,
        )
        self.summary.add(result)
        return result

    def _keys(self, raw: pd.DataFrame, std: pd.DataFrame, clean: Any) -> pd.DataFrame:
        """Each row's key text under each key set (rows without one left out), with its row
        number and whether it is clean."""
        parts = []
        for number, (key_cols, _) in enumerate(self.compiled.trackers):
            key = key_series(std, key_cols)
            present = key.notna().to_numpy()
            parts.append(
                pd.DataFrame(
                    {
                        "key_set": number,
                        "key": key.to_numpy()[present],
                        "source_row": raw[SOURCE_ROW].to_numpy()[present],
                        "clean": clean[present],
                    }
                )
            )
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()

    def _behind_window(self, raw: pd.DataFrame, std: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, int]:
        """Rows whose cursor is older than the incremental window are skipped (and counted)."""
        if self.window is None:
            return raw, std, 0
        cursor, start = self.window
        values = std[cursor]
        old = (cleaning.is_timestamp(values) & (values < start)).to_numpy()
        skipped = int(old.sum())
        return (raw.loc[~old], std.loc[~old], skipped) if skipped else (raw, std, 0)

    def _all_failures(self, raw: pd.DataFrame, std: pd.DataFrame) -> pd.DataFrame:
        """The dataset's rules, then its own pandera model on the rows the rules let through,
        then the key checks: a key is held by the first row that nothing else rejects, as across
        batches (the tracker holds accepted rows' keys), so a batch's size changes no outcome."""
        cases = self._column_failures(std)
        keyed = set(self.compiled.key_checks)
        rows = self._frame_failures(
            std, [n for n in range(len(self.compiled.frame_checks)) if n not in keyed]
        )
        if rows is not None:
            cases = rows if cases is None else pd.concat([cases, rows], ignore_index=True)
        rejected = self._error_rows(cases)
        extra = None
        if self.dataset.model is not None:
            extra = self._model_failures(raw, std.loc[~std.index.isin(rejected)])
            model_errors = extra.loc[extra["severity"] == "error", "_index"].to_numpy()
            rejected = np.union1d(rejected, model_errors.astype("int64"))
        keys = None if self.defer_keys else self._key_failures(std, ~std.index.isin(rejected))
        if keys is not None:
            cases = keys if cases is None else pd.concat([cases, keys], ignore_index=True)
        failures = self._failures(raw, std, cases)
        if extra is not None and not extra.empty:
            failures = pd.concat([failures, extra], ignore_index=True)
        return failures

    def _column_failures(self, std: pd.DataFrame) -> pd.DataFrame | None:
        """The schema's column checks, each called as pandera calls it (:meth:`_failing`), as
        failure cases shaped as pandera's. Not left to ``DataFrameSchema.validate``: its lazy mode
        reshapes the failure cases into a report (``SchemaErrors``) whose formatting took 40% of
        the batch's checking. A missing value in a required column is the ``not_nullable`` case
        pandera reports; a column that is not text (a dataset's own transform may change one)
        fails its dtype, a contract failure as in pandera."""
        parts = []
        for name, column in self.compiled.schema.columns.items():
            if name not in std.columns:  # an absent required column is refused by the contract check
                continue
            values = std[name]
            if not pd.api.types.is_string_dtype(values.dtype):
                raise DataContractError(f"{self.dataset.name}: column {name} failed dtype('str')")
            missing = values.isna().to_numpy()
            if not column.nullable and missing.any():
                parts.append(_cases("Column", name, "not_nullable", None, std.index[missing]))
            for number, check in enumerate(column.checks):
                # pandera hands a check the column without its missing values unless told not to
                checked = std.index[~missing] if check.ignore_na and missing.any() else std.index
                failed = self._failing(check, values, checked, f" on column {name}")
                if len(failed):
                    parts.append(_cases("Column", name, check.name, number, failed))
        return pd.concat(parts, ignore_index=True) if parts else None

    def _key_failures(self, std: pd.DataFrame, holders: np.ndarray) -> pd.DataFrame | None:
        """The key checks, with ``holders`` the rows that may hold a key. With several key sets
        a row rejected for repeating one holds none of the others, which may free a later row:
        repeated until no row changes (each pass settles at least the next row in order)."""
        numbers = self.compiled.key_checks
        if not numbers:
            return None
        held = holders
        for _ in range(len(std) + 1):
            cases = self._frame_failures(std.assign(**{HOLDERS: held}), numbers)
            if len(numbers) == 1:  # one key set: the rows with no other error hold it exactly
                return cases
            accepted = holders & ~std.index.isin(self._error_rows(cases))
            if np.array_equal(accepted, held):
                return cases
            held = accepted
        raise AssertionError("the key checks did not settle")  # pragma: no cover - bounded above

    def _error_rows(self, cases: pd.DataFrame | None) -> np.ndarray:
        """The rows with a failure case of an error-severity rule."""
        if cases is None or cases.empty:
            return np.empty(0, dtype="int64")
        found = [
            group["index"].to_numpy(dtype="int64")
            for rule, group in self._by_rule(cases[cases["index"].notna()])
            if rule.severity == "error"
        ]
        return np.unique(np.concatenate(found)) if found else np.empty(0, dtype="int64")

    def _frame_failures(self, std: pd.DataFrame, numbers: list[int]) -> pd.DataFrame | None:
        """The checks of whole rows numbered ``numbers``, each called as pandera calls it, as
        failure cases shaped as pandera's. Not left to the schema: pandera reports a frame
        check's failures as every column of every failing row, reshaped by a transpose that took
        6 s per 100,000 failing rows (a file delivered twice: all its rows duplicate keys), 30
        times the batch's validation; a check's result names the failing rows at once."""
        parts = []
        for number in numbers:
            check = self.compiled.frame_checks[number]
            failed = self._failing(check, std, std.index, "")
            if len(failed):
                parts.append(_cases("DataFrameSchema", None, check.name, number, failed))
        return pd.concat(parts, ignore_index=True) if parts else None

    def _failing(
        self, check: Any, checked_obj: pd.Series | pd.DataFrame, checked: pd.Index, where: str
    ) -> pd.Index:
        """The rows (labels among ``checked``, the rows pandera hands the check) that a pandera
        ``Check`` fails, called as pandera calls it. A check that raises, or whose result names no
        rows and did not pass, fails the batch as pandera's lazy mode reports it (one line, never
        the values); ``where`` names the column."""
        try:
            result = check(checked_obj)
        except Exception as exc:
            raise DataContractError(
                f"{self.dataset.name}: the batch failed {check.name}{where} ({type(exc).__name__})"
            ) from exc
        output = result.check_output
        if not isinstance(output, pd.Series) or not output.index.equals(checked):
            if bool(result.check_passed):
                return checked[:0]
            raise DataContractError(f"{self.dataset.name}: the batch failed {check.name}{where}")
        return checked[~output.to_numpy(dtype=bool, na_value=False)]  # a missing verdict fails

    def _check_contract(self, raw: pd.DataFrame, std: pd.DataFrame) -> None:
        missing = [c.name for c in self.dataset.columns if c.required and c.name not in std.columns]
        if missing:
            name = raw[SOURCE_FILE].iloc[0] if len(raw) else "input"
            found = ", ".join(c for c in raw.columns if c not in LINEAGE) or "none"
            raise DataContractError(
                f"{name}: missing required column(s) {', '.join(missing)} "
                f"for dataset {self.dataset.name!r} (found: {found})"
            )

    def _check_drift(self, raw: pd.DataFrame) -> None:
        """Columns the source sends that the dataset does not declare, and declared optional
        columns it does not send: reported (``warn``), refused (``fail``) or ``ignore``d."""
        if self.drift_policy == "ignore":
            return
        source = str(raw[SOURCE_FILE].iloc[0]) if len(raw) and SOURCE_FILE in raw else "input"
        sent = [c for c in raw.columns if c not in LINEAGE]
        renamed = {declared for declared, source_name in self._received.items() if source_name in sent}
        known = (
            self._declared | set(self._received.values()) | {normalise_name(c) for c in self.dataset.unused}
        )
        looked_up = {lk.column for lk in self.dataset.lookups} | {
            f for lk in self.dataset.lookups for f in lk.fetch
        }
        found = [
            Drift("new_columns", source, tuple(c for c in sent if c not in known)),
            Drift(
                "missing_columns",
                source,
                tuple(
                    c.name
                    for c in self.dataset.columns
                    if not c.required
                    and c.default is None
                    and c.name not in looked_up
                    and c.name not in sent
                    and c.name not in renamed
                ),
            ),
        ]
        self.report_drift([f for f in found if f.columns])

    def report_drift(self, findings: list[Drift]) -> None:
        if self.drift_policy == "ignore":
            return
        fresh = [f for f in findings if self.summary.note_drift(f)]
        if fresh and self.drift_policy == "fail":
            raise DriftError(self.dataset.name, fresh)

    def _failures(self, raw: pd.DataFrame, std: pd.DataFrame, cases: pd.DataFrame | None) -> pd.DataFrame:
        if cases is None or cases.empty:
            return pd.DataFrame(columns=[*FAILURE_COLUMNS, "_index"])
        whole = cases[cases["index"].isna()]
        if not whole.empty:
            first = whole.iloc[0]
            raise DataContractError(
                f"{self.dataset.name}: the batch failed {first['check']} on column {first['column']}"
            )
        parts: list[pd.DataFrame] = []
        for rule, group in self._by_rule(cases):
            index = group["index"].astype("int64").drop_duplicates()
            received = self._received.get(str(rule.column), rule.column)
            if received not in raw.columns:  # the file uses the declared name itself
                received = rule.column
            if rule.name not in _STANDARDISED_VALUE and received in raw.columns:
                values = raw.loc[index.to_numpy(), received]  # quoted as received, never rewritten
            elif rule.column in std.columns:
                values = std.loc[index.to_numpy(), rule.column]
            elif rule.name == "duplicate_key":
                values = key_series(std.loc[index.to_numpy()], self.dataset.primary_key)
            else:
                values = pd.Series([None] * len(index))
            reasons = _reasons(rule, values)
            parts.append(
                pd.DataFrame(
                    {
                        "_index": index.to_numpy(),
                        "column_name": rule.column,
                        "rule": rule.name,
                        "severity": rule.severity,
                        "reason": reasons,
                    }
                )
            )
        # a frame-level check is reported once per column of the row: keep one per row and rule
        out = pd.concat(parts, ignore_index=True).drop_duplicates(["_index", "column_name", "rule"])
        out = _with_lineage(out, raw).sort_values(["source_row", "column_name", "rule"], kind="stable")
        return out[[*FAILURE_COLUMNS, "_index"]].reset_index(drop=True)

    def _model_failures(self, raw: pd.DataFrame, std: pd.DataFrame) -> pd.DataFrame:
        """The dataset's own pandera model, on the typed rows that passed every declared check."""
        model = self.dataset.model
        label = getattr(model, "__name__", "model")
        try:
            model.validate(typed_frame(self.dataset, std), lazy=True)
            return pd.DataFrame(columns=[*FAILURE_COLUMNS, "_index"])
        except pa_errors.SchemaErrors as exc:
            cases = exc.failure_cases
        whole = cases[cases["index"].isna()]
        if not whole.empty:
            first = whole.iloc[0]
            raise DataContractError(
                f"{self.dataset.name}: model {label} failed {first['check']} on column {first['column']}"
            )
        identifying = {c.name for c in self.dataset.columns if c.identifying}
        records = []
        for case in cases.drop_duplicates(["index", "column", "check"]).itertuples(index=False):
            column = case.column if isinstance(case.column, str) else None
            check = str(case.check)
            value = "" if column in identifying or column is None else f" {case.failure_case!r}"
            severity = self.dataset.severity.get(check, "error")
            records.append(
                {
                    "_index": int(case.index),
                    "column_name": column,
                    "rule": check,
                    "severity": "warning" if severity == "warning" else "error",
                    "reason": f"{column or 'row'}{value} failed {check} ({label})",
                }
            )
        out = pd.DataFrame.from_records(records)
        return _with_lineage(out, raw)[[*FAILURE_COLUMNS, "_index"]]

    def _by_rule(self, cases: pd.DataFrame) -> Iterator[tuple[Rule, pd.DataFrame]]:
        """Failure cases a check at a time, each with its rule."""
        combos = cases[["schema_context", "column", "check", "check_number"]].astype(object)
        groups = cases.groupby([combos[c].fillna("") for c in combos.columns], sort=False, dropna=False)
        for _, group in groups:
            yield self._rule_for(group.iloc[0]), group

    def _rule_for(self, case: Any) -> Rule:
        compiled = self.compiled
        if case.check == "not_nullable":
            return compiled.required_rules[case.column]
        column = None if case.schema_context == "DataFrameSchema" else case.column
        number = int(case.check_number) if case.check_number is not None else -1
        try:
            return compiled.rules[(column, number)]
        except KeyError:
            # a pandera-internal check (e.g. dtype); treat it as a contract failure
            raise DataContractError(
                f"{self.dataset.name}: column {case.column} failed {case.check}"
            ) from None


def _cases(
    context: str, column: str | None, check: str | None, number: int | None, index: pd.Index
) -> pd.DataFrame:
    """Failure cases of one check, shaped as pandera's ``failure_cases``."""
    return pd.DataFrame(
        {"schema_context": context, "column": column, "check": check, "check_number": number, "index": index}
    )


#: rules whose reason shows the value healthetl computed: a key, or a lookup's unresolved key
_STANDARDISED_VALUE = {"duplicate_key", "reference", "ambiguous_reference"}


def _reasons(rule: Rule, values: pd.Series) -> list[str]:
    """One reason per failing value, formatted once per distinct value."""
    if not rule.shows_value:
        return [rule.reason(None)] * len(values)
    plain = values.astype(object).where(values.notna(), None).to_numpy()
    cache: dict[Any, str] = {}
    out = []
    for v in plain:
        text = cache.get(v)
        if text is None:
            text = cache[v] = rule.reason(v)
        out.append(text)
    return out


def _with_lineage(out: pd.DataFrame, raw: pd.DataFrame) -> pd.DataFrame:
    """Failure records get the source file and row of their input row, and the row as received."""
    rows = raw.loc[out["_index"], [SOURCE_FILE, SOURCE_ROW]]
    out["source_file"] = rows[SOURCE_FILE].to_numpy()
    out["source_row"] = rows[SOURCE_ROW].to_numpy()
    out["original"] = _original_json(raw, out["_index"])
    return out


def _original_json(raw: pd.DataFrame, index: pd.Series) -> list[str]:
    """Each row as received (lineage columns aside), as one JSON object per row; a row that
    failed several checks is written once."""
    cols = [c for c in raw.columns if c not in LINEAGE]
    rows, inverse = np.unique(index.to_numpy(), return_inverse=True)
    lines = json_lines(raw.loc[rows, cols])
    return [lines[i] for i in inverse]
