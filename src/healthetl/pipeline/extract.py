"""``extract``: a source's rows, as read, to a file or an Arrow stream (no rules applied)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import closing

import pandas as pd

from healthetl import interrupts
from healthetl.config import PipelineOptions
from healthetl.pipeline.readahead import read_ahead
from healthetl.results import ExtractResult
from healthetl.sources import open_writer
from healthetl.sources.base import source_for


def frames_from(sources: Iterable[str], options: PipelineOptions) -> Iterator[pd.DataFrame]:
    for source in sources:
        yield from checked(source_for(source).frames(options))


def checked(frames: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """The frames, with a check for a pending interrupt between them."""
    for frame in frames:
        interrupts.check()  # a signal whose interrupt was lost stops the run here
        yield frame


def extract(source: str, output: str, options: PipelineOptions, *, csv_safe: bool = False) -> ExtractResult:
    rows = 0
    columns: list[str] = []
    with open_writer(output, inputs=(source,), csv_safe=csv_safe) as writer:
        with closing(read_ahead(frames_from([source], options))) as frames:  # parsing on a thread
            for frame in frames:
                columns = columns or [str(c) for c in frame.columns]
                writer.write(frame)
                rows += len(frame)
    return ExtractResult(source, output, rows, columns)
