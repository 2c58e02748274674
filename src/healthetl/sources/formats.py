"""The one table of file formats: which suffix is read (and written) as what.

``.gz`` is looked through: ``visits.csv.gz`` is CSV. ``-`` is an Arrow stream (stdin or stdout).
Readers, writers, folder discovery and the JSON record readers all ask here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from healthetl.errors import UsageError


@dataclass(frozen=True)
class Format:
    name: str
    suffixes: tuple[str, ...]
    #: the suffixes an output of extract/validate may have in this format
    outputs: tuple[str, ...] = ()
    #: a folder source picks these files up (an Arrow stream is a pipe, not a delivery)
    delivered: bool = True
    #: holds JSON records (what nested datasets read)
    records: bool = False


FORMATS = (
    Format("csv", (".csv", ".tsv", ".txt"), outputs=(".csv",)),
    Format("excel", (".xlsx", ".xlsm", ".xls", ".xlsb", ".ods")),
    Format("parquet", (".parquet", ".pq"), outputs=(".parquet",)),
    Format("ndjson", (".ndjson", ".jsonl"), outputs=(".ndjson", ".jsonl"), records=True),
    Format("json", (".json",), records=True),
    Format("arrow", (".arrow", ".arrows", ".ipc"), outputs=(".arrow",), delivered=False),
)
_BY_SUFFIX = {s: f for f in FORMATS for s in f.suffixes}
#: suffixes of the files a folder source picks up (each also with .gz)
DELIVERED_SUFFIXES = tuple(s for f in FORMATS if f.delivered for s in f.suffixes)
#: suffixes of files holding JSON records (each also with .gz)
RECORD_SUFFIXES = tuple(s for f in FORMATS if f.records for s in f.suffixes)


def suffix_of(path: str) -> str:
    """The suffix that says the format: the one under ``.gz`` for a gzipped file."""
    name = path.lower()
    return Path(name.removesuffix(".gz")).suffix


def gzipped(path: str) -> bool:
    return path.lower().endswith(".gz")


def format_of(path: str) -> Format | None:
    """The format of a path by its suffix (None: not one healthetl reads)."""
    if path == "-":
        return _BY_SUFFIX[".arrow"]
    return _BY_SUFFIX.get(suffix_of(path))


def kind_of(path: str) -> str:
    """The reader for a path, by extension (``.gz`` looks at the extension under it)."""
    found = format_of(path)
    if found is None:
        raise UsageError(
            f"{path}: unsupported file type {suffix_of(path) or '(none)'}; "
            "use .csv, .tsv, .csv.gz, .xlsx, .parquet, .ndjson, .json or .arrow"
        )
    return found.name


def is_delivered(name: str) -> bool:
    """A file a folder source reads (data files, also gzipped; not Arrow streams)."""
    return name.lower().removesuffix(".gz").endswith(DELIVERED_SUFFIXES)


def holds_records(name: str) -> bool:
    """A file of JSON records (.json, .ndjson, .jsonl, also gzipped)."""
    return name.lower().removesuffix(".gz").endswith(RECORD_SUFFIXES)


def output_kind(target: str) -> str:
    """The writer for an output path (``-``: an Arrow stream on stdout)."""
    if target == "-":
        return "arrow"
    found = format_of(target)
    if found is None or suffix_of(target) not in found.outputs:
        raise UsageError(
            f"{target}: output must end in .parquet, .csv, .csv.gz, .ndjson or .arrow, "
            "or be - for an Arrow stream on stdout"
        )
    if found.name != "csv" and gzipped(target):
        raise UsageError(f"{target}: only .csv output can be gzipped")
    return found.name
