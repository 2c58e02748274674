"""The shape of every frame a reader yields: text columns with normalised names, the lineage
columns (where each row came from), a width limit; and the Arrow stream's marks."""

from __future__ import annotations

import re
from typing import Any

import pandas as pd
import pyarrow as pa

STREAM_MARK = {b"healthetl": b"stream/1"}
STREAM_END = "healthetl_end"
SOURCE_FILE = "_source_file"
SOURCE_ROW = "_source_row"
LINEAGE = (SOURCE_FILE, SOURCE_ROW)


def normalise_name(name: object) -> str:
    """' Patient ID ' -> 'patient_id', 'AppointmentID' -> 'appointment_id', 'No-show' -> 'no_show'."""  # noqa: E501
    text = str(name).strip()
    if text in LINEAGE:
        return text
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", text)
    text = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", text)
    text = re.sub(r"[^0-9a-zA-Z]+", "_", text).strip("_").lower()
    return text or "column"


def unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        if n in seen:
            seen[n] += 1
            out.append(f"{n}_{seen[n]}")
        else:
            seen[n] = 1
            out.append(n)
    return out


#: PostgreSQL's limit of columns in a table: a file with more is not a table healthetl can load
MAX_COLUMNS = 1600


def text_frame(table: pa.Table) -> pd.DataFrame:
    """Arrow table -> pandas frame of ``str`` columns (lineage row number stays integer)."""
    cols: dict[str, Any] = {}
    for name in table.column_names:
        col = table.column(name)
        if name == SOURCE_ROW:
            cols[name] = pd.array(col.to_numpy(zero_copy_only=False), dtype="int64")
        else:
            if not pa.types.is_string(col.type) and not pa.types.is_large_string(col.type):
                col = col.cast(pa.string())
            cols[name] = pd.Series(col.to_pandas(types_mapper=pd.ArrowDtype)).astype("str")
    frame = pd.DataFrame(cols)
    return frame
