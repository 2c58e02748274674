"""Draft a dataset declaration from a sample of a file, with a profile for the user to review.

The draft is a starting point, not a verdict: types are the narrowest that every sampled value
fits, identifiers that are not safe as numbers stay text, and values are shown only for
low-cardinality columns whose names do not suggest a person (patient data stays out of it).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import pandas as pd

from healthetl import cleaning
from healthetl.sources import LINEAGE, read_frames

IDENTIFYING_NAMES = re.compile(
    r"(patient|person|name|phone|mobile|email|address|street|birth|dob|ssn|mrn|nhs|passport|"
    r"insurance|first|last|surname"
    # the same in the languages health exports arrive in most (pt, es, fr, de, it, nl)
    r"|nome|sobrenome|paciente|cpf|cns|telefone|celular|endereco|endereço|nascimento|"
    r"nombre|apellido|dni|nie|curp|rut|telefono|teléfono|direccion|dirección|domicilio|nacimiento|"
    r"prenom|prénom|adresse|naissance|nir|secu|"
    r"vorname|nachname|geburt|anschrift|strasse|straße|telefon|versicherten|"
    r"cognome|codice_fiscale|indirizzo|nascita|"
    r"naam|achternaam|bsn|geboorte|adres)",
    re.I,
)
#: values that identify a person whatever the column is called: e-mail addresses, phone
#: numbers written with a +country code, Brazilian CPF, US SSN
IDENTIFYING_VALUES = re.compile(
    r"[^@\s]+@[^@\s]+\.[a-z]{2,}|\+\d[\d\s().-]{7,}|\d{3}\.\d{3}\.\d{3}-\d{2}|\d{3}-\d{2}-\d{4}",
    re.I,
)
#: codes that look numeric but are identifiers with a fixed width: never numbers
CODE_NAMES = re.compile(r"(zip|postal|postcode|phone|fax|npi|ccn|code$)", re.I)
MAX_SHOWN_DISTINCT = 12
_SCIENTIFIC = "scientific notation in"
SAFE_INTEGER_DIGITS = 15


@dataclass
class ColumnProfile:
    name: str
    type: str
    rows: int
    nulls: int
    distinct: int
    required: bool
    identifying: bool
    minimum: str | None = None
    maximum: str | None = None
    #: a drafted pattern, e.g. digits only for ids some of which a spreadsheet wrote as 9.4E+09
    pattern: str | None = None
    values: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: markers of a missing value found in a numeric column, e.g. "Not Available"
    missing_markers: list[str] = field(default_factory=list)

    @property
    def null_rate(self) -> float:
        return self.nulls / self.rows if self.rows else 0.0


@dataclass
class Profile:
    source: str
    name: str
    rows_sampled: int
    columns: list[ColumnProfile]
    primary_key: list[str]
    #: rows in the whole file (counted by streaming it): the profile covers rows_sampled of them
    rows_total: int = 0

    @property
    def sampled(self) -> bool:
        return self.rows_sampled < self.rows_total

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=str)


def infer(
    path: str,
    *,
    name: str | None = None,
    sample: int = 50_000,
    sheet: str | None = None,
    encoding: str = "utf-8",
    delimiter: str | None = None,
) -> Profile:
    frames = read_frames(
        path, chunk_size=min(sample, 100_000), sheet=sheet, encoding=encoding, delimiter=delimiter
    )
    parts = list(islice(frames, max(1, -(-sample // 100_000))))
    total = sum(len(p) for p in parts) + sum(len(rest) for rest in frames)  # the rest, streamed
    frame = pd.concat(parts, ignore_index=True).head(sample)
    frame = frame[[c for c in frame.columns if c not in LINEAGE]]
    dataset = name or re.sub(r"[^a-z0-9_]+", "_", Path(path).name.split(".")[0].lower()).strip("_")
    columns = [_profile(str(c), frame[c]) for c in frame.columns]
    pk = [
        c.name
        for c in columns
        if c.name.endswith("id") and c.distinct == len(frame) and c.nulls == 0 and len(frame)
    ][:1]
    return Profile(path, dataset or "dataset", len(frame), columns, pk, total)


def _profile(name: str, raw: pd.Series) -> ColumnProfile:
    s = cleaning.blank_to_na(raw)
    present = s.dropna()
    rows, nulls = len(s), int(s.isna().sum())
    distinct = int(present.nunique())
    identifying = bool(IDENTIFYING_NAMES.search(name))
    if not identifying and len(present):
        sample = present.head(1000)
        looks = sample.str.fullmatch(IDENTIFYING_VALUES.pattern, case=False).fillna(False)
        identifying = bool(looks.mean() > 0.5)
    ctype, notes = _type_of(present)
    pattern = None
    if ctype == "text" and any(n.startswith(_SCIENTIFIC) for n in notes):
        pattern = r"[0-9]+"
        notes.append(f"drafted pattern {pattern} quarantines them")
    markers: list[str] = []
    if ctype == "text":
        ctype, markers = _numeric_with_markers(present, ctype)
        if markers:
            notes.append(
                "missing-value marker(s) " + ", ".join(repr(m) for m in markers) + " mapped to empty"
            )
            present = present[~present.isin(markers)]
    if ctype in ("integer", "float") and CODE_NAMES.search(name):
        ctype = "text"
        notes.append("a code, not a quantity: kept as text (leading zeros and width matter)")
    prof = ColumnProfile(
        name,
        ctype,
        rows,
        nulls,
        distinct,
        nulls == 0 and rows > 0 and not markers,
        identifying,
        notes=notes,
        missing_markers=markers,
        pattern=pattern,
    )
    id_like = name.endswith("id") or distinct > 0.5 * max(1, len(present))
    if ctype in ("integer", "float") and len(present) and not identifying and not id_like:
        values = cleaning.numbers(present)
        prof.minimum, prof.maximum = _num(values.min()), _num(values.max())
    if ctype == "date" and len(present):
        iso = cleaning.standardise_date(present)
        prof.minimum, prof.maximum = str(iso.min()), str(iso.max())
    if ctype == "timestamp" and len(present):
        ts = cleaning.standardise_timestamp(present)
        prof.minimum, prof.maximum = str(ts.min()), str(ts.max())
    if 0 < distinct <= MAX_SHOWN_DISTINCT and not identifying and not id_like:
        prof.values = [str(v) for v in present.value_counts().index[:MAX_SHOWN_DISTINCT]]
    return prof


def _numeric_with_markers(s: pd.Series, ctype: str) -> tuple[str, list[str]]:
    """A numeric column polluted by a few text sentinels ("Not Available", "N/A")."""
    numeric = s.str.fullmatch(cleaning.FLOAT_PATTERN).fillna(False)
    if numeric.mean() < 0.2 or numeric.all():
        return ctype, []
    others = s[~numeric].unique()
    if len(others) > 3 or any(re.search(r"\d", str(o)) for o in others):
        return ctype, []
    inner, _ = _type_of(s[numeric])
    return (inner, [str(o) for o in others]) if inner in ("integer", "float") else (ctype, [])


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _type_of(s: pd.Series) -> tuple[str, list[str]]:
    if s.empty:
        return "text", ["no values in the sample"]
    lowered = set(s.str.lower().unique())
    if (
        lowered <= set(cleaning.TRUE_WORDS + cleaning.FALSE_WORDS)
        and len(lowered) <= 2
        and not (lowered <= {"0", "1"} and len(lowered) == 1)
    ):
        return "boolean", []
    integer = s.str.fullmatch(r"[+-]?\d+").fillna(False)
    scientific = s.str.fullmatch(r"[+-]?\d+(?:\.\d+)?[eE][+-]?\d+").fillna(False)
    if bool((integer | scientific).all()):
        notes = []
        digits = s[integer].str.lstrip("+-")
        if bool(scientific.any()):
            notes.append(
                f"{_SCIENTIFIC} {int(scientific.sum())} value(s) (a spreadsheet's rendering of a "
                "long id?): an id is never rounded back from one"
            )
        if bool((digits.str.len() > 1).any() and digits.str.match(r"0\d").any()):
            notes.append("values with leading zeros: kept as text (leading zeros are part of an id)")
        if bool((digits.str.len() > SAFE_INTEGER_DIGITS).any()):
            notes.append(
                f"values longer than {SAFE_INTEGER_DIGITS} digits: kept as text "
                "(not safe as numbers in many tools)"
            )
        return ("text", notes) if notes else ("integer", [])
    if bool(s.str.fullmatch(cleaning.FLOAT_PATTERN).fillna(False).all()):
        return "float", []
    as_date = cleaning.standardise_date(s)
    if bool(cleaning.is_real_date(as_date).all()):
        return "date", []
    as_ts = cleaning.standardise_timestamp(s)
    if bool(cleaning.is_timestamp(as_ts).all()):
        midnight = as_ts.str.endswith("00:00:00+00:00").all()
        if midnight:
            return "date", ["every timestamp is at midnight: declared as a date"]
        return "timestamp", []
    return "text", []


def to_toml(profile: Profile) -> str:
    """The draft declaration, with the profile as comments."""
    if profile.sampled:
        scope = (
            f"the first {profile.rows_sampled:,} of its {profile.rows_total:,} rows; the counts "
            "below are of that sample"
        )
    else:
        scope = f"all {profile.rows_sampled:,} rows"
    lines = [
        f"# Draft declaration inferred from {profile.source} ({scope}).",
        "# Review every line: types, required fields, keys and allowed values are guesses.",
        "",
        "[[datasets]]",
        f'name = "{profile.name}"',
        f'table = "{profile.name}"',
    ]
    if profile.primary_key:
        lines.append(f"primary_key = {json.dumps(profile.primary_key)}")
    else:
        lines.append('# primary_key = ["..."]   # no column was unique and complete in the sample')
    lines += ["", "[datasets.columns]"]
    for c in profile.columns:
        fields = [f'type = "{c.type}"']
        if c.required:
            fields.append("required = true")
        if c.identifying:
            fields.append("identifying = true")
        if c.values and c.type == "text":
            fields.append(f"allowed = {json.dumps(c.values, ensure_ascii=False)}")
        if c.pattern:
            fields.append(f"pattern = {json.dumps(c.pattern)}")
        if c.type in ("integer", "float") and c.minimum is not None and float(c.minimum) >= 0:
            fields.append("min = 0")
        if c.missing_markers:
            pairs = ", ".join(f'{json.dumps(m)} = ""' for m in c.missing_markers)
            fields.append(f"map = {{ {pairs} }}")
        where = "in the sample: " if profile.sampled else ""
        comment = [f"{where}nulls {c.null_rate:.1%}", f"{c.distinct:,} distinct"]
        if c.minimum is not None:
            comment.append(f"observed {c.minimum} .. {c.maximum}")
        if c.values and c.type != "text":
            comment.append("values " + ", ".join(c.values))
        comment += c.notes
        lines.append(f"{c.name} = {{ {', '.join(fields)} }}  # {'; '.join(comment)}")
    return "\n".join(lines) + "\n"


def to_dict(profile: Profile) -> dict[str, Any]:
    out = asdict(profile)
    for c, p in zip(out["columns"], profile.columns, strict=True):
        c["null_rate"] = round(p.null_rate, 6)
    return out
