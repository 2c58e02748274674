"""``extract``: a source's rows, as read, to a file or an Arrow stream (no rules applied)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import pandas as pd

from healthetl import interrupts
from healthetl.config import PipelineOptions
from healthetl.results import ExtractResult
from healthetl.sources import open_writer, read_frames


def frames_from(sources: Iterable[str], options: PipelineOptions) -> Iterator[pd.DataFrame]:
    for source in sources:
        for frame in read_frames(
            source,
            chunk_size=options.chunk_size,
            sheet=options.sheet,
            encoding=options.encoding,
            delimiter=options.delimiter,
            quote=options.quote,
        ):
            interrupts.check()  # a signal whose interrupt was lost stops the run here
            yield frame


def extract(source: str, output: str, options: PipelineOptions, *, csv_safe: bool = False) -> ExtractResult:
    rows = 0
    columns: list[str] = []
    with open_writer(output, inputs=(source,), csv_safe=csv_safe) as writer:
        for frame in frames_from([source], options):
            columns = columns or [str(c) for c in frame.columns]
            writer.write(frame)
            rows += len(frame)
    return ExtractResult(source, output, rows, columns)
