"""Excel workbooks (python-calamine), checked for their size before they are opened."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pandas as pd

from healthetl.errors import SourceError, UsageError, first_line
from healthetl.sources.frames import MAX_COLUMNS
from healthetl.sources.storage import open_binary

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem


def read_excel(
    path: str, chunk_size: int, sheet: str | None, fs: AbstractFileSystem | None = None
) -> Iterator[pd.DataFrame]:
    """A workbook's sheet; one in a store is opened as a seekable object (the zip directory
    sits at its end, so a workbook is read by ranges, not streamed front to back)."""
    if path.lower().endswith(".gz"):
        raise UsageError(f"{path}: compressed Excel files are not supported; unzip it first")
    if path.lower().endswith((".xlsx", ".xlsm")):
        _check_workbook(path, fs)
    try:
        from python_calamine import CalamineWorkbook

        workbook = CalamineWorkbook.from_path(path) if fs is None else _from_store(path, fs)
        names = workbook.sheet_names
    except Exception as exc:  # calamine raises its own error kinds for every broken file
        raise SourceError(
            f"{path}: not a readable Excel workbook (truncated or corrupt?): {first_line(exc)}"
        ) from None
    if sheet is not None and sheet not in names:
        raise UsageError(f"{path}: no sheet {sheet!r} (sheets: {', '.join(names)})")
    try:
        source: Any = path if fs is None else open_binary(path, fs)
        frame = pd.read_excel(source, sheet_name=sheet or 0, dtype=str, engine="calamine")
    except Exception as exc:
        raise SourceError(f"{path}: cannot read sheet: {first_line(exc)}") from None
    if frame.columns.empty:
        raise SourceError(f"{path}: sheet {sheet or names[0]!r} is empty")
    frame.columns = [str(c) for c in frame.columns]
    frame = frame.astype("str")
    if len(frame) == 0:
        yield frame
        return
    for start in range(0, len(frame), chunk_size):
        yield frame.iloc[start : start + chunk_size].copy()


_DIMENSION = re.compile(rb'<dimension ref="([A-Z]{1,3})([0-9]+)(?::([A-Z]{1,3})([0-9]+))?"')


def _column_number(letters: bytes) -> int:
    n = 0
    for ch in letters:
        n = n * 26 + ch - 64
    return n


def _check_workbook(path: str, fs: AbstractFileSystem | None = None) -> None:
    """Before the Excel reader opens it (a native library: some hostile workbooks crash it, or
    make it inflate gigabytes): refuse a workbook that inflates past the limit or declares a
    sheet wider than a table can be."""
    import os
    import zipfile

    limit = int(float(os.environ.get("HEALTHETL_MAX_WORKBOOK_MB", "1024")) * (1 << 20))
    try:
        with zipfile.ZipFile(path if fs is None else open_binary(path, fs)) as z:
            inflated = sum(i.file_size for i in z.infolist())
            if inflated > limit:
                raise SourceError(
                    f"{path}: the workbook inflates to {inflated >> 20:,} MB, more than the "
                    f"{limit >> 20:,} MB allowed (HEALTHETL_MAX_WORKBOOK_MB); not opened"
                )
            for name in z.namelist():
                if not (name.startswith("xl/worksheets/") and name.endswith(".xml")):
                    continue
                with z.open(name) as fh:
                    found = _DIMENSION.search(fh.read(64 << 10))
                if found is None:
                    continue
                last_col, last_row = found.group(3) or found.group(1), found.group(4) or found.group(2)
                columns = _column_number(last_col)
                if columns > MAX_COLUMNS:
                    sheet = name.rsplit("/", 1)[-1].removesuffix(".xml")
                    raise SourceError(
                        f"{path}: {sheet} spans {columns:,} columns (to cell "
                        f"{last_col.decode()}{last_row.decode()}), more than the {MAX_COLUMNS:,} "
                        "a database table can hold; not opened"
                    )
    except zipfile.BadZipFile:
        return  # not a zip at all: the Excel reader says what it is


def _from_store(path: str, fs: AbstractFileSystem) -> Any:
    from python_calamine import CalamineWorkbook

    with open_binary(path, fs) as fh:
        return CalamineWorkbook.from_filelike(fh)
