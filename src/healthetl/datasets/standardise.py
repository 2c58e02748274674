"""Standardisation: how a dataset's values are written (trimmed, mapped, typed, lookups
resolved to ids) before the rules see them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import pandas as pd

from healthetl import cleaning, codes, pseudonym
from healthetl.config import PipelineOptions
from healthetl.datasets.spec import (
    Column,
    Dataset,
    Lookup,
)
from healthetl.sources.frames import normalise_name

#: in a LookupTable: this natural key matches more than one row
AMBIGUOUS = "\x01"  # a lookup key matching more than one row (and the prefix of its marked id)


@dataclass
class LookupTable:
    """The referenced rows a lookup can match: key tuple -> id (or AMBIGUOUS), and fetched values."""

    lookup: Lookup
    ids: dict[tuple[str, ...], str]
    fetched: dict[str, dict[tuple[str, ...], str | None]] = field(default_factory=dict)


UNRESOLVED = "\x00"  # prefix of a lookup id that matched nothing (followed by the key)


def _default(col: Column) -> str:
    assert col.default is not None
    return cleaning.resolve_bound(col.default) if col.default.startswith("today") else col.default


def _apply_lookups(
    frame: pd.DataFrame,
    lookups: Mapping[str, LookupTable],
    stored_as: Callable[[str], Callable[[pd.Series], pd.Series] | None],
) -> pd.DataFrame:
    """Fill each lookup's id column from the referenced rows' natural keys. A key that matches
    nothing, or several rows, leaves a marker (with the key, for the reason) that the reference
    checks reject; a row with a key column missing gets no id (the required rule reports it).
    A pseudonymised key column is matched in its stored form (``stored_as``)."""
    for column, table in lookups.items():
        on = list(table.lookup.on)
        if not all(c in frame.columns for c in on):
            continue
        present = pd.concat([frame[c].notna() for c in on], axis=1).all(axis=1).tolist()
        raw = list(zip(*[frame[c].tolist() for c in on], strict=True))
        compared = [(t(frame[c]) if (t := stored_as(c)) is not None else frame[c]) for c in on]
        keys = list(zip(*[cleaning.lookup_key(s).tolist() for s in compared], strict=True))
        ids: list[str | None] = []
        for key, shown, ok in zip(keys, raw, present, strict=True):
            if not ok:
                ids.append(None)
                continue
            found = table.ids.get(key)
            text = ", ".join(str(v) for v in shown)
            if found is None:
                ids.append(UNRESOLVED + text)
            elif found == AMBIGUOUS:
                ids.append(AMBIGUOUS + text)
            else:
                ids.append(found)
        frame[column] = pd.Series(ids, index=frame.index, dtype="str")
        for new in table.lookup.fetch:
            values = table.fetched.get(new, {})
            frame[new] = pd.Series(
                [values.get(k) if ok else None for k, ok in zip(keys, present, strict=True)],
                index=frame.index,
                dtype="str",
            )
    return frame


def standardiser(
    dataset: Dataset,
    options: PipelineOptions,
    aliases: Mapping[str, Mapping[str, str]],
    lookups: Mapping[str, LookupTable],
) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """The function that writes a text frame's values the dataset's way: renamed columns,
    defaults, value maps, canonical numbers, dates, timestamps, phones and vocabularies,
    lookups resolved to ids, then the dataset's own transform."""
    renames = {normalise_name(k): v for k, v in dataset.renames.items()}
    hashed = dataset.pseudonymised(options.pseudonymise)
    secrets: list[bytes] = []

    def stored_as(column: str) -> Callable[[pd.Series], pd.Series] | None:
        if column not in hashed:
            return None
        if not secrets:
            secrets.append(pseudonym.key())
        return lambda values: pseudonym.series(values, secrets[0])

    def standardise(frame: pd.DataFrame) -> pd.DataFrame:
        mapping = {c: renames[c] for c in frame.columns if c in renames and renames[c] not in frame}
        frame = frame.rename(columns=mapping)
        out: dict[str, pd.Series] = {}
        for col in dataset.columns:
            if col.name in frame.columns:
                out[col.name] = _standardise_column(col, frame[col.name], options, aliases)
            elif col.default is not None:
                out[col.name] = pd.Series(_default(col), index=frame.index, dtype="str")
            elif not col.required:  # an optional column may be absent from a file
                out[col.name] = pd.Series(pd.NA, index=frame.index, dtype="str")
        result = pd.DataFrame(out, index=frame.index)
        if lookups:
            result = _apply_lookups(result, lookups, stored_as)
        if dataset.transform is not None:
            result = dataset.transform(result)
        return result

    return standardise


def _standardise_column(
    col: Column, s: pd.Series, options: PipelineOptions, aliases: Mapping[str, Mapping[str, str]]
) -> pd.Series:
    if col.default is not None:
        s = cleaning.blank_to_na(s).fillna(_default(col))
    if col.value_map:
        s = cleaning.apply_value_map(s, col.value_map)
    if col.type == "integer":
        return cleaning.standardise_integer(s)
    if col.type in ("float", "decimal"):
        return cleaning.standardise_number(s)
    if col.type == "boolean":
        return cleaning.standardise_boolean(s)
    if col.type == "date":
        return cleaning.standardise_date(s, options.date_order)
    if col.type == "timestamp":
        return cleaning.standardise_timestamp(s, options.timezone, options.date_order)
    if col.type == "phone":
        return cleaning.standardise_phone(s, options.phone_country_code)
    if col.type in codes.CANONICAL:
        return cleaning.standardise_code(s, codes.CANONICAL[col.type])
    if col.name in aliases:
        return cleaning.standardise_vocabulary(s, aliases[col.name])
    return cleaning.blank_to_na(s)


def typed_frame(dataset: Dataset, frame: pd.DataFrame) -> pd.DataFrame:
    """The canonical text of validated rows as pandas types, for user pandera models:
    integers Int64, numbers Float64, booleans boolean, dates and timestamps datetime64
    (timestamps in UTC), text str."""
    out: dict[str, pd.Series] = {}
    for col in dataset.columns:
        if col.name not in frame.columns:
            continue
        s = frame[col.name]
        if col.type == "integer":
            out[col.name] = pd.to_numeric(s, errors="coerce").astype("Int64")
        elif col.type in ("float", "decimal"):
            out[col.name] = pd.to_numeric(s, errors="coerce").astype("Float64")
        elif col.type == "boolean":
            out[col.name] = s.map({"1": True, "0": False}).astype("boolean")
        elif col.type == "date":
            out[col.name] = pd.to_datetime(s, format="%Y-%m-%d", errors="coerce")
        elif col.type == "timestamp":
            out[col.name] = pd.to_datetime(s, format="ISO8601", errors="coerce", utc=True)
        else:
            out[col.name] = s
    extra = [c for c in frame.columns if c not in out]
    result = pd.DataFrame(out, index=frame.index)
    for c in extra:
        result[c] = frame[c]
    return result
